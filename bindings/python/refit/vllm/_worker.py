"""One vLLM worker's refit: its plan, its receivers, and one cycle.

``WorkerRefit`` is what both vLLM integrations run inside each worker:
the weight-transfer backend (refit.vllm.RefitWeightTransferEngine) and the
worker extension for vLLM versions without that API
(refit.vllm.RefitWorkerExtension).  A cycle (``update``):

1. direct path: the layers whose parameters hold the checkpoint's bytes
   are written in place by a ``vllm``-target receiver (after the engine's
   queued work on them is done: an event, not a device sync);
2. checkpoint path: every other tensor is pulled, in checkpoint format,
   into refit's buffers and handed to ``model.load_weights`` inside vLLM's
   layerwise reload (``initialize_layerwise_reload`` /
   ``finalize_layerwise_reload``, as vLLM's own checkpoint-format weight
   transfer and prime-rl do), so vLLM re-runs its post-load step on those
   layers and copies the result into the tensors CUDA graphs captured;
3. an event marks the buffers' reads, so the next pull waits only for them.

The draft model of speculative decoding (a draft model, EAGLE head or MTP
module whose weights the trainer publishes as a model of its own) gets a
``WorkerRefit`` of its own on the same version (``role='draft'``).
"""

from .. import engines as E
from .. import tensors as T
from ..errors import EINVAL, ENOTSUP, InvalidArgument, NotSupported, RefitError
from . import _adapter as A
from ._plan import plan_model

_FP8_BLOCK = [128, 128]


def fp8_overrides(quant_config):
    """refit configuration for the checkpoint format of a vLLM model: bf16
    for an unquantized model (and for FP8 that vLLM quantizes online from a
    bf16 checkpoint), 128x128 block FP8 (``weight`` + ``weight_scale_inv``)
    for an FP8 checkpoint; anything else refit cannot produce (NotSupported
    naming it)."""
    if quant_config is None:
        return {"model.fp8.enabled": False}
    name = quant_config.get_name() if hasattr(quant_config, "get_name") else type(quant_config).__name__
    block = getattr(quant_config, "weight_block_size", None)
    if name == "fp8" and not getattr(quant_config, "is_checkpoint_fp8_serialized", True):
        # Online FP8: vLLM quantizes a bf16 checkpoint while loading, so the
        # checkpoint format is bf16 (and no such layer is ever written directly).
        return {"model.fp8.enabled": False}
    if name == "fp8" and getattr(quant_config, "is_checkpoint_fp8_serialized", False) and \
            block is not None and list(block) == _FP8_BLOCK:
        o = {"model.fp8.enabled": True}
        ignored = list(getattr(quant_config, "ignored_layers", None) or [])
        if ignored:
            o["model.fp8.exclude"] = ",".join("%s.*" % p for p in ignored)
        return o
    raise NotSupported(ENOTSUP, "vLLM model quantized as %s (block %s): refit makes bf16 or 128x128 block-FP8 "
                       "checkpoints only" % (name, block))


def _alloc_for(model, device, buffers):
    """Allocators for the checkpoint-path buffers: next to the model's
    weights (device memory), falling back to pinned host memory where
    librefit takes no CUDA memory."""
    like = None
    for _, p in model.named_parameters():
        like = T.data_of(p)
        break
    if buffers not in ("auto", "device", "host"):
        raise InvalidArgument(EINVAL, "buffers=%r (auto, device or host)" % (buffers,))
    dev = device if device is not None else (T.device_of(like) if like is not None else "cpu")
    host = lambda shape, d: T.empty_like_layout(shape, d, like, "cpu", pin=True)  # noqa: E731
    if buffers == "host" or str(dev) == "cpu":
        return host, None, "cpu"
    return (lambda shape, d: T.empty_like_layout(shape, d, like, dev)), host, dev


