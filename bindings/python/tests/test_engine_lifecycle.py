"""The refit cycle around a running engine: pause (keep / abort / wait), pull,
reset the prefix cache, resume — on the stand-in AsyncLLM and over the HTTP
routes of `vllm serve` (vllm/entrypoints/rl/online/api_router.py) served by
a stand-in server; stream ordering, trainer positions, and importing
refit.vllm / refit.sglang without any engine."""

import asyncio
import json
import os
import subprocess
import sys
import threading
import types
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import engine_util as U

U.add_standins()

import refit  # noqa: E402
import refit.trainer  # noqa: E402
import refit.vllm  # noqa: E402
from refit.tensors import StreamOrder  # noqa: E402
from refit.vllm._lifecycle import _pause_kwargs  # noqa: E402
from vllm.distributed.weight_transfer.base import WeightTransferInitRequest, WeightTransferUpdateRequest  # noqa: E402
from vllm.entrypoints.llm import LLM  # noqa: E402
from vllm.platforms import configure  # noqa: E402
from vllm.v1.engine.async_llm import AsyncLLM  # noqa: E402

refit.vllm.register_plugin()


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    configure("cuda", 90)
    return U.Checkpoints(str(tmp_path_factory.mktemp("dense")), U.DENSE)


def run_async(tmp, ck, engine, refitter, versions, pause, **init):
    over = U.overrides(tmp)

    async def go():
        await refitter.init(U.CLUSTER, overrides=over, hf=ck.base, **init)
        tr = U.Trainer(ck.base, dict(over, **{"refit.receivers": refitter.receivers}), versions)
        tr.start()
        try:
            for v in versions:
                await refitter.update(v, pause=pause)
        finally:
            assert tr.finish() == list(versions)
    asyncio.run(go())


@pytest.mark.parametrize("pause,after", [("keep", "running"), ("abort", "aborted"), ("wait", "finished")])
def test_async_llm_cycle_in_order(tmp_path, dense, pause, after):
    """pause -> start/update/finish (while paused) -> reset prefix cache
    (while paused) -> resume; kept requests continue, aborted ones don't."""
    eng = AsyncLLM(model=dense.get(1, True), tensor_parallel_size=2, weight_transfer_config={"backend": "refit"})
    run_async(tmp_path, dense, eng, refit.vllm.AsyncRefitter(eng), [2], pause)
    ev = eng.events
    assert ev[0] == ("init_weight_transfer_engine",) and ev[1][:2] == ("collective_rpc", "native_info")
    paused = {"keep": "frozen", "abort": "aborted", "wait": "finished"}[pause]
    assert ev[2] == ("pause", pause, {"req-0": paused, "req-1": paused})
    assert ev[3:] == [("start_weight_update", True), ("update_weights", True), ("finish_weight_update", True),
                      ("reset_prefix_cache", True), ("resume",)]
    assert set(eng.requests.values()) == {after}
    for wa, wb in zip(eng.core.workers, LLM(model=dense.get(2, True), tensor_parallel_size=2).workers):
        U.assert_same_state(wa.model_runner.model, wb.model_runner.model)


def test_async_extension_path_and_resume_after_failure(tmp_path, dense):
    """A pull that fails (no version 9 is ever published) still resumes
    generation, and the error reaches the caller."""
    eng = AsyncLLM(model=dense.get(1, False), weight_transfer_config=None,
                   worker_extension_cls="refit.vllm.RefitWorkerExtension")
    r = refit.vllm.AsyncRefitter(eng, path="extension")
    over = U.overrides(tmp_path, **{"refit.timeout": "300ms"})

    async def go():
        await r.init(U.CLUSTER, overrides=over, hf=dense.base)
        await r.update(9, pause="keep")
    with pytest.raises(refit.Timeout):
        asyncio.run(go())
    names = [e[0] if e[0] != "collective_rpc" else e[1] for e in eng.events]
    assert names == ["init_refit", "pause", "update_weights_from_refit", "resume"]
    assert set(eng.requests.values()) == {"running"}


