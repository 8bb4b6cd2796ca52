"""Context, Publisher and Receiver: the C API (refit/refit.h) as classes.

Lifetimes follow the C API: a publisher or receiver must go before its
context; here a context closes the publishers and receivers it made when
it closes.  Every class is a context manager and closes on ``__exit__``
(and, as a last resort, when garbage-collected).

Memory: refit never copies the caller's tensors on add/bind; it keeps their
addresses.  These classes therefore keep a reference to every tensor object
they were handed until it can no longer be used (replaced and released, or
the object closed), so Python never frees memory refit still reads or writes.
"""

import ctypes
import threading
import weakref

from . import _lib
from ._tensor import tensor_ref
from .dtypes import DType, NUMPY_VIEW
from .errors import ENOENT, ENOTSUP, EINVAL, InvalidArgument, NotFound, NotSupported, RefitError, check

LATEST = _lib.REFIT_LATEST
NEXT = _lib.REFIT_NEXT


def _b(s):
    return None if s is None else str(s).encode()


def _override_list(overrides):
    out = []
    if overrides is None:
        return out
    items = overrides.items() if hasattr(overrides, "items") else None
    if items is not None:
        for k, v in items:
            if isinstance(v, bool):
                v = "true" if v else "false"
            out.append("%s=%s" % (k, v))
    else:
        for s in overrides:
            if "=" not in str(s):
                raise InvalidArgument(EINVAL, "override %r is not key=value" % (s,))
            out.append(str(s))
    return out


