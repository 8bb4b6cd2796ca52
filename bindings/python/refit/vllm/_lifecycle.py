"""A refit cycle on a running vLLM: pause generation, pull, reset the
prefix cache, resume — for ``LLM``, ``AsyncLLM`` and ``vllm serve``.

Pause modes are vLLM's (docs/training/async_rl): ``keep`` freezes in-flight
requests, which continue after resume (tokens before the pause came from
the old weights, after it from the new; their KV cache stays as it was);
``abort`` aborts them (partial results returned); ``wait`` lets them
finish first.  After the update the prefix cache is reset, so no new
request reuses KV computed with the old weights.  Whatever fails after the
pause, generation is resumed and the error re-raised.

Two paths into the workers:

- ``native``: vLLM's weight-transfer API with the ``refit`` backend
  (``init_weight_transfer_engine``, then per cycle ``start_weight_update``,
  ``update_weights``, ``finish_weight_update``, and for a draft model
  ``start_draft_weight_update`` ... ``finish_weight_update``);
- ``extension``: ``collective_rpc`` into refit.vllm.RefitWorkerExtension
  (``init_refit``, ``update_weights_from_refit``), for vLLM without it.

``receivers`` after ``init`` is what this engine adds to the trainer's
``refit.receivers``.
"""

import inspect
import json
import urllib.parse
import urllib.request

from ..core import NEXT
from ..errors import EINVAL, InvalidArgument
from . import _adapter as A

PAUSE_MODES = ("keep", "abort", "wait")


def _check_pause(mode):
    if mode is not None and mode not in PAUSE_MODES:
        raise InvalidArgument(EINVAL, "pause mode %r (keep, abort, wait, or None for no pause)" % (mode,))


def init_info(config=None, overrides=None, hf=None, mode="auto", buffers="auto", rank_offset=0, draft=None):
    """The init_info dict of the ``refit`` backend (and init_refit's kwargs)."""
    if overrides is not None and not hasattr(overrides, "items"):
        overrides = dict(o.split("=", 1) for o in overrides)
    return {"config": config, "overrides": dict(overrides or {}), "hf": hf, "mode": mode, "buffers": buffers,
            "rank_offset": rank_offset, "draft": draft}


def _requests():
    base = A.weight_transfer_base()
    return base.WeightTransferInitRequest, base.WeightTransferUpdateRequest


def _pause_kwargs(fn, mode):
    """kwargs for pause_generation: mode= (vLLM >= 0.16), or the older
    wait_for_inflight_requests= / clear_cache= form."""
    params = inspect.signature(fn).parameters
    if "mode" in params:
        kw = {"mode": mode}
        if "clear_cache" in params:
            kw["clear_cache"] = False  # the prefix cache is reset after the update instead
        return kw
    kw = {}
    if "wait_for_inflight_requests" in params:
        kw["wait_for_inflight_requests"] = mode == "wait"
    if "clear_cache" in params:
        kw["clear_cache"] = False
    return kw


def _start_kwargs(fn):
    params = inspect.signature(fn).parameters
    return {"is_checkpoint_format": True} if "is_checkpoint_format" in params else {}


def _count(infos):
    """(total, {"main": n, "draft": m}) receivers of the workers' plans: the
    trainer of each model sets its refit.receivers to that model's count."""
    by = {"main": 0, "draft": 0}
    for i in infos or ():
        if not isinstance(i, dict):
            continue
        for k in by:
            if isinstance(i.get(k), dict):
                by[k] += int(i[k].get("receivers", 0))
    return by["main"] + by["draft"], by


class Refitter:
    """Refit cycles on a vLLM ``LLM`` (offline, synchronous)."""

    def __init__(self, llm, path="auto"):
        self.llm = llm
        if path == "auto":
            path = "native" if hasattr(llm, "init_weight_transfer_engine") else "extension"
        if path not in ("native", "extension"):
            raise InvalidArgument(EINVAL, "path %r (native, extension or auto)" % (path,))
        self.path = path
        self.receivers = None
        self.receivers_of = {}
        self.has_draft = False
        self.log = []

    def _call(self, name, *args, **kwargs):
        self.log.append(name)
        return getattr(self.llm, name)(*args, **kwargs)

    def init(self, *args, **kwargs):
        """Create every worker's receivers; returns the workers' plans."""
        info = init_info(*args, **kwargs)
        self.has_draft = bool(info["draft"])
        if self.path == "native":
            InitReq, _ = _requests()
            self._call("init_weight_transfer_engine", InitReq(init_info=info))
            from ._transfer import native_info
            infos = self._call("collective_rpc", native_info)
        else:
            infos = self._call("collective_rpc", "init_refit", kwargs=info)
        self.receivers, self.receivers_of = _count(infos)
        return infos

    def _pause(self, mode):
        fn = getattr(self.llm, "pause_generation", None)
        if mode is not None and fn is not None:  # LLM.generate blocks: nothing runs meanwhile otherwise
            self._call("pause_generation", **_pause_kwargs(fn, mode))
            return True
        return False

    def _native_round(self, start, version):
        _, UpdReq = _requests()
        fn = getattr(self.llm, start, None)
        if fn is not None:
            self._call(start, **_start_kwargs(fn))
        self._call("update_weights", UpdReq(update_info={"version": int(version)}))
        if hasattr(self.llm, "finish_weight_update"):
            self._call("finish_weight_update")

    def update(self, version=NEXT, pause="keep"):
        """pause -> pull (main model, then draft) -> reset prefix cache -> resume."""
        _check_pause(pause)
        paused = self._pause(pause)
        try:
            if self.path == "native":
                self._native_round("start_weight_update", version)
                if self.has_draft:
                    self._native_round("start_draft_weight_update", version)
                result = None
            else:
                result = self._call("collective_rpc", "update_weights_from_refit", args=(version,))
            self._call("reset_prefix_cache")
        finally:
            if paused:
                self._call("resume_generation")
        return result


