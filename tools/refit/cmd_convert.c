/* cmd_convert.c — `refit convert`: an HF checkpoint (or trainer shards,
 * Megatron or FSDP) into one inference rank's tensors in a target layout
 * of the model plugin (hf, transformers, vllm, sglang), optionally
 * block-FP8. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "refit/convert.h"
#include "refit/status.h"

static int usage(FILE *f)
{
    fprintf(f,
            "usage: refit convert (--hf DIR | --shards DIR --hf-config FILE)\n"
            "                     --target hf|transformers|vllm|sglang\n"
            "                     [--model NAME] [--tp N --rank R] [--ep N]\n"
            "                     [--fp8 trainer|deepgemm] [--fp8-floor X] --out FILE\n"
            "                     [--config FILE] [--set key=value]...\n"
            "Writes the tensors of inference rank R of N (default 1 and 0) in the target layout to\n"
            "FILE (safetensors).  --shards reads `refit shard` output (Megatron with any tp/ep/pp,\n"
            "or FSDP); --megatron is the same.  --ep N places whole experts per rank (N must\n"
            "equal --tp).  FP8\n"
            "tensors are F8_E4M3 with their scales as <name>_scale_inv (F32).  --model defaults to\n"
            "the plugin claiming config.json's model_type.  A --config file's model section adds\n"
            "skip patterns and fp8.include / fp8.exclude.\n");
    return f == stdout ? 0 : 2;
}

static int parse_int(const char *opt, const char *v, int min, int *out)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || x < min || x > 1 << 20)
        return refit_error_set(REFIT_EINVAL, "%s needs an integer >= %d", opt, min);
    *out = (int)x;
    return 0;
}

struct convert_args {
    const char *hf, *megatron, *hf_config, *target, *model, *fp8, *floor, *out;
    int tp, rank, ep;
};

static int parse(int argc, char **argv, struct convert_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **dst = !strcmp(o, "--hf")          ? &a->hf
                           : !strcmp(o, "--megatron")  ? &a->megatron
                           : !strcmp(o, "--shards")    ? &a->megatron
                           : !strcmp(o, "--hf-config") ? &a->hf_config
                           : !strcmp(o, "--target")    ? &a->target
                           : !strcmp(o, "--model")     ? &a->model
                           : !strcmp(o, "--fp8")       ? &a->fp8
                           : !strcmp(o, "--fp8-floor") ? &a->floor
                           : !strcmp(o, "--out")       ? &a->out
                                                       : NULL;
        int rc = 0;
        if (dst) {
            if (!v)
                return refit_error_set(REFIT_EINVAL, "%s needs a value", o);
            *dst = v;
        } else if (!strcmp(o, "--tp")) {
            rc = parse_int(o, v, 1, &a->tp);
        } else if (!strcmp(o, "--rank")) {
            rc = parse_int(o, v, 0, &a->rank);
        } else if (!strcmp(o, "--ep")) {
            rc = parse_int(o, v, 1, &a->ep);
        } else {
            return refit_error_set(REFIT_EINVAL, "unknown option '%s' (see --help)", o);
        }
        if (rc)
            return rc;
        i++;
    }
    if (!a->hf == !a->megatron)
        return refit_error_set(REFIT_EINVAL, "give exactly one of --hf DIR and --shards DIR (--megatron DIR)");
    if (a->megatron && !a->hf_config)
        return refit_error_set(REFIT_EINVAL, "--shards needs --hf-config FILE (the HF config.json)");
    if (!a->out)
        return refit_error_set(REFIT_EINVAL, "--out FILE is required");
    /* the names the model plugins here offer; a plugin's own target is
     * reached with the configuration's model.target */
    static const char *const known[] = {"hf", "transformers", "vllm", "sglang"};
    bool ok = !a->target;
    for (size_t i = 0; !ok && i < sizeof(known) / sizeof(known[0]); i++)
        ok = !strcmp(a->target, known[i]);
    if (!ok)
        return refit_error_set(REFIT_EINVAL, "--target must be hf, transformers, vllm or sglang, not '%s'",
                               a->target);
    if (a->fp8 && strcmp(a->fp8, "trainer") && strcmp(a->fp8, "deepgemm"))
        return refit_error_set(REFIT_EINVAL, "--fp8 must be trainer or deepgemm, not '%s'", a->fp8);
    if (a->rank >= a->tp)
        return refit_error_set(REFIT_EINVAL, "--rank %d outside --tp %d", a->rank, a->tp);
    return 0;
}

static int run(struct cli_common *c, struct convert_args *a)
{
    struct refit_convert_opts o = {0};
    int rc = 0;
    if (c->config_path)
        rc = refit_convert_opts_from_config(c->cfg, &o);
    if (rc)
        return rc;
    if (a->target) {
        o.target = !strcmp(a->target, "hf") ? REFIT_TARGET_HF : REFIT_TARGET_VLLM;
        o.target_name = a->target;
    } else if (!c->config_path) {
        return refit_error_set(REFIT_EINVAL, "--target hf|transformers|vllm|sglang is required");
    }
    o.tp = a->tp;
    o.rank = a->rank;
    o.ep = a->ep;
    if (a->fp8) {
        o.fp8.enabled = true;
        o.fp8.rule = !strcmp(a->fp8, "deepgemm") ? REFIT_FP8_DEEPGEMM : REFIT_FP8_TRAINER;
    }
    if (!c->config_path)
        o.fp8.floor = -1;
    if (a->floor) {
        char *end;
        o.fp8.floor = strtod(a->floor, &end);
        if (end == a->floor || *end || !(o.fp8.floor > 0))
            return refit_error_set(REFIT_EINVAL, "--fp8-floor needs a positive number");
    }
    char *cfgpath = NULL;
    if (a->hf) {
        size_t n = strlen(a->hf) + 16;
        cfgpath = malloc(n);
        if (!cfgpath)
            return REFIT_ENOMEM;
        snprintf(cfgpath, n, "%s/config.json", a->hf);
    }
    refit_model_t *m = NULL;
    refit_hf_view_t *v = NULL;
    rc = refit_model_open(c->loader, a->model, a->hf ? cfgpath : a->hf_config, &m);
    if (!rc)
        rc = a->hf ? refit_hf_view_open(m, a->hf, &o, &v) : refit_hf_view_open_shards(m, a->megatron, &o, &v);
    if (!rc)
        rc = refit_convert_write(m, v, &o, a->out);
    refit_hf_view_close(v);
    refit_model_close(m);
    free(cfgpath);
    return rc;
}

int cmd_convert(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
    if (argc < 2)
        return usage(stderr);
    struct cli_common c;
    int rc = cli_config_open(&c, NULL, argc, argv);
    struct convert_args a = {.tp = 1};
    if (!rc) {
        argc = cli_compact(argc, argv);
        rc = parse(argc, argv, &a);
    }
    if (!rc)
        rc = run(&c, &a);
    int ret = rc ? cli_fail("convert", rc) : 0;
    cli_common_close(&c);
    return ret;
}
