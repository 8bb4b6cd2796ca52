"""Turning the caller's tensor objects into (pointer, dtype, shape, memtype).

Accepted: PyTorch tensors (CPU or CUDA, through data_ptr() and device),
objects with ``__refit_tensor__()`` (refit.host.HostTensor: pointer, dtype
and shape of host memory), anything with ``__array_interface__`` (numpy
arrays; numpy itself is not imported here) and writable buffers
(bytearray, array.array, memoryview) with an explicit dtype.  The memory must be C-contiguous: refit reads and
writes whole rows at computed offsets, so a strided view would be silently
wrong; it is refused instead.
"""

import ctypes
import math

from . import _lib
from .dtypes import DType, NUMPY_NAMES, RAW_NUMPY_KINDS, RAW_TORCH_NAMES, TORCH_NAMES, parse
from .errors import EINVAL, ENOTSUP, InvalidArgument, NotSupported


class TensorRef:
    """What the C API needs about one tensor, and the object that owns it
    (kept referenced so Python never frees memory refit uses)."""
    __slots__ = ("ptr", "dtype", "shape", "memtype", "nbytes", "owner", "device")

    def __init__(self, ptr, dtype, shape, memtype, owner, device="cpu"):
        self.ptr = ptr
        self.dtype = dtype
        self.shape = tuple(int(s) for s in shape)
        self.memtype = memtype
        self.nbytes = dtype.itemsize * math.prod(self.shape)
        self.owner = owner
        self.device = device

    def c_shape(self):
        return (ctypes.c_int64 * max(1, len(self.shape)))(*self.shape)


def _is_torch(obj):
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "data_ptr")


def _explicit(natural, raw, itemsize, dtype, what, name):
    """The refit dtype of an element: the natural mapping, or dtype= when it
    agrees with it or the element is raw bits of the same size."""
    want = parse(dtype) if dtype is not None else None
    if want is None:
        if natural is None:
            hint = ""
            if itemsize == 2:
                hint = " (bf16 held as uint16 needs dtype='bf16')"
            elif itemsize == 1:
                hint = " (fp8 held as uint8 needs dtype='f8_e4m3')"
            raise InvalidArgument(EINVAL, "tensor '%s': %s has no refit dtype%s" % (name, what, hint))
        return natural
    if want == natural:
        return want
    if raw and want.itemsize == itemsize:
        return want
    raise InvalidArgument(EINVAL, "tensor '%s': %s cannot be declared %s (%d-byte elements; only "
                          "raw-bit integer arrays of the same element size may carry another dtype)"
                          % (name, what, want.name, itemsize))


def _c_contiguous(shape, strides, itemsize):
    if strides is None:
        return True
    expect = itemsize
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != expect:
            return False
        expect *= n
    return True


def _from_torch(t, dtype, name, writable):
    import torch  # the caller has it: t is a torch tensor
    if t.layout != torch.strided:
        raise InvalidArgument(EINVAL, "tensor '%s': %s tensors are not supported (dense only)" % (name, t.layout))
    if not t.is_contiguous():
        raise InvalidArgument(EINVAL, "tensor '%s': not contiguous (strides %s for shape %s); pass "
                              "t.contiguous() and keep that tensor alive" % (name, tuple(t.stride()),
                                                                             tuple(t.shape)))
    key = str(t.dtype)
    d = _explicit(TORCH_NAMES.get(key), key in RAW_TORCH_NAMES, t.element_size(), dtype, key, name)
    dev = t.device.type
    if dev == "cpu":
        memtype = _lib.MEM_HOST
    elif dev == "cuda":
        memtype = _lib.MEM_CUDA
    else:
        raise NotSupported(ENOTSUP, "tensor '%s': device %s is not supported (cpu and cuda are)" % (name, t.device))
    return TensorRef(t.data_ptr(), d, tuple(t.shape), memtype, t, str(t.device))


