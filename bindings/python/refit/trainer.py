"""The trainer side: this rank's parallel position, and publishing in order
with its CUDA stream.

    pos = refit.trainer.position()          # Megatron parallel_state, else torch.distributed
    if pos.publishes:
        pub = ctx.publisher(**pos.parallel, source_id=pos.source_id)
        ...
        refit.trainer.publish(pub, step)     # after the optimizer step queued on the current stream

Megatron-Core's ``megatron.core.parallel_state`` (when importable and
initialized) gives tensor, pipeline, expert and expert-tensor parallel
ranks and sizes; only data-parallel rank 0 publishes (the other replicas
hold the same shards).  Without Megatron, ``torch.distributed`` (when
initialized) is taken as a trainer whose every rank holds a TP shard
(rank = tp_rank, world size = tp_size); without either, a single rank.
"""

import importlib

from .core import Publisher
from .tensors import StreamOrder, device_of

_FIELDS = ("tp_rank", "tp_size", "pp_rank", "pp_size", "ep_rank", "ep_size", "etp_rank", "etp_size")


class Position:
    """A trainer rank's place: ``parallel`` (Publisher kwargs), ``dp_rank``,
    ``publishes`` (data-parallel rank 0), ``source_id`` (unique per rank),
    ``origin`` (megatron, torch.distributed or single)."""

    def __init__(self, parallel, dp_rank=0, origin="single"):
        self.parallel = {f: int(parallel.get(f, 1 if f.endswith("_size") else 0)) for f in _FIELDS}
        self.dp_rank = int(dp_rank)
        self.origin = origin

    @property
    def publishes(self):
        return self.dp_rank == 0

    @property
    def source_id(self):
        p = self.parallel
        return "trainer-tp%d-pp%d-ep%d-etp%d" % (p["tp_rank"], p["pp_rank"], p["ep_rank"], p["etp_rank"])

    def __repr__(self):
        return "Position(%s, dp_rank=%d, %s)" % (self.parallel, self.dp_rank, self.origin)


def _megatron():
    try:
        ps = importlib.import_module("megatron.core.parallel_state")
    except ImportError:
        return None
    if not ps.model_parallel_is_initialized():
        return None
    par = {"tp_rank": ps.get_tensor_model_parallel_rank(), "tp_size": ps.get_tensor_model_parallel_world_size(),
           "pp_rank": ps.get_pipeline_model_parallel_rank(), "pp_size": ps.get_pipeline_model_parallel_world_size()}
    for f, getter in (("ep_rank", "get_expert_model_parallel_rank"),
                      ("ep_size", "get_expert_model_parallel_world_size"),
                      ("etp_rank", "get_expert_tensor_parallel_rank"),
                      ("etp_size", "get_expert_tensor_parallel_world_size")):
        g = getattr(ps, getter, None)  # expert parallelism: Megatron-Core >= 0.8
        if g is not None:
            par[f] = g()
    return Position(par, ps.get_data_parallel_rank(), "megatron")


def _torch_distributed():
    try:
        dist = importlib.import_module("torch.distributed")
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return Position({"tp_rank": dist.get_rank(), "tp_size": dist.get_world_size()}, 0, "torch.distributed")


def position():
    """This trainer rank's Position (module doc)."""
    return _megatron() or _torch_distributed() or Position({}, 0, "single")


def publish(pub: Publisher, version, stream_order=None):
    """pub.publish(version) once the work the caller queued on its current
    CUDA stream (the optimizer step writing the weights) is ordered before
    refit's copies: the legacy default stream, which refit's streams follow,
    is made to wait on an event of the current stream — no host block, no
    device-wide sync (refit.tensors.StreamOrder)."""
    order = stream_order
    if order is None:
        dev = next((device_of(t) for t in pub.tensors.values() if device_of(t).startswith("cuda")), None)
        order = StreamOrder(dev)
    order.before_publish()
    pub.publish(version)


__all__ = ["Position", "position", "publish"]