class WorkerRefit:
    """One worker's receivers for one model (module doc).

    ``source``: refit.engines.Source of the model; ``rid``: base receiver
    id; ``tp``: (tp_rank, tp_size, ep_size) of refit's vLLM layout for this
    worker; ``mode``: 'auto' (per layer), 'direct' (all layers, or
    NotSupported naming those that cannot be), 'checkpoint'."""

    def __init__(self, model, source, rid, tp=(0, 1, 0), vllm_config=None, model_config=None, device=None,
                 mode="auto", buffers="auto", planner=plan_model, loader=None):
        self.model = model
        self._loader = loader  # an engine's own checkpoint-path loader (SGLang), else vLLM's reload
        self.vllm_config = vllm_config
        self.model_config = model_config if model_config is not None else getattr(vllm_config, "model_config", None)
        self.direct = self.ckpt = None
        alloc, fallback, self.device = _alloc_for(model, device, buffers)
        self.order = T.StreamOrder(self.device if str(self.device).startswith("cuda") else None)
        layout = [] if mode == "checkpoint" else source.layout("vllm", *tp)
        self.plan = planner(model, layout, mode)
        mixed = bool(self.plan.direct) and bool(self.plan.checkpoint)
        try:
            if self.plan.direct:
                self.direct = E.DirectPuller(source, "%s-direct" % rid if mixed else rid, tp[0], tp[1], tp[2],
                                             self.plan.bindings(), skip=self.plan.direct_skip())
            if self.plan.checkpoint or mode == "checkpoint" or not layout:
                self.ckpt = E.CheckpointPuller(source, "%s-ckpt" % rid if mixed else rid, alloc,
                                               skip=self.plan.checkpoint_skip(), fallback_alloc=fallback)
        except BaseException:
            self.close()
            raise
        self._ckpt_modules = [p.module for p in self.plan.checkpoint if p.module is not None]

    @property
    def receivers(self):
        return int(self.direct is not None) + int(self.ckpt is not None)

    def info(self):
        s = self.plan.summary()
        s["receivers"] = self.receivers
        s["ids"] = [p.rid for p in (self.direct, self.ckpt) if p is not None]
        s["checkpoint_bytes"] = self.ckpt.nbytes if self.ckpt is not None else 0
        return s

    def update(self, version, load=None):
        """Pull `version` into the model; returns {path: PullStats dict}.
        ``load(named_tensors)``: the engine's loader when the caller already
        runs vLLM's layerwise reload around this call (vLLM's worker does
        for checkpoint-format weight transfer); None: run it here."""
        out = {}
        if self.direct is not None:
            self.order.fence()
            s = self.direct.pull(version)
            out["direct"] = s.as_dict()
            version = s.version  # the checkpoint path pulls the same version
        if self.ckpt is not None:
            self.order.before_pull()
            s = self.ckpt.pull(version)
            out["checkpoint"] = s.as_dict()
            named = self.ckpt.named_tensors()
            if load is not None:
                load(named)
            elif self._loader is not None:
                self._loader(self.model, named, [self.model] if self.direct is None else self._ckpt_modules)
            else:
                self._load(named)
            self.order.consumed()
        return out

    def _load(self, named):
        """model.load_weights inside vLLM's layerwise reload: the whole model
        when every layer takes this path, else just its layers (the direct
        ones are live and must stay untouched)."""
        lw = A.layerwise()
        if lw is None:
            # An older vLLM without the reload machinery: load_weights alone (correct for
            # layers without a post-load step, which is what plan_model allows
            # on old versions only when there is none; FP8 layers raise here).
            self.model.load_weights(iter(named))
            return
        init, finish = lw
        scope = [self.model] if self.direct is None else self._ckpt_modules
        with A.device_context(self.device), A.vllm_config_context(self.vllm_config):
            for m in scope:
                init(m)
            try:
                self.model.load_weights(iter(named))
            finally:
                for m in scope:
                    finish(m, self.model_config)

    def close(self):
        for p in (self.direct, self.ckpt):
            if p is not None:
                p.close()
        self.direct = self.ckpt = None


def worker_identity(vllm_config=None, worker=None, rank_offset=0, engine="vllm"):
    """(receiver id, world size across DP) of this worker."""
    dp, world, rank, across = A.parallel_identity(vllm_config, worker)
    return E.receiver_id(engine, dp, world, rank, rank_offset), across


def layout_position(vllm_config=None, ep=None):
    """(tp_rank, tp_size, ep_size) of refit's vLLM layout for this worker:
    vLLM's TP position; whole experts per rank when vLLM runs expert
    parallelism (``enable_expert_parallel``)."""
    tp_rank, tp_size = A.tp_position()
    if ep is None:
        pc = getattr(vllm_config, "parallel_config", None)
        ep = bool(getattr(pc, "enable_expert_parallel", False))
    return tp_rank, tp_size, tp_size if ep and tp_size > 1 else 0


class ModelRefits:
    """A worker's WorkerRefit for its main model and, optionally, its draft."""

    def __init__(self, main, draft=None):
        self.main, self.draft = main, draft

    @property
    def receivers(self):
        return self.main.receivers + (self.draft.receivers if self.draft is not None else 0)

    def info(self):
        d = {"main": self.main.info(), "receivers": self.receivers}
        if self.draft is not None:
            d["draft"] = self.draft.info()
        return d

    def update(self, version):
        out = {"main": self.main.update(version)}
        if self.draft is not None:
            v = next(iter(out["main"].values()))["version"]
            out["draft"] = self.draft.update(v)
        return out

    def close(self):
        for r in (self.main, self.draft):
            if r is not None:
                r.close()


def draft_model_of(model_runner):
    """The draft model of vLLM's speculative decoding, or None:
    ``model_runner.drafter.model`` (EAGLE, MTP and draft-model proposers)."""
    drafter = getattr(model_runner, "drafter", None)
    return getattr(drafter, "model", None) if drafter is not None else None


__all__ = ["WorkerRefit", "ModelRefits", "fp8_overrides", "worker_identity", "layout_position", "draft_model_of",
           "RefitError"]
