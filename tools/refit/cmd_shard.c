/* cmd_shard.c — `refit shard`: an HF checkpoint into per-rank files of a
 * trainer (Megatron with tensor, expert and pipeline parallelism, or FSDP),
 * a stand-in for a trainer's state. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/convert.h"
#include "refit/status.h"

struct shard_opts {
    const char *cfg, *hf, *out, *model, *layers;
    int tp, ep, pp, vp, fsdp, mtp;
    struct cli_list set;
};

#define AT(f) CLI_AT(struct shard_opts, f)
static const struct cli_opt shard_table[] = {
    CLI_COMMON(struct shard_opts, cfg, set),
    {"--hf", NULL, CLI_STR, "DIR", 0, 0, NULL, NULL, AT(hf), "the HF checkpoint (config.json, *.safetensors); required"},
    {"--out", NULL, CLI_STR, "DIR2", 0, 0, NULL, NULL, AT(out), "where the rank files go; required"},
    {"--model", NULL, CLI_STR, "NAME", 0, 0, NULL, NULL, AT(model),
     "the model plugin (default: the one claiming config.json's model_type)"},
    {"--tp", NULL, CLI_INT, "N", 1, 1 << 16, NULL, NULL, AT(tp), "Megatron tensor-parallel size"},
    {"--ep", NULL, CLI_INT, "M", 1, 1 << 16, NULL, "1", AT(ep), "Megatron expert-parallel size"},
    {"--pp", NULL, CLI_INT, "P", 1, 1 << 16, NULL, "1", AT(pp), "pipeline stages"},
    {"--vp", NULL, CLI_INT, "V", 1, 1 << 16, NULL, "1", AT(vp), "virtual pipeline chunks per stage (interleaved)"},
    {"--pp-layers", NULL, CLI_STR, "a,b,...", 0, 0, NULL, NULL, AT(layers),
     "the layers of each of the P*V chunks, when L is not divisible"},
    {"--fsdp", NULL, CLI_INT, "N", 1, 1 << 16, NULL, NULL, AT(fsdp), "FSDP ranks instead of Megatron"},
    {"--mtp", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(mtp),
     "also the multi-token-prediction layers (Megatron: mtp.layers.* on the last stage)"},
};
#undef AT

static const struct cli_spec shard_spec = {
    .cmd = "shard",
    .about = "An HF checkpoint into per-rank files of a trainer.\n"
             "Megatron (--tp N [--ep M] [--pp P [--vp V]]): writes DIR2/rank<r>.safetensors for r in\n"
             "0..P*max(N,M)-1 (pipeline rank r / max(N,M); within the stage tp rank r mod N, ep rank\n"
             "r mod M, expert-TP 1) with Megatron names and layouts.  Stage s of P holds layers\n"
             "[s*L/P, (s+1)*L/P) numbered from 0; --vp V cuts P*V chunks (interleaved; names get\n"
             "model<v>.); --pp-layers gives the layers of each chunk when L is not divisible.\n"
             "FSDP (--fsdp N): rank r holds every tensor's rows [r*c, (r+1)*c), c = ceil(rows/N), HF names.\n"
             "Both write DIR2/layout.yaml.\n",
    .opts = shard_table,
    .n_opts = CLI_N(shard_table),
};

/* "8,8,7,7": one count per pipeline chunk. */
static int parse_layers(const char *s, int n, int **out)
{
    int *a = calloc((size_t)n, sizeof(*a)), i = 0;
    if (!a)
        return REFIT_ENOMEM;
    for (const char *p = s; *p; i++) {
        char *end;
        long x = strtol(p, &end, 10);
        if (i >= n || end == p || x < 0 || x > 1 << 20 || (*end && *end != ',')) {
            free(a);
            return refit_error_set(REFIT_EINVAL, "--pp-layers needs %d counts separated by commas", n);
        }
        a[i] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (i != n) {
        free(a);
        return refit_error_set(REFIT_EINVAL, "--pp-layers gives %d counts; --pp x --vp is %d", i, n);
    }
    *out = a;
    return 0;
}

int cmd_shard(int argc, char **argv)
{
    if (argc < 2) {
        cli_opts_help(&shard_spec, stderr);
        return 2;
    }
    const char *set[64];
    struct shard_opts opt = {.set = {.v = set, .max = 64}};
    int rc = cli_opts_parse(&shard_spec, argc, argv, &opt, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    struct cli_common c = {0};
    if (!rc)
        rc = cli_config_from(&c, opt.cfg, &opt.set);
    const char *hf = opt.hf, *out = opt.out, *model = opt.model, *layers = opt.layers;
    int tp = opt.tp, ep = opt.ep, pp = opt.pp, vp = opt.vp, fsdp = opt.fsdp;
    struct refit_convert_opts mo = {.include_mtp = opt.mtp != 0};
    if (!rc && (!hf || !out || (!tp && !fsdp)))
        rc = refit_error_set(REFIT_EINVAL, "--hf DIR, --tp N (or --fsdp N) and --out DIR2 are required");
    if (!rc && fsdp && (tp || ep > 1 || pp > 1 || vp > 1 || layers))
        rc = refit_error_set(REFIT_EINVAL, "--fsdp takes no --tp, --ep, --pp, --vp or --pp-layers");
    int *chunks = NULL;
    if (!rc && layers)
        rc = parse_layers(layers, pp * vp, &chunks);
    refit_model_t *m = NULL;
    refit_hf_view_t *v = NULL;
    char *cfgpath = NULL;
    if (!rc) {
        size_t n = strlen(hf) + 16;
        cfgpath = malloc(n);
        rc = cfgpath ? 0 : REFIT_ENOMEM;
        if (cfgpath)
            snprintf(cfgpath, n, "%s/config.json", hf);
    }
    if (!rc)
        rc = refit_model_open(c.loader, model, cfgpath, &m);
    if (!rc)
        rc = refit_hf_view_open(m, hf, &mo, &v);
    struct refit_shard_opts so = {.tp = tp, .ep = ep, .pp = pp, .vp = vp, .chunk_layers = chunks, .fsdp = fsdp};
    if (!rc)
        rc = refit_shard_write_ex(m, v, &so, &mo, out);
    free(chunks);
    refit_hf_view_close(v);
    refit_model_close(m);
    free(cfgpath);
    int ret = rc ? cli_fail("shard", rc) : 0;
    cli_common_close(&c);
    return ret;
}
