"""vllm/utils/deep_gemm.py (commit 779d1fc1): whether DeepGEMM (and its E8M0
scales) is used, and its block cast."""

from fp8math import per_block_cast_to_fp8 as _cast  # the stand-ins' directory is on sys.path

from .. import envs
from ..platforms import current_platform

# The stand-in "has" deep_gemm installed: whether it is used is up to the
# environment (VLLM_USE_DEEP_GEMM) and the GPU, as in vLLM.
HAS_DEEP_GEMM = True


def is_deep_gemm_supported():
    arch = current_platform.is_cuda() and (current_platform.is_device_capability(90)
                                           or current_platform.is_device_capability_family(100))
    return envs.VLLM_USE_DEEP_GEMM and HAS_DEEP_GEMM and arch


def is_deep_gemm_e8m0_used():
    return is_deep_gemm_supported() and envs.VLLM_USE_DEEP_GEMM_E8M0


def should_use_deepgemm_for_fp8_linear(output_dtype, weight, supports_deep_gemm=None):
    if supports_deep_gemm is None:
        supports_deep_gemm = is_deep_gemm_supported()
    return (supports_deep_gemm and output_dtype == "bfloat16"
            and weight.shape[0] % 64 == 0 and weight.shape[1] % 128 == 0)


def per_block_cast_to_fp8(x, m, n, block_size=(128, 128), use_ue8m0=False):
    return _cast(x, m, n, tuple(block_size), use_ue8m0)
