"""refit.host.HostTensor (the standard-library tensor of refit.vllm,
refit.sglang and the stand-in engines) and refit.StandinShard."""

import os

import pytest

import engine_util as U
import refit
import refit.safetensors as st
from refit.host import HostTensor, bf16_to_float, float_to_bf16


def test_views_share_bytes_like_torch():
    t = HostTensor.from_list((2, 3), "f32", [1, 2, 3, 4, 5, 6])
    assert t.narrow(1, 1, 2).tolist() == [2, 3, 5, 6]
    assert t.select(0, 1).tolist() == [4, 5, 6]
    assert t.t().tolist() == [1, 4, 2, 5, 3, 6] and not t.t().is_contiguous()
    t.narrow(1, 0, 1).copy_(HostTensor.from_list((2, 1), "f32", [9, 8]))  # writes through the view
    assert t.tolist() == [9, 2, 3, 8, 5, 6]
    u = HostTensor((3, 2), "f32").copy_(t.t())  # strided source
    assert u.tolist() == [9, 8, 2, 5, 3, 6]
    with pytest.raises(refit.InvalidArgument):
        t.narrow(0, 1, 2)
    with pytest.raises(refit.InvalidArgument):
        HostTensor((2, 3), "bf16").copy_(t)  # dtypes must agree
    from refit._tensor import tensor_ref
    with pytest.raises(refit.InvalidArgument) as e:
        tensor_ref(t.t(), "x")
    assert "contiguous" in str(e.value)


def test_bf16_rounding():
    assert float_to_bf16(1.0) == 0x3F80 and bf16_to_float(0x3F80) == 1.0
    assert float_to_bf16(1.0 + 2 ** -8) == 0x3F80       # tie to even
    assert float_to_bf16(1.0 + 3 * 2 ** -9) == 0x3F81
    assert HostTensor.from_list((2,), "bf16", [0.5, -2.0]).tolist() == [0.5, -2.0]


def test_safetensors_round_trip(tmp_path):
    a = HostTensor.from_list((2, 2), "bf16", [1, 2, 3, 4])
    b = HostTensor.from_list((3,), "f8_e4m3", [0x38, 0x00, 0xB8])
    p = str(tmp_path / "x.safetensors")
    st.write(p, {"a": a, "b": b})
    got = st.read_host(p)
    assert got["a"].dtype == refit.DType.BF16 and got["a"].tolist() == [1, 2, 3, 4]
    assert got["b"].tobytes() == bytes([0x38, 0, 0xB8])
    assert st.header(p)[0]["b"] == (refit.DType.F8_E4M3, (3,))


def test_standin_shard_matches_refit_shard(tmp_path):
    """refit.StandinShard gives the tensors `refit shard` writes."""
    ck = U.write_checkpoint(str(tmp_path / "ck"), U.DRAFT)
    out = str(tmp_path / "shards")
    import subprocess
    r = subprocess.run([U.REFIT_BIN, "shard", "--hf", ck, "--tp", "2", "--out", out], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with refit.Context(U.CLUSTER, overrides=U.overrides(tmp_path), hf=ck) as ctx:
        for rank in (0, 1):
            want = st.read_host(os.path.join(out, "rank%d.safetensors" % rank))
            with refit.StandinShard(ctx, ck, tp_rank=rank, tp_size=2) as sh:
                assert sorted(sh.tensors) == sorted(want)
                assert all(sh.tensors[n].tobytes() == want[n].tobytes() for n in want)
