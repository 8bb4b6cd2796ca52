"""Error paths: every failure is a RefitError carrying refit's status, the
status's name (refit_strerror) and the message (refit_error_message)."""

import ctypes
import os
import subprocess
import sys

import pytest

np = pytest.importorskip("numpy")

import refit
from refit import errors
from conftest import CLUSTER, PKG_ROOT, cluster_overrides

NORM = "decoder.final_layernorm.weight"  # a replicated Megatron tensor: [hidden]
HIDDEN = 256


@pytest.fixture
def ctx(tmp_path, ckpt):
    with refit.Context(CLUSTER, overrides=cluster_overrides(tmp_path, **{"refit.timeout": "300ms"}),
                       hf=ckpt) as c:
        yield c


@pytest.fixture
def pub(ctx):
    with ctx.publisher(tp_rank=0, tp_size=2, source_id="err-pub") as p:
        yield p


def test_error_carries_status_name_message(pub):
    with pytest.raises(refit.NotFound) as e:
        pub.add("decoder.layers.99.mlp.linear_fc1.weight", np.zeros((4, 4), np.float32))
    err = e.value
    assert isinstance(err, refit.RefitError) and isinstance(err, LookupError)
    assert err.status == errors.ENOENT == -3 and err.code == "ENOENT"
    assert err.name == refit.strerror(errors.ENOENT)
    lib = refit._lib.load()
    assert err.name == lib.refit_strerror(-3).decode()
    assert "decoder.layers.99.mlp.linear_fc1.weight" in err.message and "err-pub" in err.message
    assert err.message in str(err)
    assert lib.refit_error_status() == 0  # consumed


def test_bad_dtype(pub):
    with pytest.raises(refit.InvalidArgument) as e:
        pub.add(NORM, np.zeros(HIDDEN, np.uint16))  # bf16 bits without dtype=
    assert "dtype='bf16'" in e.value.message and e.value.status == errors.EINVAL
    with pytest.raises(refit.InvalidArgument):
        pub.add(NORM, np.zeros(HIDDEN, np.complex64))
    with pytest.raises(refit.InvalidArgument) as e:
        pub.add(NORM, np.zeros(HIDDEN, np.uint16), dtype="bogus")
    assert "bogus" in e.value.message
    with pytest.raises(refit.InvalidArgument) as e:  # 4-byte elements cannot be BF16
        pub.add(NORM, np.zeros(HIDDEN, np.uint32), dtype="bf16")
    with pytest.raises(refit.InvalidArgument):  # a real float16 array is not bf16
        pub.add(NORM, np.zeros(HIDDEN, np.float16), dtype="bf16")
    pub.add(NORM, np.zeros(HIDDEN, np.uint16), dtype="bf16")
    pub.add(NORM, np.zeros(HIDDEN, np.uint16), dtype=refit.DType.BF16)


def test_non_contiguous(pub, ctx):
    a = np.zeros((HIDDEN, 2), np.float32)
    with pytest.raises(refit.InvalidArgument) as e:
        pub.add(NORM, a[:, 0])
    assert "contiguous" in e.value.message
    w = np.zeros((HIDDEN, 128), np.uint16)
    with pytest.raises(refit.InvalidArgument) as e:
        pub.add("decoder.layers.0.self_attention.linear_qkv.weight", w.T, dtype="bf16")
    assert "contiguous" in e.value.message
    rcv = ctx.receiver()
    with pytest.raises(refit.InvalidArgument):
        rcv.bind("model.norm.weight", np.zeros((HIDDEN, 2), np.uint16)[:, 1], dtype="bf16")


def test_wrong_shape(pub, ctx):
    with pytest.raises(refit.InvalidArgument) as e:
        pub.add(NORM, np.zeros(HIDDEN + 1, np.uint16), dtype="bf16")
    assert "[%d]" % HIDDEN in e.value.message and "[%d]" % (HIDDEN + 1) in e.value.message
    rcv = ctx.receiver(target="vllm")
    with pytest.raises(refit.InvalidArgument) as e:
        rcv.bind("model.norm.weight", np.zeros(HIDDEN * 2, np.uint16), dtype="bf16")
    assert "model.norm.weight" in e.value.message


def test_unknown_receiver_name(ctx):
    rcv = ctx.receiver(target="vllm")
    with pytest.raises(refit.NotFound) as e:
        rcv.bind("model.layers.0.mlp.nonexistent.weight", np.zeros(4, np.float32))
    assert e.value.status == errors.ENOENT and "nonexistent" in e.value.message
    with pytest.raises(refit.NotFound):
        rcv.array("no.such.tensor")
    with pytest.raises(refit.InvalidArgument):  # not bound, not allocated
        rcv.array("model.norm.weight")


def test_read_only_destination(ctx):
    a = np.zeros(HIDDEN, np.uint16)
    a.setflags(write=False)
    with pytest.raises(refit.InvalidArgument) as e:
        ctx.receiver().bind("model.norm.weight", a, dtype="bf16")
    assert "read-only" in e.value.message


def test_pull_timeout_carries_status(ctx):
    rcv = ctx.receiver()
    rcv.allocate()
    with pytest.raises(refit.Timeout) as e:
        rcv.pull(7)  # nobody publishes: refit.timeout (300 ms) expires
    assert isinstance(e.value, TimeoutError)
    assert e.value.status == errors.ETIMEDOUT and e.value.code == "ETIMEDOUT"
    assert e.value.name == refit.strerror(errors.ETIMEDOUT)
    assert "300 ms" in e.value.message


def test_wait_released_timeout(pub):
    pub.add(NORM, np.zeros(HIDDEN, np.uint16), dtype="bf16")
    pub.publish(1)
    with pytest.raises(refit.Timeout) as e:
        pub.wait_released(1, timeout=0.2)
    assert "v1" in e.value.message


