/* cuda_ipc.h — state shared by the files of the `cuda_ipc` transport
 * plugin: cuda_ipc.c (the plugin, configuration, init/fini),
 * cuda_ipc_mem.c (registration, mappings of peers' allocations),
 * cuda_ipc_peer.c (peers, remote keys), cuda_ipc_xfer.c (copies,
 * completion, notifications), cuda_ipc_util.c (helpers), cuda_ipc_ctl.c
 * (the control channel: a Unix socket per connection, served by the
 * plugin's own thread, that carries hellos, key checks, revokes and their
 * acknowledgements, and notifications) and cuda_ipc_bell.c (doorbells).
 * Everything here has hidden visibility: the plugin exports one symbol.
 *
 * Locking: tp->lock protects every list and flag below (regions, conns,
 * peers, rkeys, requests, mappings, notices).  It is never held while
 * sending on a socket or while waiting for anything but tp->cond; CUDA
 * calls may be made under it (they never call back into us).  Whole
 * messages are serialised per socket by conn->send_lock.  Only the control
 * thread reads sockets; connections are reference-counted and freed under
 * tp->lock when the last reference goes. */
#ifndef CUDA_IPC_H
#define CUDA_IPC_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "refit/plugin.h"
#include "refit/status.h"
#include "refit/transport.h"

#define CIPC "cuda_ipc"
#define CIPC_MAX_STREAMS 16
#define CIPC_ADDR_MAGIC 0x41494352u /* "RCIA" */
#define CIPC_KEY_MAGIC 0x4b494352u  /* "RCIK" */
#define CIPC_MSG_MAGIC 0x4d494352u  /* "RCIM" */
#define CIPC_VERSION 1
#define CIPC_MAX_PAYLOAD 65536      /* largest control message body */
#define CIPC_ALL_REGIONS UINT64_MAX /* quiesce: every region of a peer */
#define CIPC_MIN_ALLOC (2u << 20)   /* smallest allocation exported (see locate()) */

extern const struct refit_host *cipc_host;
#define H cipc_host

/* ---- wire formats (host byte order: peers are on the same host) ---- */

/* The address blob: who we are and where our control socket is. */
struct cipc_addr {
    uint32_t magic;
    uint16_t version;
    uint8_t sock_kind; /* 1: abstract namespace, 2: a path */
    uint8_t sock_len;  /* bytes of sock used (no terminator) */
    uint64_t tp_id;      /* random per transport instance */
    uint64_t proc_nonce; /* random per process: tells a loopback apart */
    uint32_t pid;
    int32_t dev;         /* CUDA device ordinal (in the owner's numbering) */
    char boot_id[40];    /* /proc/sys/kernel/random/boot_id: the host */
    char host[64];       /* hostname, for messages only */
    char bus_id[32];     /* PCI bus id of the device (messages, the owner's device here) */
    char sock[108];
};

/* The packed remote key of a region. */
struct cipc_key {
    uint32_t magic;
    uint16_t version, reserved;
    uint64_t tp_id;     /* the owner transport */
    uint64_t region_id; /* never reused by that transport: also its generation */
    uint8_t secret[16]; /* random per registration */
    uint64_t alloc_off; /* the region's offset in its cudaMalloc allocation */
    uint64_t len;
    uint64_t owner_ptr; /* the region's address in the owner (loopback, messages) */
    int32_t dev;
    uint32_t reserved2;
    cudaIpcMemHandle_t handle; /* of the allocation base */
};

/* The conformance suite flips bytes at fixed offsets of these (and the
 * docs give their sizes): keep them where they are. */
_Static_assert(sizeof(struct cipc_key) == 136, "remote key layout");
_Static_assert(offsetof(struct cipc_key, secret) == 24, "remote key layout");
_Static_assert(offsetof(struct cipc_key, handle) == 72, "remote key layout");
_Static_assert(sizeof(struct cipc_addr) == 280, "address layout");
_Static_assert(offsetof(struct cipc_addr, boot_id) == 32, "address layout");

