/* status.c — status codes and the per-thread error context. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "refit/status.h"

/* The message is kept per thread so that concurrent pulls do not garble
 * each other's context.  1 KiB holds any useful chain; longer chains are
 * truncated with "…" rather than failing the error path itself. */
#define ERR_CAP 1024

static _Thread_local char err_msg[ERR_CAP];
static _Thread_local int err_status;

const char *refit_strerror(int status)
{
    switch (status) {
    case REFIT_OK: return "success";
    case REFIT_EINVAL: return "invalid argument";
    case REFIT_ENOMEM: return "out of memory";
    case REFIT_ENOENT: return "not found";
    case REFIT_EEXIST: return "already exists";
    case REFIT_EIO: return "I/O error";
    case REFIT_ETIMEDOUT: return "timed out";
    case REFIT_EAGAIN: return "try again";
    case REFIT_ENOTSUP: return "not supported";
    case REFIT_EPROTO: return "malformed data";
    case REFIT_EABI: return "plugin ABI mismatch";
    case REFIT_ECONN: return "connection failed or lost";
    case REFIT_EPERM: return "permission or authentication denied";
    case REFIT_ERANGE: return "out of range";
    case REFIT_ESTALE: return "stale";
    case REFIT_ECHECKSUM: return "checksum mismatch";
    case REFIT_ECONFIG: return "configuration error";
    case REFIT_ECONFLICT: return "compare-and-swap conflict";
    case REFIT_ETOOBIG: return "too big";
    case REFIT_ECANCELED: return "canceled";
    case REFIT_EPLUGIN: return "plugin failure";
    case REFIT_ENUMERIC: return "non-finite value";
    default: return "unknown status";
    }
}

static void truncate_mark(void)
{
    /* "..." in ASCII so that a truncated message stays valid UTF-8. */
    memcpy(err_msg + ERR_CAP - 4, "...", 4);
}

int refit_error_set(int status, const char *fmt, ...)
{
    /* Formatted aside, then copied: an argument may be the message itself
     * (refit_error_set(st, "...%s", refit_error_message())), and
     * vsnprintf into a buffer it reads from is undefined behaviour. */
    char msg[ERR_CAP];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, ERR_CAP, fmt, ap);
    va_end(ap);
    memcpy(err_msg, msg, ERR_CAP);
    if (n >= ERR_CAP)
        truncate_mark();
    err_status = status;
    return status;
}

int refit_error_push(int status, const char *fmt, ...)
{
    char prefix[ERR_CAP];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    if (n < 0)
        return status;
    char old[ERR_CAP];
    if (err_msg[0] == '\0' || err_status == 0)
        snprintf(old, sizeof(old), "%s", refit_strerror(status));
    else
        memcpy(old, err_msg, ERR_CAP);
    if (snprintf(err_msg, ERR_CAP, "%s: %s", prefix, old) >= ERR_CAP)
        truncate_mark();
    err_status = status;
    return status;
}

const char *refit_error_message(void)
{
    return err_msg;
}

int refit_error_status(void)
{
    return err_status;
}

void refit_error_clear(void)
{
    err_msg[0] = '\0';
    err_status = 0;
}
