/* cmd_pull.c — `refit pull`: one inference rank.  Pulls a version (or K
 * successive versions) into destinations refit allocates in the target
 * layout, prints a line of figures per cycle, and with --out writes what it
 * received as safetensors. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/catalog.h"
#include "refit/cuda_pool.h"
#include "refit/refit.h"
#include "refit/safetensors.h"
#include "refit/status.h"

static int write_out(refit_receiver_t *rcv, const char *pattern, uint64_t version)
{
    char path[4096];
    const char *v = strstr(pattern, "{V}");
    if (v)
        snprintf(path, sizeof(path), "%.*s%llu%s", (int)(v - pattern), pattern,
                 (unsigned long long)version, v + 3);
    else
        snprintf(path, sizeof(path), "%s", pattern);
    refit_st_writer_t *w;
    int rc = refit_st_writer_create(&w);
    for (size_t i = 0; !rc && i < refit_receiver_count(rcv); i++) {
        struct refit_tensor_info ti;
        rc = refit_receiver_tensor(rcv, i, &ti);
        if (!rc && ti.memtype == REFIT_MEM_CUDA) {
            void *h = malloc(ti.nbytes ? ti.nbytes : 1);
            rc = h ? cli_cuda_download(h, ti.ptr, ti.nbytes) : REFIT_ENOMEM;
            if (!rc)
                rc = refit_st_writer_add_copy(w, ti.name, ti.dtype, ti.ndim, ti.shape, h, ti.nbytes);
            free(h);
        } else if (!rc) {
            rc = refit_st_writer_add(w, ti.name, ti.dtype, ti.ndim, ti.shape, ti.ptr, ti.nbytes);
        }
    }
    if (!rc)
        rc = refit_st_writer_write(w, path);
    refit_st_writer_destroy(w);
    return rc ? refit_error_push(rc, "writing %s", path) : 0;
}

static void print_stats(FILE *f, const char *who, const struct refit_pull_stats *s, int json)
{
    double gbps = s->transfer_s > 0 ? (double)s->bytes_wire / s->transfer_s / 1e9 : 0;
    if (json) {
        fprintf(f,
                "{\"receiver\":\"%s\",\"version\":%llu,\"alloc_s\":%.6f,\"register_s\":%.6f,"
                "\"connect_s\":%.6f,\"plan_s\":%.6f,\"transfer_s\":%.6f,\"convert_s\":%.6f,"
                "\"verify_s\":%.6f,\"commit_s\":%.6f,\"total_s\":%.6f,\"bytes_wire\":%llu,"
                "\"bytes_out\":%llu,\"descriptors\":%llu,\"sources\":%u,\"plan_cached\":%u,\"wait_s\":%.6f,"
                "\"source\":\"%s\",\"xfer_start\":%.6f,\"xfer_end\":%.6f,\"fallbacks\":%u}\n",
                who, (unsigned long long)s->version, s->alloc_s, s->register_s, s->connect_s, s->plan_s,
                s->transfer_s, s->convert_s, s->verify_s, s->commit_s, s->total_s,
                (unsigned long long)s->bytes_wire, (unsigned long long)s->bytes_out,
                (unsigned long long)s->descriptors, s->sources, s->plan_cached, s->wait_s, s->source,
                s->xfer_start, s->xfer_end, s->fallbacks);
        return;
    }
    fprintf(f,
            "[%s] v%llu: %.3f GB from %u sources in %.3f s (transfer %.3f s, %.2f GB/s; convert "
            "%.3f s, verify %.3f s, commit %.3f s; plan %s)\n",
            who, (unsigned long long)s->version, (double)s->bytes_wire / 1e9, s->sources, s->total_s,
            s->transfer_s, gbps, s->convert_s, s->verify_s, s->commit_s,
            s->plan_cached ? "cached" : "built");
}

/* A re-publishing receiver (tree fan-out) serves its replica to the others:
 * after its last cycle it stays until every receiver (refit.receivers)
 * acknowledged that version, or refit.timeout passed, counting the acks
 * every LINGER_POLL_MS. */
