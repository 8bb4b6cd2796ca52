"""The vLLM worker extension (examples/vllm_worker.py) on a stand-in engine
whose parameters are numpy arrays named, shaped and typed like vLLM's
(taken from `refit convert --target vllm` of the same checkpoint: FP8
weights as uint8, their scales as float32, the rest bf16 as uint16)."""

import types

import numpy as np
import pytest

import refit
import refit.safetensors as st
from conftest import CLUSTER, FP8, assert_same_as, cluster_overrides
from vllm_worker import RefitWorkerExtension


class StandinModel:
    def __init__(self, params):
        self._params = params

    def named_parameters(self):
        return iter(self._params.items())


class StandinWorker(RefitWorkerExtension):
    """What vLLM's worker gives an extension: self.model_runner.model."""

    def __init__(self, params):
        self.model_runner = types.SimpleNamespace(model=StandinModel(params))


def vllm_like_params(layout_file, drop=()):
    hdr, _ = st.header(layout_file)
    return {name: np.zeros(shape, dtype=refit.dtypes.NUMPY_VIEW[d]) for name, (d, shape) in hdr.items()
            if name not in drop}


def test_worker_extension_pulls_into_vllm_params(tmp_path, ckpt, shards, expected, trainers):
    over = cluster_overrides(tmp_path, receivers=2)
    trainers.start(ckpt, shards(2), tp=2, steps=2, overrides=over)
    workers = []
    for r in range(2):  # vLLM TP2: two workers
        w = StandinWorker(vllm_like_params(expected.get(1, tp=2, rank=r, fp8=True)))
        info = w.init_refit(CLUSTER, overrides=dict(over, **FP8), hf=ckpt, tp_rank=r, tp_size=2,
                            receiver_id="vllm-worker-%d" % r)
        assert info["missing"] == [] and info["staged"] == 0 and info["bound"] > 0
        workers.append(w)
    try:
        for v in (1, 2):
            for r, w in enumerate(workers):
                stats = w.update_weights_from_refit(v)
                assert stats["version"] == v and stats["sources"] in (1, 2)  # TP-aligned: one trainer rank may cover it
                params = dict(w.model_runner.model.named_parameters())
                assert_same_as(params, expected.get(v, tp=2, rank=r, fp8=True))
    finally:
        for w in workers:
            w.close_refit()
    trainers.wait()


def test_worker_extension_strict_names(tmp_path, ckpt, expected):
    """A model lacking a parameter of refit's layout: strict init names it."""
    layout = expected.get(1, tp=1, rank=0, fp8=True)
    w = StandinWorker(vllm_like_params(layout, drop=("model.norm.weight",)))
    with pytest.raises(refit.NotFound) as e:
        w.init_refit(CLUSTER, overrides=dict(cluster_overrides(tmp_path), **FP8), hf=ckpt, tp_rank=0, tp_size=1)
    assert "model.norm.weight" in str(e.value) and e.value.status == refit.errors.ENOENT
    info = w.init_refit(CLUSTER, overrides=dict(cluster_overrides(tmp_path), **FP8), hf=ckpt, tp_rank=0,
                        tp_size=1, strict=False)
    assert info["missing"] == ["model.norm.weight"]
    w.close_refit()


def test_update_before_init():
    w = StandinWorker({})
    with pytest.raises(refit.RefitError) as e:
        w.update_weights_from_refit(1)
    assert e.value.status == refit.errors.EINVAL
