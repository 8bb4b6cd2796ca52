"""Finding and loading librefit, and the ctypes prototypes of its C API.

Search order (the first that exists wins):

1. ``REFIT_LIBRARY``: a path to the library file.
2. Next to the package: ``refit/librefit.so`` (a wheel that bundles it).
3. A build tree: ``$REFIT_BUILD_ROOT/core/librefit.so``; the ``build/``
   directory of the source tree this package lives in (running from a
   checkout); ``./build/core/librefit.so``.
4. The system's library path (``LD_LIBRARY_PATH``, the ld.so cache,
   ``ctypes.util.find_library("refit")``).

Plugins: librefit searches ``REFIT_PLUGIN_PATH``, then the build tree it was
compiled in, then its install directory.  A build tree found here may have
been moved or copied since it was built (the compiled-in path then points
nowhere), so when the library comes from a build tree (or from next to the
package with a ``plugins/`` directory beside it) and ``REFIT_PLUGIN_PATH`` is
not set, this module sets it to that tree's plugin directories before the
library reads it.  A ``REFIT_PLUGIN_PATH`` set by the user is left alone.
"""

import ctypes
import ctypes.util
import os
import threading

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_LIB_NAMES = ("librefit.so",)

REFIT_MAX_DIMS = 8
REFIT_LATEST = 0xFFFFFFFFFFFFFFFF
REFIT_NEXT = 0xFFFFFFFFFFFFFFFF - 1
MEM_HOST = 1
MEM_CUDA = 2


class _Parallel(ctypes.Structure):
    # struct refit_parallel: the Megatron position, the data-parallel replica,
    # the source layout ("megatron" / "fsdp") and its FSDP shard, virtual
    # pipeline stages and an uneven pipeline split
    _fields_ = [(n, ctypes.c_int) for n in (
        "tp_rank", "tp_size", "pp_rank", "pp_size", "ep_rank", "ep_size", "etp_rank", "etp_size",
        "dp_rank", "dp_size")] + [("layout", ctypes.c_char_p)] + \
        [(n, ctypes.c_int) for n in ("shard_rank", "shard_size", "vp_size")] + \
        [("pp_layers", ctypes.POINTER(ctypes.c_int))]


class _Target(ctypes.Structure):
    _fields_ = [("tp_rank", ctypes.c_int), ("tp_size", ctypes.c_int), ("ep_size", ctypes.c_int),
                ("name", ctypes.c_char_p)]


class _PullStats(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("version", ctypes.c_uint64)] + \
        [(n, ctypes.c_double) for n in ("alloc_s", "register_s", "connect_s", "plan_s", "transfer_s",
                                        "convert_s", "verify_s", "commit_s", "total_s")] + \
        [("bytes_wire", ctypes.c_uint64), ("bytes_out", ctypes.c_uint64), ("descriptors", ctypes.c_uint64),
         ("sources", ctypes.c_uint32), ("plan_cached", ctypes.c_uint32), ("wait_s", ctypes.c_double),
         ("source", ctypes.c_char * 64), ("xfer_start", ctypes.c_double), ("xfer_end", ctypes.c_double),
         ("fallbacks", ctypes.c_uint32), ("store_round_trips", ctypes.c_uint64), ("bytes_delta", ctypes.c_uint64),
         ("delta_descriptors", ctypes.c_uint32), ("delta_fallbacks", ctypes.c_uint32), ("notes_ignored", ctypes.c_uint32),
         ("bytes_refetched", ctypes.c_uint64), ("bytes_failed_share", ctypes.c_uint64)]


class _TensorInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", ctypes.c_int64 * REFIT_MAX_DIMS), ("ptr", ctypes.c_void_p),
                ("memtype", ctypes.c_uint32), ("nbytes", ctypes.c_size_t)]


class _PublisherStats(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("regions", ctypes.c_size_t), ("registrations", ctypes.c_size_t),
                ("kept", ctypes.c_size_t), ("version", ctypes.c_uint64)]


class _StandinTensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", ctypes.c_int64 * REFIT_MAX_DIMS), ("data", ctypes.c_void_p), ("nbytes", ctypes.c_size_t)]


class _StandinShard(ctypes.Structure):
    _fields_ = [("t", ctypes.POINTER(_StandinTensor)), ("n", ctypes.c_size_t), ("arena", ctypes.c_void_p),
                ("bytes", ctypes.c_size_t)]


class _PlanInfo(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("seconds", ctypes.c_double)] + \
        [(n, ctypes.c_uint64) for n in ("pieces", "descriptors", "scatters", "checks", "wire_bytes",
                                        "scratch_bytes", "staging_bytes")] + [("sources", ctypes.c_uint32)]


def _source_root():
    # bindings/python/refit/_lib.py -> the source root three levels up.
    root = os.path.dirname(os.path.dirname(os.path.dirname(_PKG_DIR)))
    return root if os.path.isfile(os.path.join(root, "core", "include", "refit", "refit.h")) else None


