"""Every place refit.vllm touches vLLM's own API, imported on first use.

Nothing is imported at module level: ``import refit.vllm`` works without
vLLM.  Each function names the vLLM module it uses; where vLLM versions
differ, it tries the forms in turn (newest first) and says so.
"""

import contextlib
import importlib


def _try(modname):
    try:
        return importlib.import_module(modname)
    except ImportError:
        return None


def version():
    """vllm.__version__ as a tuple of ints (major, minor), or None."""
    v = _try("vllm")
    s = getattr(v, "__version__", None) if v else None
    if not s:
        return None
    parts = []
    for p in s.split(".")[:2]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def platform():
    """vllm.platforms.current_platform."""
    return importlib.import_module("vllm.platforms").current_platform


def is_cuda():
    p = platform()
    return bool(p.is_cuda()) and not bool(getattr(p, "is_rocm", lambda: False)())


def is_fp8_fnuz():
    return bool(getattr(platform(), "is_fp8_fnuz", lambda: False)())


def is_capability(cap):
    return bool(platform().is_device_capability(cap))


def deep_gemm_e8m0_used():
    """vllm.utils.deep_gemm.is_deep_gemm_e8m0_used (False where absent)."""
    dg = _try("vllm.utils.deep_gemm")
    f = getattr(dg, "is_deep_gemm_e8m0_used", None) if dg else None
    return bool(f()) if f else False


def should_use_deepgemm_for_fp8_linear(layer):
    """vllm.utils.deep_gemm.should_use_deepgemm_for_fp8_linear(orig_dtype, weight)."""
    dg = _try("vllm.utils.deep_gemm")
    f = getattr(dg, "should_use_deepgemm_for_fp8_linear", None) if dg else None
    if f is None:
        return False
    return bool(f(getattr(layer, "orig_dtype", None), layer.weight))


def layerwise():
    """(initialize_layerwise_reload, finalize_layerwise_reload) from
    vllm.model_executor.model_loader.reload, or None (older vLLM)."""
    m = _try("vllm.model_executor.model_loader.reload")
    if m is None or not hasattr(m, "initialize_layerwise_reload"):
        return None
    return m.initialize_layerwise_reload, m.finalize_layerwise_reload


def vllm_config_context(vllm_config):
    """vllm.config.set_current_vllm_config(vllm_config), or nothing."""
    if vllm_config is None:
        return contextlib.nullcontext()
    cfg = _try("vllm.config")
    f = getattr(cfg, "set_current_vllm_config", None) if cfg else None
    return f(vllm_config) if f else contextlib.nullcontext()


def device_context(device):
    """torch.device(device) as the default device (as vLLM's reload runs), or nothing."""
    if device is None or str(device) == "cpu":
        return contextlib.nullcontext()
    torch = _try("torch")
    return torch.device(device) if torch is not None else contextlib.nullcontext()


def tp_position():
    """(tp_rank, tp_size) from vllm.distributed."""
    d = importlib.import_module("vllm.distributed")
    return d.get_tensor_model_parallel_rank(), d.get_tensor_model_parallel_world_size()


def parallel_identity(vllm_config=None, worker=None):
    """(dp_rank, world_size, rank, world_size_across_dp) of this worker.

    ``parallel_config.data_parallel_index`` (newer) or
    ``data_parallel_rank`` is the replica; ``parallel_config.rank`` the
    worker's rank within it (TP x PP); ``world_size`` = TP x PP — as
    vLLM's NCCL weight-transfer engine numbers workers."""
    pc = getattr(vllm_config, "parallel_config", None)
    if pc is None and worker is not None:
        pc = getattr(getattr(worker, "vllm_config", None), "parallel_config", None)
    if pc is None:
        rank, size = tp_position()
        return 0, size, rank, size
    dp = getattr(pc, "data_parallel_index", None)
    if dp is None:
        dp = getattr(pc, "data_parallel_rank", 0) or 0
    world = int(getattr(pc, "world_size", 1) or 1)
    rank = getattr(pc, "rank", None)
    if rank is None:
        rank = getattr(worker, "rank", 0) if worker is not None else 0
    across = getattr(pc, "world_size_across_dp", None) or world * int(getattr(pc, "data_parallel_size", 1) or 1)
    return int(dp), world, int(rank) % world, int(across)


def weight_transfer_base():
    """vllm.distributed.weight_transfer.base, or None (vLLM before 0.16)."""
    return _try("vllm.distributed.weight_transfer.base")


def weight_transfer_factory():
    m = _try("vllm.distributed.weight_transfer.factory")
    return getattr(m, "WeightTransferEngineFactory", None) if m else None
