"""Stand-in for vLLM (see ../README.md), written from vLLM v0.11-v0.12 for the
model, layers and FP8 methods and from the weight-transfer API of v0.25+
(vllm/distributed/weight_transfer/base.py at 02f250b0) or, with
``vllm.v1.worker.gpu_worker.API = "v0.17"``, of the versions before v0.25.  Nothing here
runs a forward pass: only what loading and refitting weights involve."""

__version__ = "0.12.0"


def __getattr__(name):
    if name == "LLM":
        from .entrypoints.llm import LLM
        return LLM
    raise AttributeError(name)
