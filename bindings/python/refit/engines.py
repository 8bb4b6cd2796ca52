"""What refit.vllm and refit.sglang share: receiver identity, the two pull
paths, and the per-layer plan that chooses between them.

The two paths (docs/engines.md):

- **Checkpoint path** (``CheckpointPuller``, the default): a receiver in
  the ``hf`` target at tensor-parallel size 1 pulls every tensor as the
  model's checkpoint stores it (bf16; FP8 ``weight`` + ``weight_scale_inv``
  128x128 blocks) into buffers this module owns; the engine's own loader
  (``load_weights``, then its post-load processing) takes them from there,
  exactly as it takes a checkpoint file.  Whatever the engine does to a
  layer after loading (fusions, scale transposes, requantization, expert
  reshuffles) it does itself.  Cost: every inference rank pulls whole
  tensors (the engine slices them), one checkpoint-sized buffer per rank,
  and the engine's load and post-processing time.

- **Direct path** (``DirectPuller``): a receiver in the ``vllm`` target at
  the rank's own tensor-parallel position writes straight into the
  engine's parameters: no buffer, no load, only the rank's bytes.  Correct
  only where the parameter holds exactly the checkpoint's bytes in refit's
  layout, which the engine integration decides per layer (``LayerPlan``);
  every other layer takes the checkpoint path.

A worker whose layers take both paths has two receivers (ids ``<id>-ckpt``
and ``<id>-direct``), each skipping the other's tensors (``model.skip``),
so each byte moves once; ``Plan.receivers`` says how many a worker has and
the trainer's ``refit.receivers`` must count them (``expected_receivers``).
"""

import math

from . import tensors as T
from .core import Context
from .errors import EINVAL, ENOENT, ENOTSUP, InvalidArgument, NotFound, NotSupported, RefitError


# ---------------------------------------------------------------- identity

def receiver_id(engine, dp_rank=0, world_size=1, rank=0, rank_offset=0, role=None):
    """A receiver id unique across the engines of a job.

    ``rank`` is the worker's rank within its data-parallel replica
    (TP x PP), ``dp_rank`` the replica; the global index is
    ``rank_offset + dp_rank * world_size + rank``, as vLLM's own NCCL
    weight transfer numbers its workers.  Independent engines (separate
    servers behind a load balancer, each with dp_rank 0) must be given
    distinct ``rank_offset``s, as for NCCL.  ``role`` tells a draft
    model's and a second path's receivers apart."""
    g = int(rank_offset) + int(dp_rank) * int(world_size) + int(rank)
    rid = "%s-dp%d-r%d" % (engine, int(dp_rank), g)
    return rid if not role else "%s-%s" % (rid, role)


def expected_receivers(world_size_across_dp, receivers_per_worker=1, engines=1):
    """What the trainer's ``refit.receivers`` must be: every worker of every
    engine, times the receivers each has (``Plan.receivers`` plus one per
    draft model)."""
    return int(engines) * int(world_size_across_dp) * int(receivers_per_worker)


# ---------------------------------------------------------------- sources

class Source:
    """What a receiver pulls: the cluster file, overrides and HF config of
    one model (the engine's main model, or its draft model, which the
    trainer publishes under its own store namespace)."""

    def __init__(self, config=None, overrides=None, hf=None):
        self.config = config
        self.overrides = dict(overrides or {}) if hasattr(overrides or {}, "items") else \
            dict(o.split("=", 1) for o in overrides)
        self.hf = hf

    def context(self, **extra):
        o = dict(self.overrides)
        o.update(extra)
        return Context(self.config, overrides=o, hf=self.hf)

    def layout(self, target, tp_rank=0, tp_size=1, ep_size=0, skip=()):
        """The destinations (TensorInfo) of a target, from the configuration
        alone."""
        extra = {"model.skip": ",".join(skip)} if skip else {}
        with self.context(**extra) as ctx:
            with ctx.receiver(tp_rank=tp_rank, tp_size=tp_size, ep_size=ep_size, target=target) as r:
                return r.tensors()


def _skip_overrides(skip):
    for p in skip:
        if "," in p:
            raise InvalidArgument(EINVAL, "skip pattern %r has a comma (refit's list separator)" % p)
    return {"model.skip": ",".join(skip)} if skip else {}


# ---------------------------------------------------------------- pullers

class CheckpointPuller:
    """The checkpoint path (module doc): an ``hf``-target receiver at
    tensor-parallel size 1 bound to buffers of its own.

    ``alloc(shape, dtype)`` makes each buffer (device memory next to the
    engine's weights where librefit takes CUDA memory; see refit.vllm).
    ``skip``: HF-name patterns that the direct path covers."""

    def __init__(self, source, rid, alloc, skip=(), fallback_alloc=None):
        self.rid = rid
        self.ctx = source.context(**_skip_overrides(skip))
        self.rcv = None
        try:
            self.rcv = self.ctx.receiver(tp_rank=0, tp_size=1, target="hf", receiver_id=rid)
            self.buffers = {}
            for info in self.rcv.tensors():
                self.buffers[info.name] = self._bind(info, alloc, fallback_alloc)
        except BaseException:
            self.close()
            raise
        if not self.buffers:
            self.close()
            raise NotFound(ENOENT, "receiver %s: nothing left to pull on the checkpoint path" % rid)

    def _bind(self, info, alloc, fallback_alloc):
        buf = alloc(info.shape, info.dtype)
        try:
            self.rcv.bind(info.name, buf)
        except NotSupported:
            # This librefit (or machine) takes no CUDA memory: stage in host
            # memory; the engine's loader copies to the device itself.
            if fallback_alloc is None:
                raise
            buf = fallback_alloc(info.shape, info.dtype)
            self.rcv.bind(info.name, buf)
        return buf

    @property
    def nbytes(self):
        return sum(math.prod(T.shape_of(b)) * T.dtype_of(b).itemsize for b in self.buffers.values())

    def pull(self, version):
        return self.rcv.pull(version)

    def named_tensors(self):
        """(HF name, buffer) in layout order: what load_weights takes."""
        return list(self.buffers.items())

    def close(self):
        if self.ctx is not None:
            self.ctx.close()
        self.ctx = self.rcv = None


