"""Which vLLM layers refit may write directly, decided per layer.

A layer may take the direct path only when, after vLLM's post-load step
(``process_weights_after_loading``) for *this* layer on *this* kernel
backend, its parameters hold exactly the bytes of refit's vLLM layout —
the checkpoint's bytes, fused and TP-sliced as vLLM's loaders do.  Any
other layer, and any layer refit knows nothing about, takes the
checkpoint path (the engine's own loader); refit never guesses.

The rules below are written from vLLM's source, v0.11-v0.12 (commit
1436674b of vllm/model_executor/layers/quantization/fp8.py,
Fp8LinearMethod / Fp8MoEMethod; commit 364d0192 of
quantization/utils/fp8_utils.py, maybe_post_process_fp8_weight_block and
requant_weight_ue8m0_inplace; commit 779d1fc1 of vllm/utils/deep_gemm.py),
the way prime-rl's kernel-format transfer checks a direct write (names
must be parameters, shapes must match, DeepGEMM E8M0 detected with
vLLM's own is_deep_gemm_e8m0_used):

==================================  =========================================  ======
layer (quant method)                post-load step (vLLM v0.11-0.12)           direct
==================================  =========================================  ======
no quant method (RMSNorm, q/k norm) none                                       yes
UnquantizedLinearMethod /           none on CUDA (CPU repacks for oneDNN)      CUDA
UnquantizedEmbeddingMethod
Fp8LinearMethod, 128x128 blocks     ``weight_scale_inv`` deleted, its data     see
                                    re-registered as ``weight_scale``; then:   right
  - Marlin (no FP8 hardware)          weight repacked                          no
  - DeepGEMM with E8M0 scales         weight requantized, scales power of two  no
  - SM90 CUTLASS block FP8            ``weight_scale`` transposed (T.contig.)  no
  - otherwise (Triton, SM89/SM100)    bytes kept; scale renamed only           yes
Fp8LinearMethod, per-tensor         requantized to one max scale, transposed   no
Fp8MoEMethod, 128x128 blocks        TRITON: kept; FlashInfer: w13 halves       TRITON
                                    swapped; DeepGEMM: requant + scale          only
                                    layout; Marlin/AITER: repacked/shuffled
anything else                       unknown to refit                           no
==================================  =========================================  ======

These rules hold for the vLLM versions read; for another version refit
asks vLLM itself where it can (``quant_method.get_runtime_weight_reload_
mapping``, vLLM's own statement of which runtime tensors are the
checkpoint's, as its layerwise reload uses it) and otherwise sends every
quantized layer through the checkpoint path (``verified_versions``).
"""

from .. import engines as E
from . import _adapter as A

# vLLM (major, minor) versions whose post-load steps the table above was read from.
VERIFIED = ((0, 11), (0, 12))

_UNQUANTIZED = ("UnquantizedLinearMethod", "UnquantizedEmbeddingMethod")


def _owner(name):
    prefix, _, attr = name.rpartition(".")
    return prefix, attr


def _params(module):
    """{attribute: tensor} of a module's own parameters (not its children's)."""
    if hasattr(module, "named_parameters"):
        try:
            return dict(module.named_parameters(recurse=False))
        except TypeError:
            pass
    return dict(getattr(module, "_parameters", {}))


def _fp8_linear(module, qm, cuda_version_ok):
    if not getattr(qm, "block_quant", False):
        return None, "per-tensor FP8: requantized to one max scale and transposed after loading"
    if getattr(qm, "use_marlin", False):
        return None, "FP8 Marlin (no FP8 hardware): weights repacked after loading"
    if A.is_fp8_fnuz():
        return None, "FP8 on ROCm fnuz: weights and scales renormalized after loading"
    deepgemm = A.should_use_deepgemm_for_fp8_linear(module)
    if A.deep_gemm_e8m0_used() and deepgemm:
        return None, "DeepGEMM with E8M0 scales: weights requantized to power-of-two scales after loading"
    if A.is_capability(90) and getattr(qm, "cutlass_block_fp8_supported", False) and not deepgemm:
        return None, "SM90 CUTLASS block FP8: weight_scale stored transposed after loading"
    if not cuda_version_ok:
        return None, "block FP8 on a vLLM version whose post-load step refit has not verified"
    # The scale keeps its bytes; vLLM >= 0.11 renames it weight_scale_inv -> weight_scale.
    p = _params(module)
    scale = "weight_scale_inv" if "weight_scale_inv" in p else "weight_scale"
    return {"weight": "weight", "weight_scale_inv": scale}, "block FP8 kept as loaded (Triton kernels)"