def _candidates():
    """(path, kind) in search order; kind is 'env', 'package', 'build' or 'system'."""
    env = os.environ.get("REFIT_LIBRARY")
    if env:
        yield env, "env"
        return  # an explicit choice: never fall back to another library silently
    for n in _LIB_NAMES:
        yield os.path.join(_PKG_DIR, n), "package"
    roots = []
    if os.environ.get("REFIT_BUILD_ROOT"):
        roots.append(os.environ["REFIT_BUILD_ROOT"])
    src = _source_root()
    if src:
        roots.append(os.path.join(src, "build"))
    roots.append(os.path.join(os.getcwd(), "build"))
    for r in roots:
        for n in _LIB_NAMES:
            yield os.path.join(r, "core", n), "build"
    # dlopen's own search first (LD_LIBRARY_PATH, the ld.so cache), then
    # what find_library digs out of ldconfig/gcc.
    yield "librefit.so", "system"
    found = ctypes.util.find_library("refit")
    if found and found != "librefit.so":
        yield found, "system"


def _plugin_dirs(root):
    """The <root>/<kind>/<name> directories that hold plugin files."""
    dirs = []
    for kind in ("transport", "store", "model"):
        kd = os.path.join(root, kind)
        if not os.path.isdir(kd):
            continue
        for name in sorted(os.listdir(kd)):
            d = os.path.join(kd, name)
            if os.path.isdir(d):
                dirs.append(d)
    return dirs


def _set_plugin_path(lib_path, kind):
    if "REFIT_PLUGIN_PATH" in os.environ:
        return
    lib_dir = os.path.dirname(os.path.abspath(lib_path))
    if kind == "build" or (kind == "env" and os.path.basename(lib_dir) == "core"):
        root = os.path.join(os.path.dirname(lib_dir), "plugins")
    elif kind == "package" or (kind == "env" and os.path.isdir(os.path.join(lib_dir, "plugins"))):
        # A wheel, or a packed build (tools/dev/gpu/pack.sh): plugins/ beside the library.
        root = os.path.join(lib_dir, "plugins")
    else:
        return  # an installed library finds its installed plugins itself
    dirs = _plugin_dirs(root)
    if dirs:
        # os.environ writes through to the C environment librefit reads.
        os.environ["REFIT_PLUGIN_PATH"] = ":".join(dirs)


_lock = threading.Lock()
_lib = None
_lib_path = None


def _prototypes(lib):
    P, I, S, U64, CP = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_char_p
    PP = ctypes.POINTER(ctypes.c_void_p)
    I64P = ctypes.POINTER(ctypes.c_int64)
    protos = {
        "refit_strerror": (CP, [I]),
        "refit_error_message": (CP, []),
        "refit_error_status": (I, []),
        "refit_error_clear": (None, []),
        "refit_dtype_size": (S, [I]),
        "refit_dtype_name": (CP, [I]),
        "refit_context_create": (I, [CP, ctypes.POINTER(CP), S, PP]),
        "refit_context_destroy": (None, [P]),
        "refit_context_config": (P, [P]),
        "refit_config_str": (I, [P, CP, ctypes.POINTER(CP)]),
        "refit_publisher_create": (I, [P, ctypes.POINTER(_Parallel), CP, PP]),
        "refit_publisher_destroy": (None, [P]),
        "refit_publisher_add": (I, [P, CP, P, I, I, I64P, ctypes.c_uint32]),
        "refit_publisher_publish": (I, [P, U64]),
        "refit_publisher_wait_released": (I, [P, U64, ctypes.c_int64]),
        "refit_receiver_create": (I, [P, ctypes.POINTER(_Target), CP, PP]),
        "refit_receiver_destroy": (None, [P]),
        "refit_receiver_bind": (I, [P, CP, P, I, I, I64P, ctypes.c_uint32]),
        "refit_receiver_count": (S, [P]),
        "refit_receiver_tensor": (I, [P, S, ctypes.POINTER(_TensorInfo)]),
        "refit_receiver_allocate": (I, [P]),
        "refit_receiver_pull": (I, [P, U64, ctypes.POINTER(_PullStats)]),
        "refit_standin_step": (I, [P, S, I, U64, U64]),
        "refit_context_model": (P, [P]),
        "refit_standin_shard_load": (I, [P, CP, ctypes.POINTER(_Parallel), ctypes.POINTER(_StandinShard)]),
        "refit_standin_shard_free": (None, [ctypes.POINTER(_StandinShard)]),
        # Newer entry points: absent from an older librefit, their methods
        # then raise NotSupported.
        "refit_publisher_stats": (I, [P, ctypes.POINTER(_PublisherStats)]),
        "refit_receiver_plan_dry": (I, [P, ctypes.POINTER(_Parallel), S, ctypes.POINTER(_PlanInfo)]),
    }
    optional = {"refit_publisher_stats", "refit_receiver_plan_dry", "refit_context_model",
                "refit_standin_shard_load", "refit_standin_shard_free"}
    for name, (res, args) in protos.items():
        if name in optional and not hasattr(lib, name):
            continue
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args


def has(name):
    """Whether the loaded librefit exports `name`."""
    return hasattr(load(), name)


def load():
    """The loaded librefit (ctypes.CDLL), loading it on first use."""
    global _lib, _lib_path
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for path, kind in _candidates():
            if kind != "system" and not os.path.isfile(path):
                tried.append(path)
                continue
            _set_plugin_path(path, kind)
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                tried.append("%s (%s)" % (path, e))
                if kind == "env":
                    break
                continue
            _prototypes(lib)
            _lib, _lib_path = lib, path
            return lib
        raise OSError(
            "refit: cannot find librefit; tried: %s.  Set REFIT_LIBRARY to the library file, "
            "REFIT_BUILD_ROOT to a meson build directory, or install librefit on the library path"
            % (", ".join(tried) or "nothing"))


def library_path():
    """The path of the loaded librefit (loading it if needed)."""
    load()
    return _lib_path
