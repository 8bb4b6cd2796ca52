"""refit for SGLang: refit's weights into a running SGLang (docs/engines.md).

    engine = sglang.Engine(model_path=ckpt, tp_size=2,
                           custom_weight_loader=[refit.sglang.LOADER])
    r = refit.sglang.Refitter(engine)
    r.init("cluster.yaml", hf=ckpt)            # r.receivers: for the trainer's refit.receivers
    for step in ...:
        r.update(step)                         # pause, pull, flush the cache, continue

refit reaches every TP worker through SGLang's own entry point,
``update_weights_from_tensor(named_tensors, load_format=...)``: with
``load_format`` naming a custom weight loader (SGLang's
``--custom-weight-loader``), each worker's ModelRunner calls
``refit.sglang.load_refit(model, named_tensors)``; the tensors carry only a
small command (init, or update to version V), and the worker pulls from
refit itself.  The two paths are those of refit.vllm, decided per layer
(refit/sglang/_plan.py): direct writes where SGLang keeps the loaded
bytes, else checkpoint-format tensors through ``model.load_weights`` with
SGLang's quant methods' ``restore_weights_before_loading`` (where SGLang
has it) and ``process_weights_after_loading`` around it.  After the update
SGLang flushes its cache (``flush_cache=True``).

The workers write their plans (receivers, ids, which layer takes which
path) to ``info_dir`` (one JSON file each), which the Refitter reads back:
SGLang returns nothing of a custom loader.
"""

import glob
import json
import os
import tempfile

from .. import engines as E
from ..core import NEXT
from ..errors import EINVAL, ENOTSUP, InvalidArgument, NotSupported, RefitError
from ..host import HostTensor
from ..vllm._worker import WorkerRefit
from ._plan import decide, plan_model

LOADER = "refit.sglang.load_refit"
_WORKERS = {}  # id(model) -> (SglangWorker, model): one per SGLang TP worker


# ------------------------------------------------------------ payload

def payload(cmd, **fields):
    """[(name, uint8 tensor)] carrying a command to every worker's loader: a
    torch tensor where torch is (SGLang serializes those), else a HostTensor."""
    raw = json.dumps(dict(fields, cmd=cmd)).encode()
    try:
        import torch
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()
    except ImportError:
        t = HostTensor.from_bytes((len(raw),), "u8", raw)
    return [("refit.%s" % cmd, t)]


def _decode(named):
    if len(named) != 1 or not named[0][0].startswith("refit."):
        raise InvalidArgument(EINVAL, "refit.sglang.load_refit: expected one refit command tensor, got %s"
                              % [n for n, _ in named])
    t = named[0][1]
    raw = t.tobytes() if isinstance(t, HostTensor) else bytes(t.cpu().numpy().tobytes())
    return json.loads(raw.decode())


# ------------------------------------------------------------ the worker side

def _tp_position():
    from sglang.srt.distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size
    return get_tensor_model_parallel_rank(), get_tensor_model_parallel_world_size()


def _fp8_overrides(model):
    from ..vllm._worker import fp8_overrides
    q = getattr(model, "quant_config", None)
    return fp8_overrides(q if hasattr(q, "get_name") else None)


def _quantized_layers(modules):
    return [m for root in modules for m in root.modules() if getattr(m, "quant_method", None) is not None]


def check_reloadable(modules):
    """NotSupported, before anything is pulled, when a layer of the checkpoint
    path holds its weights in a runtime format that this SGLang cannot put
    back to the checkpoint's (UE8M0-packed scales without
    restore_weights_before_loading): loading into it would fail halfway."""
    for m in _quantized_layers(modules):
        if getattr(m.quant_method, "restore_weights_before_loading", None) is None and \
                any(getattr(p, "format_ue8m0", False) for p in m._parameters.values() if p is not None):
            raise NotSupported(ENOTSUP, "this SGLang keeps UE8M0-packed FP8 scales and has no "
                               "restore_weights_before_loading: refit cannot load checkpoint-format weights into "
                               "its layers (%s); run DeepGEMM without UE8M0 or an SGLang with hot reload"
                               % type(m).__name__)


def load_checkpoint_format(model, named, modules):
    """SGLang's loader for checkpoint-format tensors of `modules`: the quant
    methods' restore_weights_before_loading (newer SGLang: puts the
    checkpoint layout back, e.g. UE8M0-packed scales), model.load_weights,
    then process_weights_after_loading."""
    layers = _quantized_layers(modules)
    check_reloadable(modules)
    for m in layers:
        restore = getattr(m.quant_method, "restore_weights_before_loading", None)
        if restore is not None:
            restore(m)
    model.load_weights(iter(named))
    for m in layers:
        m.quant_method.process_weights_after_loading(m)


