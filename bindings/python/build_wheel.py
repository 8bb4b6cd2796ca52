#!/usr/bin/env python3
"""Build a wheel of the refit package that carries librefit and its plugins.

    python3 bindings/python/build_wheel.py --build build --out dist     (make wheel)

The wheel (``refit-<version>-py3-none-<platform>.whl``, the wheel format of
PEP 427 written with zipfile: no setuptools, no network) holds

- ``refit/``: the Python package;
- ``refit/librefit.so`` and ``refit/plugins/<kind>/<name>/refit-*.so``: the
  build's library and plugins, found beside the package at import
  (refit/_lib.py: "next to the package"; the plugin path is set to
  ``refit/plugins/*/*``), so no LD_LIBRARY_PATH is needed;
- ``refit-<version>.dist-info/``: METADATA listing, as ``Requires-External``,
  every shared library those files need from the system (their ELF
  DT_NEEDED entries, read here), also in ``refit/_system_libs.json``;
  ``entry_points.txt`` registering ``refit.vllm:register_plugin`` in
  ``vllm.general_plugins`` (vLLM loads it in every process, which registers
  the ``refit`` weight-transfer backend); RECORD with sha256 of each file.

The wheel is tagged for this machine's platform (its .so files are), not
for a Python version (the package is pure Python, loading them by ctypes).
"""

import argparse
import base64
import hashlib
import json
import os
import re
import struct
import sys
import sysconfig
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ENTRY_POINTS = "[vllm.general_plugins]\nrefit = refit.vllm:register_plugin\n"


def elf_needed(path):
    """DT_NEEDED entries of an ELF64 little-endian shared object."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit("build_wheel: %s is not a 64-bit little-endian ELF file" % path)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out = []
    for name, typ, flags, addr, off, size, link, info, align, entsize in sections:
        if typ != 6:  # SHT_DYNAMIC
            continue
        stroff = sections[link][4]
        for k in range(0, size, 16):
            tag, val = struct.unpack_from("<qQ", data, off + k)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", stroff + val)
                out.append(data[stroff + val:end].decode())
    return out


def version():
    with open(os.path.join(HERE, "pyproject.toml")) as f:
        m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
    return m.group(1)


def native_files(build):
    """{path in the wheel: file on disk} of librefit and the plugins."""
    lib = os.path.realpath(os.path.join(build, "core", "librefit.so"))
    if not os.path.isfile(lib):
        raise SystemExit("build_wheel: no librefit.so in %s/core: build first (ninja -C %s)" % (build, build))
    out = {"refit/librefit.so": lib}
    root = os.path.join(build, "plugins")
    for kind in sorted(os.listdir(root)):
        kd = os.path.join(root, kind)
        if not os.path.isdir(kd):
            continue
        for name in sorted(os.listdir(kd)):
            so = os.path.join(kd, name, "refit-%s-%s.so" % (kind, name))
            if os.path.isfile(so):
                out["refit/plugins/%s/%s/%s" % (kind, name, os.path.basename(so))] = os.path.realpath(so)
    return out


def package_files():
    out = {}
    pkg = os.path.join(HERE, "refit")
    for dirpath, dirs, files in os.walk(pkg):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for fn in sorted(files):
            if fn.endswith(".py"):
                p = os.path.join(dirpath, fn)
                out[os.path.relpath(p, HERE).replace(os.sep, "/")] = p
    return out


def system_libs(native):
    ours = {os.path.basename(p) for p in native} | {"librefit.so"}
    need = {}
    for arc, path in native.items():
        for lib in elf_needed(path):
            if lib not in ours:
                need.setdefault(lib, []).append(arc)
    return need


def _digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(build, out_dir):
    ver = version()
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    native = native_files(build)
    needs = system_libs(native)
    files = {arc: open(p, "rb").read() for arc, p in sorted(package_files().items())}
    for arc, p in native.items():
        with open(p, "rb") as f:
            files[arc] = f.read()
    files["refit/_system_libs.json"] = (json.dumps(needs, indent=1, sort_keys=True) + "\n").encode()
    di = "refit-%s.dist-info" % ver
    meta = ["Metadata-Version: 2.1", "Name: refit", "Version: %s" % ver,
            "Summary: move LLM weights from RL-trainer ranks into inference engines (librefit bundled)",
            "License: Apache-2.0", "Requires-Python: >=3.8"]
    meta += ["Requires-External: %s" % lib for lib in sorted(needs)]
    with open(os.path.join(HERE, "README.md")) as f:
        meta += ["Description-Content-Type: text/markdown", "", f.read()]
    files[di + "/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[di + "/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: refit build_wheel.py\nRoot-Is-Purelib: false\n"
                            "Tag: py3-none-%s\n" % plat).encode()
    files[di + "/entry_points.txt"] = ENTRY_POINTS.encode()
    files[di + "/top_level.txt"] = b"refit\n"
    record = ["%s,%s,%d" % (arc, _digest(data), len(data)) for arc, data in files.items()]
    record.append("%s/RECORD,," % di)
    files[di + "/RECORD"] = ("\n".join(record) + "\n").encode()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "refit-%s-py3-none-%s.whl" % (ver, plat))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in files.items():
            zi = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = (0o755 if arc.endswith(".so") else 0o644) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return path, needs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default="build", help="meson build directory (default: build)")
    p.add_argument("--out", default="dist", help="directory for the wheel (default: dist)")
    a = p.parse_args(argv)
    path, needs = build_wheel(a.build, a.out)
    print(path)
    print("needs from the system: %s" % (", ".join(sorted(needs)) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
