"""`make wheel`: the wheel carries librefit and its plugins, finds them beside
the package with no LD_LIBRARY_PATH, lists the system libraries they need,
and, installed into a fresh directory, runs a refit cycle on its own."""

import base64
import hashlib
import os
import subprocess
import sys
import zipfile


import engine_util as U

BUILD_WHEEL = os.path.join(U.PKG_ROOT, "build_wheel.py")

# Run from the installed wheel only: a publisher (refit's stand-in shard of
# the checkpoint) and a receiver allocating its destinations, one version.
CYCLE = r'''
import sys, threading, refit
ckpt, store, out = sys.argv[1:4]
assert refit.__file__.startswith(sys.argv[4]), refit.__file__
assert refit.library_path().startswith(sys.argv[4]), refit.library_path()
over = {"store.plugin": "file", "store.file.path": store, "store.namespace": "wheel", "transport.plugin": "tcp",
        "transport.tcp.bind": "127.0.0.1", "refit.receivers": 1, "refit.timeout": "30s", "model.target": "hf"}
err = []
def trainer():
    try:
        with refit.Context(None, overrides=over, hf=ckpt) as ctx, refit.core.StandinShard(ctx, ckpt) as sh:
            pub = ctx.publisher(source_id="wheel-trainer")
            pub.add_all(sh.tensors)
            pub.publish(1)
            pub.wait_released(1)
            pub.close()
    except BaseException as e:
        err.append(e)
t = threading.Thread(target=trainer); t.start()
with refit.Context(None, overrides=over, hf=ckpt) as ctx:
    r = ctx.receiver(target="hf", receiver_id="wheel-engine")
    bufs = {i.name: refit.host.HostTensor(i.shape, i.dtype) for i in r.tensors()}
    r.bind_all(bufs)
    assert r.pull(1).version == 1
t.join(); assert not err, err
import refit.safetensors as st
st.write(out, bufs)
print("cycle ok")
'''


def _record_ok(z, di):
    for line in z.read(di + "/RECORD").decode().splitlines():
        name, digest, size = line.rsplit(",", 2)
        if not digest:
            continue
        data = z.read(name)
        h = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert (h, len(data)) == (digest, int(size)), name


def test_wheel_installs_and_runs_a_cycle(tmp_path):
    r = subprocess.run([sys.executable, BUILD_WHEEL, "--build", U.BUILD, "--out", str(tmp_path / "dist")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    whl = r.stdout.splitlines()[0]
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        di = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        _record_ok(z, di)
        meta = z.read(di + "/METADATA").decode()
        assert "[vllm.general_plugins]\nrefit = refit.vllm:register_plugin" in z.read(di + "/entry_points.txt").decode()
    assert "refit/librefit.so" in names and "refit/vllm/__init__.py" in names and "refit/sglang/__init__.py" in names
    for p in ("transport/tcp/refit-transport-tcp.so", "store/file/refit-store-file.so", "model/qwen3/refit-model-qwen3.so"):
        assert "refit/plugins/" + p in names
    external = {l.split(": ", 1)[1] for l in meta.splitlines() if l.startswith("Requires-External: ")}
    assert {"libyaml-0.so.2", "libltdl.so.7", "libjansson.so.4", "libc.so.6"} <= external  # librefit's own links
    assert not any("refit" in e for e in external)

    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                          whl], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    if pip.returncode != 0:  # no pip: a wheel is a zip file (PEP 427)
        zipfile.ZipFile(whl).extractall(site)
    ckpt = U.write_checkpoint(str(tmp_path / "ckpt"), U.DRAFT)
    env = {k: v for k, v in os.environ.items()
           if k not in ("REFIT_BUILD_ROOT", "REFIT_LIBRARY", "REFIT_PLUGIN_PATH", "LD_LIBRARY_PATH", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    out = tmp_path / "pulled.safetensors"
    r = subprocess.run([sys.executable, "-c", CYCLE, ckpt, str(tmp_path / "store"), str(out), str(site)],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "cycle ok" in r.stdout, r.stdout + r.stderr
    import refit.safetensors as st
    got, want = st.read_host(str(out)), st.read_host(os.path.join(ckpt, "model.safetensors"))
    assert sorted(got) == sorted(want)
    assert all(got[n].tobytes() == want[n].tobytes() for n in want)
