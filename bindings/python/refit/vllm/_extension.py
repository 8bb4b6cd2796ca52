"""refit as a vLLM worker extension (``worker_extension_cls``): for vLLM
versions without the weight-transfer API, and for ``refit_info`` next to
the native backend.

    llm = LLM(model=ckpt, tensor_parallel_size=2,
              worker_extension_cls="refit.vllm.RefitWorkerExtension")
    refitter = refit.vllm.Refitter(llm, path="extension")
    refitter.init("cluster.yaml", hf=ckpt)          # collective_rpc("init_refit")
    refitter.update(step)                           # pause, pull, reset cache, resume

Each worker (a mixin over vLLM's Worker: ``self.model_runner``,
``self.vllm_config``, ``self.device``) makes a WorkerRefit for its model
and, with ``draft=``, one for the draft model of speculative decoding.
Nothing imports vLLM at module level.
"""

from .. import engines as E
from ..core import NEXT
from ..errors import EINVAL, RefitError
from ._worker import (ModelRefits, WorkerRefit, draft_model_of, fp8_overrides, layout_position,
                      worker_identity)


def _source(spec, quant_config):
    o = fp8_overrides(quant_config)
    ov = spec.get("overrides") or {}
    if not hasattr(ov, "items"):
        ov = dict(x.split("=", 1) for x in ov)
    o.update(ov)
    return E.Source(spec.get("config"), o, spec.get("hf"))


class RefitWorkerExtension:
    """Mixin for vLLM's worker (see module doc)."""

    def _refit_model(self):
        mr = self.model_runner
        return mr.get_model() if hasattr(mr, "get_model") else mr.model

    def init_refit(self, config=None, overrides=None, hf=None, mode="auto", buffers="auto", rank_offset=0,
                   draft=None, receiver_id=None, tp_rank=None, tp_size=None, ep_size=None):
        """Create this worker's receivers (per-layer plan, ``mode``: auto,
        direct, checkpoint).  Returns the plan: which layers take which
        path and why, the receiver ids, and ``receivers`` (their number, for
        the trainer's refit.receivers)."""
        self.close_refit()
        vc = getattr(self, "vllm_config", None)
        rid = receiver_id or worker_identity(vc, self, rank_offset)[0]
        if tp_rank is not None or tp_size is not None:
            tp = (tp_rank or 0, tp_size or 1, ep_size or 0)
        else:
            tp = layout_position(vc, None if ep_size is None else bool(ep_size))
        dev = getattr(self, "device", None)
        quant = getattr(vc, "quant_config", None)
        main = WorkerRefit(self._refit_model(), _source({"config": config, "overrides": overrides, "hf": hf}, quant),
                           rid, tp, vc, None, dev, mode, buffers)
        d = None
        if draft:
            dm = draft_model_of(self.model_runner)
            if dm is None:
                main.close()
                raise RefitError(EINVAL, "init_refit: draft= given but this engine has no draft model "
                                 "(model_runner.drafter.model)")
            dq = getattr(dm, "quant_config", None)
            try:
                d = WorkerRefit(dm, _source(draft, dq if hasattr(dq, "get_name") else None), rid + "-draft", tp, vc,
                                None, dev, draft.get("mode", mode), buffers)
            except BaseException:
                main.close()
                raise
        self._refit = ModelRefits(main, d)
        return self._refit.info()

    def update_weights_from_refit(self, version=NEXT):
        """Pull `version` (default: the next) into the model (and the draft
        model); returns the pulls' figures."""
        r = getattr(self, "_refit", None)
        if r is None:
            raise RefitError(EINVAL, "update_weights_from_refit before init_refit")
        return r.update(version)

    def refit_info(self):
        """The plan and receivers of this worker: the extension's, else the
        native ``refit`` weight-transfer backend's."""
        r = getattr(self, "_refit", None)
        if r is not None:
            return r.info()
        eng = getattr(self, "weight_transfer_engine", None)
        return eng.info() if hasattr(eng, "info") else {"receivers": 0}

    def close_refit(self):
        r = getattr(self, "_refit", None)
        if r is not None:
            r.close()
        self._refit = None
