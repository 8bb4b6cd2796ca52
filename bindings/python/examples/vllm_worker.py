"""A vLLM worker extension that refits the engine's weights with refit.

    llm = LLM(model=..., tensor_parallel_size=2,
              worker_extension_cls="vllm_worker.RefitWorkerExtension")
    llm.collective_rpc("init_refit", args=("cluster.yaml",),
                       kwargs={"hf": "/ckpt", "overrides": {"model.fp8.enabled": True}})
    ...
    llm.collective_rpc("update_weights_from_refit", args=(step,))   # every RL step

Every worker (one per TP rank) creates a refit receiver for its rank in the
vLLM layout and binds vLLM's own parameter tensors by their vLLM names
(``model.named_parameters()``: ``model.layers.0.self_attn.qkv_proj.weight``,
FP8 scales as ``..._scale_inv``), so that a pull writes the new weights
straight into them.

Host parameters are bound in place.  Parameters in CUDA memory are bound
in place once librefit supports CUDA memory; until then (refit raises
NotSupported for them) the extension binds a pinned host staging copy of
each and copies it into the parameter after every pull.

Nothing here imports vLLM at module level: the class is a mixin over
vLLM's worker (it uses ``self.model_runner``), and the tests drive it with
a stand-in worker whose parameters are numpy arrays named and shaped like
vLLM's.
"""

import refit


def _is_torch(t):
    return type(t).__module__.split(".")[0] == "torch"


def _tp_position():
    from vllm.distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size
    return get_tensor_model_parallel_rank(), get_tensor_model_parallel_world_size()


class RefitWorkerExtension:
    """Mixin for vLLM's worker (worker_extension_cls)."""

    def _refit_model(self):
        mr = self.model_runner
        return mr.get_model() if hasattr(mr, "get_model") else mr.model

    def init_refit(self, config=None, overrides=None, hf=None, receiver_id=None, tp_rank=None, tp_size=None,
                   ep_size=0, strict=True):
        """Create this rank's receiver and bind the model's parameters.
        tp_rank/tp_size default to vLLM's tensor-parallel position.  strict:
        every destination of refit's layout must be a parameter of the model
        (otherwise refit allocates the missing ones and they are ignored)."""
        self.close_refit()
        if tp_rank is None or tp_size is None:
            tp_rank, tp_size = _tp_position()
        self._refit_ctx = refit.Context(config, overrides=overrides, hf=hf)
        self._refit_rcv = self._refit_ctx.receiver(tp_rank=tp_rank, tp_size=tp_size, ep_size=ep_size,
                                                   target="vllm", receiver_id=receiver_id)
        params = dict(self._refit_model().named_parameters())
        self._refit_staged = []  # (staging host tensor, CUDA parameter)
        missing = []
        layout = self._refit_rcv.tensors()
        for info in layout:
            p = params.get(info.name)
            if p is None:
                missing.append(info.name)
                continue
            self._bind(info, p)
        if missing and strict:
            self.close_refit()
            raise refit.NotFound(refit.errors.ENOENT, "the model has no parameter named %s (refit's vLLM layout "
                                 "has them; strict=False ignores them)" % ", ".join(repr(m) for m in missing))
        if missing:
            self._refit_rcv.allocate()
        return {"bound": len(layout) - len(missing), "staged": len(self._refit_staged), "missing": missing}

    def _bind(self, info, p):
        if _is_torch(p):
            data = p.data
            try:
                self._refit_rcv.bind(info.name, data)
            except refit.NotSupported:
                if data.device.type != "cuda":
                    raise
                import torch
                host = torch.empty(tuple(data.shape), dtype=data.dtype, device="cpu",
                                   pin_memory=torch.cuda.is_available())
                self._refit_rcv.bind(info.name, host)
                self._refit_staged.append((host, data))
            return
        # numpy: BF16 and FP8 live as raw bits (uint16, uint8): name the
        # layout's dtype for integer arrays of its element size.
        dt = getattr(p, "dtype", None)
        raw = dt is not None and dt.kind in "ui" and dt.itemsize == info.dtype.itemsize
        self._refit_rcv.bind(info.name, p, dtype=info.dtype if raw else None)

    def update_weights_from_refit(self, version=refit.NEXT):
        """Pull `version` (default: the next one) into the model's parameters.
        Returns the pull's figures as a dict."""
        rcv = getattr(self, "_refit_rcv", None)
        if rcv is None:
            raise refit.RefitError(refit.errors.EINVAL, "update_weights_from_refit before init_refit")
        stats = rcv.pull(version)
        if self._refit_staged:
            import torch
            for host, param in self._refit_staged:
                param.copy_(host, non_blocking=True)
            torch.cuda.synchronize()
        return stats.as_dict()

    def close_refit(self):
        ctx = getattr(self, "_refit_ctx", None)
        if ctx is not None:
            ctx.close()
        self._refit_ctx = self._refit_rcv = None
        self._refit_staged = []
