/* cmd_shard.c — `refit shard`: an HF checkpoint into Megatron-layout
 * per-rank files, a stand-in for a trainer's state. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "refit/convert.h"
#include "refit/status.h"

static int usage(FILE *f)
{
    fprintf(f, "usage: refit shard --hf DIR --tp N [--ep M] [--model NAME] --out DIR2\n"
               "Writes DIR2/rank<r>.safetensors for r in 0..max(N,M)-1 (tp rank r mod N, ep rank\n"
               "r mod M, expert-TP 1) with Megatron names and layouts, and DIR2/layout.yaml.\n");
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

int cmd_shard(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
    if (argc < 2)
        return usage(stderr);
    struct cli_common c;
    int rc = cli_config_open(&c, NULL, argc, argv);
    const char *hf = NULL, *out = NULL, *model = NULL;
    int tp = 0, ep = 1;
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
        else
            rc = refit_error_set(REFIT_EINVAL, "unknown option '%s' (see --help)", o);
        i++;
    }
    if (!rc && (!hf || !out || !tp))
        rc = refit_error_set(REFIT_EINVAL, "--hf DIR, --tp N and --out DIR2 are required");
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
    if (!rc)
        rc = refit_shard_write(m, v, tp, ep, NULL, out);
    refit_hf_view_close(v);
    refit_model_close(m);
    free(cfgpath);
    int ret = rc ? cli_fail("shard", rc) : 0;
    cli_common_close(&c);
    return ret;
}
