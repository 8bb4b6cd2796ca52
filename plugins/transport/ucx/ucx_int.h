/* ucx_int.h — what the files of the ucx transport plugin share (internal;
 * ucx.c's header comment explains the design): the plugin's objects, the
 * wire headers, and the functions one file calls in another.  Everything
 * here has hidden visibility: the plugin still exports one symbol. */
#ifndef REFIT_UCX_INT_H
#define REFIT_UCX_INT_H

#include <dlfcn.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ucp/api/ucp.h>

#include "refit/plugin.h"
#include "refit/status.h"
#include "refit/transport.h"
#include "tp_common.h"

/* The host table (logging, allocation, errors), set by ucxp_load. */
extern const struct refit_host *ucxp_host;
#define H ucxp_host

#define UCXP "ucx"
#define UCXP_AM_NOTIFY 0x5246 /* active message id of notifications */
#define UCXP_AM_CTRL 0x5247   /* hello, revoke, ack, bye */
#define UCXP_ADDR_MAGIC 0x41555852u /* "RXUA" */
#define UCXP_RKEY_MAGIC 0x4b555852u /* "RXUK" */
#define UCXP_BLOB_VERSION 2
/* ------------------------------------------------------------------ */
/* Objects */

struct refit_tp {
    ucp_context_h ctx;
    ucp_worker_h worker;
    ucp_address_t *addr;
    size_t addr_len;
    char *name;
    uint64_t max_notify_len;
    int err_mode; /* 0 none, 1 peer, 2 auto (peer, else none) */
    uint32_t memtypes; /* REFIT_MEMTYPE_BIT set reachable directly */
    uint64_t next_region_id;
    struct refit_tp_peer *peers;
    char desc[512]; /* describe(): what UCX was told to use */
    int in_ctrl;    /* ucxp_ctrl_work() running: no re-entry */
    int ctrl_dirty; /* a hello or bye arrived: watchers need ucxp_ctrl_work */
    size_t ctrl_inflight; /* control sends not yet completed */
    struct refit_tp_region *kept; /* regions a dereg could not release (see ucxp_dereg) */
    int efd;          /* the worker's event fd, -1: sleep-poll */
    struct rtp_core c; /* requests, notices, watchers, acks, lock, thread */
};

struct refit_tp_region {
    ucp_mem_h memh;
    void *ptr;
    size_t len;
    uint32_t memtype;
    uint64_t id;
    void *packed; /* our blob: header + ucp_rkey_pack output */
    size_t packed_len;
    /* In tp->kept after a dereg that timed out (requests still in flight
     * into it): fini unmaps it once the worker is gone. */
    struct refit_tp_region *kept_next;
    int kept;
};

struct refit_tp_peer {
    refit_tp_t *tp;
    struct refit_tp_peer *next;
    ucp_ep_h ep;
    char *name;
    uint64_t owner_id; /* the transport id in its address */
    ucs_status_t err;  /* UCS_OK until the error callback fires */
    struct refit_tp_rkey *rkeys;
};

struct refit_tp_rkey {
    refit_tp_peer_t *peer;
    struct refit_tp_rkey *next; /* in peer->rkeys */
    ucp_rkey_h rk;
    uint64_t base, len, id;
    int stale;
};

/* Wire headers, host byte order: peers are the same architecture (a
 * foreign blob fails the magic check rather than being misread). */
/* A packed remote key: struct rtp_rkey_hdr (word: the length of UCX's
 * packed key), then UCX's packed key. */

/* Control messages: struct rtp_ctrl (HELLO: a the address length, the
 * address after the head), as UCX active messages. */
enum { CTRL_HELLO = 1, CTRL_REVOKE, CTRL_ACK, CTRL_BYE };

/* ucx.c: configuration, context, init/fini, progress, descriptor */
int ucxp_err(int status, ucs_status_t us, const char *fmt, const char *what, const char *who);
int ucxp_status_of(ucs_status_t us);
size_t ucxp_progress_all(refit_tp_t *tp);
void ucxp_peer_close(refit_tp_t *tp, refit_tp_peer_t *p);

/* ucx_xfer.c: the data path: posts, completions, notifications */
void ucxp_op_done(void *request, ucs_status_t us, void *user_data);
ucs_status_t ucxp_am_notify_cb(void *arg, const void *header, size_t header_length, void *data,
                               size_t length, const ucp_am_recv_param_t *param);
void ucxp_track(struct refit_tp_req *r, ucs_status_ptr_t sp, const char *what);
int ucxp_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
              refit_tp_req_t **out);
int ucxp_test(refit_tp_t *tp, refit_tp_req_t *r);
int ucxp_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms);
int ucxp_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len);

/* ucx_mem.c: registration and remote keys */
int ucxp_reg(refit_tp_t *tp, void *ptr, size_t len, uint32_t memtype, refit_tp_region_t **out);
int ucxp_dereg(refit_tp_t *tp, refit_tp_region_t *r);
int ucxp_pack_rkey(refit_tp_t *tp, refit_tp_region_t *r, void *buf, size_t *len);
int ucxp_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len,
                     refit_tp_rkey_t **out);
void ucxp_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k);

/* ucx_peer.c: endpoints, hello/revoke/ack control messages */
void ucxp_ctrl_done(void *request, ucs_status_t us, void *user_data);
int ucxp_ctrl_send(refit_tp_t *tp, ucp_ep_h ep, uint32_t type, uint64_t a, uint64_t b,
                   const void *tail, size_t tail_len);
ucs_status_t ucxp_am_ctrl_cb(void *arg, const void *header, size_t header_length, void *data,
                             size_t length, const ucp_am_recv_param_t *param);
struct refit_tp_req *ucxp_oneshot_flush(refit_tp_t *tp, refit_tp_peer_t *p, ucp_request_param_t *rp,
                                        const char *what);
void ucxp_oneshot_end(refit_tp_t *tp, struct refit_tp_req *r);
size_t ucxp_ctrl_work(refit_tp_t *tp);
void ucxp_ack_cb(refit_tp_t *tp, refit_tp_peer_t *p, uint64_t seq);
int ucxp_send_revoke_cb(refit_tp_t *tp, struct rtp_watcher *w, uint64_t region, uint64_t seq);
void ucxp_watcher_close(refit_tp_t *tp, struct rtp_watcher *w);
int ucxp_connect(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name,
                 refit_tp_peer_t **out);
void ucxp_peer_free(refit_tp_t *tp, refit_tp_peer_t *p);
void ucxp_disconnect(refit_tp_t *tp, refit_tp_peer_t *p);

#endif