class SglangWorker:
    """One SGLang TP worker's receivers (main model)."""

    def __init__(self, model, spec):
        tp_rank, tp_size = _tp_position()
        rid = E.receiver_id("sglang", 0, tp_size, tp_rank, spec.get("rank_offset", 0))
        ov = _fp8_overrides(model)
        ov.update(spec.get("overrides") or {})
        src = E.Source(spec.get("config"), ov, spec.get("hf"))
        ep = tp_size if spec.get("ep") and tp_size > 1 else 0
        self.refit = WorkerRefit(model, src, rid, (tp_rank, tp_size, ep), None, None, None,
                                 spec.get("mode", "auto"), spec.get("buffers", "auto"), planner=plan_model,
                                 loader=load_checkpoint_format)
        self.info_dir = spec.get("info_dir")
        self.rid = rid
        try:
            check_reloadable([model] if self.refit.direct is None else self.refit._ckpt_modules)
        except BaseException:
            self.refit.close()
            raise

    def write_info(self, extra=None):
        if not self.info_dir:
            return
        info = dict(self.refit.info(), **(extra or {}))
        tmp = os.path.join(self.info_dir, ".%s.tmp" % self.rid)
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, os.path.join(self.info_dir, "%s.json" % self.rid))


def load_refit(model, named_tensors):
    """SGLang custom weight loader (``custom_weight_loader=[refit.sglang.LOADER]``)."""
    cmd = _decode(list(named_tensors))
    key = id(model)
    if cmd["cmd"] == "init":
        old = _WORKERS.pop(key, None)
        if old is not None:
            old[0].refit.close()
        w = SglangWorker(model, cmd)
        _WORKERS[key] = (w, model)
        w.write_info()
        return
    if cmd["cmd"] == "update":
        if key not in _WORKERS:
            raise RefitError(EINVAL, "refit.sglang: update before init on this worker")
        w = _WORKERS[key][0]
        stats = w.refit.update(int(cmd.get("version", NEXT)))
        w.write_info({"last": stats})
        return
    if cmd["cmd"] == "close":
        old = _WORKERS.pop(key, None)
        if old is not None:
            old[0].refit.close()
        return
    raise InvalidArgument(EINVAL, "refit.sglang: unknown command %r" % cmd["cmd"])


# ------------------------------------------------------------ the engine side

SGLANG_PAUSE = {"keep": "in_place", "abort": "abort", "retract": "retract"}


class Refitter:
    """Refit cycles on an SGLang ``Engine`` (its update_weights_from_tensor,
    pause_generation / continue_generation, flush after the update)."""

    def __init__(self, engine, info_dir=None):
        self.engine = engine
        self.info_dir = info_dir or tempfile.mkdtemp(prefix="refit-sglang-")
        self.receivers = None
        self.infos = []
        self.log = []

    def _update(self, named, flush):
        self.log.append("update_weights_from_tensor")
        r = self.engine.update_weights_from_tensor(named_tensors=named, load_format=LOADER, flush_cache=flush)
        ok, msg = r if isinstance(r, tuple) else (getattr(r, "success", True), getattr(r, "message", ""))
        if not ok:
            raise RefitError(EINVAL, "SGLang update_weights_from_tensor failed: %s" % msg)

    def _read_infos(self):
        out = []
        for p in sorted(glob.glob(os.path.join(self.info_dir, "*.json"))):
            with open(p) as f:
                out.append(json.load(f))
        return out

    def init(self, config=None, overrides=None, hf=None, mode="auto", buffers="auto", rank_offset=0, ep=False):
        if overrides is not None and not hasattr(overrides, "items"):
            overrides = dict(o.split("=", 1) for o in overrides)
        for p in glob.glob(os.path.join(self.info_dir, "*.json")):
            os.unlink(p)
        self._update(payload("init", config=config, overrides=dict(overrides or {}), hf=hf, mode=mode,
                             buffers=buffers, rank_offset=rank_offset, ep=ep, info_dir=self.info_dir), False)
        self.infos = self._read_infos()
        self.receivers = sum(int(i.get("receivers", 0)) for i in self.infos)
        return self.infos

    def update(self, version=NEXT, pause="keep"):
        """pause (keep -> SGLang's in_place, abort, retract) -> pull and load
        on every worker -> SGLang flushes its cache -> continue."""
        if pause is not None and pause not in SGLANG_PAUSE:
            raise InvalidArgument(EINVAL, "pause %r (keep, abort, retract or None)" % (pause,))
        paused = False
        if pause is not None and hasattr(self.engine, "pause_generation"):
            self.log.append("pause_generation")
            self.engine.pause_generation(mode=SGLANG_PAUSE[pause])
            paused = True
        try:
            self._update(payload("update", version=int(version)), True)
        finally:
            if paused:
                self.log.append("continue_generation")
                self.engine.continue_generation()
        self.infos = self._read_infos()
        return [i.get("last") for i in self.infos]


__all__ = ["LOADER", "load_refit", "load_checkpoint_format", "payload", "Refitter", "plan_model", "decide"]
