"""refit.vllm against the vLLM stand-in (tests/standins/vllm, written from
vLLM's source): real refit cycles — a trainer publishing in a thread, the
engine's workers pulling through refit.vllm — compared with what the same
engine holds after loading that version's checkpoint file itself.

Backends (vllm.platforms capability and vLLM's environment switches) pick
the FP8 post-load transform, as on a GPU: SM89 and SM100 keep the loaded
block-FP8 bytes (scale renamed), SM90 CUTLASS transposes weight_scale,
DeepGEMM with E8M0 requantizes, FlashInfer MoE swaps w13's halves."""


import pytest

import engine_util as U

U.add_standins()

import refit  # noqa: E402
import refit.vllm  # noqa: E402
from refit.engines import Source  # noqa: E402
from vllm.entrypoints.llm import LLM  # noqa: E402
from vllm.platforms import configure  # noqa: E402
from vllm.v1.worker import gpu_worker  # noqa: E402

BACKENDS = {
    "sm89": (89, {}),
    "sm90": (90, {}),
    "sm90-deepgemm": (90, {"VLLM_USE_DEEP_GEMM": "1"}),
    "sm90-flashinfer": (90, {"VLLM_USE_FLASHINFER_MOE_FP8": "1"}),
    "sm100": (100, {}),
}
refit.vllm.register_plugin()  # what the wheel's vllm.general_plugins entry point does


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return U.Checkpoints(str(tmp_path_factory.mktemp("dense")), U.DENSE)


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    return U.Checkpoints(str(tmp_path_factory.mktemp("moe")), U.MOE, seed=11)


@pytest.fixture(scope="module")
def draft(tmp_path_factory):
    return U.Checkpoints(str(tmp_path_factory.mktemp("draft")), U.DRAFT, seed=13)


