"""What refit's engine integrations need of a tensor, for PyTorch and HostTensor.

refit.vllm and refit.sglang never import torch at module level: engines hand
them torch tensors, the tests' stand-in engines hand them refit.host
HostTensors.  This module answers the few questions those integrations ask
(dtype, shape, same storage, allocate a buffer like this one, copy) for
either, and owns the ordering between refit's copies and the engine's CUDA
stream (``StreamOrder``), with events rather than device-wide syncs:

- before a pull writes into the engine's parameters (direct path), the
  host waits for an event recorded on the engine's stream (its last
  forward), not for the device;
- before a pull writes into buffers that the engine read after the last
  pull (load_weights copies them on the engine's stream), the host waits
  for the event recorded after those reads: only that work, nothing else;
- a pull returns with refit's own copies complete (refit.h: pull waits for
  its streams), so what the engine queues next on any stream sees them;
- before publish, the trainer's current stream (where it wrote its
  weights) is made a dependency of the legacy default stream, which refit's
  copy streams wait for (docs/cuda.md); the host is not blocked.

The C API has no stream argument; with one (``refit_publisher_publish_on``
/ ``refit_receiver_pull_on`` taking a cudaStream_t, or an event out of
pull) the last point would become an explicit wait instead of riding on
the legacy stream's implicit synchronisation: see docs/engines.md.
"""

from .dtypes import DType, TORCH_NAMES, parse
from .errors import EINVAL, InvalidArgument
from .host import HostTensor


def is_torch(t):
    return type(t).__module__.split(".")[0] == "torch" and hasattr(t, "data_ptr")


def torch_dtype(d):
    import torch
    name = {DType.BF16: "bfloat16", DType.F8_E4M3: "float8_e4m3fn", DType.F32: "float32",
            DType.F16: "float16", DType.F64: "float64", DType.U8: "uint8", DType.I8: "int8",
            DType.I16: "int16", DType.I32: "int32", DType.I64: "int64", DType.BOOL: "bool"}[parse(d)]
    return getattr(torch, name)


def dtype_of(t):
    """The refit DType of a tensor (None where refit has none)."""
    if isinstance(t, HostTensor):
        return t.dtype
    if is_torch(t):
        return TORCH_NAMES.get(str(t.dtype))
    d = getattr(t, "dtype", None)
    try:
        return parse(d) if d is not None else None
    except InvalidArgument:
        return None


def shape_of(t):
    return tuple(int(s) for s in t.shape)


def is_contiguous(t):
    return bool(t.is_contiguous())


def device_of(t):
    """'cpu', or 'cuda:N' for a CUDA tensor."""
    if is_torch(t):
        return str(t.device)
    return "cpu"


def data_of(t):
    """The plain tensor behind a parameter (torch: .data; HostTensor: itself)."""
    return t.data if is_torch(t) else t


def same_storage(a, b):
    """Whether a and b cover exactly the same bytes."""
    if isinstance(a, HostTensor) and isinstance(b, HostTensor):
        return a.storage is b.storage and a.offset == b.offset and a.nbytes == b.nbytes
    if is_torch(a) and is_torch(b):
        return (a.data_ptr() == b.data_ptr() and a.device == b.device
                and a.numel() * a.element_size() == b.numel() * b.element_size())
    return False


def empty_like_layout(shape, dtype, like=None, device=None, pin=False):
    """A new contiguous tensor of refit dtype `dtype`: a torch tensor when
    `like` is one (on `device`, default like's), else a HostTensor."""
    if like is not None and is_torch(like):
        import torch
        dev = device if device is not None else like.device
        if str(dev) == "cpu":
            return torch.empty(tuple(shape), dtype=torch_dtype(dtype), device="cpu",
                               pin_memory=pin and torch.cuda.is_available())
        return torch.empty(tuple(shape), dtype=torch_dtype(dtype), device=dev)
    return HostTensor(shape, dtype)


def copy_into(dst, src):
    """dst.copy_(src) for tensors of the same kind (torch or HostTensor)."""
    if is_torch(dst) != is_torch(src):
        raise InvalidArgument(EINVAL, "copy between a %s and a %s" % (type(dst).__name__, type(src).__name__))
    dst.copy_(src)
    return dst


class StreamOrder:
    """Events between refit's buffers and an engine's CUDA stream (module doc).
    A no-op for host tensors and machines without CUDA."""

    def __init__(self, device=None, cuda=None):
        self._cuda = cuda
        self._device = device
        self._consumed = None
        if cuda is None and device is not None and str(device).startswith("cuda"):
            import torch
            self._cuda = torch.cuda

    @property
    def active(self):
        return self._cuda is not None

    def before_pull(self):
        """Wait (on the host) for the engine's reads of the buffers since the
        last pull: the event recorded by consumed(), not the device."""
        if self._consumed is not None:
            self._consumed.synchronize()
            self._consumed = None

    def fence(self):
        """Before writing the engine's own parameters (direct path): wait on
        the host for the work queued so far on the engine's current stream
        (its last forward reading them) — that stream only."""
        if self._cuda is None:
            return
        ev = self._cuda.Event()
        ev.record(self._cuda.current_stream(self._device))
        ev.synchronize()

    def consumed(self):
        """Record, on the engine's current stream, that it has queued every
        read of the buffers (after load_weights / after the staging copies)."""
        if self._cuda is None:
            return
        ev = self._cuda.Event()
        ev.record(self._cuda.current_stream(self._device))
        self._consumed = ev

    def before_publish(self):
        """Make the legacy default stream (which refit's copy streams follow)
        wait for the work queued on the caller's current stream, without
        blocking the host.  Nothing to do when the current stream is the
        default stream."""
        if self._cuda is None:
            return
        cur = self._cuda.current_stream(self._device)
        default = self._cuda.default_stream(self._device)
        if cur == default:
            return
        ev = self._cuda.Event()
        ev.record(cur)
        default.wait_event(ev)


__all__ = ["is_torch", "dtype_of", "shape_of", "device_of", "data_of", "same_storage", "empty_like_layout",
           "copy_into", "StreamOrder", "torch_dtype"]
