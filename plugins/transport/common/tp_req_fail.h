/* tp_req_fail.h — a request's first failure, kept: the one body every
 * transport plugin with requests shares (ucx and ofi through tp_common.c,
 * cuda_ipc directly).
 *
 * A macro, not a function of tp_common.c: each plugin's struct refit_tp_req
 * is its own (cuda_ipc's holds per-stream events and no pending count, and
 * does not link tp_common.c with its progress thread and host table); what
 * they share is the field names `status` (0 or the first failure) and
 * `msg` (a char array; its size is each plugin's). */
#ifndef REFIT_TP_REQ_FAIL_H
#define REFIT_TP_REQ_FAIL_H

#include <stdarg.h>
#include <stdio.h>

/* void name(struct refit_tp_req *r, int status, const char *fmt, ...):
 * r fails with status and the formatted message, unless it failed
 * already (the first failure explains the rest). */
#define RTP_DEFINE_REQ_FAIL(name)                                                            \
    void name(struct refit_tp_req *r, int status, const char *fmt, ...)                      \
    {                                                                                        \
        if (r->status)                                                                       \
            return;                                                                          \
        r->status = status;                                                                  \
        va_list ap;                                                                          \
        va_start(ap, fmt);                                                                   \
        vsnprintf(r->msg, sizeof(r->msg), fmt, ap);                                          \
        va_end(ap);                                                                          \
    }

#endif