#define LINGER_POLL_MS 20
static void linger(refit_context_t *ctx, uint64_t v)
{
    refit_config_t *cfg = (refit_config_t *)refit_context_config(ctx);
    bool rep = false;
    int64_t want = 0, timeout_ms = 0;
    if (refit_config_bool(cfg, "refit.fanout.republish", &rep) || !rep ||
        refit_config_int(cfg, "refit.receivers", &want) || refit_config_duration_ms(cfg, "refit.timeout", &timeout_ms))
        return;
    refit_loader_t *ld = NULL;
    refit_store_t *st = NULL;
    if (refit_loader_create(cfg, &ld) || refit_store_open(cfg, ld, NULL, &st)) {
        refit_loader_destroy(ld);
        return;
    }
    struct timespec t0, now, nap = {0, LINGER_POLL_MS * 1000000L};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        size_t n = 0;
        if (refit_ack_count(st, v, &n) || n >= (size_t)want)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms)
            break;
        nanosleep(&nap, NULL);
    }
    refit_error_clear();
    refit_store_close(st);
    refit_loader_destroy(ld);
}

struct pull_opts {
    const char *cfg, *hf, *id, *device, *stats, *out, *target, *fp8, *ver;
    int tp, rank, ep, cycles;
    struct cli_list set;
};

#define AT(f) CLI_AT(struct pull_opts, f)
static const struct cli_opt pull_table[] = {
    CLI_COMMON(struct pull_opts, cfg, set),
    {"--tp", NULL, CLI_INT, "N", 1, 65536, NULL, NULL, AT(tp), "tensor-parallel size of the engine (required)"},
    {"--rank", NULL, CLI_INT, "R", 0, 65535, NULL, NULL, AT(rank), "this engine's tp rank, below N (required)"},
    {"--ep", NULL, CLI_INT, "M", 1, 65536, NULL, "1", AT(ep), "1, or N: whole experts per rank"},
    {"--version", NULL, CLI_STR, "V", 0, 0, NULL, "latest", AT(ver), "a version number, latest or next"},
    {"--cycles", NULL, CLI_INT, "K", 1, 1000000, NULL, "1", AT(cycles), "pull K successive new versions"},
    {"--out", NULL, CLI_STR, "FILE", 0, 0, NULL, NULL, AT(out),
     "write what was received as safetensors ('{V}' becomes the version)"},
    {"--id", NULL, CLI_STR, "NAME", 0, 0, NULL, NULL, AT(id), "this receiver's name in acks and output"},
    {"--hf", NULL, CLI_STR, "DIR", 0, 0, NULL, NULL, AT(hf), "take the model's config.json from DIR"},
    {"--target", NULL, CLI_STR, "LAYOUT", 0, 0, NULL, NULL, AT(target), "model.target: hf or vllm"},
    {"--fp8", NULL, CLI_STR, "RULE", 0, 0, NULL, NULL, AT(fp8), "FP8 on, model.fp8.rule: trainer or deepgemm"},
    {"--stats", NULL, CLI_STR, "FILE", 0, 0, NULL, NULL, AT(stats), "append one JSON line of timings per cycle"},
    {"--device", NULL, CLI_CHOICE, "WHERE", 0, 0, "host|cuda", "host", AT(device),
     "destinations in host memory, or in GPU memory (refit_cuda_alloc, REFIT_MEM_CUDA)"},
};
#undef AT

static const struct cli_spec pull_spec = {
    .cmd = "pull",
    .about = "One inference rank (tp rank R of N): pulls version V (with --cycles K, K successive new\n"
             "versions), converts it into the target layout and verifies it.\n",
    .opts = pull_table,
    .n_opts = CLI_N(pull_table),
};

