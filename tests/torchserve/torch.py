"""Stand-in for the torch package in the test archives.

The TorchServe worker imports torch at module level but the test handler never uses it;
the real package (CUDA build) is several GB. Shipped with --extra-files, this module sits
in the model directory, which is on the worker's import path.
"""


class Tensor:
    """Never instantiated: the worker only checks answers against this type."""


def save(value, buffer):
    raise RuntimeError("the torch stand-in cannot serialise tensors")