class _Closing:
    """Closes on leaving a with block and, as a last resort, when collected;
    the class gives close()."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may be gone
            pass


class _Handle(_Closing):
    """An owned C object: closed once, under a lock (the C API allows one
    thread at a time per object)."""
    _destroy = None

    def __init__(self):
        self._h = None
        self._lock = threading.RLock()

    @property
    def closed(self):
        return self._h is None

    def _ptr(self):
        if self._h is None:
            raise RefitError(EINVAL, "%s is closed" % type(self).__name__)
        return self._h

    def close(self):
        with self._lock:
            if self._h is not None:
                h, self._h = self._h, None
                ctx = getattr(self, "ctx", None)
                # A context closes its publishers and receivers first; only a
                # garbage cycle collected in the wrong order gets here with the
                # context gone, and destroying then would touch freed memory:
                # leak the object instead.
                if ctx is None or not ctx.closed:
                    getattr(_lib.load(), self._destroy)(h)
                self._closed()

    def _closed(self):
        pass


class Context(_Handle):
    """A refit context: the configuration and the plugins it names.

    ``config``: a cluster file (None: defaults and the environment only).
    ``overrides``: ``{"key": value}`` or ``["key=value", ...]``, applied after
    the environment (``REFIT_<SECTION>_<KEY>``).  ``hf``: an HF checkpoint
    directory whose config.json describes the model (sets
    ``model.hf_config`` and ``model.plugin=auto``, as ``refit publish --hf``
    does; explicit overrides win)."""
    _destroy = "refit_context_destroy"

    def __init__(self, config=None, overrides=None, hf=None):
        super().__init__()
        self._children = weakref.WeakSet()
        lib = _lib.load()
        ovr = []
        if hf is not None:
            ovr += ["model.hf_config=%s/config.json" % hf, "model.plugin=auto"]
        ovr += _override_list(overrides)
        arr = (ctypes.c_char_p * max(1, len(ovr)))(*[o.encode() for o in ovr])
        h = ctypes.c_void_p()
        check(lib.refit_context_create(_b(config), arr, len(ovr), ctypes.byref(h)),
              "refit context (%s)" % (config or "no cluster file"))
        self._h = h.value
        self.config_path = config

    def close(self):
        with self._lock:
            for c in list(self._children):
                c.close()
            super().close()

    def config_str(self, key):
        """The effective value of a configuration key, as text."""
        lib = _lib.load()
        cfg = lib.refit_context_config(self._ptr())
        out = ctypes.c_char_p()
        check(lib.refit_config_str(cfg, key.encode(), ctypes.byref(out)), "config key '%s'" % key)
        return out.value.decode()

    def publisher(self, **kw):
        """Publisher(self, **kw)."""
        return Publisher(self, **kw)

    def receiver(self, **kw):
        """Receiver(self, **kw)."""
        return Receiver(self, **kw)


class Publisher(_Handle):
    """One trainer rank's publisher (refit_publisher_*).

    Zero-copy contract (``refit.publish: zero_copy``, the default): refit
    reads the added tensors in place while receivers pull.  A tensor must not
    change between ``publish(V)`` and the return of ``wait_released(V)``;
    train, then publish, then wait, then train again.  With ``publish: copy``
    publish() returns once refit has staged a copy."""
    _destroy = "refit_publisher_destroy"

    def __init__(self, ctx, tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, ep_rank=0, ep_size=1,
                 etp_rank=0, etp_size=1, source_id=None, dp_rank=0, dp_size=1, layout=None,
                 shard_rank=0, shard_size=1, vp_size=1, pp_layers=None):
        """``layout``: "megatron" (None) with the tp/pp/ep position, or "fsdp"
        with ``shard_rank`` of ``shard_size`` (HF names, dim-0 chunks);
        ``dp_rank`` of ``dp_size``: replicas holding the same bytes, read
        interchangeably; ``vp_size`` and ``pp_layers`` (layers per pipeline
        chunk) for interleaved or uneven pipelines."""
        super().__init__()
        self.ctx = ctx
        par = _parallel(dict(tp_rank=tp_rank, tp_size=tp_size, pp_rank=pp_rank, pp_size=pp_size,
                             ep_rank=ep_rank, ep_size=ep_size, etp_rank=etp_rank, etp_size=etp_size,
                             dp_rank=dp_rank, dp_size=dp_size, layout=layout, shard_rank=shard_rank,
                             shard_size=shard_size, vp_size=vp_size, pp_layers=pp_layers))
        h = ctypes.c_void_p()
        check(_lib.load().refit_publisher_create(ctx._ptr(), ctypes.byref(par), _b(source_id), ctypes.byref(h)),
              "publisher %s" % (source_id or "tp%d-pp%d-ep%d" % (tp_rank, pp_rank, ep_rank)))
        self._h = h.value
        ctx._children.add(self)
        self.source_id = source_id
        self._refs = {}      # name -> TensorRef in use
        self._retired = []   # replaced refs still readable until the next release
        self._published = 0

    def _closed(self):
        self._refs.clear()
        self._retired.clear()

    def add(self, name, tensor, dtype=None, shape=None):
        """Add (or re-point) a trainer tensor by its Megatron name.

        ``tensor``: numpy array, torch tensor (CPU; CUDA once librefit
        supports it) or writable buffer (then ``dtype=`` and ``shape`` via a
        numpy view are simpler).  ``dtype``: needed for raw bits, e.g. a
        uint16 array holding bf16 (``dtype="bf16"``).  ``shape``: for
        buffers (bytearray...), or a check of the tensor's own shape."""
        ref = tensor_ref(tensor, name, dtype=dtype, shape=shape)
        with self._lock:
            rc = _lib.load().refit_publisher_add(self._ptr(), name.encode(), ref.ptr, int(ref.dtype),
                                                 len(ref.shape), ref.c_shape(), ref.memtype)
            _raise_memtype(rc, ref, name, "publish")
            check(rc)
            old = self._refs.get(name)
            if old is not None and old.owner is not tensor:
                self._retired.append(old)
            self._refs[name] = ref

    def add_all(self, tensors, dtype=None):
        """add() every (name, tensor) of a dict or an iterable of pairs."""
        items = tensors.items() if hasattr(tensors, "items") else tensors
        for name, t in items:
            self.add(name, t, dtype=dtype)

    def publish(self, version):
        """Publish version V (greater than every earlier one)."""
        with self._lock:
            check(_lib.load().refit_publisher_publish(self._ptr(), int(version)))
            self._published = max(self._published, int(version))

    def wait_released(self, version, timeout=None):
        """Wait until refit.receivers receivers acknowledged V.  ``timeout``
        in seconds (None: refit.release_timeout); raises Timeout naming the
        receivers that did not."""
        ms = -1 if timeout is None else int(timeout * 1000)
        with self._lock:
            check(_lib.load().refit_publisher_wait_released(self._ptr(), int(version), ms))
            if int(version) >= self._published:
                # Every receiver has the newest version: tensors replaced
                # before it was published are read by nobody any more.
                self._retired.clear()

    def stats(self):
        """Registration counters (refit_publisher_stats): PublisherStats."""
        if not _lib.has("refit_publisher_stats"):
            raise NotSupported(ENOTSUP, "this librefit has no refit_publisher_stats")
        s = _lib._PublisherStats()
        s.size = ctypes.sizeof(s)
        with self._lock:
            check(_lib.load().refit_publisher_stats(self._ptr(), ctypes.byref(s)))
        return _Figures("PublisherStats", s, ("regions", "registrations", "kept", "version"))

    @property
    def tensors(self):
        """{name: tensor object} added so far."""
        return {k: r.owner for k, r in self._refs.items()}


