/* refit/status.h — the one status type of the project and the error context.
 *
 * Every function that can fail returns an int: 0 (REFIT_OK) or a negative
 * REFIT_E* code.  The message that explains a failure is kept per thread and
 * is built where the failure is first detected (refit_error_set), then
 * prefixed with context as it travels up (refit_error_push), so that the
 * caller sees e.g. "pull v3: tensor 'model.norm.weight' from source tp1:
 * checksum mismatch (expected 0x…, got 0x…)". */
#ifndef REFIT_STATUS_H
#define REFIT_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int refit_status_t;

enum refit_status {
    REFIT_OK = 0,
    REFIT_EINVAL = -1,     /* invalid argument (a caller's bug) */
    REFIT_ENOMEM = -2,     /* allocation failed */
    REFIT_ENOENT = -3,     /* no such key, file, tensor, plugin */
    REFIT_EEXIST = -4,     /* already exists */
    REFIT_EIO = -5,        /* I/O error (errno in the message) */
    REFIT_ETIMEDOUT = -6,  /* a configured timeout expired */
    REFIT_EAGAIN = -7,     /* progress and try again (not an error) */
    REFIT_ENOTSUP = -8,    /* operation not supported by this plugin */
    REFIT_EPROTO = -9,     /* malformed data from outside: file, record, peer */
    REFIT_EABI = -10,      /* plugin ABI, kind or name mismatch */
    REFIT_ECONN = -11,     /* peer or service unreachable or gone */
    REFIT_EPERM = -12,     /* authentication or permission failure */
    REFIT_ERANGE = -13,    /* value or access out of range */
    REFIT_ESTALE = -14,    /* stale version, key or source */
    REFIT_ECHECKSUM = -15, /* checksum mismatch */
    REFIT_ECONFIG = -16,   /* configuration error */
    REFIT_ECONFLICT = -17, /* compare-and-swap lost */
    REFIT_ETOOBIG = -18,   /* value larger than a configured maximum */
    REFIT_ECANCELED = -19, /* operation canceled */
    REFIT_EPLUGIN = -20,   /* a plugin failed (its own code in the message) */
    REFIT_ENUMERIC = -21,  /* NaN or Inf where a finite number is required */
    REFIT_STATUS_MIN_ = -22
};

/* Static text for a status code; never NULL. */
const char *refit_strerror(int status);

/* Record a failure in this thread's error context, replacing what was there.
 * Returns status so that `return refit_error_set(REFIT_EIO, "...")` reads
 * naturally.  The message is formatted like printf. */
int refit_error_set(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefix context ("what we were doing: ") to the current message.
 * Returns status unchanged. */
int refit_error_push(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The current message of this thread ("" when none).  The pointer is valid
 * until the next refit_error_* call in this thread. */
const char *refit_error_message(void);

/* The status recorded with the current message (0 when none). */
int refit_error_status(void);

void refit_error_clear(void);

#ifdef __cplusplus
}
#endif
#endif
