"""Test application for the Ray Serve tests: one module serves every test variant.

A variant does real CPU work per request that grows with its `work` (loop steps); requests
are batched with `@serve.batch`, whose `max_batch_size` and `batch_wait_timeout_s` follow
the deployment's `user_config`. Every answer is a KServe v2 style JSON body that also names the
variant, the Ray node and the replica that served it, and the batch it was part of, so tests
can check where requests went.

Deploy with `import_path: app:app` and `args: {variant: NAME, work: STEPS}`; the directory of
this file must be importable by the cluster's workers (PYTHONPATH of the nodes, or
`runtime_env.working_dir`).
"""

import json
import os

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

DEFAULT_WORK = {"small": 20_000, "medium": 40_000, "large": 80_000}


def spin(steps: int) -> int:
    """`steps` loop steps of real CPU work; the result keeps it from being skipped."""
    total = 0
    for i in range(steps):
        total += i * i % 7
    return total


@serve.deployment
class Variant:
    def __init__(self, variant: str, work: int):
        self.variant = variant
        self.work = int(work)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.max_batch_size = 1

    def reconfigure(self, config: dict):
        config = config or {}
        self.max_batch_size = max(1, int(config.get("max_batch_size", 1)))
        self.infer_batch.set_max_batch_size(self.max_batch_size)
        if "batch_wait_timeout_s" in config:
            self.infer_batch.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.005)
    async def infer_batch(self, bodies: list) -> list:
        # A batch costs half a request's work once, plus half per request: batching saves work.
        checksum = spin(self.work // 2 + (self.work // 2) * len(bodies))
        return [self.answer(len(bodies), checksum) for _ in bodies]

    def answer(self, batch: int, checksum: int) -> dict:
        text = json.dumps({"variant": self.variant, "node_id": self.node_id})
        return {
            "model_name": self.variant,
            "outputs": [{"name": "OUTPUT0", "datatype": "BYTES", "shape": [1], "data": [text]}],
            "variant": self.variant,
            "node_id": self.node_id,
            "replica": self.replica,
            "pid": os.getpid(),
            "batch": batch,
            "max_batch_size": self.max_batch_size,
            "checksum": checksum,
        }

    async def __call__(self, request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(await self.infer_batch(body))


def app(args: dict):
    """The application builder: `args` names the variant and, optionally, its work."""
    variant = str(args.get("variant", "small"))
    work = int(args.get("work", DEFAULT_WORK.get(variant, DEFAULT_WORK["small"])))
    return Variant.options(name=variant).bind(variant, work)
