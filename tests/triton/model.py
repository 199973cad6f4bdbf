"""Test model for infadapt's Triton tests: real CPU work that grows with the variant.

Every request in a batch costs `work_rounds` products of a `work_n` x `work_n` matrix (set in
the model config's parameters), so latency and capacity grow with the variant; a batch saves
only the per-call overhead. Each answer is the input plus one.
"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.n = int(params.get("work_n", {}).get("string_value", "64"))
        self.rounds = int(params.get("work_rounds", {}).get("string_value", "1"))
        rng = np.random.default_rng(7)
        self.matrix = (rng.standard_normal((self.n, self.n)) / self.n).astype(np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            work = self.matrix
            for _ in range(self.rounds):
                work = np.tanh(work @ self.matrix)
            bump = np.float32(1.0 if float(work.sum()) >= -1e30 else 0.0)
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (data + bump).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
