"""vllm/envs.py: the environment switches the FP8 paths read, evaluated
lazily at each access as vLLM's module __getattr__ does."""

import os

_BOOL = {"VLLM_USE_DEEP_GEMM": "0", "VLLM_MOE_USE_DEEP_GEMM": "1", "VLLM_USE_DEEP_GEMM_E8M0": "1",
         "VLLM_TEST_FORCE_FP8_MARLIN": "0", "VLLM_USE_FLASHINFER_MOE_FP8": "0", "VLLM_ROCM_FP8_PADDING": "1"}


def __getattr__(name):
    if name in _BOOL:
        return os.environ.get(name, _BOOL[name]).lower() in ("1", "true")
    raise AttributeError(name)
