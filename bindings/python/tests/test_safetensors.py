"""refit.safetensors against librefit's own reader and writer."""

import os
import struct

import pytest

np = pytest.importorskip("numpy")

import refit
import refit.safetensors as st
from conftest import bf16_bits, run_refit


def test_roundtrip_and_dtypes(tmp_path):
    p = str(tmp_path / "a.safetensors")
    bits = bf16_bits(np.linspace(-1, 1, 12, dtype=np.float32)).reshape(3, 4)
    f8 = np.arange(16, dtype=np.uint8).reshape(4, 4)
    t = {"w.bf16": (bits, "bf16"), "w.f32": np.arange(6, dtype=np.float32).reshape(2, 3),
         "w.fp8": (f8, refit.DType.F8_E4M3), "w.i64": np.array([1, -2], dtype=np.int64),
         "w.bool": np.array([True, False])}
    st.write(p, t, metadata={"format": "pt"})
    hdr, meta = st.header(p)
    assert meta == {"format": "pt"}
    assert list(hdr) == list(t)
    assert hdr["w.bf16"] == (refit.DType.BF16, (3, 4)) and hdr["w.fp8"] == (refit.DType.F8_E4M3, (4, 4))
    back = st.read(p)
    assert back["w.bf16"].dtype == np.uint16 and np.array_equal(back["w.bf16"], bits)
    assert np.array_equal(back["w.fp8"], f8) and np.array_equal(back["w.f32"], t["w.f32"])
    assert back["w.bf16"].flags.c_contiguous and back["w.bf16"].flags.writeable
    assert list(st.read(p, names=["w.i64"])) == ["w.i64"]
    with pytest.raises(refit.RefitError):
        st.read(p, names=["nope"])


def test_librefit_reads_what_we_write(tmp_path, ckpt):
    """Our writer made the test checkpoint; refit convert (C reader) takes it
    and its HF-target output equals the input tensor for tensor."""
    out = str(tmp_path / "hf.safetensors")
    run_refit("convert", "--hf", ckpt, "--target", "hf", "--out", out)
    a = st.read(os.path.join(ckpt, "model.safetensors"))
    b = st.read(out)  # written by librefit's writer
    assert set(a) == set(b)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


def test_write_errors(tmp_path):
    with pytest.raises(refit.InvalidArgument):
        st.write(str(tmp_path / "x"), {"a": np.zeros(2, np.uint16)})  # bf16 or f16 bits? say which
    with pytest.raises(refit.InvalidArgument):
        st.write(str(tmp_path / "x"), {"a": (np.zeros(2, np.uint32), "bf16")})


def test_corrupt_files(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x01")
    with pytest.raises(refit.RefitError) as e:
        st.read(str(p))
    assert e.value.status == refit.errors.EPROTO
    p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(refit.RefitError):
        st.header(str(p))
    h = b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    p.write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * 8)  # 8 of 16 data bytes
    with pytest.raises(refit.RefitError) as e:
        st.read(str(p))
    assert "'a'" in e.value.message
