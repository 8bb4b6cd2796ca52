"""refit for vLLM: refit's weights into a running vLLM (docs/engines.md).

    # in the engine (every process): the `refit` weight-transfer backend
    llm = LLM(model=ckpt, tensor_parallel_size=2,
              weight_transfer_config=WeightTransferConfig(backend="refit"))
    r = refit.vllm.Refitter(llm)
    r.init("cluster.yaml", hf=ckpt)        # r.receivers: for the trainer's refit.receivers
    for step in ...:
        r.update(step)                     # pause, pull, reset prefix cache, resume

- Two paths, chosen per layer (``mode='auto'``): layers whose parameters
  hold exactly the checkpoint's bytes are written in place; every other
  layer is pulled in checkpoint format and loaded by vLLM's own
  ``load_weights`` inside its layerwise reload (refit.engines, _plan).
- ``RefitWeightTransferEngine``: the backend (vLLM 0.16 and later); registered by
  ``register_plugin`` (the ``vllm.general_plugins`` entry point of refit's
  wheel runs it in every vLLM process).
- ``RefitWorkerExtension``: the same through ``worker_extension_cls`` and
  ``collective_rpc``, for any vLLM v1.
- ``Refitter`` / ``AsyncRefitter`` / ``HTTPRefitter``: the cycle on ``LLM``,
  ``AsyncLLM`` and ``vllm serve``.

Nothing here imports vLLM or PyTorch until it is used.
"""

from .. import engines as _engines
from ._extension import RefitWorkerExtension
from ._lifecycle import PAUSE_MODES, AsyncRefitter, HTTPRefitter, Refitter, init_info
from ._plan import decide, plan_model
from ._worker import ModelRefits, WorkerRefit, fp8_overrides, worker_identity

BACKEND = "refit"
expected_receivers = _engines.expected_receivers


def register_plugin():
    """Register the ``refit`` weight-transfer backend with vLLM's factory
    (a no-op on vLLM without the weight-transfer API, or when registered)."""
    from . import _adapter
    factory = _adapter.weight_transfer_factory()
    if factory is None or BACKEND in getattr(factory, "_registry", {}):
        return False
    factory.register_engine(BACKEND, "refit.vllm._transfer", "RefitWeightTransferEngine")
    return True


def __getattr__(name):
    # The backend class subclasses vLLM's base: made on first use only.
    if name in ("RefitWeightTransferEngine", "RefitInitInfo", "RefitUpdateInfo"):
        from . import _transfer
        return getattr(_transfer, name)
    raise AttributeError("module 'refit.vllm' has no attribute %r" % name)


__all__ = ["RefitWorkerExtension", "Refitter", "AsyncRefitter", "HTTPRefitter", "PAUSE_MODES", "init_info",
           "plan_model", "decide", "WorkerRefit", "ModelRefits", "fp8_overrides", "worker_identity",
           "expected_receivers", "register_plugin", "BACKEND", "RefitWeightTransferEngine"]
