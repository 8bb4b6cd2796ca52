"""vllm/model_executor/layers/quantization/utils/fp8_utils.py (v0.11.x) and
the helpers its FP8 methods call after loading:

- process_fp8_weight_block_strategy: passthrough off ROCm;
- maybe_post_process_fp8_weight_block(layer, cutlass_block_fp8_supported):
  DeepGEMM with E8M0 -> requant_weight_ue8m0_inplace (dequantize with the
  loaded scales, re-quantize with power-of-two scales, in place); SM90
  CUTLASS block FP8 without DeepGEMM -> ``weight_scale`` re-registered as
  its transpose, made contiguous;
- deepgemm_post_process_fp8_weight_block (MoE, DeepGEMM): requantize to
  E8M0 when used, then scales in DeepGEMM's MN-major TMA-aligned layout
  (get_col_major_tma_aligned_tensor: column-major, rows padded to 16 bytes);
- swap_w13_to_w31 (flashinfer_utils.py): the halves of w13 (gate | up)
  swapped along the row dimension, as FlashInfer's kernels want (up | gate).
"""

from fp8math import block_dequant
from nn import Parameter
from refit.host import HostTensor

from .....platforms import current_platform
from .....utils import deep_gemm


def process_fp8_weight_block_strategy(weight, weight_scale):
    return weight, weight_scale


def _matrices(t):
    if t.ndim == 2:
        return [t]
    return [t.select(0, i) for i in range(t.shape[0])]


def requant_weight_ue8m0_inplace(weight, weight_scale, block_size=(128, 128)):
    bm, bk = int(block_size[0]), int(block_size[1])
    for w, s in zip(_matrices(weight), _matrices(weight_scale)):
        m, k = w.shape
        deq = block_dequant(w.tolist(), s.tolist(), m, k, (bm, bk))
        codes, scales = deep_gemm.per_block_cast_to_fp8(deq, m, k, [bm, bk], use_ue8m0=True)
        w.copy_(HostTensor.from_list(w.shape, w.dtype, codes))
        s.copy_(HostTensor.from_list(s.shape, s.dtype, scales))


def maybe_post_process_fp8_weight_block(layer, cutlass_block_fp8_supported):
    use_dg = deep_gemm.should_use_deepgemm_for_fp8_linear(layer.orig_dtype, layer.weight)
    if deep_gemm.is_deep_gemm_e8m0_used() and use_dg:
        requant_weight_ue8m0_inplace(layer.weight.data, layer.weight_scale.data, tuple(layer.weight_block_size))
    elif current_platform.is_device_capability(90) and cutlass_block_fp8_supported and not use_dg:
        layer.weight_scale = Parameter(layer.weight_scale.data.t().contiguous())


def get_col_major_tma_aligned_tensor(x):
    """x (.., m, n) as a column-major tensor whose columns are padded to 16 bytes."""
    lead = x.shape[:-2]
    m, n = x.shape[-2], x.shape[-1]
    per = 16 // x.dtype.itemsize
    am = -(-m // per) * per
    b = 1
    for d in lead:
        b *= d
    out = HostTensor((b, n, am), x.dtype).transpose(1, 2).narrow(1, 0, m)
    src = x if lead else x.view_as_shape((1, m, n))
    out.copy_(src.contiguous().view_as_shape((b, m, n)))
    if not lead:
        return out.select(0, 0)
    return HostTensor(x.shape, x.dtype, out.storage, out.offset, (am * n,) + out.strides[1:])


def deepgemm_post_process_fp8_weight_block(wq, ws, quant_block_shape, use_e8m0):
    if use_e8m0:
        requant_weight_ue8m0_inplace(wq, ws, quant_block_shape)
    return wq, get_col_major_tma_aligned_tensor(ws)


def swap_w13_to_w31(x):
    half = x.shape[-2] // 2
    out = HostTensor(x.shape, x.dtype)
    out.narrow(-2, 0, half).copy_(x.narrow(-2, half, half))
    out.narrow(-2, half, half).copy_(x.narrow(-2, 0, half))
    return out


def cutlass_block_fp8_supported():
    """w8a8_utils.cutlass_block_fp8_supported: CUDA SM90+ with vLLM's CUTLASS kernels."""
    return current_platform.is_cuda() and current_platform.has_device_capability(90)
