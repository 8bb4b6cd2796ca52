"""Which SGLang layers refit may write directly, decided per layer.

As for vLLM (refit/vllm/_plan.py): a layer is written directly only when,
after SGLang's post-load step for this layer and backend, its parameters
hold exactly the bytes of refit's vLLM layout (SGLang's linear layers and
Qwen3 model are ports of vLLM's: the same fused names and TP slices).
Written from SGLang's python/sglang/srt/layers/quantization/fp8.py
(Fp8LinearMethod.process_weights_after_loading_block_quant, the version
that keeps parameter objects "for hot reload" and marks UE8M0 scales with
``format_ue8m0``):

==================================  =========================================  ======
layer                               post-load step                             direct
==================================  =========================================  ======
no quant method (norms)             none                                       yes
UnquantizedLinearMethod (CUDA)      none (CPU: AMX repack)                     CUDA
Fp8LinearMethod, block, CUDA        kept, same names (weight_scale_inv)        yes
  - DeepGEMM UE8M0 (Blackwell)      requantized, scales packed to UE8M0        no
  - MXFP8, Marlin, ROCm fnuz, CPU   converted / repacked                       no
Fp8MoEMethod, unquantized MoE       backend-specific (Triton, DeepGEMM,        no
                                    CUTLASS, FlashInfer, AITER...)
anything else                       unknown                                    no
==================================  =========================================  ======
"""

from ..vllm._plan import _params, plan_layers


def _is_cuda():
    try:
        from sglang.srt.utils import is_cuda
        return bool(is_cuda())
    except ImportError:
        return True


def decide(module):
    qm = getattr(module, "quant_method", None)
    if qm is None:
        return {}, "no post-load step"
    cls = type(qm).__name__
    if not _is_cuda():
        return None, "not CUDA: post-load steps on this platform repack weights"
    if cls in ("UnquantizedLinearMethod", "UnquantizedEmbeddingMethod"):
        return {}, "unquantized, kept as loaded"
    if cls == "Fp8LinearMethod":
        if not getattr(qm, "block_quant", False):
            return None, "per-tensor FP8: requantized after loading"
        for flag, why in (("use_marlin", "Marlin repacks the weights"), ("use_mxfp8", "MXFP8 scales"),
                          ("convert_mxfp8_to_block", "MXFP8 converted to block FP8")):
            if getattr(qm, flag, False):
                return None, "FP8 %s after loading" % why
        scale = _params(module).get("weight_scale_inv")
        if scale is None or getattr(scale, "format_ue8m0", False):
            return None, "DeepGEMM UE8M0: weights requantized and scales packed after loading"
        return {}, "block FP8 kept as loaded"
    return None, "%s: SGLang's post-load step for it is backend-specific; through SGLang's loader" % cls


def plan_model(model, layout, mode="auto"):
    """The per-layer plan of `model` against refit's vLLM layout of this
    worker: vLLM's planning (its layers' names and slices are SGLang's),
    with SGLang's decide (which never renames a parameter)."""
    return plan_layers(model, layout, mode, decide, "SGLang model")
