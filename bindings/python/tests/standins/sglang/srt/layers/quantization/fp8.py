"""SGLang python/sglang/srt/layers/quantization/fp8.py: Fp8LinearMethod for
block FP8 (process_weights_after_loading_block_quant, the version that
keeps the parameter objects "to preserve weight_loader attrs for hot
reload"):

- off ROCm/CPU/MXFP8: when DeepGEMM runs with UE8M0 scales
  (should_deepgemm_weight_requant_ue8m0: JIT DeepGEMM on Blackwell) and
  the scales are not yet UE8M0, requant_weight_ue8m0_inplace and mark
  ``weight_scale_inv.format_ue8m0``; the scales are then stored packed,
  four UE8M0 exponents per int32 (transform_scale_ue8m0; its TMA padding
  and MN-major order are not modelled);
- otherwise nothing changes: ``weight`` and ``weight_scale_inv`` keep their
  objects, names and bytes.

Newer SGLang pairs it with ``restore_weights_before_loading`` (the
checkpoint layout of the scales put back before a reload, as its hot-reload
tests do with snapshot/restore_scale_checkpoint_state); ``HOT_RELOAD``
switches that method off to model an SGLang without it.
"""

import os
import struct

from nn import full
from refit.dtypes import DType
from refit.host import HostTensor
from vllm.model_executor.layers.linear import LinearBase, LinearMethodBase
from vllm.model_executor.layers.quantization.utils.fp8_utils import requant_weight_ue8m0_inplace
from vllm.model_executor.parameter import BlockQuantScaleParameter, ModelWeightParameter
from vllm.platforms import current_platform

HOT_RELOAD = True
F32_MIN = -3.4028234663852886e38


def should_deepgemm_weight_requant_ue8m0(weight_block_size):
    blackwell = current_platform.is_device_capability_family(100)
    jit = os.environ.get("SGLANG_ENABLE_JIT_DEEPGEMM", "0") == "1"
    return jit and blackwell and weight_block_size is not None


def transform_scale_ue8m0(scale):
    """F32 power-of-two scales (mn, k) -> int32 (mn, ceil(k/4)): the exponent
    byte of each, four per int32."""
    mn, k = scale.shape
    k4 = -(-k // 4)
    vals = scale.tolist()
    out = []
    for r in range(mn):
        exps = [(struct.unpack("<I", struct.pack("<f", vals[r * k + c]))[0] >> 23) & 0xFF for c in range(k)]
        exps += [0] * (k4 * 4 - k)
        out.extend(struct.unpack("<%di" % k4, bytes(exps)))
    return HostTensor.from_list((mn, k4), DType.I32, out)


class Fp8Config:
    def __init__(self, weight_block_size):
        self.weight_block_size = weight_block_size
        self.is_checkpoint_fp8_serialized = True

    @classmethod
    def get_name(cls):
        return "fp8"

    @classmethod
    def from_config(cls, config):
        return cls(config.get("weight_block_size"))

    def get_quant_method(self, layer, prefix):
        if isinstance(layer, LinearBase):
            return Fp8LinearMethod(self)
        return None


class Fp8LinearMethod(LinearMethodBase):
    def __init__(self, quant_config):
        self.quant_config = quant_config
        self.block_quant = quant_config.weight_block_size is not None
        self.use_marlin = False
        self.use_mxfp8 = False
        if HOT_RELOAD:
            self.restore_weights_before_loading = self._restore

    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra):
        out, loader = sum(output_partition_sizes), extra.get("weight_loader")
        bn, bk = self.quant_config.weight_block_size
        layer.orig_dtype = "bfloat16"
        layer.register_parameter("weight", ModelWeightParameter(
            full((out, input_size_per_partition), DType.F8_E4M3, 0), input_dim=1, output_dim=0,
            weight_loader=loader))
        scale = BlockQuantScaleParameter(full((-(-out // bn), -(-input_size_per_partition // bk)), DType.F32,
                                              F32_MIN), input_dim=1, output_dim=0, weight_loader=loader)
        scale.format_ue8m0 = False
        layer.register_parameter("weight_scale_inv", scale)
        layer.register_parameter("input_scale", None)

    def process_weights_after_loading(self, layer):
        scale = layer.weight_scale_inv
        if should_deepgemm_weight_requant_ue8m0(self.quant_config.weight_block_size) and not scale.format_ue8m0:
            layer._ckpt_scale_state = (scale.shape, scale.dtype)  # snapshot_scale_checkpoint_state
            requant_weight_ue8m0_inplace(layer.weight.data, scale.data, self.quant_config.weight_block_size)
            scale.data = transform_scale_ue8m0(scale.data)
            scale.format_ue8m0 = True

    def _restore(self, layer):
        """restore_scale_checkpoint_state: the checkpoint-format scale back."""
        scale = layer.weight_scale_inv
        if scale.format_ue8m0:
            shape, dtype = layer._ckpt_scale_state
            scale.data = full(shape, dtype, F32_MIN)
            scale.format_ue8m0 = False
