/* bench_transport.h — `refit bench transport` pieces other files may reuse:
 * one measurement of a plugin between this process and a peer process (so
 * a baseline can measure another plugin in the same run, e.g. ofi against
 * ucx) and the table of per-plugin baselines. */
#ifndef REFIT_BENCH_TRANSPORT_H
#define REFIT_BENCH_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "cli.h"

struct bt_session;

struct bt_opts {
    const char *plugin;
    const uint64_t *sizes;
    size_t n_sizes;
    double min_time;   /* seconds per measurement */
    int many_n;        /* descriptors of the many-descriptors case (10,000) */
    uint64_t many_len; /* bytes each (4 KiB) */
    char **peer_args;  /* common options (--config, --set, --log) handed to the peer */
    int n_peer_args;
    int rounds;        /* baseline rounds alternating with our largest size */
    struct bt_session **keep; /* when set, bt_measure hands its session over here */
};

/* A running measurement: a peer process with one registered region of
 * `size` bytes, connected, with a local region of the same size. */
int bt_session_open(struct cli_common *cc, const struct bt_opts *o, const char *plugin, uint64_t size,
                    struct bt_session **out);
/* Time one op of `size` bytes repeatedly for min_time seconds. */
int bt_session_time(struct bt_session *s, uint32_t op, uint64_t size, double min_time, double *gbps,
                    double *us);
void bt_session_close(struct bt_session *s); /* safe on NULL */

struct bt_point {
    uint64_t size;
    double gbps[2];  /* [0] READ, [1] WRITE; 1e9 bytes per second */
    double us_op[2]; /* microseconds per transfer */
};

struct bt_result {
    struct bt_point *pts; /* n_sizes entries; free() */
    size_t n;
    double many_gbps; /* many_n x many_len READs in one post */
    double one_gbps;  /* one READ of the same total */
};

/* Measure opts->plugin (or `plugin` when not NULL) between this process
 * and a peer process started from this executable. */
int bt_measure(struct cli_common *cc, const struct bt_opts *o, const char *plugin, struct bt_result *out);

/* A baseline prints its own figure(s) and the ratio of `ours` to it; `s` is
 * the session `ours` was measured with (to interleave rounds). */
typedef int (*bt_baseline_fn)(struct cli_common *cc, const struct bt_opts *o, const struct bt_result *ours,
                              struct bt_session *s);

struct bt_baseline {
    const char *plugin; /* the plugin it is the baseline for */
    const char *what;
    bt_baseline_fn fn;
};

/* Baselines of the fabric plugins (bench_fabric.c). */
int bt_baseline_ucx(struct cli_common *cc, const struct bt_opts *o, const struct bt_result *ours,
                    struct bt_session *s);
int bt_baseline_ofi(struct cli_common *cc, const struct bt_opts *o, const struct bt_result *ours,
                    struct bt_session *s);

#endif
