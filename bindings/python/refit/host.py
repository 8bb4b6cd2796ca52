"""HostTensor: a minimal strided host tensor on the standard library.

refit's engine integrations (refit.vllm, refit.sglang) move tensors between
refit and an engine's loader without caring what kind of tensor they are:
PyTorch tensors on an engine machine, and, where PyTorch is absent (CI, the
stand-in engines of the tests), this type.  It holds its bytes in a
bytearray and knows its refit dtype, shape and element strides; views
(narrow, select, transpose) share the bytes, as PyTorch views do, so code
written against PyTorch's view semantics (a weight loader narrowing a
parameter and copying into the view) behaves the same on it.

It is deliberately small: the operations the engines' loaders use (narrow,
select, transpose, copy_, contiguous, fill_) plus conversion of elements to
and from Python floats for the dtypes that need arithmetic (F32, BF16, F16,
F8_E4M3 codes).  Nothing here is fast; it is for correctness.

It binds to refit directly (``__refit_tensor__``): a contiguous HostTensor
can be added to a publisher or bound to a receiver like a numpy array.
"""

import ctypes
import math
import struct

from .dtypes import DType, parse
from .errors import EINVAL, InvalidArgument

_FMT = {DType.BOOL: "?", DType.U8: "B", DType.I8: "b", DType.I16: "h", DType.I32: "i", DType.I64: "q",
        DType.F8_E4M3: "B", DType.F16: "e", DType.BF16: "H", DType.F32: "f", DType.F64: "d"}


def _contiguous_strides(shape):
    st, acc = [], 1
    for n in reversed(shape):
        st.append(acc)
        acc *= n
    return tuple(reversed(st))


def bf16_to_float(bits):
    """BF16 bits -> float (exact)."""
    return struct.unpack("<f", struct.pack("<I", (bits & 0xFFFF) << 16))[0]