def _raise_memtype(rc, ref, name, what):
    if rc == ENOTSUP and ref.memtype == _lib.MEM_CUDA:
        lib = _lib.load()
        msg = lib.refit_error_message().decode(errors="replace")
        lib.refit_error_clear()
        raise NotSupported(ENOTSUP, "tensor '%s' is CUDA memory (%s), which this librefit cannot take (built "
                           "without CUDA, or no usable device); %s from a host copy (e.g. t.cpu()) instead "
                           "(librefit said: %s)" % (name, ref.device, what, msg))


class _Figures:
    """A C stats struct as a Python object: its fields as attributes, as_dict()."""

    def __init__(self, kind, s, fields):
        self._kind, self._fields = kind, fields
        for f in fields:
            setattr(self, f, getattr(s, f))

    def as_dict(self):
        return {f: getattr(self, f) for f in self._fields}

    def __repr__(self):
        return "%s(%s)" % (self._kind, ", ".join("%s=%r" % kv for kv in self.as_dict().items()))


def _parallel(p):
    """A _Parallel from a dict or an object with the fields of struct refit_parallel."""
    names = [f for f, _ in _lib._Parallel._fields_]
    get = p.get if hasattr(p, "get") else (lambda k, d: getattr(p, k, d))
    unknown = set(p) - set(names) if hasattr(p, "keys") else set()
    if unknown:
        raise InvalidArgument(EINVAL, "parallel position: unknown field %s" % ", ".join(sorted(unknown)))
    par = _lib._Parallel()
    for f in names:
        v = get(f, None)
        if f == "layout":
            par.layout = _b(v) if v else None
        elif f == "pp_layers":
            if v:
                arr = (ctypes.c_int * len(v))(*[int(x) for x in v])
                par._pp_keep = arr  # alive as long as the struct
                par.pp_layers = ctypes.cast(arr, ctypes.POINTER(ctypes.c_int))
        else:
            setattr(par, f, int(v if v is not None else (1 if f.endswith("_size") else 0)))
    return par


class TensorInfo:
    """A destination tensor of a receiver's layout (struct refit_tensor_info)."""
    __slots__ = ("name", "dtype", "shape", "ptr", "memtype", "nbytes")

    def __init__(self, ti):
        self.name = ti.name.decode()
        self.dtype = DType(ti.dtype)
        self.shape = tuple(ti.shape[i] for i in range(ti.ndim))
        self.ptr = ti.ptr
        self.memtype = ti.memtype
        self.nbytes = ti.nbytes

    def __repr__(self):
        return "TensorInfo(%r, %s, %s, %d bytes%s)" % (self.name, self.dtype.name, self.shape, self.nbytes,
                                                      "" if self.ptr else ", unbound")


class PullStats:
    """Per-cycle figures of a pull (struct refit_pull_stats): seconds, bytes."""
    FIELDS = ("version", "alloc_s", "register_s", "connect_s", "plan_s", "transfer_s", "convert_s", "verify_s",
              "commit_s", "total_s", "bytes_wire", "bytes_out", "descriptors", "sources", "plan_cached",
              "wait_s", "source", "xfer_start", "xfer_end", "fallbacks", "store_round_trips", "bytes_delta",
              "delta_descriptors", "delta_fallbacks", "notes_ignored", "bytes_refetched", "bytes_failed_share")
    __slots__ = FIELDS

    def __init__(self, s):
        for f in self.FIELDS:
            setattr(self, f, getattr(s, f))
        self.plan_cached = bool(self.plan_cached)
        self.source = self.source.decode("utf-8", "replace")

    def as_dict(self):
        return {f: getattr(self, f) for f in self.FIELDS}

    def __repr__(self):
        return "PullStats(v%d: %d bytes from %d sources in %.3f s, transfer %.3f s, plan %s)" % (
            self.version, self.bytes_wire, self.sources, self.total_s, self.transfer_s,
            "cached" if self.plan_cached else "built")


