/* cuda_ipc_util.c — the helpers the files of the cuda_ipc transport share:
 * clocks and deadlines, CUDA errors as refit errors, waiting for events,
 * and the current-device guard (cuda_ipc.h declares them). */
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cuda_ipc.h"
#include "tp_req_fail.h"
#include "tp_strdup.h"

int64_t cipc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* now + ms, saturating: callers may pass "forever" as a huge timeout. */
int64_t cipc_deadline_after(int64_t ms)
{
    int64_t now = cipc_now_ms();
    return ms > INT64_MAX / 4 - now ? INT64_MAX / 4 : now + (ms > 0 ? ms : 0);
}

struct timespec cipc_abstime(int64_t deadline_ms)
{
    struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000};
    return ts;
}

int cipc_cuda_fail(int status, cudaError_t e, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    /* Clear a non-sticky error, so that the application's next
     * cudaGetLastError does not report ours. */
    cudaGetLastError();
    return H->error_set(status, "%s: %s: %s (%s)", CIPC, what, cudaGetErrorString(e), cudaGetErrorName(e));
}

RTP_DEFINE_REQ_FAIL(cipc_req_fail)

void cipc_backoff(unsigned *spin)
{
    /* Small copies finish in microseconds: yield first, then sleep a
     * little longer each round (at most 0.5 ms). */
    if (++*spin < 64) {
        sched_yield();
        return;
    }
    long us = *spin < 128 ? 20 : *spin < 256 ? 100 : 500;
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

int cipc_events_wait(const cudaEvent_t *ev, uint32_t mask, int64_t deadline_ms)
{
    unsigned spin = 0;
    for (;;) {
        uint32_t left = 0;
        for (int s = 0; s < CIPC_MAX_STREAMS; s++) {
            if (!(mask & (1u << s)))
                continue;
            cudaError_t e = cudaEventQuery(ev[s]);
            if (e == cudaErrorNotReady)
                left |= 1u << s;
            else if (e != cudaSuccess)
                return cipc_cuda_fail(REFIT_EIO, e, "cudaEventQuery (stream %d)", s);
        }
        if (!left)
            return 1;
        mask = left;
        if (cipc_now_ms() >= deadline_ms)
            return 0;
        cipc_backoff(&spin);
    }
}

int cipc_req_poll(struct refit_tp_req *r)
{
    if (r->done)
        return 1;
    for (int s = 0; s < CIPC_MAX_STREAMS; s++) {
        if (!(r->ev_mask & (1u << s)))
            continue;
        cudaError_t e = cudaEventQuery(r->ev[s]);
        if (e == cudaErrorNotReady)
            return 0;
        if (e != cudaSuccess) {
            /* A device error is sticky: nothing of this request will run. */
            cudaGetLastError();
            cipc_req_fail(r, REFIT_EIO, "%s: copies with peer '%s' failed on the GPU: %s (%s)", CIPC,
                          r->peer ? r->peer->name : "?", cudaGetErrorString(e), cudaGetErrorName(e));
            break;
        }
    }
    r->done = 1;
    return 1;
}

int cipc_dev_enter(refit_tp_t *tp, struct cipc_devguard *g)
{
    g->changed = 0;
    cudaError_t e = cudaGetDevice(&g->prev);
    if (e != cudaSuccess)
        return cipc_cuda_fail(REFIT_EPLUGIN, e, "cudaGetDevice");
    if (g->prev != tp->dev) {
        e = cudaSetDevice(tp->dev);
        if (e != cudaSuccess)
            return cipc_cuda_fail(REFIT_EPLUGIN, e, "cudaSetDevice(%d)", tp->dev);
        g->changed = 1;
    }
    return 0;
}

void cipc_dev_leave(struct cipc_devguard *g)
{
    if (g->changed)
        cudaSetDevice(g->prev);
}

int cipc_events_create(refit_tp_t *tp, cudaEvent_t *ev, const char *what)
{
    for (int s = 0; s < tp->nstreams; s++) {
        cudaError_t e = cudaEventCreateWithFlags(&ev[s], cudaEventDisableTiming);
        if (e != cudaSuccess) {
            for (int i = 0; i < s; i++)
                cudaEventDestroy(ev[i]);
            memset(ev, 0, sizeof(cudaEvent_t) * CIPC_MAX_STREAMS);
            return cipc_cuda_fail(REFIT_EPLUGIN, e, "cudaEventCreateWithFlags for %s", what);
        }
    }
    return 0;
}

void cipc_events_destroy(refit_tp_t *tp, cudaEvent_t *ev)
{
    for (int s = 0; s < tp->nstreams; s++)
        if (ev[s])
            cudaEventDestroy(ev[s]);
    memset(ev, 0, sizeof(cudaEvent_t) * CIPC_MAX_STREAMS);
}

RTP_DEFINE_STRDUP(cipc_strdup)
