/* cmd_convert.c — `refit convert`: an HF checkpoint (or trainer shards,
 * Megatron or FSDP) into one inference rank's tensors in a target layout
 * of the model plugin (hf, transformers, vllm, sglang), optionally
 * block-FP8. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/convert.h"
#include "refit/status.h"

struct convert_args {
    const char *cfg, *hf, *megatron, *hf_config, *target, *model, *fp8, *floor, *out;
    int tp, rank, ep, mtp;
    struct cli_list set;
};

#define AT(f) CLI_AT(struct convert_args, f)
static const struct cli_opt convert_table[] = {
    CLI_COMMON(struct convert_args, cfg, set),
    {"--hf", NULL, CLI_STR, "DIR", 0, 0, NULL, NULL, AT(hf), "the HF checkpoint to read"},
    {"--shards", "--megatron", CLI_STR, "DIR", 0, 0, NULL, NULL, AT(megatron),
     "`refit shard` output to read instead (Megatron with any tp/ep/pp, or FSDP)"},
    {"--hf-config", NULL, CLI_STR, "FILE", 0, 0, NULL, NULL, AT(hf_config), "the HF config.json, with --shards"},
    /* the names the model plugins here offer; a plugin's own target is
     * reached with the configuration's model.target */
    {"--target", NULL, CLI_CHOICE, "LAYOUT", 0, 0, "hf|transformers|vllm|sglang", NULL, AT(target),
     "the target layout (required without --config)"},
    {"--model", NULL, CLI_STR, "NAME", 0, 0, NULL, NULL, AT(model),
     "the model plugin (default: the one claiming config.json's model_type)"},
    {"--tp", NULL, CLI_INT, "N", 1, 1 << 20, NULL, "1", AT(tp), "inference tensor-parallel size"},
    {"--rank", NULL, CLI_INT, "R", 0, 1 << 20, NULL, "0", AT(rank), "the inference rank to write, below N"},
    {"--ep", NULL, CLI_INT, "N", 1, 1 << 20, NULL, NULL, AT(ep), "whole experts per rank (N must equal --tp)"},
    {"--fp8", NULL, CLI_CHOICE, "RULE", 0, 0, "trainer|deepgemm", NULL, AT(fp8), "block-FP8 by this rule"},
    {"--fp8-floor", NULL, CLI_STR, "X", 0, 0, NULL, NULL, AT(floor), "smallest FP8 scale, a positive number"},
    {"--mtp", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(mtp),
     "also the multi-token-prediction layers (for engines that draft with them)"},
    {"--out", NULL, CLI_STR, "FILE", 0, 0, NULL, NULL, AT(out), "the safetensors file to write; required"},
};
#undef AT

static const struct cli_spec convert_spec = {
    .cmd = "convert",
    .about = "Writes the tensors of inference rank R of N in the target layout to FILE (safetensors),\n"
             "from an HF checkpoint (--hf) or trainer shards (--shards with --hf-config).  FP8\n"
             "tensors are F8_E4M3 with their scales as <name>_scale_inv (F32).  A --config file's\n"
             "model section adds skip patterns and fp8.include / fp8.exclude.\n",
    .opts = convert_table,
    .n_opts = CLI_N(convert_table),
};

/* What the table cannot say: which options go together. */
static int check(const struct convert_args *a)
{
    if (!a->hf == !a->megatron)
        return refit_error_set(REFIT_EINVAL, "give exactly one of --hf DIR and --shards DIR (--megatron DIR)");
    if (a->megatron && !a->hf_config)
        return refit_error_set(REFIT_EINVAL, "--shards needs --hf-config FILE (the HF config.json)");
    if (!a->out)
        return refit_error_set(REFIT_EINVAL, "--out FILE is required");
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
    if (a->mtp)
        o.include_mtp = true;
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
    /* a target layout the --config file defines (model.target_layout) */
    if (!rc && c->config_path)
        rc = refit_model_targets_from_config(m, c->cfg);
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
    if (argc < 2) {
        cli_opts_help(&convert_spec, stderr);
        return 2;
    }
    const char *set[64];
    struct convert_args a = {.set = {.v = set, .max = 64}};
    int rc = cli_opts_parse(&convert_spec, argc, argv, &a, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    struct cli_common c = {0};
    if (!rc)
        rc = cli_config_from(&c, a.cfg, &a.set);
    if (!rc)
        rc = check(&a);
    if (!rc)
        rc = run(&c, &a);
    int ret = rc ? cli_fail("convert", rc) : 0;
    cli_common_close(&c);
    return ret;
}