class Receiver(_Handle):
    """One inference rank's receiver (refit_receiver_*).

    ``target``: "vllm" or "hf" (None: model.target of the configuration).
    Destinations are bound with bind() (zero-copy into the engine's own
    parameters) or allocated by refit (allocate(); read them through
    arrays())."""
    _destroy = "refit_receiver_destroy"

    def __init__(self, ctx, tp_rank=0, tp_size=1, ep_size=0, target=None, receiver_id=None):
        super().__init__()
        self.ctx = ctx
        self._target = _lib._Target(tp_rank, tp_size, ep_size, _b(target))
        h = ctypes.c_void_p()
        check(_lib.load().refit_receiver_create(ctx._ptr(), ctypes.byref(self._target), _b(receiver_id),
                                                ctypes.byref(h)),
              "receiver %s" % (receiver_id or "tp%d" % tp_rank))
        self._h = h.value
        ctx._children.add(self)
        self.receiver_id = receiver_id
        self._refs = {}

    def _closed(self):
        self._refs.clear()

    def __len__(self):
        return _lib.load().refit_receiver_count(self._ptr())

    def tensors(self):
        """The destinations of this layout, in layout order (TensorInfo)."""
        lib = _lib.load()
        with self._lock:
            out = []
            ti = _lib._TensorInfo()
            for i in range(lib.refit_receiver_count(self._ptr())):
                check(lib.refit_receiver_tensor(self._ptr(), i, ctypes.byref(ti)))
                out.append(TensorInfo(ti))
            return out

    def bind(self, name, tensor, dtype=None, shape=None):
        """Bind a destination by its target-layout (vLLM or HF) name; dtype and
        shape must match the layout's (bf16 and f32 destinations may also take
        the other: refit casts).  Refit writes into the tensor during pull()."""
        ref = tensor_ref(tensor, name, dtype=dtype, shape=shape, writable=True)
        with self._lock:
            rc = _lib.load().refit_receiver_bind(self._ptr(), name.encode(), ref.ptr, int(ref.dtype),
                                                 len(ref.shape), ref.c_shape(), ref.memtype)
            _raise_memtype(rc, ref, name, "pull")
            check(rc)
            # The previous object of this name is no longer written to: refit
            # re-registers destinations on the next pull.
            self._refs[name] = ref

    def bind_all(self, tensors, dtype=None):
        items = tensors.items() if hasattr(tensors, "items") else tensors
        for name, t in items:
            self.bind(name, t, dtype=dtype)

    def allocate(self):
        """Allocate host memory (owned by the receiver) for every unbound destination."""
        with self._lock:
            check(_lib.load().refit_receiver_allocate(self._ptr()))

    def pull(self, version=LATEST):
        """Pull version V (LATEST: the newest every source holds; NEXT: the first
        newer than the last pull) into the destinations; returns PullStats.
        On failure the destinations still hold the previous version (unless
        refit.in_place).  How long it waits is refit.timeout (configuration);
        expiry raises Timeout."""
        s = _lib._PullStats()
        s.size = ctypes.sizeof(s)
        with self._lock:
            check(_lib.load().refit_receiver_pull(self._ptr(), int(version), ctypes.byref(s)))
        return PullStats(s)

    def plan_dry(self, sources):
        """Plan this receiver's layout from trainer ranks at the given parallel
        positions (dicts like ``{"tp_rank": 0, "tp_size": 2}``) as if each
        published every tensor of its rank; nothing is transferred and the
        cached plan is replaced (refit_receiver_plan_dry).  Returns PlanInfo
        (seconds, pieces, descriptors, scatters, checks, wire_bytes,
        scratch_bytes, staging_bytes, sources)."""
        if not _lib.has("refit_receiver_plan_dry"):
            raise NotSupported(ENOTSUP, "this librefit has no refit_receiver_plan_dry")
        src = [_parallel(p) for p in sources]
        arr = (_lib._Parallel * max(1, len(src)))(*src)
        info = _lib._PlanInfo()
        info.size = ctypes.sizeof(info)
        with self._lock:
            check(_lib.load().refit_receiver_plan_dry(self._ptr(), arr, len(src), ctypes.byref(info)))
        return _Figures("PlanInfo", info, ("seconds", "pieces", "descriptors", "scatters", "checks", "wire_bytes",
                                           "scratch_bytes", "staging_bytes", "sources"))

    def arrays(self):
        """{name: numpy array} viewing every bound or allocated host
        destination (BF16 as uint16, F8_E4M3 as uint8 raw bits).  Views of
        memory refit allocated are valid only until the next pull (refit
        double-buffers its own destinations and flips them on commit, and may
        reallocate them): call arrays() again after every pull."""
        return {t.name: a for t, a in ((t, self._view(t)) for t in self.tensors()) if a is not None}

    def array(self, name):
        for t in self.tensors():
            if t.name == name:
                a = self._view(t)
                if a is None:
                    raise InvalidArgument(EINVAL, "receiver destination '%s' is neither bound nor allocated "
                                          "(call allocate() or bind())" % name)
                return a
        raise NotFound(ENOENT, "receiver: no destination named '%s' in this layout" % name)

    def _view(self, t):
        if not t.ptr or t.memtype != _lib.MEM_HOST:
            return None
        ref = self._refs.get(t.name)
        if ref is not None and ref.ptr == t.ptr:
            return ref.owner  # the caller's own object
        import numpy as np
        buf = (ctypes.c_uint8 * t.nbytes).from_address(t.ptr)
        buf._refit_owner = self  # the view keeps the receiver (and its memory) from being collected
        return np.frombuffer(buf, dtype=NUMPY_VIEW[t.dtype]).reshape(t.shape)


