/* cmd_publish.c — `refit publish`: a trainer stand-in.  It takes its
 * Megatron shard of an HF checkpoint (the `refit shard` layout), publishes
 * versions 1..K, changing the weights deterministically between versions
 * (refit/standin.h), and waits for each version to be released. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/convert.h"
#include "refit/cuda_pool.h"
#include "refit/refit.h"
#include "refit/standin.h"
#include "refit/status.h"

struct pub_opts {
    const char *cfg, *hf, *id, *device, *stats, *layout;
    int tp, rank, ep, cycles, pp, shards, dp, dp_rank;
    struct cli_list set;
};

#define AT(f) CLI_AT(struct pub_opts, f)
static const struct cli_opt pub_table[] = {
    CLI_COMMON(struct pub_opts, cfg, set),
    {"--hf", NULL, CLI_STR, "DIR", 0, 0, NULL, NULL, AT(hf), "the HF checkpoint this rank publishes a shard of (required)"},
    {"--tp", NULL, CLI_INT, "N", 1, 65536, NULL, NULL, AT(tp), "the trainer's tensor-parallel size (required)"},
    {"--rank", NULL, CLI_INT, "R", 0, 65535, NULL, NULL, AT(rank), "this trainer rank (required)"},
    {"--ep", NULL, CLI_INT, "M", 1, 65536, NULL, "1", AT(ep), "the trainer's expert-parallel size"},
    {"--pp", NULL, CLI_INT, "P", 1, 4096, NULL, "1", AT(pp), "pipeline stages"},
    {"--cycles", NULL, CLI_INT, "K", 1, 1000000, NULL, "1", AT(cycles), "publish versions 1..K"},
    {"--layout", NULL, CLI_CHOICE, "KIND", 0, 0, "megatron|fsdp", "megatron", AT(layout),
     "Megatron shards, or FSDP rank R of --shards N (HF names, dim-0 chunks; no --tp)"},
    {"--shards", NULL, CLI_INT, "N", 1, 65536, NULL, NULL, AT(shards), "FSDP ranks, with --layout fsdp"},
    {"--dp", NULL, CLI_INT, "N", 1, 65536, NULL, "1", AT(dp), "data-parallel replicas of this position"},
    {"--dp-rank", NULL, CLI_INT, "D", 0, 65535, NULL, "0", AT(dp_rank), "this replica, below --dp"},
    {"--id", NULL, CLI_STR, "NAME", 0, 0, NULL, NULL, AT(id), "this publisher's name in output"},
    {"--device", NULL, CLI_CHOICE, "WHERE", 0, 0, "host|cuda", "host", AT(device),
     "the shard in host memory, or in GPU memory (refit_cuda_alloc, REFIT_MEM_CUDA)"},
    {"--stats", NULL, CLI_STR, "FILE", 0, 0, NULL, NULL, AT(stats),
     "append one JSON line per version (publish and staging seconds)"},
};
#undef AT

static const struct cli_spec pub_spec = {
    .cmd = "publish",
    .about = "A trainer rank stand-in: publishes its Megatron shard of the HF checkpoint in DIR\n"
             "(pipeline rank R / max(N,M), tp rank R mod N, ep rank R mod M) as versions 1..K,\n"
             "the weights changing between versions, and waits after each for refit.receivers\n"
             "receivers.  --dp N --dp-rank D: one of N data-parallel replicas of that position\n"
             "(receivers read from any).\n",
    .opts = pub_table,
    .n_opts = CLI_N(pub_table),
};

int cmd_publish(int argc, char **argv)
{
    const char *ovr[64];
    /* Two more overrides are added below. */
    struct pub_opts po = {.rank = -1, .set = {.v = ovr, .max = 60}};
    int rc = cli_opts_parse(&pub_spec, argc, argv, &po, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    bool fsdp = !rc && !strcmp(po.layout, "fsdp");
    if (!rc && fsdp) {
        /* FSDP: rank R of --shards N, no model parallelism */
        if (po.tp || po.pp > 1 || po.ep > 1 || !po.shards)
            rc = refit_error_set(REFIT_EINVAL, "--layout fsdp takes --shards N and no --tp, --ep or --pp");
        po.tp = 1;
    }
    if (!rc && po.dp_rank >= po.dp)
        rc = refit_error_set(REFIT_EINVAL, "--dp-rank %d of --dp %d", po.dp_rank, po.dp);
    const char *cfg = po.cfg, *hf = po.hf, *id = po.id, *device = po.device, *stats = po.stats;
    int tp = po.tp, rank = po.rank, ep = po.ep, cycles = po.cycles;
    size_t n_ovr = po.set.n;
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
