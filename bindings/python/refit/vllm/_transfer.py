"""refit as a vLLM weight-transfer backend (vllm/distributed/weight_transfer).

Imported only where vLLM is (vLLM's factory imports it by name once the
``refit`` backend is registered: refit.vllm.register_plugin, which vLLM's
``vllm.general_plugins`` entry point calls in every process).

vLLM has changed this API twice; the engine follows each form it was
written from:

- before v0.25 (v0.16 has it; nccl_engine.py at 04b06efe): ``__init__(config,
  parallel_config)``; the *worker* runs the layerwise reload around
  ``receive_weights(update_info, load_weights)`` when the update is in
  checkpoint format (refit's always is), and hands ``model.load_weights``;
- v0.25+ (base.py at 02f250b0): ``__init__(config, vllm_config, device,
  model)``; the engine owns ``start_weight_update`` /
  ``finish_weight_update`` and ``receive_weights(update_info)`` loads into
  ``self.model`` — the main model, or the draft model between
  ``start_draft_weight_update`` and ``finish_weight_update``
  (``set_weight_update_target``).

Init info (``init_weight_transfer_engine``): ``config`` (cluster file),
``overrides``, ``hf`` (checkpoint directory for config.json), ``mode``
('auto' | 'direct' | 'checkpoint'), ``buffers`` ('auto' | 'device' |
'host'), ``rank_offset`` (distinct per independent engine, as for NCCL),
``draft`` (the draft model's {config, overrides, hf}).  Update info
(``update_weights``): ``version`` (default: the next one).
"""

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Optional

from .. import engines as E
from ..core import NEXT
from . import _adapter as A
from ._worker import ModelRefits, WorkerRefit, fp8_overrides, layout_position, worker_identity

_base = A.weight_transfer_base()
if _base is None:
    raise ImportError("this vLLM has no vllm.distributed.weight_transfer (vLLM before 0.16): use "
                      "refit.vllm.RefitWorkerExtension instead")


def _model_quant(model):
    """The quantization config a vLLM model was built with (model.quant_config)."""
    q = getattr(model, "quant_config", None)
    return q if hasattr(q, "get_name") else None


@dataclass
class RefitInitInfo(_base.WeightTransferInitInfo):
    config: Optional[str] = None
    overrides: dict = field(default_factory=dict)
    hf: Optional[str] = None
    mode: str = "auto"
    buffers: str = "auto"
    rank_offset: int = 0
    draft: Optional[dict] = None


@dataclass
class RefitUpdateInfo(_base.WeightTransferUpdateInfo):
    version: int = NEXT
    # refit hands vLLM checkpoint-format tensors (the checkpoint path) and
    # writes kernel-format layers itself: the worker's layerwise reload (before v0.25)
    # must run around receive_weights.
    is_checkpoint_format: bool = True


