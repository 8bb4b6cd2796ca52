/* bench_store_scale.h — what the files of `refit bench store-scale` share:
 * the options, the benchmark's state, the server's counters and the calls
 * of one participant (bench_store_scale_who.c) and of the waiting loops
 * (bench_store_scale_loops.c).  bench_store_scale.c says what it measures. */
#ifndef REFIT_BENCH_STORE_SCALE_H
#define REFIT_BENCH_STORE_SCALE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "refit/catalog.h"
#include "refit/store_core.h"

struct ss_opts {
    int receivers, publishers, threads, cycles, t_tp, t_ep, e_tp, reads;
    double seg_share; /* of a read source's checksum segments, those the plan's checks cover */
    const char *model, *sums, *records;
    int sums_transport; /* --sums transport: no checksum in the store */
    const char *watch;  /* --watch members|sources */
    int watch_sources;  /* --watch sources: a receiver watches every record (before members/) */
    int watch_epoch;    /* --watch epoch (default): no warm watch, the epoch read with the records */
    const char *fence;    /* --fence records|heartbeats */
    int fence_heartbeats; /* --fence heartbeats: the fence reads every heartbeat again (before fence.c kept discovery's) */
    int records_all;    /* --records all: a warm receiver reads every record (before discover.c's partial read) */
    const char *ack, *release;
    int ack_apart;     /* --ack apart: the ack in a round trip of its own (before fence.c sent it with the fence) */
    int release_count; /* --release count: every publisher counts the acks (before release.c's verdict) */
};

struct ss {
    struct ss_opts o;
    int port;
    pid_t redis;
    refit_config_t *cfg;
    refit_loader_t *loader;
    refit_store_t **pub, **rcv;
    /* Catalogs per distinct trainer position (tp_rank * ep + ep_rank). */
    int n_cat;
    uint8_t *present; /* a publisher holds this position */
    void **cat_enc;
    size_t *cat_len;
    struct refit_hash128 *cat_hash;
    size_t *n_seg;     /* checksum segments per position (sums.h, from the catalog) */
    size_t **seg_len;  /* their lengths */
    uint8_t *held; /* receivers x n_cat: catalog already fetched */
    uint64_t *cursor; /* receivers: the watch of sources/ */
    double *lat;      /* participants: seconds of the last phase's part */
    uint64_t version;
    int errors;
    char err[512];
    pthread_mutex_t mu;
};


#define SS_CMDS 48

struct counters {
    double calls, in_bytes, out_bytes;
    double cpu; /* the server's CPU seconds (user + system): the store's own time */
    /* per command: name, calls, microseconds (INFO commandstats) */
    int n_cmd;
    char cmd[SS_CMDS][32];
    double cmd_calls[SS_CMDS], cmd_usec[SS_CMDS];
};


/* The server's counters now (INFO all). */
void ss_counters(const struct ss *s, struct counters *c);

/* The distinct trainer position (tp_rank * ep + ep_rank) of publisher p. */
static inline int ss_pub_pos(const struct ss *s, int p)
{
    return (p % s->o.t_tp) * s->o.t_ep + p % s->o.t_ep;
}

/* One participant's part of a cycle (bench_store_scale_who.c). */
int ss_publish_one(struct ss *s, int p);
int ss_receive_one(struct ss *s, int q);
int ss_release_one(struct ss *s, int p);
int ss_lease_one(struct ss *s, int q);

/* One round of each waiting loop (bench_store_scale_loops.c). */
int ss_advert_round(struct ss *s);
int ss_replica_round(struct ss *s, uint64_t image_bytes);
int ss_wake_latency(struct ss *s);

#endif