def float_to_bf16(x):
    """float -> BF16 bits, round to nearest even (via fp32 first, as torch
    does for a float32 value); NaN stays a quiet NaN."""
    (u,) = struct.unpack("<I", struct.pack("<f", x))
    if (u & 0x7F800000) == 0x7F800000 and (u & 0x7FFFFF):
        return ((u >> 16) | 0x40) & 0xFFFF
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def f32(x):
    """x rounded to the nearest float32 (as a Python float)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


class HostTensor:
    """A strided view of refit-dtype elements in a bytearray (see module doc)."""

    __slots__ = ("dtype", "shape", "strides", "storage", "offset", "_cview", "__weakref__", "__dict__")

    def __init__(self, shape, dtype, storage=None, offset=0, strides=None):
        self.dtype = parse(dtype)
        self.shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in self.shape):
            raise InvalidArgument(EINVAL, "HostTensor: negative dimension in %s" % (self.shape,))
        self.strides = tuple(strides) if strides is not None else _contiguous_strides(self.shape)
        if storage is None:
            storage = bytearray(self.numel * self.dtype.itemsize)
        self.storage = storage
        self.offset = int(offset)  # in bytes
        self._cview = None

    # ---- description -------------------------------------------------
    @property
    def ndim(self):
        return len(self.shape)

    @property
    def numel(self):
        return math.prod(self.shape)

    @property
    def nbytes(self):
        return self.numel * self.dtype.itemsize

    @property
    def device(self):
        return "cpu"

    def is_contiguous(self):
        return self.strides == _contiguous_strides(self.shape) or self.numel <= 1

    def data_ptr(self):
        """The address of the first element (refit binds memory by address)."""
        if self._cview is None:
            self._cview = (ctypes.c_char * max(1, len(self.storage))).from_buffer(self.storage)
        return ctypes.addressof(self._cview) + self.offset

    def __refit_tensor__(self):
        """(pointer, DType, shape) for refit's add/bind; contiguous views only."""
        if not self.is_contiguous():
            raise InvalidArgument(EINVAL, "HostTensor: not contiguous (strides %s for shape %s); pass "
                                  "t.contiguous() and keep that tensor" % (self.strides, self.shape))
        return self.data_ptr(), self.dtype, self.shape

    def __repr__(self):
        return "HostTensor(%s, %s%s)" % (self.dtype.name, self.shape, "" if self.is_contiguous() else ", strided")

    # ---- views -------------------------------------------------------
    def _view(self, shape, strides, offset):
        return HostTensor(shape, self.dtype, self.storage, offset, strides)

    def _dim(self, dim):
        d = dim + self.ndim if dim < 0 else dim
        if not 0 <= d < self.ndim:
            raise InvalidArgument(EINVAL, "HostTensor: dimension %d out of range for %d-d tensor" % (dim, self.ndim))
        return d

    def narrow(self, dim, start, length):
        d = self._dim(dim)
        if start < 0 or length < 0 or start + length > self.shape[d]:
            raise InvalidArgument(EINVAL, "HostTensor: narrow(%d, %d, %d) out of range for shape %s"
                                  % (dim, start, length, self.shape))
        shape = list(self.shape)
        shape[d] = length
        return self._view(shape, self.strides, self.offset + start * self.strides[d] * self.dtype.itemsize)

    def select(self, dim, index):
        d = self._dim(dim)
        if not 0 <= index < self.shape[d]:
            raise InvalidArgument(EINVAL, "HostTensor: select(%d, %d) out of range for shape %s"
                                  % (dim, index, self.shape))
        shape = self.shape[:d] + self.shape[d + 1:]
        strides = self.strides[:d] + self.strides[d + 1:]
        return self._view(shape, strides, self.offset + index * self.strides[d] * self.dtype.itemsize)

    def __getitem__(self, i):
        return self.select(0, i)

    def transpose(self, a, b):
        a, b = self._dim(a), self._dim(b)
        shape, strides = list(self.shape), list(self.strides)
        shape[a], shape[b] = shape[b], shape[a]
        strides[a], strides[b] = strides[b], strides[a]
        return self._view(shape, strides, self.offset)

    def t(self):
        return self.transpose(0, 1)

    def view_as_shape(self, shape):
        """Reshape a contiguous tensor (a view)."""
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != self.numel or not self.is_contiguous():
            raise InvalidArgument(EINVAL, "HostTensor: cannot view %s%s as %s"
                                  % (self.shape, "" if self.is_contiguous() else " (strided)", shape))
        return self._view(shape, None, self.offset)

    # ---- bytes -------------------------------------------------------
    def _runs(self):
        """(byte offset, byte length) of the contiguous runs in logical order."""
        isz = self.dtype.itemsize
        if self.numel == 0:
            return
        if self.is_contiguous():
            yield self.offset, self.nbytes
            return
        # Innermost dimension contiguous: one run per row; otherwise per element.
        inner = self.ndim and self.strides[-1] == 1
        outer = self.shape[:-1] if inner else self.shape
        run = self.shape[-1] * isz if inner else isz
        idx = [0] * len(outer)
        while True:
            off = self.offset + sum(i * s for i, s in zip(idx, self.strides)) * isz
            yield off, run
            k = len(outer) - 1
            while k >= 0:
                idx[k] += 1
                if idx[k] < outer[k]:
                    break
                idx[k] = 0
                k -= 1
            if k < 0:
                return

    def _bytes(self):
        mv = memoryview(self.storage)
        return mv.cast("B") if mv.format != "B" else mv

    def tobytes(self):
        mv = self._bytes()
        return b"".join(bytes(mv[o:o + n]) for o, n in self._runs())

    def contiguous(self):
        if self.is_contiguous():
            return self
        return HostTensor(self.shape, self.dtype, bytearray(self.tobytes()))

    def clone(self):
        return HostTensor(self.shape, self.dtype, bytearray(self.tobytes()))

    def copy_(self, src):
        """Copy src's elements (same shape and dtype, any strides) into self."""
        if not isinstance(src, HostTensor):
            raise InvalidArgument(EINVAL, "HostTensor.copy_: source is %s, not a HostTensor" % type(src).__name__)
        if src.shape != self.shape or src.dtype != self.dtype:
            raise InvalidArgument(EINVAL, "HostTensor.copy_: %s %s into %s %s" % (
                src.dtype.name, src.shape, self.dtype.name, self.shape))
        data = src.tobytes()
        mv, pos = self._bytes(), 0
        for o, n in self._runs():
            mv[o:o + n] = data[pos:pos + n]
            pos += n
        return self

    def fill_bytes(self, byte=0):
        mv = self._bytes()
        for o, n in self._runs():
            mv[o:o + n] = bytes([byte]) * n
        return self

    # ---- elements ----------------------------------------------------
    def tolist(self):
        """The elements in logical order, flat: floats for F32/F16/F64/BF16,
        ints for integer types and for F8_E4M3 (its codes)."""
        raw = self.tobytes()
        n = self.numel
        vals = struct.unpack("<%d%s" % (n, _FMT[self.dtype]), raw)
        if self.dtype == DType.BF16:
            return [bf16_to_float(v) for v in vals]
        return list(vals)

    @classmethod
    def from_list(cls, shape, dtype, values):
        """A contiguous tensor from flat values (floats are rounded to the
        dtype: BF16 to nearest even; F8_E4M3 takes codes)."""
        d = parse(dtype)
        vals = list(values)
        if d == DType.BF16:
            vals = [float_to_bf16(v) for v in vals]
        t = cls(shape, d)
        if len(vals) != t.numel:
            raise InvalidArgument(EINVAL, "HostTensor.from_list: %d values for shape %s" % (len(vals), t.shape))
        struct.pack_into("<%d%s" % (len(vals), _FMT[d]), t.storage, 0, *vals)
        return t

    @classmethod
    def from_bytes(cls, shape, dtype, data):
        t = cls(shape, dtype)
        if len(data) != t.nbytes:
            raise InvalidArgument(EINVAL, "HostTensor.from_bytes: %d bytes for %s %s (%d)"
                                  % (len(data), t.dtype.name, t.shape, t.nbytes))
        t.storage[:] = data
        return t


def same_storage(a, b):
    """Whether two HostTensors cover the same bytes (same buffer, offset and size)."""
    return a.storage is b.storage and a.offset == b.offset and a.nbytes == b.nbytes


__all__ = ["HostTensor", "same_storage", "bf16_to_float", "float_to_bf16", "f32"]