class DirectPuller:
    """The direct path (module doc): a ``vllm``-target receiver at the
    worker's TP position whose every destination is bound to the engine's
    tensor that holds it.  ``bindings``: {layout name: tensor}; every
    destination of the layout (after ``skip``) must have one."""

    def __init__(self, source, rid, tp_rank, tp_size, ep_size, bindings, skip=()):
        self.rid = rid
        self.ctx = source.context(**_skip_overrides(skip))
        self.rcv = None
        try:
            self.rcv = self.ctx.receiver(tp_rank=tp_rank, tp_size=tp_size, ep_size=ep_size, target="vllm",
                                         receiver_id=rid)
            layout = self.rcv.tensors()
            missing = [t.name for t in layout if t.name not in bindings]
            if missing:
                raise NotFound(ENOENT, "receiver %s: no engine tensor for %s (direct path)"
                               % (rid, ", ".join(repr(m) for m in missing)))
            for t in layout:
                self.rcv.bind(t.name, T.data_of(bindings[t.name]))
            self.names = [t.name for t in layout]
        except BaseException:
            self.close()
            raise

    def pull(self, version):
        return self.rcv.pull(version)

    def close(self):
        if self.ctx is not None:
            self.ctx.close()
        self.ctx = self.rcv = None


# ---------------------------------------------------------------- plans

class LayerPlan:
    """The decision for one engine module (a layer): ``direct`` with the
    engine tensor of each of its layout names, or the checkpoint path, with
    the reason.  ``hf_patterns`` / ``layout_patterns``: the names of its
    tensors in the hf and vllm targets (fnmatch, for model.skip)."""

    __slots__ = ("prefix", "direct", "reason", "bindings", "hf_patterns", "layout_patterns", "module")

    def __init__(self, prefix, direct, reason, bindings=None, hf_patterns=(), layout_patterns=(), module=None):
        self.prefix = prefix
        self.direct = bool(direct)
        self.reason = reason
        self.bindings = dict(bindings or {})
        self.hf_patterns = list(hf_patterns)
        self.layout_patterns = list(layout_patterns)
        self.module = module

    def __repr__(self):
        return "LayerPlan(%r, %s: %s)" % (self.prefix, "direct" if self.direct else "checkpoint", self.reason)


class Plan:
    """Per-layer decisions of one worker's model, and what they imply."""

    def __init__(self, layers, mode):
        self.layers = list(layers)
        self.mode = mode

    @property
    def direct(self):
        return [p for p in self.layers if p.direct]

    @property
    def checkpoint(self):
        return [p for p in self.layers if not p.direct]

    @property
    def receivers(self):
        return int(bool(self.direct)) + int(bool(self.checkpoint))

    def bindings(self):
        out = {}
        for p in self.direct:
            out.update(p.bindings)
        return out

    def direct_skip(self):
        """vllm-target patterns of the layers on the checkpoint path."""
        return [pat for p in self.checkpoint for pat in p.layout_patterns]

    def checkpoint_skip(self):
        """hf-target patterns of the layers on the direct path."""
        return [pat for p in self.direct for pat in p.hf_patterns]

    def summary(self):
        return {"direct": [p.prefix for p in self.direct],
                "checkpoint": {p.prefix: p.reason for p in self.checkpoint},
                "receivers": self.receivers, "mode": self.mode}


def enforce_mode(plan, what):
    """mode 'direct': every layer must be direct-safe, else NotSupported
    naming each refused layer and why; 'checkpoint': all on the checkpoint
    path; 'auto': as decided."""
    if plan.mode == "checkpoint":
        for p in plan.layers:
            if p.direct:
                p.direct, p.reason = False, "mode='checkpoint'"
        return plan
    if plan.mode == "direct" and plan.checkpoint:
        raise NotSupported(ENOTSUP, "%s: mode='direct' but %d layer(s) cannot be written directly: %s"
                           % (what, len(plan.checkpoint), "; ".join("%s: %s" % (p.prefix, p.reason)
                                                                   for p in plan.checkpoint)))
    if plan.mode not in ("auto", "direct"):
        raise InvalidArgument(EINVAL, "%s: mode %r (auto, direct or checkpoint)" % (what, plan.mode))
    return plan


def check_binding(name, layout_info, tensor):
    """None when `tensor` can be `layout_info`'s destination as it is
    (same dtype, shape, contiguous), else why not."""
    d, shape = T.dtype_of(tensor), T.shape_of(tensor)
    if d != layout_info.dtype:
        return "%s is %s in the engine, %s in the checkpoint" % (name, getattr(d, "name", d),
                                                                 layout_info.dtype.name)
    if shape != tuple(layout_info.shape):
        return "%s has shape %s in the engine, %s in refit's layout" % (name, shape, tuple(layout_info.shape))
    if not T.is_contiguous(T.data_of(tensor)):
        return "%s is not contiguous in the engine" % name
    return None


__all__ = ["receiver_id", "expected_receivers", "Source", "CheckpointPuller", "DirectPuller", "LayerPlan", "Plan",
           "enforce_mode", "check_binding", "RefitError"]
