"""On a real Hugging Face checkpoint (../shared/fixtures/qwen3-tiny, made by
transformers, not refit): our safetensors reader agrees with librefit's, and
a refit of it through the Python trainer loop and receiver equals refit
convert's.  Skipped where the fixture is absent (a user's clone)."""

import os

import pytest

import refit
import refit.safetensors as st
from conftest import CLUSTER, FP8, SOURCE, Expected, assert_same_as, cluster_overrides, run_refit

FIXTURE = os.path.join(SOURCE, "..", "shared", "fixtures", "qwen3-tiny")
pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(FIXTURE, "model.safetensors")),
                                reason="no ../shared/fixtures/qwen3-tiny")


def test_reader_agrees_with_librefit(tmp_path, refit_bin):
    src = os.path.join(FIXTURE, "model.safetensors")
    hdr, _ = st.header(src)
    assert len(hdr) == 24 and hdr["model.embed_tokens.weight"] == (refit.DType.BF16, (512, 256))
    out = str(tmp_path / "hf.safetensors")
    run_refit("convert", "--hf", FIXTURE, "--target", "hf", "--out", out)
    ours = st.read(src)
    theirs = st.read(out)
    assert set(ours) == set(theirs)
    for k in ours:
        assert ours[k].tobytes() == theirs[k].tobytes(), k


def test_refit_of_real_checkpoint(tmp_path, trainers):
    shard_dir = str(tmp_path / "shards")
    run_refit("shard", "--hf", FIXTURE, "--tp", 2, "--out", shard_dir)
    expected = Expected(FIXTURE, str(tmp_path / "expected"))
    over = cluster_overrides(tmp_path, receivers=1)
    trainers.start(FIXTURE, shard_dir, tp=2, steps=2, overrides=over)
    with refit.Context(CLUSTER, overrides=dict(over, **FP8), hf=FIXTURE) as ctx, ctx.receiver() as rcv:
        rcv.allocate()
        for v in (1, 2):
            assert rcv.pull(refit.NEXT).version == v
            assert_same_as(rcv.arrays(), expected.get(v, fp8=True))
    trainers.wait()
