/* cmd_store.c — `refit store ls|show|gc|watch`: look into the metadata
 * store the configuration names (store.plugin, store.namespace). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/catalog.h"
#include "refit/status.h"
#include "refit/store_core.h"

struct opts {
    const char *config, *ns;
    struct cli_list set;
    const char *arg; /* the positional: PREFIX or KEY */
    int longfmt, dry_run, have_latest;
    uint64_t latest;
    int count;      /* -1: no limit */
    int timeout_ms; /* -1: none */
};

#define AT(f) CLI_AT(struct opts, f)
#define STORE_COMMON                                                                                \
    CLI_COMMON(struct opts, config, set),                                                           \
    {"--namespace", NULL, CLI_STR, "NS", 0, 0, NULL, NULL, AT(ns), "the namespace (store.namespace)"}

static const struct cli_opt ls_table[] = {
    STORE_COMMON,
    {"--long", "-l", CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(longfmt), "value size and what each key is"},
};
static const struct cli_opt show_table[] = {STORE_COMMON};
static const struct cli_opt gc_table[] = {
    STORE_COMMON,
    {"--dry-run", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(dry_run), "say what would go, delete nothing"},
    {"--latest", NULL, CLI_U64, "V", 1, INT64_MAX, NULL, NULL, AT(latest),
     "count retained versions back from V (default: the newest READY)"},
};
static const struct cli_opt watch_table[] = {
    STORE_COMMON,
    {"--count", NULL, CLI_INT, "N", 1, INT32_MAX, NULL, NULL, AT(count), "stop after N changes"},
    {"--timeout", NULL, CLI_INT, "MS", 0, INT32_MAX, NULL, NULL, AT(timeout_ms), "stop after MS milliseconds"},
};
#undef AT

static const struct cli_spec store_specs[] = {
    {"store ls", "[PREFIX]", 0, 1, "Keys below PREFIX.\n", ls_table, CLI_N(ls_table)},
    {"store show", "KEY", 1, 1, "Decodes a catalog, source record, ack or heartbeat.\n", show_table,
     CLI_N(show_table)},
    {"store gc", NULL, 0, 0,
     "Drops versions older than refit.retain_versions before the latest (or V) and\n"
     "catalogs no record refers to.\n",
     gc_table, CLI_N(gc_table)},
    {"store watch", "[PREFIX]", 0, 1, "Prints keys created, changed and deleted below PREFIX.\n", watch_table,
     CLI_N(watch_table)},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: refit store ls|show|gc|watch ...: look into the metadata store the\n"
               "configuration names (store.plugin, store.namespace).\n\n");
    for (size_t i = 0; i < CLI_N(store_specs); i++) {
        cli_opts_help(&store_specs[i], f);
        if (i + 1 < CLI_N(store_specs))
            fputc('\n', f);
    }
}

/* What a key holds, by its place in the layout of docs/store.md. */
static const char *kind_of(const char *key)
{
    if (!strncmp(key, "catalogs/", 9))
        return "catalog";
    if (!strncmp(key, "sources/", 8))
        return "record";
    if (!strncmp(key, "heartbeats/", 11))
        return "heartbeat";
    if (!strncmp(key, "versions/", 9))
        return strstr(key, "/acks/") ? "ack" : strstr(key, "/sources/") ? "record" : "other";
    return "other";
}

static void fmt_size(char *buf, size_t cap, uint64_t n)
{
    if (n >= (1ull << 30))
        snprintf(buf, cap, "%.2f GiB", (double)n / (1ull << 30));
    else if (n >= (1ull << 20))
        snprintf(buf, cap, "%.2f MiB", (double)n / (1ull << 20));
    else if (n >= 1024)
        snprintf(buf, cap, "%.1f KiB", (double)n / 1024);
    else
        snprintf(buf, cap, "%" PRIu64 " B", n);
}

static void fmt_time(char *buf, size_t cap, uint64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%03u UTC", (unsigned)(ms % 1000));
}