class StandinShard(_Closing):
    """One trainer rank's Megatron tensors made in memory from an HF
    checkpoint (refit_standin_shard_load: what `refit shard` writes to
    files), as HostTensors over refit's arena.  The trainer stand-in of the
    tests and tools: ``pub.add_all(shard.tensors)``.  Close it (or use it as
    a context manager) after its publisher has closed."""

    def __init__(self, ctx, hf_dir, **parallel):
        from .host import HostTensor
        lib = _lib.load()
        if not (_lib.has("refit_standin_shard_load") and _lib.has("refit_context_model")):
            raise NotSupported(ENOTSUP, "this librefit has no refit_standin_shard_load")
        self._s = _lib._StandinShard()
        par = _parallel(parallel)
        check(lib.refit_standin_shard_load(lib.refit_context_model(ctx._ptr()), str(hf_dir).encode(),
                                           ctypes.byref(par), ctypes.byref(self._s)),
              "stand-in shard of %s" % hf_dir)
        self._arena = (ctypes.c_char * max(1, self._s.bytes)).from_address(self._s.arena)
        self._arena._refit_owner = self
        self.tensors = {}
        for i in range(self._s.n):
            t = self._s.t[i]
            shape = tuple(t.shape[k] for k in range(t.ndim))
            self.tensors[t.name.decode()] = HostTensor(shape, DType(t.dtype), self._arena, t.data - self._s.arena)

    def close(self):
        if getattr(self, "_s", None) is not None and self._s.arena:
            _lib.load().refit_standin_shard_free(ctypes.byref(self._s))
            self._s = None


def standin_step(tensor, from_version, to_version, dtype=None):
    """Apply the trainer stand-in's deterministic weight change (refit/standin.h)
    in place: turns version `from` weights into version `to` weights, the same
    change `refit publish` makes and `refit convert` expects.  Floating dtypes."""
    ref = tensor_ref(tensor, "standin", dtype=dtype, writable=True)
    if ref.memtype != _lib.MEM_HOST:
        raise NotSupported(ENOTSUP, "standin_step: host memory only")
    check(_lib.load().refit_standin_step(ref.ptr, ref.nbytes, int(ref.dtype), int(from_version),
                                         int(to_version)), "standin_step")
