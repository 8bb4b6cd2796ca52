/* cmd_shard.c — `refit shard`: an HF checkpoint into per-rank files of a
 * trainer (Megatron with tensor, expert and pipeline parallelism, or FSDP),
 * a stand-in for a trainer's state. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "refit/convert.h"
#include "refit/status.h"

static int usage(FILE *f)
{
    fprintf(f, "usage: refit shard --hf DIR --tp N [--ep M] [--pp P [--vp V] [--pp-layers a,b,...]]\n"
               "                   [--model NAME] --out DIR2\n"
               "       refit shard --hf DIR --fsdp N [--model NAME] --out DIR2\n"
               "Megatron: writes DIR2/rank<r>.safetensors for r in 0..P*max(N,M)-1 (pipeline rank\n"
               "r / max(N,M); within the stage tp rank r mod N, ep rank r mod M, expert-TP 1) with\n"
               "Megatron names and layouts.  Stage s of P holds layers [s*L/P, (s+1)*L/P) numbered\n"
               "from 0; --vp V cuts P*V chunks (interleaved; names get model<v>.); --pp-layers\n"
               "gives the layers of each chunk when L is not divisible.\n"
               "FSDP: rank r holds every tensor's rows [r*c, (r+1)*c), c = ceil(rows/N), HF names.\n"
               "Both write DIR2/layout.yaml.\n");
    return f == stdout ? 0 : 2;
}

static int parse_count(const char *opt, const char *v, int *out)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || x < 1 || x > 1 << 16)
        return refit_error_set(REFIT_EINVAL, "%s needs a positive integer", opt);
    *out = (int)x;
    return 0;
}

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
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
    if (argc < 2)
        return usage(stderr);
    struct cli_common c;
    int rc = cli_config_open(&c, NULL, argc, argv);
    const char *hf = NULL, *out = NULL, *model = NULL, *layers = NULL;
    int tp = 0, ep = 1, pp = 1, vp = 1, fsdp = 0;
    if (!rc)
        argc = cli_compact(argc, argv);
    for (int i = 1; !rc && i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            rc = refit_error_set(REFIT_EINVAL, "%s needs a value", o);
        else if (!strcmp(o, "--hf"))
            hf = v;
        else if (!strcmp(o, "--out"))
            out = v;
        else if (!strcmp(o, "--model"))
            model = v;
        else if (!strcmp(o, "--tp"))
            rc = parse_count(o, v, &tp);
        else if (!strcmp(o, "--ep"))
            rc = parse_count(o, v, &ep);
        else if (!strcmp(o, "--pp"))
            rc = parse_count(o, v, &pp);
        else if (!strcmp(o, "--vp"))
            rc = parse_count(o, v, &vp);
        else if (!strcmp(o, "--fsdp"))
            rc = parse_count(o, v, &fsdp);
        else if (!strcmp(o, "--pp-layers"))
            layers = v;
        else
            rc = refit_error_set(REFIT_EINVAL, "unknown option '%s' (see --help)", o);
        i++;
    }
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
        rc = refit_hf_view_open(m, hf, NULL, &v);
    struct refit_shard_opts so = {.tp = tp, .ep = ep, .pp = pp, .vp = vp, .chunk_layers = chunks, .fsdp = fsdp};
    if (!rc)
        rc = refit_shard_write_ex(m, v, &so, NULL, out);
    free(chunks);
    refit_hf_view_close(v);
    refit_model_close(m);
    free(cfgpath);
    int ret = rc ? cli_fail("shard", rc) : 0;
    cli_common_close(&c);
    return ret;
}
