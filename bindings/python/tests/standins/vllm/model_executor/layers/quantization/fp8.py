"""vllm/model_executor/layers/quantization/fp8.py at commit 1436674b (v0.11-0.12).

Fp8Config(quant_method fp8, weight_block_size [128, 128], dynamic
activations) gives linear layers Fp8LinearMethod and FusedMoE layers
Fp8MoEMethod.  Block FP8, as the source does it:

Fp8LinearMethod.create_weights: ``weight`` F8_E4M3 [out, in] and
``weight_scale_inv`` F32 [ceil(out/128), ceil(in/128)] (the name "is
intentional for deepseekv3"), initialised to float32 min.
Fp8LinearMethod.process_weights_after_loading: weight and scale through
process_fp8_weight_block_strategy, **del layer.weight_scale_inv**, then
``layer.weight`` / ``layer.weight_scale`` re-registered as new Parameters
over the same data; Marlin (no FP8 hardware, VLLM_TEST_FORCE_FP8_MARLIN)
would repack (not modelled); else maybe_post_process_fp8_weight_block
(DeepGEMM E8M0 requant, or the SM90 CUTLASS transpose).

Fp8MoEMethod (get_fp8_moe_backend): FlashInfer (SM90/SM100 with
VLLM_USE_FLASHINFER_MOE_FP8) swaps w13 to w31; DeepGEMM
(VLLM_USE_DEEP_GEMM and VLLM_MOE_USE_DEEP_GEMM) requantizes and relays out
the scales; TRITON keeps the loaded tensors (re-wrapped as Parameters).
"""

import enum

from nn import Parameter, full
from refit.dtypes import DType

from ....platforms import current_platform
from ....utils import deep_gemm
from ...parameter import BlockQuantScaleParameter, ModelWeightParameter
from ..linear import LinearBase, LinearMethodBase, UnquantizedLinearMethod
from .base_config import QuantizationConfig, QuantizeMethodBase
from .utils.fp8_utils import (cutlass_block_fp8_supported, deepgemm_post_process_fp8_weight_block,
                              maybe_post_process_fp8_weight_block, process_fp8_weight_block_strategy,
                              swap_w13_to_w31)

F32_MIN = -3.4028234663852886e38


class Fp8MoeBackend(enum.Enum):
    NONE = 0
    FLASHINFER_TRTLLM = 1
    FLASHINFER_CUTLASS = 2
    DEEPGEMM = 3
    CUTLASS_BLOCK_SCALED_GROUPED_GEMM = 4
    MARLIN = 5
    TRITON = 6


def get_fp8_moe_backend(block_quant):
    from .... import envs
    if (current_platform.is_cuda() and (current_platform.is_device_capability(100)
                                        or current_platform.is_device_capability(90))
            and envs.VLLM_USE_FLASHINFER_MOE_FP8):
        return Fp8MoeBackend.FLASHINFER_CUTLASS
    if not current_platform.has_device_capability(89) or envs.VLLM_TEST_FORCE_FP8_MARLIN:
        return Fp8MoeBackend.MARLIN
    if envs.VLLM_USE_DEEP_GEMM and envs.VLLM_MOE_USE_DEEP_GEMM and block_quant and \
            deep_gemm.is_deep_gemm_supported():
        return Fp8MoeBackend.DEEPGEMM
    if current_platform.is_device_capability(100) and block_quant:
        return Fp8MoeBackend.CUTLASS_BLOCK_SCALED_GROUPED_GEMM
    return Fp8MoeBackend.TRITON


class Fp8Config(QuantizationConfig):
    def __init__(self, is_checkpoint_fp8_serialized=True, activation_scheme="dynamic", ignored_layers=None,
                 weight_block_size=None):
        self.is_checkpoint_fp8_serialized = is_checkpoint_fp8_serialized
        self.activation_scheme = activation_scheme
        self.ignored_layers = ignored_layers or []
        self.weight_block_size = weight_block_size

    @classmethod
    def get_name(cls):
        return "fp8"

    @classmethod
    def from_config(cls, config):
        return cls("fp8" in config["quant_method"], config.get("activation_scheme", "dynamic"),
                   config.get("ignored_layers") or config.get("modules_to_not_convert"),
                   config.get("weight_block_size"))

    def get_quant_method(self, layer, prefix):
        from ..fused_moe import FusedMoE
        if isinstance(layer, LinearBase):
            if any(prefix == p or prefix.startswith(p + ".") for p in self.ignored_layers):
                return UnquantizedLinearMethod()
            return Fp8LinearMethod(self)
        if isinstance(layer, FusedMoE):
            return Fp8MoEMethod(self, layer)
        return None


