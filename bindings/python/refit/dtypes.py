"""refit element types and their numpy / PyTorch equivalents.

numpy has no bfloat16 or float8: hand those over as raw bits (a ``uint16``
array for BF16, ``uint8`` for F8_E4M3) with an explicit ``dtype=`` argument,
or as ml_dtypes arrays (``bfloat16``, ``float8_e4m3fn``), which map by name.
PyTorch's ``torch.bfloat16`` and ``torch.float8_e4m3fn`` map directly.
"""

import enum


class DType(enum.IntEnum):
    """enum refit_dtype (refit/dtype.h), spelled as safetensors spells it."""
    INVALID = 0
    BOOL = 1
    U8 = 2
    I8 = 3
    I16 = 4
    I32 = 5
    I64 = 6
    F8_E4M3 = 7
    F16 = 8
    BF16 = 9
    F32 = 10
    F64 = 11

    @property
    def itemsize(self):
        return _SIZES[self]


_SIZES = {DType.INVALID: 0, DType.BOOL: 1, DType.U8: 1, DType.I8: 1, DType.I16: 2, DType.I32: 4,
          DType.I64: 8, DType.F8_E4M3: 1, DType.F16: 2, DType.BF16: 2, DType.F32: 4, DType.F64: 8}

# Other spellings accepted by parse() (lower case).
_ALIASES = {
    "bool": DType.BOOL, "u8": DType.U8, "uint8": DType.U8, "i8": DType.I8, "int8": DType.I8,
    "i16": DType.I16, "int16": DType.I16, "i32": DType.I32, "int32": DType.I32, "i64": DType.I64,
    "int64": DType.I64, "f8_e4m3": DType.F8_E4M3, "f8_e4m3fn": DType.F8_E4M3, "float8_e4m3fn": DType.F8_E4M3,
    "fp8": DType.F8_E4M3, "f16": DType.F16, "float16": DType.F16, "half": DType.F16, "fp16": DType.F16,
    "bf16": DType.BF16, "bfloat16": DType.BF16, "f32": DType.F32, "float32": DType.F32, "float": DType.F32,
    "fp32": DType.F32, "f64": DType.F64, "float64": DType.F64, "double": DType.F64,
}

# numpy dtype names (dtype.name) with a refit equivalent; ml_dtypes' names
# included.  uint16/uint32/... have none: they are raw bits needing dtype=.
NUMPY_NAMES = {
    "bool": DType.BOOL, "uint8": DType.U8, "int8": DType.I8, "int16": DType.I16, "int32": DType.I32,
    "int64": DType.I64, "float16": DType.F16, "float32": DType.F32, "float64": DType.F64,
    "bfloat16": DType.BF16, "float8_e4m3fn": DType.F8_E4M3,
}

# str(torch.dtype) with a refit equivalent (strings, so that a torch without
# float8 still imports this table).
TORCH_NAMES = {
    "torch.bool": DType.BOOL, "torch.uint8": DType.U8, "torch.int8": DType.I8, "torch.int16": DType.I16,
    "torch.int32": DType.I32, "torch.int64": DType.I64, "torch.float16": DType.F16,
    "torch.bfloat16": DType.BF16, "torch.float32": DType.F32, "torch.float64": DType.F64,
    "torch.float8_e4m3fn": DType.F8_E4M3,
}

# numpy dtype names that carry raw bits: any refit dtype of the same size
# may be declared for them with dtype=.
RAW_NUMPY_KINDS = "uiV"
RAW_TORCH_NAMES = {"torch.uint8", "torch.int8", "torch.int16", "torch.uint16", "torch.int32",
                   "torch.uint32", "torch.int64", "torch.uint64"}

# The numpy dtype name used to view refit memory of each type (raw bits for
# the types numpy lacks).
NUMPY_VIEW = {DType.BOOL: "bool", DType.U8: "uint8", DType.I8: "int8", DType.I16: "int16",
              DType.I32: "int32", DType.I64: "int64", DType.F8_E4M3: "uint8", DType.F16: "float16",
              DType.BF16: "uint16", DType.F32: "float32", DType.F64: "float64"}


def parse(x):
    """A DType from a DType, its int value, a name ("bf16", "BF16",
    "F8_E4M3", "float32"), a numpy dtype or a torch dtype."""
    from .errors import InvalidArgument, EINVAL
    if isinstance(x, DType):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        try:
            d = DType(x)
        except ValueError:
            d = DType.INVALID
        if d is DType.INVALID:
            raise InvalidArgument(EINVAL, "dtype %d is not a refit dtype" % x)
        return d
    s = str(x)
    if s.startswith("torch."):
        d = TORCH_NAMES.get(s)
    else:
        name = getattr(x, "name", None)  # numpy dtype
        if isinstance(x, type):  # a numpy scalar type: np.float32
            name = x.__name__
        if isinstance(name, str) and not isinstance(x, str):
            s = name
        d = DType.__members__.get(s.upper()) if s.upper() != "INVALID" else None
        d = d or _ALIASES.get(s.lower())
    if d is None:
        raise InvalidArgument(EINVAL, "dtype %r has no refit equivalent (refit has %s)"
                              % (x, ", ".join(m.name for m in DType if m is not DType.INVALID)))
    return d
