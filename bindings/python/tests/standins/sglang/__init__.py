"""Stand-in for SGLang (see ../README.md): ModelRunner.update_weights_from_tensor
with custom weight loaders, the Engine's update / flush / pause entry points,
and SGLang's Fp8LinearMethod, written from SGLang's source
(python/sglang/srt/model_executor/model_runner.py,
layers/quantization/fp8.py).  SGLang's linear layers and Qwen3 model are
ports of vLLM's (their sources say "Adapted from vLLM"): the stand-in uses
the vLLM stand-in's, with SGLang's own FP8 method."""


def __getattr__(name):
    if name == "Engine":
        from .srt.entrypoints.engine import Engine
        return Engine
    raise AttributeError(name)