class Fp8LinearMethod(LinearMethodBase):
    def __init__(self, quant_config):
        from .... import envs
        self.quant_config = quant_config
        self.cutlass_block_fp8_supported = cutlass_block_fp8_supported()
        self.use_marlin = not current_platform.has_device_capability(89) or envs.VLLM_TEST_FORCE_FP8_MARLIN
        if current_platform.is_rocm():
            self.use_marlin = False
        self.weight_block_size = quant_config.weight_block_size
        self.block_quant = self.weight_block_size is not None

    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra):
        out = sum(output_partition_sizes)
        loader = extra.get("weight_loader")
        layer.logical_widths = output_partition_sizes
        layer.orig_dtype = "bfloat16" if params_dtype == DType.BF16 else str(params_dtype)
        layer.weight_block_size = self.weight_block_size
        layer.register_parameter("weight", ModelWeightParameter(
            full((out, input_size_per_partition), DType.F8_E4M3, 0), input_dim=1, output_dim=0,
            weight_loader=loader))
        if not self.block_quant:
            raise NotImplementedError("stand-in: per-tensor FP8 is not modelled")
        bn, bk = self.weight_block_size
        scale = BlockQuantScaleParameter(full((-(-out // bn), -(-input_size_per_partition // bk)), DType.F32,
                                              F32_MIN), input_dim=1, output_dim=0, weight_loader=loader)
        scale.scale_type = "weight_scale"
        layer.register_parameter("weight_scale_inv", scale)
        layer.register_parameter("input_scale", None)

    def process_weights_after_loading(self, layer):
        weight, weight_scale = process_fp8_weight_block_strategy(layer.weight, layer.weight_scale_inv)
        del layer.weight_scale_inv
        layer.weight = Parameter(weight.data)
        layer.weight_scale = Parameter(weight_scale.data)
        layer.input_scale = None
        if self.use_marlin:
            raise NotImplementedError("stand-in: FP8 Marlin repacking is not modelled")
        maybe_post_process_fp8_weight_block(layer, self.cutlass_block_fp8_supported)


class Fp8MoEMethod(QuantizeMethodBase):
    def __init__(self, quant_config, layer):
        self.quant_config = quant_config
        self.weight_block_size = quant_config.weight_block_size
        self.block_quant = self.weight_block_size is not None
        self.fp8_backend = get_fp8_moe_backend(self.block_quant)
        self.use_marlin = self.fp8_backend == Fp8MoeBackend.MARLIN
        self.flashinfer_moe_backend = "cutlass" if self.fp8_backend == Fp8MoeBackend.FLASHINFER_CUTLASS else None
        self.allow_deep_gemm = self.fp8_backend == Fp8MoeBackend.DEEPGEMM
        self.rocm_aiter_moe_enabled = False

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype, **extra):
        i, h = intermediate_size_per_partition, hidden_size
        bn, bk = self.weight_block_size
        layer.weight_block_size = self.weight_block_size
        for name, shape in (("w13_weight", (num_experts, 2 * i, h)), ("w2_weight", (num_experts, h, i))):
            p = Parameter(full(shape, DType.F8_E4M3, 0))
            p.__dict__.update(extra)
            layer.register_parameter(name, p)
        for name, shape in (("w13_weight_scale_inv", (num_experts, 2 * (-(-i // bn)), -(-h // bk))),
                            ("w2_weight_scale_inv", (num_experts, -(-h // bn), -(-i // bk)))):
            p = Parameter(full(shape, DType.F32, 1.0))
            p.__dict__.update(extra, quant_method="block")
            layer.register_parameter(name, p)

    def process_weights_after_loading(self, layer):
        if self.flashinfer_moe_backend is not None:
            w13, w13s = swap_w13_to_w31(layer.w13_weight.data), swap_w13_to_w31(layer.w13_weight_scale_inv.data)
        else:
            w13, w13s = layer.w13_weight.data, layer.w13_weight_scale_inv.data
        w2, w2s = layer.w2_weight.data, layer.w2_weight_scale_inv.data
        layer.w13_weight, layer.w13_weight_scale_inv = Parameter(w13), Parameter(w13s)
        layer.w2_weight, layer.w2_weight_scale_inv = Parameter(w2), Parameter(w2s)
        if self.allow_deep_gemm:
            e8m0 = deep_gemm.is_deep_gemm_e8m0_used()
            block = tuple(layer.weight_block_size)
            w, s = deepgemm_post_process_fp8_weight_block(layer.w13_weight.data, layer.w13_weight_scale_inv.data,
                                                          block, e8m0)
            layer.w13_weight, layer.w13_weight_scale_inv = Parameter(w), Parameter(s)
            w, s = deepgemm_post_process_fp8_weight_block(layer.w2_weight.data, layer.w2_weight_scale_inv.data,
                                                          block, e8m0)
            layer.w2_weight, layer.w2_weight_scale_inv = Parameter(w), Parameter(s)
