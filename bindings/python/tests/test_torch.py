"""The PyTorch path: tensors through data_ptr() and device.  Skipped where
torch is not installed; the CUDA tests need a GPU (the GPU machine runs
them: `python3 -m pytest -q bindings/python/tests/test_torch.py`)."""

import os
import subprocess

import pytest

np = pytest.importorskip("numpy")

torch = pytest.importorskip("torch")

import refit  # noqa: E402
import refit.safetensors as st  # noqa: E402
from refit._tensor import tensor_ref  # noqa: E402
from conftest import CLUSTER, FP8, REFIT_BIN, assert_same_as, cluster_overrides  # noqa: E402
import refit.tensors  # noqa: E402

HAVE_FP8 = hasattr(torch, "float8_e4m3fn")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

TORCH_OF = {refit.DType.BF16: torch.bfloat16, refit.DType.F32: torch.float32, refit.DType.F16: torch.float16}
if HAVE_FP8:
    TORCH_OF[refit.DType.F8_E4M3] = torch.float8_e4m3fn


def to_torch(a, d):
    """numpy raw bits (uint16 for bf16, uint8 for fp8) -> a torch tensor of dtype d."""
    if d in (refit.DType.BF16, refit.DType.F16):
        return torch.from_numpy(a.view(np.int16)).view(TORCH_OF[d])
    if d == refit.DType.F8_E4M3:
        return torch.from_numpy(a).view(TORCH_OF[d])
    return torch.from_numpy(a)


def as_bytes(t):
    t = t.detach().cpu().contiguous()
    return t.view(torch.uint8).numpy() if t.element_size() > 1 or t.dtype != torch.uint8 else t.numpy()


def test_dtype_mapping():
    assert tensor_ref(torch.zeros(3, dtype=torch.bfloat16), "x").dtype is refit.DType.BF16
    assert tensor_ref(torch.zeros(3, dtype=torch.float32), "x").dtype is refit.DType.F32
    assert tensor_ref(torch.zeros(3, dtype=torch.float16), "x").dtype is refit.DType.F16
    assert tensor_ref(torch.zeros(3, dtype=torch.int64), "x").dtype is refit.DType.I64
    assert tensor_ref(torch.zeros(3, dtype=torch.int16), "x", dtype="bf16").dtype is refit.DType.BF16
    if HAVE_FP8:
        assert tensor_ref(torch.empty(3, dtype=torch.float8_e4m3fn), "x").dtype is refit.DType.F8_E4M3
    r = tensor_ref(torch.zeros((2, 3), dtype=torch.bfloat16), "x")
    assert r.shape == (2, 3) and r.memtype == refit.MEM_HOST and r.nbytes == 12
    with pytest.raises(refit.InvalidArgument):
        tensor_ref(torch.zeros(3, dtype=torch.float16), "x", dtype="bf16")  # real f16 is not bf16
    with pytest.raises(refit.InvalidArgument):
        tensor_ref(torch.zeros(3, dtype=torch.complex64), "x")
    r = tensor_ref(torch.zeros(8, dtype=torch.float32)[2:], "x")  # an offset view: data_ptr includes it
    assert r.shape == (6,)


def test_non_contiguous_torch():
    with pytest.raises(refit.InvalidArgument) as e:
        tensor_ref(torch.zeros((4, 8), dtype=torch.bfloat16).t(), "w")
    assert "contiguous" in e.value.message
    with pytest.raises(refit.InvalidArgument):
        tensor_ref(torch.zeros((4, 8), dtype=torch.bfloat16)[:, ::2], "w")


