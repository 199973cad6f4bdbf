"""Test handler: real CPU work per request that grows with the variant (work.json)."""
import json
import os

_work = None


def _settings(context):
    global _work
    if _work is None:
        model_dir = context.system_properties.get("model_dir")
        with open(os.path.join(model_dir, "work.json")) as f:
            _work = json.load(f)
    return _work


def handle(data, context):
    if data is None:
        return None
    work = _settings(context)
    answers = []
    for _ in data:
        total = 0
        for i in range(int(work["iterations"])):
            total += i * i % 7
        answers.append(
            json.dumps({"variant": work["variant"], "batch": len(data), "checksum": total})
        )
    return answers