def test_pause_kwargs_for_each_vllm_form():
    async def new(*, mode="abort", clear_cache=True):
        pass

    async def old(*, wait_for_inflight_requests=False, clear_cache=True):
        pass
    assert _pause_kwargs(new, "keep") == {"mode": "keep", "clear_cache": False}
    assert _pause_kwargs(old, "wait") == {"wait_for_inflight_requests": True, "clear_cache": False}
    with pytest.raises(refit.InvalidArgument):
        refit.vllm.Refitter(LLM.__new__(LLM), path="sideways")


# ------------------------------------------------------------ vllm serve

class _Server(BaseHTTPRequestHandler):
    """vLLM's RL routes (api_router.py) over a stand-in LLM; records the
    route, the pause state at the time, and the query."""

    def log_message(self, *a):
        pass

    def _reply(self, obj, code=200):
        raw = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}") if n else {}

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        st = self.server.state
        st["log"].append((url.path, st["paused"]))
        if url.path == "/get_world_size":  # TP x PP (x DP, 1 here)
            return self._reply({"world_size": st["llm"].tp})
        self._reply({"detail": "Not Found"}, 404)

    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        st, llm, body = self.server.state, self.server.state["llm"], self._body()
        q = urllib.parse.parse_qs(url.query)
        st["log"].append((url.path, st["paused"]))
        try:
            if url.path == "/pause":
                st["paused"], st["mode"] = True, q.get("mode", ["abort"])[0]
            elif url.path == "/resume":
                st["paused"] = False
            elif url.path == "/init_weight_transfer_engine":
                llm.init_weight_transfer_engine(WeightTransferInitRequest(init_info=body["init_info"]))
            elif url.path == "/start_weight_update":
                llm.start_weight_update()
            elif url.path == "/start_draft_weight_update":
                llm.start_draft_weight_update()
            elif url.path == "/update_weights":
                llm.update_weights(WeightTransferUpdateRequest(update_info=body["update_info"]))
            elif url.path == "/finish_weight_update":
                llm.finish_weight_update()
            elif url.path == "/reset_prefix_cache":
                llm.reset_prefix_cache()
            elif url.path == "/collective_rpc":
                return self._reply({"results": llm.collective_rpc(body["method"], args=tuple(body.get("args", ())),
                                                                  kwargs=body.get("kwargs"))})
            else:
                return self._reply({"detail": "Not Found"}, 404)
        except Exception as e:  # noqa: BLE001 - the server's 500
            return self._reply({"error": str(e)}, 500)
        self._reply({"status": "ok"})


@pytest.fixture
def serve():
    servers = []

    def start(llm):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
        srv.state = {"llm": llm, "paused": False, "log": []}
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv, "http://127.0.0.1:%d" % srv.server_address[1]
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize("path", ["native", "extension"])
def test_http_routes_in_order(tmp_path, dense, serve, path):
    kw = {"weight_transfer_config": {"backend": "refit"}} if path == "native" else \
        {"weight_transfer_config": {"backend": "refit"}, "worker_extension_cls": "refit.vllm.RefitWorkerExtension"}
    llm = LLM(model=dense.get(1, True), tensor_parallel_size=2, **kw)
    srv, url = serve(llm)
    r = refit.vllm.HTTPRefitter(url, path=path)
    over = U.overrides(tmp_path)
    mode = "checkpoint" if path == "native" else "auto"
    r.init(U.CLUSTER, overrides=over, hf=dense.base, mode=mode)
    assert r.receivers == (2 if mode == "checkpoint" else 4)
    tr = U.Trainer(dense.base, dict(over, **{"refit.receivers": r.receivers}), [2])
    tr.start()
    r.update(2, pause="keep")
    assert tr.finish() == [2]
    routes = srv.state["log"]
    cycle = routes[routes.index(("/pause", False)):]
    body = ([("/start_weight_update", True), ("/update_weights", True), ("/finish_weight_update", True)]
            if path == "native" else [("/collective_rpc", True)])
    assert cycle == [("/pause", False)] + body + [("/reset_prefix_cache", True), ("/resume", True)]
    assert srv.state["mode"] == "keep"
    for wa, wb in zip(llm.workers, LLM(model=dense.get(2, True), tensor_parallel_size=2).workers):
        U.assert_same_state(wa.model_runner.model, wb.model_runner.model)