class RefitWeightTransferEngine(_base.WeightTransferEngine):
    """vLLM weight-transfer backend ``refit`` (module doc)."""

    init_info_cls = RefitInitInfo
    update_info_cls = RefitUpdateInfo
    supports_draft_weight_update = True

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self._refits = None
        self._init = None
        self.last_stats = None

    # ---- lifecycle ----------------------------------------------------
    def init_transfer_engine(self, init_info):
        self._init = init_info
        model = getattr(self, "_default_model", None) or getattr(self, "model", None)
        if model is not None:
            self._refits = self._build(model, getattr(self, "_default_model_config", None))

    def _vllm_config(self):
        # Engines before v0.25 get the parallel config only.
        vc = getattr(self, "vllm_config", None)
        if vc is None:
            vc = SimpleNamespace(parallel_config=getattr(self, "parallel_config", None), quant_config=None,
                                 model_config=None)
        return vc

    def _source(self, spec, quant_config):
        o = fp8_overrides(quant_config)
        o.update((spec or {}).get("overrides") or {})
        return E.Source((spec or {}).get("config"), o, (spec or {}).get("hf"))

    def _build(self, model, model_config, draft_model=None):
        info = self._init
        vc = self._vllm_config()
        rid, _ = worker_identity(vc, rank_offset=info.rank_offset)
        tp = layout_position(vc)
        dev = getattr(self, "device", None)
        quant = getattr(vc, "quant_config", None) or _model_quant(model)
        main = WorkerRefit(model, self._source({"config": info.config, "overrides": info.overrides, "hf": info.hf},
                                               quant), rid, tp, vc, model_config, dev, info.mode, info.buffers)
        return ModelRefits(main)

    def _draft(self, model, model_config):
        if self._refits.draft is None:
            if not self._init.draft:
                raise RuntimeError("refit: a draft-model update, but init_info has no 'draft' model to pull")
            vc = self._vllm_config()
            rid, _ = worker_identity(vc, rank_offset=self._init.rank_offset)
            quant = _model_quant(model)
            self._refits.draft = WorkerRefit(model, self._source(self._init.draft, quant), rid + "-draft",
                                             layout_position(vc), vc, model_config, getattr(self, "device", None),
                                             self._init.draft.get("mode", self._init.mode), self._init.buffers)
        return self._refits.draft

    def start_weight_update(self):
        # Each cycle runs vLLM's layerwise reload itself, around just the
        # layers on the checkpoint path (WorkerRefit.update).
        return None

    def finish_weight_update(self):
        return None

    def receive_weights(self, update_info, load_weights=None):
        version = int(update_info.version)
        if load_weights is not None:
            # Before v0.25: the worker runs the reload and hands model.load_weights.
            if self._refits is None:
                model = getattr(load_weights, "__self__", None)
                if model is None:
                    raise RuntimeError("refit: the worker passed a loader that is not model.load_weights; start "
                                       "the update with is_checkpoint_format=True")
                self._refits = self._build(model, getattr(self, "model_config", None))
            self.last_stats = {"main": self._refits.main.update(version, load=load_weights)}
            return
        target = getattr(self, "model", None)
        default = getattr(self, "_default_model", target)
        if target is not None and target is not default:
            self.last_stats = {"draft": self._draft(target, getattr(self, "model_config", None)).update(version)}
        else:
            self.last_stats = {"main": self._refits.main.update(version)}

    def info(self):
        """The plan and receivers of this worker (for the trainer's refit.receivers)."""
        return self._refits.info() if self._refits is not None else {"receivers": 0}

    def shutdown(self):
        if self._refits is not None:
            self._refits.close()
        self._refits = None

    @staticmethod
    def trainer_send_weights(iterator, trainer_args: Any):
        """Trainer side: add (Megatron name, tensor) pairs to a refit
        Publisher and publish ``version`` (trainer_args: publisher, version,
        wait=True).  A trainer usually keeps its Publisher and just publishes."""
        args = trainer_args if isinstance(trainer_args, dict) else vars(trainer_args)
        pub = args["publisher"]
        for name, t in iterator:
            pub.add(name, t)
        pub.publish(int(args["version"]))
        if args.get("wait", True):
            pub.wait_released(int(args["version"]))


def native_info(worker):
    """For collective_rpc(native_info), after init_weight_transfer_engine:
    this worker's refit plan and receivers.  The engine only meets the
    draft model at its first draft update (and, before v0.25, the model at
    its first update); here, where the worker is at hand, their receivers
    are made now so that they are counted."""
    eng = getattr(worker, "weight_transfer_engine", None)
    if not hasattr(eng, "info"):
        return {"receivers": 0}
    runner = getattr(worker, "model_runner", None)
    if eng._refits is None and eng._init is not None and runner is not None:
        # Engines before v0.25 never see the model: take it from the worker.
        model = runner.get_model() if hasattr(runner, "get_model") else runner.model
        eng._refits = eng._build(model, getattr(getattr(worker, "vllm_config", None), "model_config", None))
    drafter = getattr(getattr(worker, "model_runner", None), "drafter", None)
    if eng._init is not None and eng._init.draft and drafter is not None and eng._refits is not None:
        eng._draft(drafter.model, getattr(drafter, "model_config", None))
    return eng.info()


__all__ = ["RefitWeightTransferEngine", "RefitInitInfo", "RefitUpdateInfo", "native_info"]