def test_torch_publisher_to_refit_pull(tmp_path, ckpt, shards, expected):
    """Trainer tensors as torch CPU tensors (bf16) in this process; `refit pull`
    in another; the result equals refit convert's."""
    over = cluster_overrides(tmp_path, receivers=1)
    shard = os.path.join(shards(1), "rank0.safetensors")
    hdr, _ = st.header(shard)
    params = {n: to_torch(a, hdr[n][0]).clone() for n, a in st.read(shard).items()}
    assert any(p.dtype == torch.bfloat16 for p in params.values())
    out = str(tmp_path / "got.safetensors")
    env = dict(os.environ)
    for k, v in over.items():
        env["REFIT_" + k.upper().replace(".", "_")] = str(v)
    with refit.Context(CLUSTER, overrides=over, hf=ckpt) as ctx, ctx.publisher() as pub:
        for n, p in params.items():
            pub.add(n, p)
        pull = subprocess.Popen([REFIT_BIN, "pull", "--config", CLUSTER, "--hf", ckpt, "--tp", "1", "--rank", "0",
                                 "--version", "1", "--out", out, "--target", "vllm"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            pub.publish(1)
            pub.wait_released(1, timeout=60)
        finally:
            text, _ = pull.communicate(timeout=60)
        assert pull.returncode == 0, text
    assert_same_as(st.read(out), expected.get(1, tp=1, rank=0, fp8=False))


@pytest.mark.skipif(not HAVE_FP8, reason="torch without float8_e4m3fn")
def test_torch_receiver_cpu_fp8(tmp_path, ckpt, shards, expected, trainers):
    """Destinations as torch CPU tensors: bf16, float8_e4m3fn, float32 scales."""
    over = cluster_overrides(tmp_path, receivers=1)
    trainers.start(ckpt, shards(2), tp=2, steps=1, overrides=over)
    with refit.Context(CLUSTER, overrides=dict(over, **FP8), hf=ckpt) as ctx, ctx.receiver() as rcv:
        dst = {t.name: torch.empty(t.shape, dtype=TORCH_OF[t.dtype]) for t in rcv.tensors()}
        assert any(d.dtype == torch.float8_e4m3fn for d in dst.values())
        rcv.bind_all(dst)
        rcv.pull(1)
        assert_same_as({n: as_bytes(t) for n, t in dst.items()}, expected.get(1, fp8=True))
    trainers.wait()


def librefit_has_cuda():
    return refit._lib.load().refit_cuda_built() == 1


@cuda
def test_cuda_memory_taken_or_refused_clearly(tmp_path, ckpt):
    """A librefit built with CUDA takes CUDA tensors (docs/cuda.md); one
    without refuses them with NotSupported naming tensor and device."""
    with refit.Context(CLUSTER, overrides=cluster_overrides(tmp_path), hf=ckpt) as ctx:
        pub = ctx.publisher(tp_size=1)
        w = torch.zeros(256, dtype=torch.bfloat16, device="cuda")
        if librefit_has_cuda():
            pub.add("decoder.final_layernorm.weight", w)
            ctx.receiver().bind("model.norm.weight", torch.zeros(256, dtype=torch.bfloat16, device="cuda"))
            return
        with pytest.raises(refit.NotSupported) as e:
            pub.add("decoder.final_layernorm.weight", w)
        assert e.value.status == refit.errors.ENOTSUP
        assert "CUDA" in e.value.message and "cuda:0" in e.value.message
        rcv = ctx.receiver()
        with pytest.raises(refit.NotSupported) as e:
            rcv.bind("model.norm.weight", w)
        assert "CUDA" in e.value.message


def _pullers(over, ckpt):
    from refit.engines import Source
    return Source(CLUSTER, dict(over, **FP8), ckpt)


@cuda
@pytest.mark.skipif(not HAVE_FP8, reason="torch without float8_e4m3fn")
def test_checkpoint_puller_device_buffers(tmp_path, ckpt, shards, expected, trainers):
    """refit.vllm's checkpoint path on a GPU: buffers on the device (pinned
    host buffers where librefit takes no CUDA memory), holding exactly the
    FP8 checkpoint's tensors."""
    from refit.engines import CheckpointPuller
    over = cluster_overrides(tmp_path, receivers=1)
    trainers.start(ckpt, shards(2), tp=2, steps=2, overrides=over)
    like = torch.empty(1, device="cuda")
    alloc = lambda shape, d: refit.tensors.empty_like_layout(shape, d, like)  # noqa: E731
    host = lambda shape, d: refit.tensors.empty_like_layout(shape, d, like, "cpu", pin=True)  # noqa: E731
    p = CheckpointPuller(_pullers(over, ckpt), "ckpt-gpu", alloc, fallback_alloc=host)
    try:
        where = {str(b.device) for b in p.buffers.values()}
        assert where == ({"cuda:0"} if librefit_has_cuda() else {"cpu"})
        for v in (1, 2):
            assert p.pull(v).version == v
            assert_same_as({n: as_bytes(b) for n, b in p.named_tensors()}, expected.get(v, fp8=True, target="hf"))
    finally:
        p.close()
    trainers.wait()


@pytest.mark.skipif(not HAVE_FP8, reason="torch without float8_e4m3fn")
def test_direct_puller_torch_params(tmp_path, ckpt, shards, expected, trainers):
    """refit.vllm's direct path: torch parameters (nn.Parameter) bound in place."""
    from refit.engines import DirectPuller
    over = cluster_overrides(tmp_path, receivers=1)
    trainers.start(ckpt, shards(2), tp=2, steps=1, overrides=over)
    hdr, _ = st.header(expected.get(1, fp8=True))
    params = {n: torch.nn.Parameter(torch.empty(s, dtype=TORCH_OF[d]), requires_grad=False)
              for n, (d, s) in hdr.items()}
    p = DirectPuller(_pullers(over, ckpt), "direct-torch", 0, 1, 0, params)
    try:
        assert p.pull(1).version == 1
        assert_same_as({n: as_bytes(t) for n, t in params.items()}, expected.get(1, fp8=True))
    finally:
        p.close()
    trainers.wait()