class AsyncRefitter(Refitter):
    """Refit cycles on a vLLM ``AsyncLLM`` (all methods are coroutines)."""

    async def _acall(self, name, *args, **kwargs):
        self.log.append(name)
        r = getattr(self.llm, name)(*args, **kwargs)
        return await r if inspect.isawaitable(r) else r

    async def init(self, *args, **kwargs):
        info = init_info(*args, **kwargs)
        self.has_draft = bool(info["draft"])
        if self.path == "native":
            InitReq, _ = _requests()
            await self._acall("init_weight_transfer_engine", InitReq(init_info=info))
            from ._transfer import native_info
            infos = await self._acall("collective_rpc", native_info)
        else:
            infos = await self._acall("collective_rpc", "init_refit", kwargs=info)
        self.receivers, self.receivers_of = _count(infos)
        return infos

    async def _native_round(self, start, version):
        _, UpdReq = _requests()
        fn = getattr(self.llm, start, None)
        if fn is not None:
            await self._acall(start, **_start_kwargs(fn))
        await self._acall("update_weights", UpdReq(update_info={"version": int(version)}))
        if hasattr(self.llm, "finish_weight_update"):
            await self._acall("finish_weight_update")

    async def update(self, version=NEXT, pause="keep"):
        _check_pause(pause)
        paused = False
        if pause is not None:
            await self._acall("pause_generation", **_pause_kwargs(self.llm.pause_generation, pause))
            paused = True
        try:
            if self.path == "native":
                await self._native_round("start_weight_update", version)
                if self.has_draft:
                    await self._native_round("start_draft_weight_update", version)
                result = None
            else:
                result = await self._acall("collective_rpc", "update_weights_from_refit", args=(version,))
            await self._acall("reset_prefix_cache")
        finally:
            if paused:
                await self._acall("resume_generation")
        return result


class HTTPRefitter:
    """Refit cycles on ``vllm serve`` over its RL routes (vLLM's
    entrypoints/rl/online/api_router.py; ``VLLM_SERVER_DEV_MODE=1`` exposes
    them, with ``/reset_prefix_cache`` and ``/collective_rpc``):

    ============================  =====================================
    POST /pause?mode=keep          pause (keep | abort | wait)
    POST /init_weight_transfer_engine {"init_info": {...}}   once
    POST /start_weight_update      per cycle, then
    POST /update_weights           {"update_info": {"version": V}}
    POST /finish_weight_update
    POST /start_draft_weight_update  ... the same for a draft model
    POST /reset_prefix_cache
    POST /resume
    POST /collective_rpc           {"method": ..., "args": [...]}: the extension path
    GET  /get_world_size?include_dp=true
    ============================  =====================================

    The server runs with ``--weight-transfer-config '{"backend": "refit"}'``
    (native) or ``--worker-extension-cls refit.vllm.RefitWorkerExtension``
    (extension; with both, ``refit_info`` reports the native plan)."""

    def __init__(self, base_url, path="native", timeout=600):
        if path not in ("native", "extension"):
            raise InvalidArgument(EINVAL, "path %r (native or extension)" % (path,))
        self.base = base_url.rstrip("/")
        self.path = path
        self.timeout = timeout
        self.receivers = None
        self.receivers_of = {}
        self.has_draft = False
        self.log = []

    def _req(self, method, route, body=None, query=None):
        url = self.base + route + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        self.log.append(route)
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def _rpc(self, method, args=(), kwargs=None):
        r = self._req("POST", "/collective_rpc", {"method": method, "args": list(args), "kwargs": kwargs or {}})
        return r.get("results", r) if isinstance(r, dict) else r

    def init(self, *args, **kwargs):
        info = init_info(*args, **kwargs)
        self.has_draft = bool(info["draft"])
        if self.path == "native":
            self._req("POST", "/init_weight_transfer_engine", {"init_info": info})
            if info["mode"] in ("direct", "checkpoint"):
                world = self._req("GET", "/get_world_size", query={"include_dp": "true"})["world_size"]
                self.receivers_of = {"main": world, "draft": world if self.has_draft else 0}
                self.receivers = world * (1 + int(self.has_draft))
                return None
            infos = self._rpc("refit_info")
        else:
            infos = self._rpc("init_refit", kwargs=info)
        self.receivers, self.receivers_of = _count(infos)
        return infos

    def update(self, version=NEXT, pause="keep"):
        _check_pause(pause)
        if pause is not None:
            self._req("POST", "/pause", query={"mode": pause, "wait_for_inflight_requests":
                                               str(pause == "wait").lower(), "clear_cache": "false"})
        try:
            result = None
            if self.path == "native":
                rounds = ["/start_weight_update"] + (["/start_draft_weight_update"] if self.has_draft else [])
                for start in rounds:
                    self._req("POST", start, {"is_checkpoint_format": True})
                    self._req("POST", "/update_weights", {"update_info": {"version": int(version)}})
                    self._req("POST", "/finish_weight_update", {})
            else:
                result = self._rpc("update_weights_from_refit", args=(version,))
            self._req("POST", "/reset_prefix_cache")
        finally:
            if pause is not None:
                self._req("POST", "/resume")
        return result

