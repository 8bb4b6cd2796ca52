"""Helpers of the engine tests, on the standard library only: checkpoints made
from a config.json, the same version's checkpoint in FP8 (``refit convert``),
a trainer publishing in a thread, and parameter comparison.

Versions follow refit's trainer stand-in (refit/standin.h): version 1 is
the checkpoint, version V applies refit_standin_step(1 -> V) to every
weight; it is element-wise, so an HF checkpoint of version V (written here)
is exactly what a trainer publishing version V holds.
"""

import json
import math
import os
import random
import subprocess
import sys
import threading
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_ROOT = os.path.dirname(HERE)
SOURCE = os.environ.get("REFIT_SOURCE_ROOT") or os.path.dirname(os.path.dirname(PKG_ROOT))
BUILD = os.environ.get("REFIT_BUILD_ROOT") or os.path.join(SOURCE, "build")
STANDINS = os.path.join(HERE, "standins")
CLUSTER = os.path.join(SOURCE, "configs", "clusters", "local.yaml")
REFIT_BIN = os.path.join(BUILD, "tools", "refit", "refit")

import refit  # noqa: E402
import refit.safetensors as st  # noqa: E402
from refit.host import HostTensor  # noqa: E402

# Small Qwen3 shapes every FP8 rule accepts at TP 1 and 2: 128-row parts per
# rank (q: 2 heads of 128, one KV head replicated at TP 2, gate/up 256), and a
# vocabulary (200) that vLLM pads to 256.
DENSE = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "num_hidden_layers": 2,
         "hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 128,
         "intermediate_size": 256, "vocab_size": 200, "tie_word_embeddings": False, "attention_bias": False,
         "rms_norm_eps": 1e-06, "torch_dtype": "bfloat16"}
MOE = dict(DENSE, architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", num_hidden_layers=1,
           num_experts=4, num_experts_per_tok=2, moe_intermediate_size=128, decoder_sparse_step=1,
           mlp_only_layers=[], norm_topk_prob=True)
DRAFT = dict(DENSE, num_hidden_layers=1)
FP8_QUANT = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}


def overrides(tmp, receivers=1, namespace=None, **extra):
    """A test's own file store and namespace."""
    o = {"store.file.path": os.path.join(str(tmp), "store"),
         "store.namespace": namespace or "eng-" + uuid.uuid4().hex[:12],
         "refit.receivers": receivers, "refit.timeout": "30s", "refit.release_timeout": "60s"}
    o.update(extra)
    return o


def write_checkpoint(path, config, seed=7):
    """An HF checkpoint (config.json + model.safetensors) whose tensor list is
    refit's HF layout of the config, random bf16 values (norms near 1)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    rng = random.Random(seed)
    with refit.Context(CLUSTER, overrides={"store.file.path": os.path.join(path, ".store")}, hf=path) as ctx:
        infos = ctx.receiver(target="hf").tensors()
    tensors = {}
    for t in infos:
        # Rows of different magnitudes, so that FP8 blocks get different scales.
        cols = t.shape[-1]
        rows = math.prod(t.shape) // cols
        base = 1.0 if "norm" in t.name else 0.0
        vals = []
        for _ in range(rows):
            mag = rng.uniform(0.005, 0.1)
            vals.extend(base + rng.uniform(-mag, mag) for _ in range(cols))
        tensors[t.name] = HostTensor.from_list(t.shape, t.dtype, vals)
    st.write(os.path.join(path, "model.safetensors"), tensors)
    return path


def version_checkpoint(ckpt, version, out):
    """The bf16 HF checkpoint of `version` (the stand-in trainer's weights)."""
    os.makedirs(out, exist_ok=True)
    tensors = st.read_host(os.path.join(ckpt, "model.safetensors"))
    if version > 1:
        for t in tensors.values():
            refit.standin_step(t, 1, version)
    st.write(os.path.join(out, "model.safetensors"), tensors)
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    return out


def fp8_checkpoint(bf16_dir, out, rule="trainer"):
    """The same weights as a block-FP8 checkpoint (weight + weight_scale_inv,
    as FP8 checkpoints store them), made by `refit convert --target hf --fp8`,
    with the quantization_config an FP8 checkpoint's config.json has."""
    os.makedirs(out, exist_ok=True)
    r = subprocess.run([REFIT_BIN, "convert", "--hf", bf16_dir, "--target", "hf", "--fp8", rule, "--out",
                        os.path.join(out, "model.safetensors")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(bf16_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = dict(FP8_QUANT)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    return out


class Checkpoints:
    """Checkpoint directories of one model by version, bf16 and FP8, made once."""

    def __init__(self, root, config, seed=7):
        self.root = root
        self.base = write_checkpoint(os.path.join(root, "v1"), config, seed)
        self._made = {(1, False): self.base}

    def get(self, version, fp8=False):
        key = (version, fp8)
        if key not in self._made:
            if fp8:
                self._made[key] = fp8_checkpoint(self.get(version, False), os.path.join(self.root, "v%d-fp8" % version))
            else:
                self._made[key] = version_checkpoint(self.base, version, os.path.join(self.root, "v%d" % version))
        return self._made[key]


class Trainer(threading.Thread):
    """Trainer ranks (TP `tp`) publishing `versions` of a checkpoint from a
    thread, each waiting until refit.receivers receivers released it.  The
    tensors are refit's stand-in shard of the HF checkpoint (what
    `refit shard` writes), changed by refit.standin_step between versions."""

    def __init__(self, ckpt, over, versions, tp=1):
        super().__init__(daemon=True)
        self.ckpt, self.over, self.versions, self.tp = ckpt, dict(over), list(versions), tp
        self.error = None
        self.published = []

    def run(self):
        try:
            with refit.Context(CLUSTER, overrides=self.over, hf=self.ckpt) as ctx:
                shards = [refit.core.StandinShard(ctx, self.ckpt, tp_rank=r, tp_size=self.tp) for r in range(self.tp)]
                pubs = [ctx.publisher(tp_rank=r, tp_size=self.tp, source_id="trainer-%d" % r)
                        for r in range(self.tp)]
                for p, s in zip(pubs, shards):
                    p.add_all(s.tensors)
                prev = 1
                for v in self.versions:
                    for s in shards:
                        for t in s.tensors.values():
                            refit.standin_step(t, prev, v)
                    prev = v
                    for p in pubs:
                        p.publish(v)
                    for p in pubs:
                        p.wait_released(v)
                    self.published.append(v)
                for p in pubs:
                    p.close()
                for s in shards:
                    s.close()
        except BaseException as e:  # reported by finish()
            self.error = e

    def finish(self, timeout=120):
        self.join(timeout)
        assert not self.is_alive(), "trainer still running (its versions: %s, released: %s)" % (
            self.versions, self.published)
        if self.error is not None:
            raise self.error
        return self.published


def state_of(model):
    """{name: (dtype, shape, bytes)} of a stand-in model's parameters."""
    return {n: (p.dtype.name, tuple(p.shape), p.tobytes()) for n, p in model.named_parameters()}


def assert_same_state(got, want, what="model"):
    g, w = state_of(got), state_of(want)
    assert sorted(g) == sorted(w), "%s: parameters differ: %s" % (what, sorted(set(g) ^ set(w)))
    bad = [n for n in w if g[n] != w[n]]
    assert not bad, "%s: %d parameter(s) differ from the engine's own load: %s" % (what, len(bad), bad[:6])


def add_standins():
    if STANDINS not in sys.path:
        sys.path.insert(0, STANDINS)