int cmd_pull(int argc, char **argv)
{
    const char *ovr[64];
    /* Up to five more overrides are added below. */
    struct pull_opts po = {.rank = -1, .set = {.v = ovr, .max = 56}};
    int rc = cli_opts_parse(&pull_spec, argc, argv, &po, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    const char *cfg = po.cfg, *hf = po.hf, *id = po.id, *out = po.out, *target = po.target, *fp8 = po.fp8,
               *stats = po.stats, *ver = po.ver, *device = po.device;
    int tp = po.tp, rank = po.rank, ep = po.ep, cycles = po.cycles;
    size_t n_ovr = po.set.n;
    uint64_t version = REFIT_LATEST;
    if (!rc && !strcmp(ver, "next"))
        version = REFIT_NEXT;
    else if (!rc && strcmp(ver, "latest")) {
        char *end;
        unsigned long long x = strtoull(ver, &end, 10);
        if (end == ver || *end || x == 0)
            rc = refit_error_set(REFIT_EINVAL, "--version '%s': a version number, latest or next", ver);
        version = x;
    }
    if (!rc && (!tp || rank < 0))
        rc = refit_error_set(REFIT_EINVAL, "--tp N and --rank R are required");
    if (!rc && rank >= tp)
        rc = refit_error_set(REFIT_EINVAL, "--rank %d is not below --tp %d", rank, tp);
    if (!rc && ep != 1 && ep != tp)
        rc = refit_error_set(REFIT_EINVAL, "--ep %d: vLLM expert parallelism here means ep = tp (%d)", ep, tp);
    if (!rc && cycles > 1 && version != REFIT_LATEST && version != REFIT_NEXT)
        rc = refit_error_set(REFIT_EINVAL, "--cycles with a fixed --version makes no sense");
    if (rc)
        return cli_fail("pull", rc);
    char b_hf[4200], b_target[64], b_fp8r[64];
    if (hf) {
        snprintf(b_hf, sizeof(b_hf), "model.hf_config=%s/config.json", hf);
        ovr[n_ovr++] = b_hf;
        ovr[n_ovr++] = "model.plugin=auto"; /* the plugin claiming the checkpoint's model_type */
    }
    if (target) {
        snprintf(b_target, sizeof(b_target), "model.target=%s", target);
        ovr[n_ovr++] = b_target;
    }
    if (fp8) {
        snprintf(b_fp8r, sizeof(b_fp8r), "model.fp8.rule=%s", fp8);
        ovr[n_ovr++] = "model.fp8.enabled=true";
        ovr[n_ovr++] = b_fp8r;
    }
    refit_context_t *ctx = NULL;
    refit_receiver_t *rcv = NULL;
    struct refit_target tg = {.tp_rank = rank, .tp_size = tp, .ep_size = ep};
    char who[128];
    snprintf(who, sizeof(who), "%s", id ? id : "engine");
    FILE *sf = NULL;
    /* The GPU first: the transport and the pool use the current device. */
    rc = !strcmp(device, "cuda") ? cli_cuda_select() : 0;
    if (!rc)
        rc = refit_context_create(cfg, ovr, n_ovr, &ctx);
    if (!rc)
        rc = refit_receiver_create(ctx, &tg, id, &rcv);
    /* --device cuda: every destination in device memory, bound as the
     * layout gives it. */
    size_t n_dev = !rc && !strcmp(device, "cuda") ? refit_receiver_count(rcv) : 0;
    void **dev = n_dev ? calloc(n_dev, sizeof(void *)) : NULL;
    if (n_dev && !dev)
        rc = REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < n_dev; i++) {
        struct refit_tensor_info ti;
        rc = refit_receiver_tensor(rcv, i, &ti);
        if (!rc)
            rc = refit_cuda_alloc(ti.nbytes ? ti.nbytes : 1, &dev[i]);
        if (!rc)
            rc = refit_receiver_bind(rcv, ti.name, dev[i], ti.dtype, ti.ndim, ti.shape, REFIT_MEM_CUDA);
    }
    if (!rc)
        rc = refit_receiver_allocate(rcv);
    if (!rc && stats && !(sf = fopen(stats, "a")))
        rc = refit_error_set(REFIT_EIO, "--stats %s: cannot open for appending", stats);
    uint64_t last = 0;
    for (int c = 0; !rc && c < cycles; c++) {
        struct refit_pull_stats s = {.size = sizeof(s)};
        rc = refit_receiver_pull(rcv, cycles > 1 && version == REFIT_LATEST ? REFIT_NEXT : version, &s);
        if (rc)
            break;
        print_stats(stdout, who, &s, 0);
        fflush(stdout);
        if (sf) {
            print_stats(sf, who, &s, 1);
            fflush(sf);
        }
        if (out)
            rc = write_out(rcv, out, s.version);
        last = s.version;
    }
    if (!rc && last)
        linger(ctx, last);
    int ret = rc ? cli_fail("pull", rc) : 0;
    if (sf)
        fclose(sf);
    refit_receiver_destroy(rcv);
    for (size_t i = 0; i < n_dev; i++)
        refit_cuda_free(dev[i]);
    free(dev);
    refit_context_destroy(ctx);
    return ret;
}
