/* cmd_publish.c — `refit publish`: a trainer stand-in.  It takes its
 * Megatron shard of an HF checkpoint (the `refit shard` layout), publishes
 * versions 1..K, changing the weights deterministically between versions
 * (refit/standin.h), and waits for each version to be released. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "refit/convert.h"
#include "refit/cuda_pool.h"
#include "refit/refit.h"
#include "refit/standin.h"
#include "refit/status.h"

static int usage(FILE *f)
{
    fprintf(f,
            "usage: refit publish --config C --hf DIR --tp N --rank R [--ep M] [--pp P] [--cycles K]\n"
            "                     [--layout megatron|fsdp] [--shards N] [--dp N --dp-rank D]\n"
            "                     [--id NAME] [--device host|cuda] [--stats FILE] [--set key=value]...\n"
            "A trainer rank stand-in: publishes its Megatron shard of the HF checkpoint in DIR\n"
            "(pipeline rank R / max(N,M), tp rank R mod N, ep rank R mod M) as versions 1..K\n"
            "(default 1), the weights changing between versions, and waits after each for\n"
            "refit.receivers receivers.  --layout fsdp publishes FSDP rank R of --shards N (HF\n"
            "names, dim-0 chunks; no --tp).  --dp N --dp-rank D: one of N data-parallel\n"
            "replicas of that position (receivers read from any).\n"
            "--device cuda keeps the shard in GPU memory (refit_cuda_alloc) and publishes it as\n"
            "REFIT_MEM_CUDA; --stats FILE appends one JSON line per version (publish and staging\n"
            "seconds).\n");
    return f == stdout ? 0 : 2;
}

/* The options beyond the common rank options. */
struct pub_opts {
    struct cli_rank_opts r;
    const char *layout;
    int pp, shards, dp, dp_rank;
};

static int pub_opt(void *arg, const char *o, const char *v)
{
    struct pub_opts *p = arg;
    if (!strcmp(o, "--layout")) {
        if (strcmp(v, "megatron") && strcmp(v, "fsdp"))
            return refit_error_set(REFIT_EINVAL, "--layout '%s': megatron or fsdp", v);
        p->layout = v;
        return 0;
    }
    if (!strcmp(o, "--pp"))
        return cli_int(o, v, 1, 4096, &p->pp);
    if (!strcmp(o, "--shards"))
        return cli_int(o, v, 1, 65536, &p->shards);
    if (!strcmp(o, "--dp"))
        return cli_int(o, v, 1, 65536, &p->dp);
    if (!strcmp(o, "--dp-rank"))
        return cli_int(o, v, 0, 65535, &p->dp_rank);
    return cli_rank_opt(&p->r, o, v);
}