def _fp8_moe(module, qm, cuda_version_ok):
    if not getattr(qm, "block_quant", False):
        return None, "per-tensor FP8 MoE: w13 requantized to one scale per expert after loading"
    backend = getattr(getattr(qm, "fp8_backend", None), "name", None)
    reshuffled = {"FLASHINFER_TRTLLM": "FlashInfer TRT-LLM: w13 halves swapped and weights rotated",
                  "FLASHINFER_CUTLASS": "FlashInfer CUTLASS: w13 gate/up halves swapped (w31)",
                  "DEEPGEMM": "DeepGEMM: weights requantized and scales relaid out",
                  "CUTLASS_BLOCK_SCALED_GROUPED_GEMM": "CUTLASS grouped GEMM: scales relaid out",
                  "MARLIN": "Marlin: experts repacked"}
    if backend in reshuffled:
        return None, "FP8 MoE on %s after loading" % reshuffled[backend]
    if getattr(qm, "rocm_aiter_moe_enabled", False) or A.is_fp8_fnuz():
        return None, "FP8 MoE on ROCm: experts shuffled after loading"
    if backend != "TRITON" or not cuda_version_ok:
        return None, "FP8 MoE backend %s: refit has not verified its post-load step" % backend
    return {}, "block FP8 MoE on Triton: kept as loaded"


def _unquantized_moe(module, qm, cuda_version_ok):
    flags = [f for f in ("rocm_aiter_moe_enabled", "flashinfer_cutlass_moe_enabled", "use_flashinfer_cutlass_moe")
             if getattr(qm, f, False)]
    if flags:
        return None, "unquantized MoE with %s: experts reshuffled after loading" % flags[0]
    if not cuda_version_ok:
        return None, "unquantized MoE on a vLLM version refit has not verified"
    return {}, "unquantized MoE on CUDA: kept as loaded"


def _runtime_mapping(module, qm):
    """vLLM's own answer (newer vLLM): {checkpoint name: runtime tensor}
    when the runtime tensors are the checkpoint's, else None."""
    f = getattr(qm, "get_runtime_weight_reload_mapping", None)
    meta = getattr(module, "_refit_checkpoint_params", None)
    if f is None or meta is None:
        return None
    try:
        m = f(module, meta, _params(module))
    except Exception:  # vLLM refuses: not a mapping it can state
        return None
    return dict(m) if m else None


def decide(module):
    """(attribute map {layout attr: runtime attr} or None, reason) for one module."""
    qm = getattr(module, "quant_method", None)
    v = A.version()
    verified = v is not None and v[:2] in VERIFIED
    cuda_ok = A.is_cuda()
    if qm is None:
        return {}, "no post-load step"
    cls = type(qm).__name__
    mapping = _runtime_mapping(module, qm)
    if mapping is not None:
        return {k: k for k in mapping}, "vLLM maps its runtime tensors to the checkpoint's"
    if not cuda_ok:
        return None, "not CUDA: post-load steps on this platform repack weights"
    if cls in _UNQUANTIZED:
        return {}, "unquantized, kept as loaded"
    if cls == "Fp8LinearMethod":
        return _fp8_linear(module, qm, verified)
    if cls == "Fp8MoEMethod":
        return _fp8_moe(module, qm, verified)
    if cls == "UnquantizedFusedMoEMethod":
        return _unquantized_moe(module, qm, verified)
    return None, "%s: refit does not know whether its post-load step keeps the checkpoint's bytes" % cls


def hf_patterns(prefix, packed):
    """The HF-checkpoint name patterns of a vLLM module (fused ones expand)."""
    parent, _, last = prefix.rpartition(".")
    subs = packed.get(last)
    if subs:
        return ["%s.%s.*" % (parent, s) if parent else "%s.*" % s for s in subs]
    return ["%s.*" % prefix]


def plan_layers(model, layout, mode, decide_fn, what):
    """The per-layer plan of `model` against refit's vLLM layout
    (``layout``: TensorInfo list), each engine module decided by
    ``decide_fn`` (module -> (attribute map or None, reason)); the plan
    enforced for ``mode`` (``what`` names the model in its errors).  The
    engines whose layers are ports of vLLM's (SGLang) plan with it too."""
    modules = dict(model.named_modules())
    packed = dict(getattr(model, "packed_modules_mapping", {}) or {})
    by_module = {}
    for info in layout:
        prefix, attr = _owner(info.name)
        by_module.setdefault(prefix, []).append((attr, info))
    plans = []
    for prefix, items in by_module.items():
        module = modules.get(prefix)
        hfp, lp = hf_patterns(prefix, packed), ["%s.*" % prefix]
        if module is None:
            plans.append(E.LayerPlan(prefix, False, "no module %r in the model" % prefix, None, hfp, lp))
            continue
        amap, reason = decide_fn(module)
        bindings = {}
        if amap is not None:
            params = _params(module)
            for attr, info in items:
                rt = amap.get(attr, attr)
                t = params.get(rt)
                why = ("the model has no parameter %s.%s" % (prefix, rt) if t is None
                       else E.check_binding("%s.%s" % (prefix, rt), info, t))
                if why:
                    amap, reason = None, why
                    break
                bindings[info.name] = t
        plans.append(E.LayerPlan(prefix, amap is not None, reason, bindings if amap is not None else None,
                                 hfp, lp, module))
    return E.enforce_mode(E.Plan(plans, mode), what)


def plan_model(model, layout, mode="auto"):
    """The per-layer plan of `model` against refit's vLLM layout of this
    worker (``layout``: TensorInfo list; empty for mode 'checkpoint')."""
    return plan_layers(model, layout, mode, decide, "vLLM model")
