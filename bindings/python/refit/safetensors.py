"""A small pure-Python safetensors reader and writer.

With numpy (``read``): numpy has no bfloat16 or float8, so such tensors are
read as raw bits (BF16 as uint16, F8_E4M3 as uint8) and written from raw
bits with their dtype named (``write(path, {"w": (bits, "bf16")})``).
Arrays are little-endian and C-contiguous, each in its own (aligned)
allocation.  Without numpy (``read_host``): refit.host.HostTensor, which
knows its refit dtype; ``write`` takes those too.

    tensors = read("rank0.safetensors")            # {name: numpy array}
    tensors = read_host("rank0.safetensors")       # {name: HostTensor}
    info = header("rank0.safetensors")             # {name: (DType, shape)}
    write("out.safetensors", {"a": arr, "b": (bf16_bits, "bf16")})
"""

import json
import math
import struct

from .dtypes import DType, NUMPY_NAMES, NUMPY_VIEW, parse
from .errors import EINVAL, EPROTO, InvalidArgument, RefitError

_MAX_HEADER = 100 * 1024 * 1024  # as the safetensors format itself caps it


def _read_header(f, path, size):
    raw = f.read(8)
    if len(raw) != 8:
        raise RefitError(EPROTO, "%s: not a safetensors file (shorter than 8 bytes)" % path)
    (n,) = struct.unpack("<Q", raw)
    if n > _MAX_HEADER or 8 + n > size:
        raise RefitError(EPROTO, "%s: header length %d is out of range (file %d bytes)" % (path, n, size))
    try:
        h = json.loads(f.read(n))
    except ValueError as e:
        raise RefitError(EPROTO, "%s: header is not JSON (%s)" % (path, e)) from None
    if not isinstance(h, dict):
        raise RefitError(EPROTO, "%s: header is not a JSON object" % path)
    meta = h.pop("__metadata__", None) or {}
    out = {}
    data_len = size - 8 - n
    for name, e in h.items():
        try:
            d = parse(e["dtype"])
            shape = tuple(int(s) for s in e["shape"])
            b, end = (int(x) for x in e["data_offsets"])
        except (KeyError, TypeError, ValueError, RefitError) as err:
            raise RefitError(EPROTO, "%s: tensor '%s': bad header entry (%s)" % (path, name, err)) from None
        if not 0 <= b <= end <= data_len or end - b != math.prod(shape) * d.itemsize:
            raise RefitError(EPROTO, "%s: tensor '%s': offsets [%d, %d) do not fit %s %s in %d data bytes"
                             % (path, name, b, end, d.name, shape, data_len))
        out[name] = (d, shape, 8 + n + b)
    return out, meta


def header(path):
    """{name: (DType, shape)} of a safetensors file, in file order, and its metadata."""
    import os
    with open(path, "rb") as f:
        h, meta = _read_header(f, path, os.fstat(f.fileno()).st_size)
    return {k: (d, s) for k, (d, s, _) in h.items()}, meta


def _read_tensors(path, names, make):
    """{name: tensor} of a safetensors file (or of the given names), each
    tensor from make(dtype, shape) -> (tensor, its byte count, a function
    giving its bytes as a writable buffer) and read into."""
    import os
    out = {}
    with open(path, "rb") as f:
        h, _ = _read_header(f, path, os.fstat(f.fileno()).st_size)
        for name, (d, shape, off) in h.items():
            if names is not None and name not in names:
                continue
            t, nbytes, buf = make(d, shape)
            f.seek(off)
            if nbytes and f.readinto(buf()) != nbytes:
                raise RefitError(EPROTO, "%s: tensor '%s' is truncated" % (path, name))
            out[name] = t
    if names is not None:
        missing = [n for n in names if n not in out]
        if missing:
            raise RefitError(-3, "%s: no tensor named %s" % (path, ", ".join(repr(m) for m in missing)))
    return out


def read(path, names=None):
    """{name: numpy array} of a safetensors file (or of the given names)."""
    import numpy as np

    def make(d, shape):
        a = np.empty(shape, dtype=NUMPY_VIEW[d])
        return a, a.nbytes, lambda: memoryview(a).cast("B")
    return _read_tensors(path, names, make)


def read_host(path, names=None):
    """{name: refit.host.HostTensor} of a safetensors file (or of the given
    names); needs nothing but the standard library."""
    from .host import HostTensor

    def make(d, shape):
        t = HostTensor(shape, d)
        return t, t.nbytes, lambda: t.storage
    return _read_tensors(path, names, make)


def _host_entry(name, t, d):
    if d is not None and parse(d) != t.dtype:
        raise InvalidArgument(EINVAL, "tensor '%s': a %s HostTensor written as %s" % (name, t.dtype.name,
                                                                                   parse(d).name))
    return t.dtype, list(t.shape), t.tobytes()


def write(path, tensors, metadata=None):
    """Write {name: array or (array, dtype) or HostTensor} as safetensors.
    The dtype is needed for raw bits (uint16 holding bf16: "bf16"; uint8
    holding fp8: "f8_e4m3")."""
    entries, blobs, off = {}, [], 0
    for name, v in tensors.items():
        a, d = v if isinstance(v, tuple) else (v, None)
        if hasattr(a, "__refit_tensor__") and hasattr(a, "tobytes"):
            d, shape, b = _host_entry(name, a, d)
            entries[name] = {"dtype": d.name, "shape": shape, "data_offsets": [off, off + len(b)]}
            blobs.append(b)
            off += len(b)
            continue
        import numpy as np
        a = np.asarray(a)
        natural = NUMPY_NAMES.get(a.dtype.name)
        d = parse(d) if d is not None else natural
        if d is None:
            raise InvalidArgument(EINVAL, "tensor '%s': numpy dtype %s needs a refit dtype, e.g. (array, 'bf16')"
                                  % (name, a.dtype.name))
        if a.dtype.itemsize != d.itemsize:
            raise InvalidArgument(EINVAL, "tensor '%s': %s elements are %d bytes, %s %d"
                                  % (name, a.dtype.name, a.dtype.itemsize, d.name, d.itemsize))
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        b = np.ascontiguousarray(a).tobytes()
        entries[name] = {"dtype": d.name, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = {}
    if metadata:
        h["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h.update(entries)
    hj = json.dumps(h, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)  # data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


__all__ = ["read", "read_host", "write", "header", "DType"]