int cmd_publish(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
    const char *ovr[64];
    /* Two more overrides are added below. */
    struct pub_opts po = {.r = {.rank = -1, .ep = 1, .cycles = 1, .device = "host", .ovr = ovr, .max_set = 60},
                          .layout = "megatron", .pp = 1, .shards = 0, .dp = 1};
    int rc = cli_parse_pairs(argc, argv, pub_opt, &po);
    struct cli_rank_opts r = po.r;
    bool fsdp = !strcmp(po.layout, "fsdp");
    if (!rc && fsdp) {
        /* FSDP: rank R of --shards N, no model parallelism */
        if (r.tp || po.pp > 1 || r.ep > 1 || !po.shards)
            rc = refit_error_set(REFIT_EINVAL, "--layout fsdp takes --shards N and no --tp, --ep or --pp");
        r.tp = 1;
    }
    if (!rc && po.dp_rank >= po.dp)
        rc = refit_error_set(REFIT_EINVAL, "--dp-rank %d of --dp %d", po.dp_rank, po.dp);
    const char *cfg = r.cfg, *hf = r.hf, *id = r.id, *device = r.device, *stats = r.stats;
    int tp = r.tp, rank = r.rank, ep = r.ep, cycles = r.cycles;
    size_t n_ovr = r.n_ovr;
    if (!rc && strcmp(device, "host") && strcmp(device, "cuda"))
        rc = refit_error_set(REFIT_EINVAL, "--device '%s': host or cuda", device);
    if (!rc && (!hf || !tp || rank < 0))
        rc = refit_error_set(REFIT_EINVAL, "--hf DIR, --tp N and --rank R are required");
    int stage = tp > ep ? tp : ep, world = fsdp ? po.shards : po.pp * stage;
    if (!rc && rank >= world)
        rc = refit_error_set(REFIT_EINVAL, "--rank %d: there are %d trainer ranks", rank, world);
    if (rc)
        return cli_fail("publish", rc);

    char hfcfg[4200];
    snprintf(hfcfg, sizeof(hfcfg), "model.hf_config=%s/config.json", hf);
    ovr[n_ovr++] = hfcfg;
    ovr[n_ovr++] = "model.plugin=auto"; /* the plugin claiming the checkpoint's model_type */
    refit_context_t *ctx = NULL;
    refit_publisher_t *pub = NULL;
    struct refit_standin_shard sh = {0};
    struct refit_parallel par = {.tp_rank = rank % stage % tp, .tp_size = tp, .ep_rank = rank % stage % ep,
                                 .ep_size = ep, .pp_rank = rank / stage, .pp_size = po.pp, .etp_size = 1,
                                 .dp_rank = po.dp_rank, .dp_size = po.dp};
    if (fsdp)
        par = (struct refit_parallel){.tp_size = 1, .pp_size = 1, .ep_size = 1, .etp_size = 1, .layout = "fsdp",
                                      .shard_rank = rank, .shard_size = po.shards, .dp_rank = po.dp_rank,
                                      .dp_size = po.dp};
    /* The GPU first: the transport and the pool use the current device. */
    rc = !strcmp(device, "cuda") ? cli_cuda_select() : 0;
    if (!rc)
        rc = refit_context_create(cfg, ovr, n_ovr, &ctx);
    if (!rc)
        rc = refit_standin_shard_load(refit_context_model(ctx), hf, &par, &sh);
    if (!rc)
        rc = refit_publisher_create(ctx, &par, id, &pub);
    /* --device cuda: the shard lives in device memory; the host copy is
     * where the stand-in's changes are made, then uploaded. */
    int cuda = !strcmp(device, "cuda");
    void **dev = cuda ? calloc(sh.n ? sh.n : 1, sizeof(void *)) : NULL;
    if (!rc && cuda && !dev)
        rc = REFIT_ENOMEM;
    for (size_t i = 0; !rc && cuda && i < sh.n; i++) {
        rc = refit_cuda_alloc(sh.t[i].nbytes ? sh.t[i].nbytes : 1, &dev[i]);
        if (!rc)
            rc = cli_cuda_upload(dev[i], sh.t[i].data, sh.t[i].nbytes);
    }
    for (size_t i = 0; !rc && i < sh.n; i++)
        rc = refit_publisher_add(pub, sh.t[i].name, cuda ? dev[i] : sh.t[i].data, sh.t[i].dtype, sh.t[i].ndim,
                                 sh.t[i].shape, cuda ? REFIT_MEM_CUDA : REFIT_MEM_HOST);
    FILE *sf = NULL;
    if (!rc && stats && !(sf = fopen(stats, "a")))
        rc = refit_error_set(REFIT_EIO, "--stats %s: cannot open for appending", stats);
    const char *who = id ? id : "trainer";
    if (!rc)
        printf("[%s tp%d ep%d] holds %zu tensors, %.3f GB\n", who, par.tp_rank, par.ep_rank, sh.n,
               (double)sh.bytes / 1e9);
    for (int v = 1; !rc && v <= cycles; v++) {
        for (size_t i = 0; !rc && v > 1 && i < sh.n; i++)
            rc = refit_standin_step(sh.t[i].data, sh.t[i].nbytes, sh.t[i].dtype, (uint64_t)v - 1,
                                    (uint64_t)v);
        for (size_t i = 0; !rc && cuda && v > 1 && i < sh.n; i++)
            rc = cli_cuda_upload(dev[i], sh.t[i].data, sh.t[i].nbytes);
        if (rc)
            break;
        double t0 = cli_now();
        rc = refit_publisher_publish(pub, (uint64_t)v);
        if (rc)
            break;
        double t1 = cli_now();
        printf("[%s tp%d ep%d] v%d published in %.3f s, waiting for release\n", who, par.tp_rank,
               par.ep_rank, v, t1 - t0);
        if (sf) {
            struct refit_publisher_stats ps = {.size = sizeof(ps)};
            refit_publisher_stats(pub, &ps);
            fprintf(sf, "{\"publisher\":\"%s\",\"version\":%d,\"publish_s\":%.6f,\"stage_s\":%.6f,"
                        "\"bytes\":%llu}\n", who, v, t1 - t0, ps.stage_s, (unsigned long long)sh.bytes);
            fflush(sf);
        }
        fflush(stdout);
        rc = refit_publisher_wait_released(pub, (uint64_t)v, -1);
        if (!rc) {
            printf("[%s tp%d ep%d] v%d released after %.3f s\n", who, par.tp_rank, par.ep_rank, v,
                   cli_now() - t1);
            fflush(stdout);
        }
    }
    int ret = rc ? cli_fail("publish", rc) : 0;
    if (sf)
        fclose(sf);
    refit_publisher_destroy(pub);
    for (size_t i = 0; dev && i < sh.n; i++)
        refit_cuda_free(dev[i]);
    free(dev);
    refit_standin_shard_free(&sh);
    refit_context_destroy(ctx);
    return ret;
}