enum cipc_msg_type {
    MSG_HELLO = 1,   /* client → owner: a = client tp id, b = pid; body = name */
    MSG_WELCOME,     /* owner → client: a = owner tp id */
    MSG_CHECK,       /* client → owner: a = seq; body = struct cipc_key */
    MSG_CHECK_REPLY, /* owner → client: a = seq, b = (uint64_t)(int64_t)status */
    MSG_REVOKE,      /* owner → client: a = region id, b = seq */
    MSG_ACK,         /* client → owner: a = seq */
    MSG_NOTIFY       /* client → owner: body = the notification */
};

struct cipc_msg {
    uint32_t magic;
    uint16_t type, reserved;
    uint32_t len; /* body bytes after this header */
    uint32_t reserved2;
    uint64_t a, b;
};

/* ---- objects ---- */

struct cipc_notice {
    struct cipc_notice *next;
    size_t len;
    unsigned char data[];
};

/* One control connection, either direction. */
struct cipc_conn {
    struct cipc_conn *next; /* tp->conns */
    refit_tp_t *tp;
    uint64_t id;   /* never reused: regions name their openers by it */
    int fd;
    int outgoing;  /* we connected (importer side) */
    int refs;      /* the list's, the peer's, a waiting dereg's */
    int dead;      /* EOF, error or protocol violation: no more traffic */
    int closing;   /* disconnect() asked for it */
    int in_list;
    pthread_mutex_t send_lock;
    unsigned char *rx;
    size_t rx_len, rx_cap;
    /* incoming: the client's identity and the highest revoke it acknowledged */
    uint64_t remote_tp_id;
    uint32_t remote_pid;
    char *remote_name;
    uint64_t acked;
    /* outgoing: replies the user thread waits for */
    refit_tp_peer_t *peer;
    int welcomed;
    uint64_t welcome_id;
    uint64_t reply_seq;
    int64_t reply_status;
};

/* Our registered memory (owner side). */
struct refit_tp_region {
    struct refit_tp_region *next;
    struct cipc_key key; /* what pack_rkey hands out */
    void *ptr;
    size_t len;
    uint64_t *openers; /* ids of connections whose check we answered */
    size_t n_openers, cap_openers;
};

/* A peer's allocation, opened once here (cudaIpcOpenMemHandle). */
struct cipc_map {
    struct cipc_map *next;
    uint64_t owner_tp_id;
    cudaIpcMemHandle_t handle;
    void *base;
    int refs; /* live rkeys using it */
};

struct refit_tp_peer {
    struct refit_tp_peer *next;
    char *name;
    struct cipc_conn *conn;
    struct cipc_addr addr;
    int loopback;    /* same process: the owner's pointers are ours */
    int dead;        /* REFIT_ECONN reason in why */
    char why[160];
    cudaEvent_t wev[CIPC_MAX_STREAMS]; /* last WRITE to this peer, per stream */
    uint32_t wev_mask;
    struct refit_tp_rkey *rkeys;
};

struct refit_tp_rkey {
    struct refit_tp_rkey *next;
    refit_tp_peer_t *peer; /* NULL after disconnect: release frees it alone */
    struct cipc_key key;
    struct cipc_map *map;  /* NULL: loopback, not yet opened, or dropped */
    char *base;            /* the region in our address space */
    int stale;             /* 0, REFIT_ESTALE (revoked) or REFIT_ECONN (owner gone) */
    int checked;           /* the owner confirmed it */
    cudaEvent_t ev[CIPC_MAX_STREAMS]; /* last use, per stream */
    uint32_t ev_mask;      /* streams with a recorded last use */
    uint32_t post_mask;    /* streams used by the post being built */
    uint64_t post_mark;
};

