/* tp_strdup.h — a copy of a string in the host's memory: the one body the
 * transport plugins share (ucx and ofi through tp_common.c, cuda_ipc
 * directly).
 *
 * A macro, not a function of tp_common.c, for the reason tp_req_fail.h
 * gives: cuda_ipc links none of tp_common.c, and each plugin reaches the
 * host table through its own `H`. */
#ifndef REFIT_TP_STRDUP_H
#define REFIT_TP_STRDUP_H

#include <string.h>

/* char *name(const char *s): a copy of s from H->alloc, or NULL when
 * memory is short (the caller reports it). */
#define RTP_DEFINE_STRDUP(name)                                                              \
    char *name(const char *s)                                                                \
    {                                                                                        \
        size_t n = strlen(s) + 1;                                                            \
        char *d = H->alloc(n);                                                               \
        if (d)                                                                               \
            memcpy(d, s, n);                                                                 \
        return d;                                                                            \
    }

#endif
