"""refit.sglang against the SGLang stand-in (tests/standins/sglang, written
from SGLang's model_runner.py and Fp8LinearMethod): refit reaches each TP
worker through update_weights_from_tensor with a custom weight loader; the
engine ends up holding what loading that version's checkpoint gives it.

Hopper (SM90): SGLang keeps block-FP8 weights as loaded (direct path).
Blackwell with JIT DeepGEMM: weights requantized to UE8M0, scales packed
(checkpoint path through restore -> load_weights -> process)."""

import pytest

import engine_util as U

U.add_standins()

import refit  # noqa: E402
import refit.sglang  # noqa: E402
from sglang.srt.entrypoints.engine import Engine  # noqa: E402
from sglang.srt.layers.quantization import fp8 as sgl_fp8  # noqa: E402
from vllm.platforms import configure  # noqa: E402


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return U.Checkpoints(str(tmp_path_factory.mktemp("dense")), U.DENSE)


@pytest.fixture(autouse=True)
def reset(monkeypatch):
    monkeypatch.delenv("SGLANG_ENABLE_JIT_DEEPGEMM", raising=False)
    yield
    configure("cuda", 90)
    sgl_fp8.HOT_RELOAD = True


def blackwell_deepgemm(monkeypatch):
    configure("cuda", 100)
    monkeypatch.setenv("SGLANG_ENABLE_JIT_DEEPGEMM", "1")


def engine(path, tp=1):
    return Engine(path, tp_size=tp, custom_weight_loader=[refit.sglang.LOADER])


def assert_engine_equals(a, b):
    for r, (ra, rb) in enumerate(zip(a.runners, b.runners)):
        U.assert_same_state(ra.model, rb.model, "tp rank %d" % r)


def cycle(tmp, ck, r, versions, **init):
    over = U.overrides(tmp)
    infos = r.init(U.CLUSTER, overrides=over, hf=ck.base, **init)
    tr = U.Trainer(ck.base, dict(over, **{"refit.receivers": r.receivers}), versions)
    tr.start()
    try:
        for v in versions:
            r.update(v)
    finally:
        assert tr.finish() == list(versions)
    return infos


@pytest.mark.parametrize("tp,fp8", [(1, True), (2, True), (2, False)])
def test_hopper_direct_path(tmp_path, dense, tp, fp8):
    """SGLang keeps loaded block FP8 as it is on Hopper: every layer direct."""
    configure("cuda", 90)
    a = engine(dense.get(1, fp8), tp)
    r = refit.sglang.Refitter(a, info_dir=str(tmp_path / "info"))
    (tmp_path / "info").mkdir()
    infos = cycle(tmp_path, dense, r, [2, 3])
    assert all(i["checkpoint"] == {} and i["receivers"] == 1 for i in infos)
    assert sorted(i["ids"][0] for i in infos) == ["sglang-dp0-r%d" % k for k in range(tp)]
    assert_engine_equals(a, engine(dense.get(3, fp8), tp))


@pytest.mark.parametrize("mode", ["auto", "checkpoint"])
def test_blackwell_deepgemm_checkpoint_path(tmp_path, dense, monkeypatch, mode):
    """UE8M0: the FP8 linears take SGLang's loader (restore the checkpoint
    scale layout, load_weights, requantize); the result is SGLang's own load."""
    blackwell_deepgemm(monkeypatch)
    a = engine(dense.get(1, True), 2)
    (tmp_path / "info").mkdir()
    r = refit.sglang.Refitter(a, info_dir=str(tmp_path / "info"))
    infos = cycle(tmp_path, dense, r, [2], mode=mode)
    if mode == "auto":
        assert all(len(i["checkpoint"]) == 8 and "UE8M0" in next(iter(i["checkpoint"].values())) for i in infos)
        assert r.receivers == 4
    assert_engine_equals(a, engine(dense.get(2, True), 2))


def test_no_hot_reload_refused_before_pulling(tmp_path, dense, monkeypatch):
    """An SGLang without restore_weights_before_loading cannot take
    checkpoint-format weights into UE8M0 layers: refused at init, clearly."""
    blackwell_deepgemm(monkeypatch)
    sgl_fp8.HOT_RELOAD = False
    a = engine(dense.get(1, True))
    with pytest.raises(refit.NotSupported) as e:
        refit.sglang.Refitter(a, info_dir=str(tmp_path)).init(U.CLUSTER, overrides=U.overrides(tmp_path),
                                                               hf=dense.base)
    assert "restore_weights_before_loading" in str(e.value)


def test_cycle_order_and_flush(tmp_path, dense):
    configure("cuda", 90)
    a = engine(dense.get(1, False))
    (tmp_path / "info").mkdir()
    cycle(tmp_path, dense, refit.sglang.Refitter(a, info_dir=str(tmp_path / "info")), [2])
    assert a.events == [("update_weights_from_tensor", refit.sglang.LOADER, False),
                        ("pause_generation", "in_place"),
                        ("update_weights_from_tensor", refit.sglang.LOADER, True),
                        ("flush_cache", True),
                        ("continue_generation",)]


def test_loader_must_be_registered(tmp_path, dense):
    """SGLang runs only the custom loaders it was started with."""
    a = Engine(dense.get(1, False), custom_weight_loader=[])
    with pytest.raises(NotImplementedError):
        refit.sglang.Refitter(a, info_dir=str(tmp_path)).init(U.CLUSTER, overrides=U.overrides(tmp_path),
                                                               hf=dense.base)