struct refit_tp_req {
    struct refit_tp_req *prev, *next;
    refit_tp_peer_t *peer;
    cudaEvent_t ev[CIPC_MAX_STREAMS];
    uint32_t ev_mask;
    int done;   /* every event observed complete */
    int status; /* 0 or the first failure, reported once done */
    char msg[256];
    uint64_t *regions; /* distinct remote region ids (revokes find us by them) */
    size_t n_regions;
};

/* cuda_ipc_copy.cu: a copy by the SMs (16-byte aligned; else the copy
 * engines), on stream s of the current device. */
cudaError_t cipc_kernel_copy(void *dst, const void *src, size_t n, cudaStream_t s, int blocks_max);

struct refit_tp {
    char *name;
    int dev;
    int nstreams;
    int kernel_copy;  /* transport.cuda_ipc.copy: kernel */
    int copy_blocks;  /* the copy kernel's grid bound (4 per SM) */
    cudaStream_t streams[CIPC_MAX_STREAMS];
    unsigned next_stream;
    uint64_t chunk;
    uint64_t max_notify_len;
    int64_t timeout_ms;
    struct cipc_addr addr;
    char *sock_path; /* path mode: unlinked at fini */
    int listen_fd;
    int wake[2];
    pthread_t thread;
    int thread_on;
    volatile int stop;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* any reply, acknowledgement, notice, death */
    struct cipc_conn *conns;
    uint64_t next_conn_id;
    struct refit_tp_region *regions;
    uint64_t next_region_id;
    uint64_t revoke_seq;
    struct refit_tp_peer *peers;
    struct cipc_map *maps;
    struct refit_tp_req *reqs;
    uint64_t post_seq;
    uint64_t check_seq;
    struct cipc_notice *nq_head, *nq_tail;
    char desc[640];
};

/* ---- cuda_ipc.c ---- */
extern uint64_t cipc_proc_nonce; /* random per process: a loopback peer has ours */

/* ---- cuda_ipc_util.c ---- */
int64_t cipc_now_ms(void); /* CLOCK_MONOTONIC, as tp->cond waits */
int64_t cipc_deadline_after(int64_t ms); /* now + ms, saturating */
struct timespec cipc_abstime(int64_t deadline_ms);
/* Waiting for copies: yield first, then sleep a little longer each round. */
void cipc_backoff(unsigned *spin);
char *cipc_strdup(const char *s);
/* Calls that need our device current set it and put the caller's back:
 * the application's current device is its own business. */
struct cipc_devguard {
    int prev, changed;
};
int cipc_dev_enter(refit_tp_t *tp, struct cipc_devguard *g);
void cipc_dev_leave(struct cipc_devguard *g);
/* One event per stream of tp (timing off); on failure none is left. */
int cipc_events_create(refit_tp_t *tp, cudaEvent_t *ev, const char *what);
void cipc_events_destroy(refit_tp_t *tp, cudaEvent_t *ev);
int cipc_cuda_fail(int status, cudaError_t e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cipc_req_fail(struct refit_tp_req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Under tp->lock: 1 when every event of the request completed. */
int cipc_req_poll(struct refit_tp_req *r);
/* Wait (sleeping, lock held by the caller or not) until the events in mask
 * completed: 1 done, 0 deadline passed, < 0 CUDA error (message set). */
int cipc_events_wait(const cudaEvent_t *ev, uint32_t mask, int64_t deadline_ms);

/* ---- cuda_ipc_mem.c ---- */
/* The driver API's allocation ranges, looked up once per process. */
int cipc_driver_open(void);
/* Under tp->lock: the mapping of k's allocation (opened on first use). */
int cipc_map_get(refit_tp_t *tp, refit_tp_peer_t *p, const struct cipc_key *k, struct cipc_map **out);
void cipc_map_put(refit_tp_t *tp, struct cipc_map *m);
void cipc_region_free(struct refit_tp_region *r);
int cipc_reg(refit_tp_t *tp, void *ptr, size_t len, uint32_t memtype, refit_tp_region_t **out);
int cipc_dereg(refit_tp_t *tp, refit_tp_region_t *r);
int cipc_pack_rkey(refit_tp_t *tp, refit_tp_region_t *r, void *buf, size_t *len);

/* ---- cuda_ipc_peer.c ---- */
/* Under tp->lock: unlink p, end its copies, close its mappings, hang up. */
void cipc_peer_teardown(refit_tp_t *tp, refit_tp_peer_t *p);
int cipc_connect(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name, refit_tp_peer_t **out);
void cipc_disconnect(refit_tp_t *tp, refit_tp_peer_t *p);
int cipc_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len, refit_tp_rkey_t **out);
void cipc_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k);
int cipc_rkey_ptr(refit_tp_t *tp, refit_tp_rkey_t *k, void **ptr);