def use_backend(monkeypatch, name):
    cap, env = BACKENDS[name]
    for k in ("VLLM_USE_DEEP_GEMM", "VLLM_USE_FLASHINFER_MOE_FP8"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    configure("cuda", cap)


@pytest.fixture(autouse=True)
def platform_reset():
    yield
    configure("cuda", 90)
    gpu_worker.API = "v0.25"


def models(llm):
    return [w.model_runner.model for w in llm.workers]


def engine(path, tp=1, **kw):
    kw.setdefault("weight_transfer_config", {"backend": "refit"})
    return LLM(model=path, tensor_parallel_size=tp, **kw)


def cycle(tmp, ck, refitter, versions, trainer_tp=1, receivers=None, **init):
    """init the refitter, run a trainer publishing `versions`, update to each."""
    over = U.overrides(tmp)
    infos = refitter.init(U.CLUSTER, overrides=over, hf=ck.base, **init)
    tr = U.Trainer(ck.base, dict(over, **{"refit.receivers": receivers or refitter.receivers}), versions, trainer_tp)
    tr.start()
    try:
        for v in versions:
            refitter.update(v)
    finally:
        assert tr.finish() == list(versions)
    return infos


def assert_engine_equals(a, b):
    for r, (ma, mb) in enumerate(zip(models(a), models(b))):
        U.assert_same_state(ma, mb, "worker %d" % r)


# ------------------------------------------------------------ the old binding

def test_old_direct_binding_breaks_on_postprocessed_fp8(tmp_path, dense, monkeypatch):
    """Binding refit's vLLM layout onto named_parameters (what the old example
    did): on SM90, Fp8LinearMethod deleted weight_scale_inv (strict binding
    fails) and stored weight_scale transposed, so a non-strict binding
    writes new FP8 weights beside stale scales.  The plan refuses exactly
    these layers."""
    use_backend(monkeypatch, "sm90")
    model = models(engine(dense.get(1, fp8=True), weight_transfer_config=None))[0]
    params = dict(model.named_parameters())
    over = U.overrides(tmp_path)
    src = Source(U.CLUSTER, dict(over, **{"model.fp8.enabled": True}), dense.base)
    layout = src.layout("vllm")
    missing = [t.name for t in layout if t.name not in params]
    assert len(missing) == 8 and all(n.endswith(".weight_scale_inv") for n in missing)  # strict: NotFound
    before = {n: p.tobytes() for n, p in params.items() if n.endswith(".weight_scale")}
    tr = U.Trainer(dense.base, over, [2])
    tr.start()
    with src.context() as ctx, ctx.receiver(target="vllm", receiver_id="old-binding") as rcv:
        for t in layout:
            if t.name in params:
                rcv.bind(t.name, params[t.name])
        rcv.allocate()  # non-strict: the scales land in refit's memory, not the model's
        rcv.pull(2)
    tr.finish()
    fresh = dict(models(engine(dense.get(2, fp8=True), weight_transfer_config=None))[0].named_parameters())
    new_w = [n for n in params if n.endswith(".weight") and "proj" in n and params[n].tobytes() == fresh[n].tobytes()]
    kept = [n for n in before if params[n].tobytes() == before[n]]
    wrong = [n for n in before if params[n].tobytes() != fresh[n].tobytes()]
    # Version 2's weights beside version 1's scales: silently wrong.
    assert len(new_w) == 8 and len(kept) == 8 and wrong, (new_w, kept, wrong)
    plan = refit.vllm.plan_model(model, layout)
    assert sorted(p.prefix for p in plan.checkpoint) == sorted(n.rsplit(".", 1)[0] for n in kept)
    assert all("transposed" in p.reason for p in plan.checkpoint)


# ------------------------------------------------------------ checkpoint path

@pytest.mark.parametrize("backend,tp,fp8", [("sm89", 1, True), ("sm90", 2, True), ("sm90-deepgemm", 1, True),
                                            ("sm90", 2, False)])
def test_checkpoint_path_equals_engine_load(tmp_path, dense, monkeypatch, backend, tp, fp8):
    """mode='checkpoint': every layer through vLLM's load_weights and
    layerwise reload; after two cycles the engine holds what loading version
    3's checkpoint gives, on every backend's post-load transform."""
    use_backend(monkeypatch, backend)
    a = engine(dense.get(1, fp8), tp)
    r = refit.vllm.Refitter(a)
    infos = cycle(tmp_path, dense, r, [2, 3], trainer_tp=2, mode="checkpoint")
    assert all(i["main"]["direct"] == [] and i["main"]["receivers"] == 1 for i in infos)
    assert r.receivers == tp
    assert_engine_equals(a, engine(dense.get(3, fp8), tp))


# ------------------------------------------------------------ per-layer plan

@pytest.mark.parametrize("backend,tp,fp8,fp8_direct", [("sm89", 1, True, True), ("sm100", 2, True, True),
                                                       ("sm90", 2, True, False), ("sm90-deepgemm", 1, True, False),
                                                       ("sm90", 2, False, True)])
def test_auto_plan_per_layer(tmp_path, dense, monkeypatch, backend, tp, fp8, fp8_direct):
    """mode='auto': layers whose parameters are the checkpoint's bytes are
    written directly (norms, embeddings, unquantized linears, block FP8 on
    Triton kernels with its scale renamed), the others through the engine's
    loader; either way the result is the engine's own load."""
    use_backend(monkeypatch, backend)
    a = engine(dense.get(1, fp8), tp)
    r = refit.vllm.Refitter(a)
    infos = cycle(tmp_path, dense, r, [2], trainer_tp=1, mode="auto")
    main = infos[0]["main"]
    linears = [p for p in main["direct"] + list(main["checkpoint"]) if p.endswith("_proj")]
    assert len(linears) == 8
    if fp8_direct:
        assert main["checkpoint"] == {} and main["receivers"] == 1 and main["checkpoint_bytes"] == 0
        assert main["ids"] == ["vllm-dp0-r0"]
    else:
        assert sorted(main["checkpoint"]) == sorted(linears) and main["receivers"] == 2
        assert main["ids"] == ["vllm-dp0-r0-direct", "vllm-dp0-r0-ckpt"]
        assert "model.norm" in main["direct"] and "model.embed_tokens" in main["direct"]
    assert r.receivers == tp * main["receivers"]
    assert_engine_equals(a, engine(dense.get(2, fp8), tp))


def test_direct_mode_refuses_transformed_layers(tmp_path, dense, monkeypatch):
    use_backend(monkeypatch, "sm90")
    r = refit.vllm.Refitter(engine(dense.get(1, fp8=True)))
    with pytest.raises(refit.NotSupported) as e:
        r.init(U.CLUSTER, overrides=U.overrides(tmp_path), hf=dense.base, mode="direct")
    msg = str(e.value)
    assert "8 layer(s)" in msg and "model.layers.1.mlp.down_proj" in msg and "transposed" in msg


def test_unknown_quant_method_takes_checkpoint_path(dense, monkeypatch):
    """A quant method refit has no rule for is never written directly."""
    use_backend(monkeypatch, "sm89")
    model = models(engine(dense.get(1, fp8=True), weight_transfer_config=None))[0]

    class SomeNewMethod:
        pass
    layer = model.model.layers[0].self_attn.o_proj
    layer.quant_method = SomeNewMethod()
    amap, why = refit.vllm.decide(layer)
    assert amap is None and "SomeNewMethod" in why


def test_unverified_vllm_version_keeps_fp8_on_checkpoint_path(dense, monkeypatch):
    """On a vLLM version whose post-load steps refit has not read, block FP8
    is not trusted even where the rules would allow it (SM89 Triton)."""
    import vllm
    use_backend(monkeypatch, "sm89")
    model = models(engine(dense.get(1, fp8=True), weight_transfer_config=None))[0]
    layer = model.model.layers[0].self_attn.qkv_proj
    assert refit.vllm.decide(layer)[0] is not None
    monkeypatch.setattr(vllm, "__version__", "0.30.1")
    amap, why = refit.vllm.decide(layer)
    assert amap is None and "not verified" in why
    assert refit.vllm.decide(model.model.norm)[0] == {}  # no post-load step: still direct


@pytest.mark.parametrize("backend,tp,ep,experts_direct", [("sm89", 1, False, True), ("sm89", 2, True, True),
                                                          ("sm90-flashinfer", 1, False, False),
                                                          ("sm90-deepgemm", 1, False, False)])
def test_moe_backends(tmp_path, moe, monkeypatch, backend, tp, ep, experts_direct):
    """Fp8MoEMethod: Triton keeps the experts as loaded (direct), FlashInfer
    swaps w13's gate/up halves and DeepGEMM requantizes and relays out the
    scales (checkpoint path); expert parallelism places whole experts."""
    use_backend(monkeypatch, backend)
    a = engine(moe.get(1, True), tp, enable_expert_parallel=ep)
    r = refit.vllm.Refitter(a)
    infos = cycle(tmp_path, moe, r, [2], mode="auto")
    main = infos[0]["main"]
    experts = "model.layers.0.mlp.experts"
    assert (experts in main["direct"]) == experts_direct, main
    if not experts_direct:
        assert {"sm90-flashinfer": "swapped", "sm90-deepgemm": "DeepGEMM"}[backend] in main["checkpoint"][experts]
    assert_engine_equals(a, engine(moe.get(2, True), tp, enable_expert_parallel=ep))


# ------------------------------------------------------------ vLLM API forms

def test_v017_worker_runs_the_reload(tmp_path, dense, monkeypatch):
    """vLLM v0.15-v0.24: the worker wraps receive_weights in its layerwise
    reload and hands model.load_weights; refit's direct layers are written
    into the kernel tensors the reload puts back."""
    use_backend(monkeypatch, "sm90")
    gpu_worker.API = "v0.17"
    a = engine(dense.get(1, True), 2)
    r = refit.vllm.Refitter(a)
    cycle(tmp_path, dense, r, [2], mode="checkpoint")
    assert_engine_equals(a, engine(dense.get(2, True), 2))


def test_worker_extension(tmp_path, dense, monkeypatch):
    """Without the weight-transfer API: worker_extension_cls and collective_rpc."""
    use_backend(monkeypatch, "sm90-deepgemm")
    a = engine(dense.get(1, True), 2, weight_transfer_config=None,
               worker_extension_cls="refit.vllm.RefitWorkerExtension")
    r = refit.vllm.Refitter(a, path="extension")
    cycle(tmp_path, dense, r, [2, 3], mode="auto")
    assert [c[0] if c[0] != "collective_rpc" else c[1] for c in a.calls] == \
        ["init_refit", "update_weights_from_refit", "reset_prefix_cache", "update_weights_from_refit",
         "reset_prefix_cache"]
    assert_engine_equals(a, engine(dense.get(3, True), 2))


def test_native_call_order(tmp_path, dense, monkeypatch):
    use_backend(monkeypatch, "sm89")
    a = engine(dense.get(1, False))
    cycle(tmp_path, dense, refit.vllm.Refitter(a), [2])
    assert a.calls == [("init_weight_transfer_engine",), ("collective_rpc", "native_info"),
                       ("start_weight_update",), ("update_weights",), ("finish_weight_update",),
                       ("reset_prefix_cache",)]


# ------------------------------------------------------------ identity

def test_two_dp_engines_distinct_ids_and_both_acks(tmp_path, dense, monkeypatch):
    """Two data-parallel engines (dp ranks 0, 1) with default ids: distinct
    receivers, both counted; the trainer's wait_released returns only once
    both acknowledged (a real refit cycle through the C library)."""
    use_backend(monkeypatch, "sm89")
    engines = [engine(dense.get(1, True), 1, data_parallel_size=2, data_parallel_rank=d) for d in (0, 1)]
    over = U.overrides(tmp_path)
    rs = [refit.vllm.Refitter(e) for e in engines]
    ids = [r.init(U.CLUSTER, overrides=over, hf=dense.base)[0]["main"]["ids"] for r in rs]
    assert ids == [["vllm-dp0-r0"], ["vllm-dp1-r1"]]
    total = sum(r.receivers for r in rs)
    assert total == refit.vllm.expected_receivers(2) == 2
    tr = U.Trainer(dense.base, dict(over, **{"refit.receivers": total}), [2])
    tr.start()
    rs[0].update(2)
    tr.join(1.0)
    assert tr.is_alive(), "the trainer was released with one of two engines updated"
    rs[1].update(2)
    assert tr.finish() == [2]
    for e in engines:
        assert_engine_equals(e, engine(dense.get(2, True)))


def test_receiver_id_scheme():
    assert refit.engines.receiver_id("vllm", dp_rank=1, world_size=4, rank=2) == "vllm-dp1-r6"
    assert refit.engines.receiver_id("vllm", 0, 4, 2, rank_offset=8, role="draft") == "vllm-dp0-r10-draft"
    assert refit.engines.expected_receivers(8, receivers_per_worker=2, engines=3) == 48


# ------------------------------------------------------------ draft model

@pytest.mark.parametrize("path", ["native", "extension"])
def test_draft_model_refit_in_the_same_cycle(tmp_path, dense, draft, monkeypatch, path):
    """Speculative decoding: the drafter's model is refit with the main model,
    each from its own publisher (its own namespace)."""
    use_backend(monkeypatch, "sm90")
    kw = {"speculative_config": {"model": draft.get(1)}}
    if path == "extension":
        kw.update(weight_transfer_config=None, worker_extension_cls="refit.vllm.RefitWorkerExtension")
    a = engine(dense.get(1, True), 2, **kw)
    over, dover = U.overrides(tmp_path / "m"), U.overrides(tmp_path / "d")
    r = refit.vllm.Refitter(a, path)
    r.init(U.CLUSTER, overrides=over, hf=dense.base,
           draft={"config": U.CLUSTER, "overrides": dover, "hf": draft.base})
    assert r.receivers_of == {"main": 4, "draft": 2}  # main: FP8 on SM90 is mixed; draft: bf16, all direct
    trs = [U.Trainer(dense.base, dict(over, **{"refit.receivers": r.receivers_of["main"]}), [2]),
           U.Trainer(draft.base, dict(dover, **{"refit.receivers": r.receivers_of["draft"]}), [2])]
    for t in trs:
        t.start()
    r.update(2)
    for t in trs:
        assert t.finish() == [2]
    b = engine(dense.get(2, True), 2, weight_transfer_config=None, speculative_config={"model": draft.get(2)})
    assert_engine_equals(a, b)
    for wa, wb in zip(a.workers, b.workers):
        U.assert_same_state(wa.model_runner.drafter.model, wb.model_runner.drafter.model, "draft")
    if path == "native":
        assert [c[0] for c in a.calls[2:]] == ["start_weight_update", "update_weights", "finish_weight_update",
                                               "start_draft_weight_update", "update_weights",
                                               "finish_weight_update", "reset_prefix_cache"]


def test_checkpoint_format_from_quant_config():
    """The format refit pulls follows the engine's quantization config."""
    from vllm.model_executor.layers.quantization.fp8 import Fp8Config
    assert refit.vllm.fp8_overrides(None) == {"model.fp8.enabled": False}
    assert refit.vllm.fp8_overrides(Fp8Config(True, weight_block_size=[128, 128])) == {"model.fp8.enabled": True}
    assert refit.vllm.fp8_overrides(Fp8Config(True, weight_block_size=[128, 128], ignored_layers=["lm_head"])) == \
        {"model.fp8.enabled": True, "model.fp8.exclude": "lm_head.*"}
    assert refit.vllm.fp8_overrides(Fp8Config(False)) == {"model.fp8.enabled": False}  # online FP8: bf16
    with pytest.raises(refit.NotSupported) as e:
        refit.vllm.fp8_overrides(Fp8Config(True, weight_block_size=None))  # per-tensor FP8 checkpoint
    assert "fp8" in str(e.value)