static int do_ls(refit_store_t *s, const struct opts *o)
{
    char **keys;
    size_t n;
    int rc = refit_store_list(s, o->arg ? o->arg : "", &keys, &n);
    if (rc)
        return rc;
    if (!o->longfmt) {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", keys[i]);
    } else if (n) {
        struct refit_store_get_item *it = calloc(n, sizeof(*it));
        if (!it) {
            free(keys);
            return REFIT_ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
            it[i].key = keys[i];
        rc = refit_store_get_many(s, it, n);
        printf("%-10s %12s  %s\n", "KIND", "SIZE", "KEY");
        for (size_t i = 0; !rc && i < n; i++) {
            char sz[32];
            if (it[i].status)
                snprintf(sz, sizeof(sz), "(%s)", refit_strerror(it[i].status));
            else
                fmt_size(sz, sizeof(sz), it[i].len);
            printf("%-10s %12s  %s\n", kind_of(keys[i]), sz, keys[i]);
            free(it[i].val);
        }
        free(it);
    }
    if (!rc)
        fprintf(stderr, "%zu key%s in namespace '%s' (%s store)\n", n, n == 1 ? "" : "s",
                refit_store_namespace(s), refit_store_plugin_name(s));
    free(keys);
    return rc;
}

static void dims(char *buf, size_t cap, const uint64_t *d, uint32_t n)
{
    size_t at = (size_t)snprintf(buf, cap, "[");
    for (uint32_t i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%" PRIu64, i ? "," : "", d[i]);
    if (at < cap)
        snprintf(buf + at, cap - at, "]");
}

static void show_catalog(const char *key, const refit_catalog_t *c, size_t enc_len)
{
    uint64_t total = 0, by_role[REFIT_CAT_ROLE_COUNT_] = {0};
    size_t n_role[REFIT_CAT_ROLE_COUNT_] = {0};
    for (size_t i = 0; i < c->n_tensors; i++) {
        total += c->tensors[i].nbytes;
        by_role[c->tensors[i].role] += c->tensors[i].nbytes;
        n_role[c->tensors[i].role]++;
    }
    char a[32], b[32];
    fmt_size(a, sizeof(a), enc_len);
    fmt_size(b, sizeof(b), total);
    printf("catalog   %s\nschema    %u\nencoded   %s\ntensors   %zu (%s)\nregions   %u:", key, c->schema, a,
           c->n_tensors, b, c->n_regions);
    for (uint32_t r = 0; r < c->n_regions && r < 16; r++) {
        fmt_size(a, sizeof(a), c->region_len[r]);
        printf(" %u=%s", r, a);
    }
    printf("%s\n\n", c->n_regions > 16 ? " ..." : "");
    printf("%6s  %-58s %-7s %-13s %-16s %-16s %4s %-17s %6s %3s %12s %10s  %s\n", "#", "NAME", "DTYPE", "ROLE",
           "SHAPE", "GLOBAL", "AXIS", "RANGE", "EXPERT", "REG", "OFFSET", "BYTES", "XXH3");
    for (size_t i = 0; i < c->n_tensors; i++) {
        const struct refit_cat_tensor *t = &c->tensors[i];
        char sh[200], gs[200], rg[48], ex[24], nb[32];
        dims(sh, sizeof(sh), t->shape, t->ndim);
        dims(gs, sizeof(gs), t->global_shape, t->ndim);
        if (t->shard_axis >= 0)
            snprintf(rg, sizeof(rg), "%" PRIu64 "..%" PRIu64, t->shard_start, t->shard_start + t->shard_len);
        else
            snprintf(rg, sizeof(rg), "-");
        if (t->expert >= 0)
            snprintf(ex, sizeof(ex), "%" PRId64, t->expert);
        else
            snprintf(ex, sizeof(ex), "-");
        fmt_size(nb, sizeof(nb), t->nbytes);
        char ax[8];
        snprintf(ax, sizeof(ax), t->shard_axis >= 0 ? "%d" : "-", t->shard_axis);
        printf("%6zu  %-58s %-7s %-13s %-16s %-16s %4s %-17s %6s %3u %12" PRIu64 " %10s  %016" PRIx64 "\n", i,
               t->name, refit_dtype_name((enum refit_dtype)t->dtype), refit_cat_role_name((enum refit_cat_role)t->role),
               sh, gs, ax, rg, ex, t->region, t->offset, nb, t->checksum);
    }
    printf("\n%-14s %8s %12s\n", "ROLE", "TENSORS", "BYTES");
    for (int r = 1; r < REFIT_CAT_ROLE_COUNT_; r++)
        if (n_role[r]) {
            fmt_size(a, sizeof(a), by_role[r]);
            printf("%-14s %8zu %12s\n", refit_cat_role_name((enum refit_cat_role)r), n_role[r], a);
        }
}

static void show_record(const char *key, const struct refit_source_record *r, int64_t stale_after_ms)
{
    char hex[33], t[64];
    refit_hash128_hex(&r->catalog, hex);
    fmt_time(t, sizeof(t), r->heartbeat_ms);
    uint64_t now = refit_time_ms();
    const struct refit_par_layout *L = &r->layout;
    printf("record     %s\nschema     %u\nsource     %s\nmodel      %s\n", key, r->schema, r->source_id, r->model);
    printf("layout     tp %u/%u  pp %u/%u  ep %u/%u  etp %u/%u   (rank/size)\n", L->tp_rank, L->tp_size,
           L->pp_rank, L->pp_size, L->ep_rank, L->ep_size, L->etp_rank, L->etp_size);
    printf("transport  %s, address of %zu bytes, %zu remote key%s\n", r->transport, r->address.len, r->n_rkeys,
           r->n_rkeys == 1 ? "" : "s");
    printf("catalog    catalogs/%s\nversion    %" PRIu64 "\nstatus     %s%s\n", hex, r->version,
           refit_source_status_name(r->status),
           refit_record_is_stale(r, 0, now, stale_after_ms) && r->status != REFIT_SOURCE_STALE
               ? " (stale to readers: heartbeat too old)"
               : "");
    printf("heartbeat  %s (%.1f s ago)\n", t, now >= r->heartbeat_ms ? (double)(now - r->heartbeat_ms) / 1e3 : 0.0);
    for (size_t i = 0; i < r->n_rkeys && i < 64; i++)
        printf("  rkey %-4zu %zu bytes\n", i, r->rkeys[i].len);
}

static void hexdump(const void *v, size_t len)
{
    const unsigned char *b = v;
    for (size_t i = 0; i < len && i < 512; i += 16) {
        printf("%08zx ", i);
        for (size_t j = i; j < i + 16; j++)
            printf(j < len ? " %02x" : "   ", j < len ? b[j] : 0);
        printf("  ");
        for (size_t j = i; j < i + 16 && j < len; j++)
            putchar(b[j] >= 32 && b[j] < 127 ? b[j] : '.');
        putchar('\n');
    }
    if (len > 512)
        printf("... %zu bytes in all\n", len);
}

static int do_show(refit_store_t *s, refit_config_t *cfg, const struct opts *o)
{
    if (!o->arg)
        return refit_error_set(REFIT_EINVAL, "show needs a KEY (see `refit store ls`)");
    void *v;
    size_t l;
    int rc = refit_store_get(s, o->arg, &v, &l);
    if (rc)
        return rc;
    const char *kind = kind_of(o->arg);
    if (!strcmp(kind, "catalog")) {
        refit_catalog_t *c;
        struct refit_hash128 want, got;
        rc = refit_catalog_decode(v, l, o->arg, &c);
        if (!rc) {
            show_catalog(o->arg, c, l);
            refit_catalog_destroy(c);
            refit_hash128_of(v, l, &got);
            if (!refit_hash128_parse(o->arg + 9, &want) && memcmp(want.b, got.b, 16))
                fprintf(stderr, "warning: %s does not hash to its key\n", o->arg);
            refit_error_clear();
        }
    } else if (!strcmp(kind, "record")) {
        struct refit_source_record *r;
        int64_t stale = 30000;
        refit_config_duration_ms(cfg, "refit.stale_after", &stale);
        rc = refit_record_decode(v, l, o->arg, &r);
        if (!rc) {
            show_record(o->arg, r, stale);
            free(r);
        }
    } else if (!strcmp(kind, "ack")) {
        struct refit_ack *a;
        rc = refit_ack_decode(v, l, o->arg, &a);
        if (!rc) {
            char t[64];
            fmt_time(t, sizeof(t), a->time_ms);
            printf("ack       %s\nversion   %" PRIu64 "\nreceiver  %s\ntime      %s\n", o->arg, a->version,
                   a->receiver, t);
            free(a);
        }
    } else if (!strcmp(kind, "heartbeat")) {
        uint64_t ms;
        rc = refit_heartbeat_decode(v, l, o->arg, &ms);
        if (!rc) {
            char t[64];
            fmt_time(t, sizeof(t), ms);
            uint64_t now = refit_time_ms();
            printf("heartbeat %s\ntime      %s (%.1f s ago)\n", o->arg, t,
                   now >= ms ? (double)(now - ms) / 1e3 : 0.0);
        }
    } else {
        printf("%s: %zu bytes (not a refit record)\n", o->arg, l);
        hexdump(v, l);
    }
    free(v);
    return rc;
}

static int do_gc(refit_store_t *s, refit_config_t *cfg, const struct opts *o)
{
    int64_t retain = 2;
    int rc = refit_config_int(cfg, "refit.retain_versions", &retain);
    if (rc)
        return rc;
    uint64_t latest = o->latest;
    if (!o->have_latest) {
        char **keys;
        size_t n;
        if ((rc = refit_store_list(s, "versions/", &keys, &n)))
            return rc;
        for (size_t i = 0; i < n; i++) {
            uint64_t v;
            if (!refit_key_parse_version(keys[i], &v) && v > latest)
                latest = v;
        }
        free(keys);
    }
    size_t dv = 0, dc = 0;
    if (!o->dry_run)
        rc = refit_versions_retain(s, latest, (uint32_t)retain, &dv);
    if (!rc)
        rc = refit_catalogs_gc(s, o->dry_run, &dc);
    if (rc)
        return rc;
    printf("latest version %" PRIu64 ", keeping %" PRId64 ": %s %zu version key%s and %zu unreferenced catalog%s\n",
           latest, retain, o->dry_run ? "would delete" : "deleted", dv, dv == 1 ? "" : "s", dc, dc == 1 ? "" : "s");
    if (o->dry_run)
        printf("(--dry-run counts catalogs only; versions older than %" PRIu64 " would go)\n",
               latest >= (uint64_t)retain ? latest - (uint64_t)retain + 1 : 0);
    return 0;
}

/* watch: snapshots of (key, value hash) compared after every change. */
struct snap {
    char **keys;
    uint64_t *h;
    size_t n;
};

static int take_snap(refit_store_t *s, const char *prefix, struct snap *sn)
{
    memset(sn, 0, sizeof(*sn));
    int rc = refit_store_list(s, prefix, &sn->keys, &sn->n);
    if (rc || !sn->n)
        return rc;
    struct refit_store_get_item *it = calloc(sn->n, sizeof(*it));
    sn->h = calloc(sn->n, sizeof(*sn->h));
    if (!it || !sn->h) {
        free(it);
        return REFIT_ENOMEM;
    }
    for (size_t i = 0; i < sn->n; i++)
        it[i].key = sn->keys[i];
    rc = refit_store_get_many(s, it, sn->n);
    for (size_t i = 0; i < sn->n; i++) {
        sn->h[i] = it[i].status ? 0 : XXH3_64bits(it[i].val, it[i].len) | 1;
        free(it[i].val);
    }
    free(it);
    return rc;
}

static void free_snap(struct snap *sn)
{
    free(sn->keys);
    free(sn->h);
}

static long diff_snaps(const struct snap *a, const struct snap *b)
{
    char t[64];
    fmt_time(t, sizeof(t), refit_time_ms());
    long changes = 0;
    size_t i = 0, j = 0;
    while (i < a->n || j < b->n) {
        int c = i >= a->n ? 1 : j >= b->n ? -1 : strcmp(a->keys[i], b->keys[j]);
        if (c < 0) {
            printf("%s  - %s\n", t, a->keys[i++]);
            changes++;
        } else if (c > 0) {
            printf("%s  + %s\n", t, b->keys[j++]);
            changes++;
        } else {
            if (a->h[i] != b->h[j]) {
                printf("%s  ~ %s\n", t, b->keys[j]);
                changes++;
            }
            i++;
            j++;
        }
    }
    fflush(stdout);
    return changes;
}

/* One poll waits at most this long, so --timeout ends the watch on time. */
#define WATCH_POLL_MS 1000

static int do_watch(refit_store_t *s, const struct opts *o)
{
    const char *prefix = o->arg ? o->arg : "";
    uint64_t cursor;
    struct snap cur;
    int rc = refit_store_poll(s, prefix, 0, &cursor, 0);
    if (!rc)
        rc = take_snap(s, prefix, &cur);
    if (rc)
        return rc;
    fprintf(stderr, "watching '%s' in namespace '%s' (%zu keys); + created, ~ changed, - deleted\n", prefix,
            refit_store_namespace(s), cur.n);
    long seen = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int64_t wait = WATCH_POLL_MS;
        if (o->timeout_ms >= 0) {
            struct timespec t1;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            int64_t el = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
            if (el >= o->timeout_ms)
                break;
            if (o->timeout_ms - el < wait)
                wait = o->timeout_ms - el;
        }
        rc = refit_store_poll(s, prefix, cursor, &cursor, wait);
        if (rc == REFIT_ETIMEDOUT) {
            refit_error_clear();
            rc = 0;
            continue;
        }
        if (rc)
            break;
        struct snap next;
        if ((rc = take_snap(s, prefix, &next)))
            break;
        seen += diff_snaps(&cur, &next);
        free_snap(&cur);
        cur = next;
        if (o->count >= 0 && seen >= o->count)
            break;
    }
    free_snap(&cur);
    return rc;
}

int cmd_store(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    const struct cli_spec *spec = NULL;
    for (size_t i = 0; i < CLI_N(store_specs); i++)
        if (!strcmp(store_specs[i].cmd + strlen("store "), sub))
            spec = &store_specs[i];
    if (!spec) {
        fprintf(stderr, "refit store: unknown command '%s'\n", sub);
        usage(stderr);
        return 2;
    }
    const char *sets[64];
    struct opts o = {.set = {.v = sets, .max = 64}, .count = -1, .timeout_ms = -1};
    int n_pos = 0;
    int rc = cli_opts_parse(spec, argc - 1, argv + 1, &o, &o.arg, &n_pos);
    if (rc == CLI_HELP)
        return 0;
    if (rc)
        return cli_fail("store", rc);
    o.have_latest = o.latest != 0;
    struct cli_common c;
    rc = cli_config_from(&c, o.config, &o.set);
    refit_store_t *s = NULL;
    if (!rc)
        rc = refit_store_open(c.cfg, c.loader, o.ns, &s);
    if (!rc) {
        if (!strcmp(sub, "ls"))
            rc = do_ls(s, &o);
        else if (!strcmp(sub, "show"))
            rc = do_show(s, c.cfg, &o);
        else if (!strcmp(sub, "gc"))
            rc = do_gc(s, c.cfg, &o);
        else
            rc = do_watch(s, &o);
    }
    refit_store_close(s);
    int ret = rc ? cli_fail("store", rc) : 0;
    cli_common_close(&c);
    return ret;
}