def _from_array_interface(a, ai, dtype, name, writable):
    ptr, readonly = ai["data"]
    shape = tuple(ai["shape"])
    typestr = ai["typestr"]
    itemsize = int(typestr[2:])
    if typestr[0] == ">" and itemsize > 1:
        raise InvalidArgument(EINVAL, "tensor '%s': big-endian data (%s); refit is little-endian" % (name, typestr))
    if not _c_contiguous(shape, ai.get("strides"), itemsize):
        raise InvalidArgument(EINVAL, "tensor '%s': not C-contiguous (strides %s for shape %s); pass "
                              "numpy.ascontiguousarray(a) and keep that array alive"
                              % (name, ai.get("strides"), shape))
    if writable and readonly:
        raise InvalidArgument(EINVAL, "tensor '%s': read-only array; refit writes received weights into it" % name)
    npname = getattr(getattr(a, "dtype", None), "name", None)
    kind = typestr[1]
    natural = NUMPY_NAMES.get(npname) if npname else None
    if natural is None and npname is None:  # not numpy: go by the type string
        natural = {"b1": DType.BOOL, "u1": DType.U8, "i1": DType.I8, "i2": DType.I16, "i4": DType.I32,
                   "i8": DType.I64, "f2": DType.F16, "f4": DType.F32, "f8": DType.F64}.get(typestr[1:])
    # ml_dtypes' bfloat16/float8 report kind 'V': named types, not raw bits.
    raw = kind in RAW_NUMPY_KINDS and not (npname in NUMPY_NAMES and kind == "V")
    d = _explicit(natural, raw, itemsize, dtype, "numpy dtype %s" % (npname or typestr), name)
    return TensorRef(ptr, d, shape, _lib.MEM_HOST, a)


def _from_buffer(obj, dtype, shape, name, writable):
    try:
        mv = memoryview(obj)
    except TypeError:
        raise InvalidArgument(EINVAL, "tensor '%s': %s is not a tensor (numpy array, torch tensor or "
                              "writable buffer)" % (name, type(obj).__name__)) from None
    if not mv.c_contiguous:
        raise InvalidArgument(EINVAL, "tensor '%s': buffer is not C-contiguous" % name)
    if dtype is None:
        raise InvalidArgument(EINVAL, "tensor '%s': a %s needs dtype= (and shape=)" % (name, type(obj).__name__))
    d = parse(dtype)
    if shape is None:
        if mv.itemsize == d.itemsize:
            shape = mv.shape
        elif mv.ndim <= 1 and mv.nbytes % d.itemsize == 0:
            shape = (mv.nbytes // d.itemsize,)  # flat bytes: a vector of the dtype
        else:
            raise InvalidArgument(EINVAL, "tensor '%s': give shape= (buffer items are %d bytes, %s %d)"
                                  % (name, mv.itemsize, d.name, d.itemsize))
    shape = tuple(int(s) for s in shape)
    if math.prod(shape) * d.itemsize != mv.nbytes:
        raise InvalidArgument(EINVAL, "tensor '%s': shape %s of %s is %d bytes, the buffer %d"
                              % (name, shape, d.name, math.prod(shape) * d.itemsize, mv.nbytes))
    if mv.readonly:
        raise InvalidArgument(EINVAL, "tensor '%s': read-only buffer (%s); use a bytearray or an array"
                              % (name, type(obj).__name__))
    # The ctypes view holds the buffer export: a bytearray cannot be resized
    # (and its memory moved) while refit has its address.
    cview = ctypes.c_char.from_buffer(mv) if mv.nbytes else None
    ptr = ctypes.addressof(cview) if cview is not None else 0
    return TensorRef(ptr, d, shape, _lib.MEM_HOST, (obj, mv, cview))


def _from_protocol(obj, dtype, name):
    ptr, d, shape = obj.__refit_tensor__()
    if dtype is not None and parse(dtype) != d:
        raise InvalidArgument(EINVAL, "tensor '%s': a %s tensor cannot be declared %s" % (name, d.name,
                                                                                        parse(dtype).name))
    return TensorRef(ptr, d, shape, _lib.MEM_HOST, obj)


def tensor_ref(obj, name, dtype=None, shape=None, writable=False):
    """A TensorRef for obj, or InvalidArgument / NotSupported saying why not."""
    if hasattr(obj, "__refit_tensor__"):
        ref = _from_protocol(obj, dtype, name)
    elif _is_torch(obj):
        ref = _from_torch(obj, dtype, name, writable)
    else:
        ai = getattr(obj, "__array_interface__", None)
        if ai is not None:
            ref = _from_array_interface(obj, ai, dtype, name, writable)
        else:
            return _from_buffer(obj, dtype, shape, name, writable)
    if shape is not None and tuple(int(s) for s in shape) != ref.shape:
        raise InvalidArgument(EINVAL, "tensor '%s': shape= %s disagrees with the tensor's %s"
                              % (name, tuple(shape), ref.shape))
    if not ref.shape:
        raise InvalidArgument(EINVAL, "tensor '%s': 0-d tensors are not supported (refit tensors have "
                              "1 to 8 dimensions)" % name)
    if len(ref.shape) > _lib.REFIT_MAX_DIMS:
        raise InvalidArgument(EINVAL, "tensor '%s': %d dimensions (at most %d)"
                              % (name, len(ref.shape), _lib.REFIT_MAX_DIMS))
    return ref