# ------------------------------------------------------------ streams, trainer

class _Cuda:
    """Records what refit asks of torch.cuda (no device here)."""

    def __init__(self, current="s1"):
        self.log, self.cur = [], current

    def current_stream(self, dev=None):
        return self.cur

    def default_stream(self, dev=None):
        cuda = self

        class S(str):
            def wait_event(self, ev):
                cuda.log.append(("wait_event", str(self), ev.n))
        return S("s0")

    def Event(self):
        cuda = self

        class E:
            n = len([x for x in cuda.log if x[0] == "record"])

            def record(self, stream):
                cuda.log.append(("record", stream, self.n))

            def synchronize(self):
                cuda.log.append(("event_sync", self.n))
        return E()

    def synchronize(self):
        self.log.append(("device_sync",))


def test_stream_order_uses_events_only():
    c = _Cuda()
    o = StreamOrder("cuda:0", cuda=c)
    o.before_pull()                 # nothing consumed yet: nothing to wait for
    o.fence()                       # direct path: the engine's last forward
    o.consumed()                    # load_weights queued its reads
    o.before_pull()                 # the next pull waits for exactly those
    o.before_publish()              # trainer on stream s1: s0 waits for it, host does not
    assert c.log == [("record", "s1", 0), ("event_sync", 0), ("record", "s1", 1), ("event_sync", 1),
                     ("record", "s1", 2), ("wait_event", "s0", 2)]
    c2 = _Cuda(current="s0")
    StreamOrder("cuda:0", cuda=c2).before_publish()  # on the default stream already: nothing
    assert c2.log == []
    assert not any(x[0] == "device_sync" for x in c.log + c2.log)


def test_trainer_position(monkeypatch):
    """Megatron-Core's parallel_state (a stand-in with its functions) when
    initialized; a single rank otherwise."""
    assert refit.trainer.position().origin in ("single", "torch.distributed")
    ps = types.ModuleType("megatron.core.parallel_state")
    vals = dict(get_tensor_model_parallel_rank=1, get_tensor_model_parallel_world_size=4,
                get_pipeline_model_parallel_rank=0, get_pipeline_model_parallel_world_size=1,
                get_expert_model_parallel_rank=3, get_expert_model_parallel_world_size=8,
                get_expert_tensor_parallel_rank=0, get_expert_tensor_parallel_world_size=1,
                get_data_parallel_rank=2)
    for k, v in vals.items():
        setattr(ps, k, (lambda v=v: v))
    ps.model_parallel_is_initialized = lambda: True
    for name, mod in (("megatron", types.ModuleType("megatron")), ("megatron.core", types.ModuleType("megatron.core")),
                      ("megatron.core.parallel_state", ps)):
        monkeypatch.setitem(sys.modules, name, mod)
    p = refit.trainer.position()
    assert p.origin == "megatron" and not p.publishes
    assert p.parallel == {"tp_rank": 1, "tp_size": 4, "pp_rank": 0, "pp_size": 1, "ep_rank": 3, "ep_size": 8,
                          "etp_rank": 0, "etp_size": 1}
    assert p.source_id == "trainer-tp1-pp0-ep3-etp0"


def test_import_without_engines():
    """refit.vllm and refit.sglang import with neither engine nor torch."""
    code = ("import sys, refit.vllm, refit.sglang, refit.trainer, refit.engines; "
            "bad = [m for m in ('vllm', 'sglang', 'torch', 'numpy') if m in sys.modules]; "
            "assert not bad, bad; print('ok')")
    env = dict(os.environ, PYTHONPATH=U.PKG_ROOT)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