/* ---- cuda_ipc_xfer.c ---- */
int cipc_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n, refit_tp_req_t **out);
int cipc_progress(refit_tp_t *tp);
int cipc_test(refit_tp_t *tp, refit_tp_req_t *r);
int cipc_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms);
void cipc_req_free(refit_tp_t *tp, refit_tp_req_t *r);
int cipc_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len);
int cipc_poll_notify(refit_tp_t *tp, void *buf, size_t cap, size_t *len, int64_t timeout_ms);

/* ---- cuda_ipc_ctl.c ---- */
int cipc_ctl_start(refit_tp_t *tp, const char *sock_dir);
void cipc_ctl_stop(refit_tp_t *tp);
void cipc_ctl_wake(refit_tp_t *tp);
/* Connect to an owner's socket, say hello and wait for its welcome. */
int cipc_ctl_connect(refit_tp_t *tp, refit_tp_peer_t *p);
/* Whole message on one socket, within the deadline; REFIT_ECONN if gone. */
int cipc_conn_send(struct cipc_conn *c, uint16_t type, uint64_t a, uint64_t b, const void *body,
                   size_t len, int64_t deadline_ms);
/* Under tp->lock. */
void cipc_conn_put(refit_tp_t *tp, struct cipc_conn *c);
struct cipc_conn *cipc_conn_find(refit_tp_t *tp, uint64_t id);
/* Whether the socket has been hung up (no lock needed: poll only). */
int cipc_conn_hung_up(const struct cipc_conn *c);
/* Under tp->lock: stop using the regions of p (one, or CIPC_ALL_REGIONS):
 * mark their keys stale with `why`, fail the requests still copying, wait
 * for their copies and drop the mappings.  1: quiet, 0: copies still
 * running at the deadline (not safe to acknowledge). */
int cipc_peer_quiesce(refit_tp_t *tp, refit_tp_peer_t *p, uint64_t region, int why);
/* Owner side, under tp->lock on entry and exit: tell every opener of r
 * that it goes and wait (timeout) for their acknowledgements.  Returns 0,
 * or REFIT_ETIMEDOUT with the peers that did not answer in the message. */
int cipc_revoke(refit_tp_t *tp, struct refit_tp_region *r);

/* ---- cuda_ipc_bell.c: the doorbell ops (refit_transport_ops bell_*) ---- */

int cipc_bell_create(refit_tp_t *tp, refit_tp_bell_t **out);
int cipc_bell_pack(refit_tp_t *tp, refit_tp_bell_t *b, void *buf, size_t *len);
int cipc_bell_open(refit_tp_t *tp, const void *buf, size_t len, refit_tp_bell_t **out);
int cipc_bell_ring(refit_tp_t *tp, refit_tp_bell_t *b, uint64_t value);
int cipc_bell_wait(refit_tp_t *tp, refit_tp_bell_t *b, uint64_t seen, uint64_t *value, int64_t timeout_ms);
void cipc_bell_close(refit_tp_t *tp, refit_tp_bell_t *b);

#endif
