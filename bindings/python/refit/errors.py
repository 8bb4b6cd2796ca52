"""Exceptions carrying refit's status code, its name and the message.

Every failure of the C API becomes a :class:`RefitError` (or one of its
subclasses, chosen by status): ``status`` is the negative ``REFIT_E*`` code,
``name`` what ``refit_strerror`` says about it, ``message`` what
``refit_error_message`` said (where it failed: peer, tensor, version).
Checks the bindings make before calling C (a non-contiguous array, a dtype
with no refit equivalent) raise the same classes with the status the C API
would have given, so callers handle one family of exceptions.
"""

from . import _lib

OK = 0
EINVAL = -1
ENOMEM = -2
ENOENT = -3
EEXIST = -4
EIO = -5
ETIMEDOUT = -6
EAGAIN = -7
ENOTSUP = -8
EPROTO = -9
EABI = -10
ECONN = -11
EPERM = -12
ERANGE = -13
ESTALE = -14
ECHECKSUM = -15
ECONFIG = -16
ECONFLICT = -17
ETOOBIG = -18
ECANCELED = -19
EPLUGIN = -20
ENUMERIC = -21

_CODE_NAMES = {v: k for k, v in globals().items() if k.startswith("E") and isinstance(v, int)}


def strerror(status):
    """refit_strerror(status), or a fallback when librefit cannot be loaded."""
    try:
        return _lib.load().refit_strerror(int(status)).decode()
    except OSError:
        return _CODE_NAMES.get(status, "status %d" % status)


class RefitError(Exception):
    """A refit failure: status (negative REFIT_E* code), name, message."""

    def __init__(self, status, message="", name=None):
        self.status = int(status)
        self.code = _CODE_NAMES.get(self.status, str(self.status))  # "EINVAL"
        self.name = name if name is not None else strerror(self.status)
        self.message = message
        super().__init__("%s (%s): %s" % (self.name, self.code, message) if message else
                         "%s (%s)" % (self.name, self.code))


class InvalidArgument(RefitError, ValueError):
    """REFIT_EINVAL: a caller's bug (bad shape, dtype, non-contiguous memory)."""


class NotFound(RefitError, LookupError):
    """REFIT_ENOENT: no such tensor, file, key or plugin."""


class Timeout(RefitError, TimeoutError):
    """REFIT_ETIMEDOUT: a configured timeout expired."""


class NotSupported(RefitError):
    """REFIT_ENOTSUP: not supported (e.g. CUDA memory by this librefit)."""


class ConfigError(RefitError):
    """REFIT_ECONFIG: the configuration is wrong."""


class ChecksumError(RefitError):
    """REFIT_ECHECKSUM: received bytes do not match their checksums."""


_CLASSES = {EINVAL: InvalidArgument, ENOENT: NotFound, ETIMEDOUT: Timeout, ENOTSUP: NotSupported,
            ECONFIG: ConfigError, ECHECKSUM: ChecksumError}


def error(status, message):
    """The exception for status with message (the right subclass)."""
    return _CLASSES.get(int(status), RefitError)(status, message)


def check(rc, context=None):
    """Raise the error librefit recorded when rc is negative; return rc otherwise.

    Must run in the thread that made the call: refit's message is kept per
    thread (ctypes calls run in the calling thread, so it is there)."""
    if rc >= 0:
        return rc
    lib = _lib.load()
    msg = lib.refit_error_message()
    msg = msg.decode(errors="replace") if msg else ""
    lib.refit_error_clear()
    if context:
        msg = "%s: %s" % (context, msg) if msg else context
    raise error(rc, msg)
