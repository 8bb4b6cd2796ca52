"""Shared fixtures: the package and librefit of this source tree, a small
synthetic Qwen3 checkpoint, expected results from `refit convert`, trainer
processes running examples/trainer_loop.py.

Run from meson (`meson test -C build --suite python`), which sets
REFIT_SOURCE_ROOT and REFIT_BUILD_ROOT; by hand, from the source root,
`python3 -m pytest -q bindings/python/tests` finds ./build."""

import json
import os
import subprocess
import sys
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_ROOT = os.path.dirname(HERE)  # bindings/python
SOURCE = os.environ.get("REFIT_SOURCE_ROOT") or os.path.dirname(os.path.dirname(PKG_ROOT))
BUILD = os.environ.get("REFIT_BUILD_ROOT") or os.path.join(SOURCE, "build")
os.environ.setdefault("REFIT_BUILD_ROOT", BUILD)
EXAMPLES = os.path.join(PKG_ROOT, "examples")
sys.path[:0] = [PKG_ROOT, EXAMPLES]

try:  # the engine tests need only the standard library; these fixtures need numpy
    import numpy as np  # noqa: E402
except ImportError:
    np = None

import refit  # noqa: E402
import refit.safetensors as st  # noqa: E402

REFIT_BIN = os.path.join(BUILD, "tools", "refit", "refit")
CLUSTER = os.path.join(SOURCE, "configs", "clusters", "local.yaml")

# Qwen3-shaped and small, with dimensions FP8's 128x128 blocks divide.
TINY_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "num_hidden_layers": 2,
    "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 128,
    "intermediate_size": 512, "vocab_size": 512, "tie_word_embeddings": True, "attention_bias": False,
    "rms_norm_eps": 1e-06, "torch_dtype": "bfloat16",
}
FP8 = {"model.fp8.enabled": True, "model.fp8.rule": "trainer"}


def need_numpy():
    if np is None:
        pytest.skip("numpy is not installed")


def bf16_bits(x):
    """float32 -> bf16 bits (round to nearest even), as uint16."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def run_refit(*args):
    r = subprocess.run([REFIT_BIN] + [str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "refit %s failed:\n%s%s" % (" ".join(map(str, args)), r.stdout, r.stderr)
    return r


def cluster_overrides(tmp, receivers=1, **extra):
    """Overrides giving a test its own file store and namespace."""
    o = {"store.file.path": os.path.join(str(tmp), "store"), "store.namespace": "py-" + uuid.uuid4().hex[:12],
         "refit.receivers": receivers, "refit.timeout": "30s", "refit.release_timeout": "60s"}
    o.update(extra)
    return o


@pytest.fixture(scope="session")
def refit_bin():
    if not os.access(REFIT_BIN, os.X_OK):
        pytest.fail("no refit binary at %s: build first (ninja -C build)" % REFIT_BIN)
    return REFIT_BIN


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory, refit_bin):
    """A deterministic HF checkpoint (config.json + model.safetensors) whose
    tensor list comes from refit's own HF layout of the config."""
    need_numpy()
    d = tmp_path_factory.mktemp("ckpt")
    with open(d / "config.json", "w") as f:
        json.dump(TINY_CONFIG, f)
    rng = np.random.default_rng(1234)
    tensors = {}
    with refit.Context(CLUSTER, overrides=cluster_overrides(d), hf=str(d)) as ctx:
        for t in ctx.receiver(target="hf").tensors():
            v = rng.uniform(-0.05, 0.05, size=t.shape).astype(np.float32)
            if "norm" in t.name:
                v += 1.0
            assert t.dtype == refit.DType.BF16
            tensors[t.name] = (bf16_bits(v), "bf16")
    st.write(str(d / "model.safetensors"), tensors)
    return str(d)


class Expected:
    """Expected receiver contents: version V of the checkpoint (the stand-in's
    change applied), converted offline by `refit convert`."""

    def __init__(self, ckpt, root):
        self.ckpt, self.root, self.cache = ckpt, root, {}

    def version_dir(self, v):
        d = os.path.join(self.root, "v%d" % v)
        if not os.path.isdir(d):
            os.makedirs(d)
            src = os.path.join(self.ckpt, "model.safetensors")
            hdr, _ = st.header(src)
            arrays = st.read(src)
            out = {}
            for name, a in arrays.items():
                if v > 1:
                    refit.standin_step(a, 1, v, dtype=hdr[name][0])
                out[name] = (a, hdr[name][0])
            st.write(os.path.join(d, "model.safetensors"), out)
            with open(os.path.join(self.ckpt, "config.json")) as f, open(os.path.join(d, "config.json"), "w") as g:
                g.write(f.read())
        return d

    def get(self, v, tp=1, rank=0, fp8=True, target="vllm"):
        key = (v, tp, rank, fp8, target)
        if key not in self.cache:
            out = os.path.join(self.root, "expected-v%d-tp%d-r%d-%s-%s.safetensors" % (v, tp, rank, fp8, target))
            args = ["convert", "--hf", self.version_dir(v), "--target", target, "--tp", tp, "--rank", rank,
                    "--out", out]
            if fp8:
                args += ["--fp8", "trainer"]
            run_refit(*args)
            self.cache[key] = out
        return self.cache[key]


@pytest.fixture(scope="session")
def expected(ckpt, tmp_path_factory):
    return Expected(ckpt, str(tmp_path_factory.mktemp("expected")))


@pytest.fixture(scope="session")
def shards(ckpt, tmp_path_factory):
    """shards(tp) -> directory of `refit shard --tp tp` files."""
    made = {}

    def get(tp):
        if tp not in made:
            d = str(tmp_path_factory.mktemp("shards-tp%d" % tp))
            run_refit("shard", "--hf", ckpt, "--tp", tp, "--out", d)
            made[tp] = d
        return made[tp]
    return get


class Trainers:
    """Trainer ranks as separate Python processes (examples/trainer_loop.py)."""

    def __init__(self):
        self.procs = []

    def start(self, ckpt, shard_dir, tp, steps, overrides):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([PKG_ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
        for r in range(tp):
            args = [sys.executable, os.path.join(EXAMPLES, "trainer_loop.py"), "--config", CLUSTER, "--hf", ckpt,
                    "--shard", os.path.join(shard_dir, "rank%d.safetensors" % r), "--tp", str(tp), "--rank", str(r),
                    "--steps", str(steps), "--id", "trainer-%d" % r]
            for k, v in overrides.items():
                args += ["--set", "%s=%s" % (k, str(v).lower() if isinstance(v, bool) else v)]
            self.procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                               text=True))

    def wait(self, timeout=90):
        outs = []
        for p in self.procs:
            out, _ = p.communicate(timeout=timeout)
            outs.append(out)
            assert p.returncode == 0, "trainer failed (%d):\n%s" % (p.returncode, out)
        self.procs = []
        return outs

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        self.procs = []


@pytest.fixture
def trainers():
    t = Trainers()
    yield t
    t.kill()


def assert_same_as(got, expected_file):
    """Every tensor of the expected file is byte-identical in got ({name: array})."""
    want = st.read(expected_file)
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        assert g.nbytes == w.nbytes, name
        assert np.ascontiguousarray(g).view(np.uint8).tobytes() == w.view(np.uint8).tobytes(), \
            "%s differs from refit convert's output" % name