def test_buffers_and_odd_inputs(pub):
    buf = bytearray(HIDDEN * 2)
    pub.add(NORM, buf, dtype="bf16")  # writable buffer, shape from its length
    with pytest.raises(refit.InvalidArgument):
        pub.add(NORM, bytearray(HIDDEN * 2))  # no dtype
    with pytest.raises(refit.InvalidArgument):
        pub.add(NORM, bytes(HIDDEN * 2), dtype="bf16")  # read-only
    with pytest.raises(refit.InvalidArgument):
        pub.add(NORM, 42)
    with pytest.raises(refit.InvalidArgument):
        pub.add(NORM, np.float32(1.0))  # 0-d
    with pytest.raises(refit.InvalidArgument):
        pub.add(NORM, np.zeros(HIDDEN, ">f4"))  # big-endian


def test_keep_alive(pub):
    """The publisher keeps what it was handed: refit holds its address."""
    import gc
    import weakref

    class Arr(np.ndarray):
        pass
    a = np.zeros(HIDDEN, np.uint16).view(Arr)
    r = weakref.ref(a)
    pub.add(NORM, a, dtype="bf16")
    del a
    gc.collect()
    assert r() is not None
    pub.add(NORM, np.zeros(HIDDEN, np.uint16), dtype="bf16")  # replaced: retired until released
    gc.collect()
    assert r() is not None
    pub.close()
    gc.collect()
    assert r() is None


def test_closed_objects(ctx):
    p = ctx.publisher()
    ctx.close()  # closes its publishers and receivers first
    assert p.closed and ctx.closed
    with pytest.raises(refit.RefitError):
        p.publish(1)


def test_bad_config(tmp_path):
    with pytest.raises(refit.RefitError) as e:
        refit.Context(str(tmp_path / "missing.yaml"))
    assert e.value.status < 0 and "missing.yaml" in str(e.value)
    with pytest.raises(refit.RefitError) as e:
        refit.Context(CLUSTER, overrides=["not-an-assignment"])
    with pytest.raises(refit.RefitError) as e:
        refit.Context(CLUSTER, overrides={"store.plugin": "nonexistent"})
    assert "nonexistent" in str(e.value)


def test_library_not_found(tmp_path):
    env = dict(os.environ, REFIT_LIBRARY=str(tmp_path / "librefit.so"), PYTHONPATH=PKG_ROOT)
    r = subprocess.run([sys.executable, "-c", "import refit; refit.Context()"], env=env, capture_output=True,
                       text=True)
    assert r.returncode != 0 and "cannot find librefit" in r.stderr and "REFIT_LIBRARY" in r.stderr


def test_plugin_path_from_build_tree():
    """Found in a build tree, the package points REFIT_PLUGIN_PATH at its plugins."""
    env = {k: v for k, v in os.environ.items() if k != "REFIT_PLUGIN_PATH"}
    env["PYTHONPATH"] = PKG_ROOT
    r = subprocess.run([sys.executable, "-c", "import os, refit; print(refit.library_path()); "
                        "print(os.environ['REFIT_PLUGIN_PATH'])"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lib, path = r.stdout.split()
    build = os.path.dirname(os.path.dirname(lib))
    assert os.path.join(build, "plugins", "transport", "tcp") in path.split(":")
    env["REFIT_PLUGIN_PATH"] = "/nonexistent"  # the user's choice is kept
    r = subprocess.run([sys.executable, "-c", "import os, refit; refit.library_path(); "
                        "print(os.environ['REFIT_PLUGIN_PATH'])"], env=env, capture_output=True, text=True)
    assert r.stdout.strip() == "/nonexistent"


def test_dtype_parse():
    D = refit.DType
    assert refit.dtypes.parse("bf16") is D.BF16 and refit.dtypes.parse("BF16") is D.BF16
    assert refit.dtypes.parse("F8_E4M3") is D.F8_E4M3 and refit.dtypes.parse("float8_e4m3fn") is D.F8_E4M3
    assert refit.dtypes.parse(np.dtype(np.float32)) is D.F32 and refit.dtypes.parse(np.int64) is D.I64
    assert refit.dtypes.parse(10) is D.F32
    lib = refit._lib.load()
    for d in D:
        if d is not D.INVALID:  # the Python enum and sizes agree with librefit's
            assert lib.refit_dtype_name(int(d)).decode() == d.name
            assert lib.refit_dtype_size(int(d)) == d.itemsize
    with pytest.raises(refit.InvalidArgument):
        refit.dtypes.parse(0)
    # source[64], xfer_start, xfer_end, fallbacks (and padding), store_round_trips,
    # notes_ignored and its padding, bytes_refetched, bytes_failed_share
    assert ctypes.sizeof(refit._lib._PullStats) == 8 * 2 + 9 * 8 + 3 * 8 + 2 * 4 + 8 + 64 + 2 * 8 + 8 + 8 + 8 + 8 + 8 \
        + 8 + 8


def test_library_from_ld_library_path(tmp_path):
    """Outside any build tree, librefit comes from the system search path."""
    import shutil
    from conftest import BUILD
    pkg = tmp_path / "pkg"
    shutil.copytree(os.path.join(PKG_ROOT, "refit"), str(pkg / "refit"))  # no source tree above it
    env = {k: v for k, v in os.environ.items() if k not in ("REFIT_BUILD_ROOT", "REFIT_LIBRARY")}
    env.update(PYTHONPATH=str(pkg), LD_LIBRARY_PATH=os.path.join(BUILD, "core"))
    r = subprocess.run([sys.executable, "-c", "import refit; print(refit.library_path())"], env=env,
                       capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "librefit.so"
