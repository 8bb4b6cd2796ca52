/* cmd_demo.c — `refit demo`: the main job on one machine.
 *
 * Makes a deterministic checkpoint (or takes --hf DIR), starts trainer
 * ranks (`refit publish`) and inference engines (`refit pull`) as separate
 * processes over a cluster file (default configs/clusters/local.yaml: file
 * store in a temporary directory, tcp on loopback), runs refit cycles in
 * which the trainers change their weights, checks every engine's result
 * byte for byte against an offline conversion of the same weights, and
 * prints the per-cycle table.  Exit status 1 on any mismatch or failure. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "cli_opts.h"
#include "demo.h"
#include "refit/convert.h"
#include "refit/safetensors.h"
#include "refit/standin.h"
#include "refit/status.h"

extern char **environ;


struct demo_opts {
    struct demo d;
};

static const struct cli_opt demo_table[] = {DEMO_OPTS(struct demo_opts, d)};

static const struct cli_spec demo_spec = {
    .cmd = "demo",
    .about = "Runs trainer ranks (default TP2) and inference engines (default two at TP1) as\n"
             "processes on this machine, refits K cycles (default 3) into the vLLM layout with\n"
             "FP8 on (default trainer), checks every engine's weights byte for byte against an\n"
             "offline conversion, and prints a per-cycle table.  --src-pp P runs P pipeline stages\n"
             "of trainer ranks, --src-fsdp N N FSDP ranks instead of Megatron ones, --src-dp D D\n"
             "data-parallel replicas of each (receivers read any).  Without --hf it makes a\n"
             "deterministic checkpoint: Qwen3-0.6B-shaped for qwen3 (the default), small Qwen3-MoE-,\n"
             "GLM-4.5-, DeepSeek-V3- (MLA with q LoRA) and GLM-5-shaped (MLA plus the sparse-attention\n"
             "indexer) ones otherwise (--layers and --vocab shrink it).  Defaults: tcp, file store,\n"
             "pull mode, host memory.  --store redis starts a local redis-server.\n"
             "--make-checkpoint DIR [--model M] [--layers L] [--vocab V] only writes that checkpoint\n"
             "(config.json, model.safetensors).  --device cuda keeps the trainers' tensors and the\n"
             "engines' destinations in GPU memory (cuda-src / cuda-dst: only one side).\n",
    .opts = demo_table,
    .n_opts = CLI_N(demo_table),
};

/* ------------------------------------------------------------------ */
/* The synthetic checkpoint */

struct json_acc {
    char *buf;
    size_t n, len;
    int first;
    int skip_layers, skip_vocab; /* replaced by --layers / --vocab */
};

static int json_add(void *arg, const char *k, const char *v)
{
    struct json_acc *a = arg;
    if ((a->skip_layers && !strcmp(k, "num_hidden_layers")) || (a->skip_vocab && !strcmp(k, "vocab_size")))
        return 0;
    char *end;
    int num = *v && (strtod(v, &end), *end == '\0');
    int boolean = !strcmp(v, "true") || !strcmp(v, "false");
    a->len += (size_t)snprintf(a->buf + a->len, a->n > a->len ? a->n - a->len : 0, "%s\"%s\": %s%s%s",
                               a->first ? "" : ", ", k, num || boolean ? "" : "\"", v, num || boolean ? "" : "\"");
    a->first = 0;
    return 0;
}

/* A model YAML (configs/models/...) stands for its HF config.json: its
 * model.hf map, with --layers and --vocab applied. */
static int config_from_yaml(const struct demo *d, char *buf, size_t n)
{
    refit_config_t *cfg = NULL;
    int rc = refit_config_create(&cfg);
    if (!rc)
        rc = refit_config_load(cfg, d->model);
    struct json_acc a = {buf, n, 1, 1, d->layers != 0, d->vocab != 0};
    snprintf(buf, n, "{");
    if (!rc)
        rc = refit_config_map_each(cfg, "model.hf", json_add, &a);
    refit_config_destroy(cfg);
    if (rc)
        return refit_error_push(rc, "--model %s", d->model);
    char over[64];
    a.skip_layers = a.skip_vocab = 0;
    if (d->layers) {
        snprintf(over, sizeof(over), "%d", d->layers);
        json_add(&a, "num_hidden_layers", over);
    }
    if (d->vocab) {
        snprintf(over, sizeof(over), "%d", d->vocab);
        json_add(&a, "vocab_size", over);
    }
    a.len += (size_t)snprintf(buf + a.len, n > a.len ? n - a.len : 0, "}\n");
    if (a.len >= n)
        return refit_error_set(REFIT_ERANGE, "--model %s: model.hf too large", d->model);
    return 0;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return refit_error_set(REFIT_EIO, "%s: %s", path, strerror(errno));
    fputs(text, f);
    return fclose(f) ? refit_error_set(REFIT_EIO, "%s: %s", path, strerror(errno)) : 0;
}

static const char *demo_model_label(const char *model)
{
    static const char *const names[][2] = {{"qwen3", "Qwen3-0.6B"},     {"glm", "GLM-4.5"},
                                           {"qwen3_moe", "Qwen3-MoE"},  {"deepseek_v3", "DeepSeek-V3"},
                                           {"glm5", "GLM-5"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(model, names[i][0]))
            return names[i][1];
    return model;
}

/* Every HF tensor of the model (the hf layout at tp 1 names them all),
 * filled with a fixed pseudo-random sequence: small weights, norms near 1. */
static int make_checkpoint(struct demo *d, refit_loader_t *loader)
{
    char cfg[4096], path[700];
    if (d->make_only)
        snprintf(d->ckpt, sizeof(d->ckpt), "%s", d->dir);
    else
        snprintf(d->ckpt, sizeof(d->ckpt), "%s/ckpt", d->dir);
    if (mkdir(d->ckpt, 0700) && errno != EEXIST)
        return refit_error_set(REFIT_EIO, "%s: %s", d->ckpt, strerror(errno));
    snprintf(path, sizeof(path), "%s/config.json", d->ckpt);
    size_t ml = strlen(d->model);
    int rc = 0;
    if (ml > 5 && !strcmp(d->model + ml - 5, ".yaml"))
        rc = config_from_yaml(d, cfg, sizeof(cfg));
    else /* the family's example, from its model plugin */
        rc = refit_model_example_config(loader, d->model, d->layers, d->vocab, cfg, sizeof(cfg));
    if (!rc)
        rc = write_text(path, cfg);
    refit_model_t *m = NULL;
    refit_layout_t *lay = NULL;
    refit_st_writer_t *w = NULL;
    if (!rc)
        rc = refit_model_open(loader, NULL, path, &m);
    struct refit_convert_opts o = {.target = REFIT_TARGET_HF, .tp = 1};
    if (!rc)
        rc = refit_layout_target(m, &o, &lay);
    if (!rc)
        rc = refit_st_writer_create(&w);
    uint64_t seed = 0x9e3779b97f4a7c15ull, total = 0;
    for (size_t i = 0; !rc && i < refit_layout_count(lay); i++) {
        const struct refit_layout_tensor *t = refit_layout_at(lay, i);
        size_t n = 1;
        for (int k = 0; k < t->ndim; k++)
            n *= (size_t)t->shape[k];
        int f32 = strstr(t->name, "e_score_correction_bias") != NULL; /* kept fp32 in HF checkpoints */
        int norm = strstr(t->name, "norm") != NULL;
        size_t es = f32 ? 4 : 2;
        void *buf = malloc(n * es + 1);
        if (!buf) {
            rc = REFIT_ENOMEM;
            break;
        }
        for (size_t k = 0; k < n; k++) {
            float v = (float)((int64_t)(rng_next(&seed) >> 40) - (1 << 23)) / (float)(1 << 23) * 0.05f;
            if (norm)
                v += 1.0f;
            if (f32)
                ((float *)buf)[k] = v;
            else {
                uint32_t u;
                memcpy(&u, &v, 4);
                ((uint16_t *)buf)[k] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
            }
        }
        total += n * es;
        rc = refit_st_writer_add_copy(w, t->name, f32 ? REFIT_DTYPE_F32 : REFIT_DTYPE_BF16, t->ndim, t->shape,
                                      buf, n * es);
        free(buf);
    }
    snprintf(path, sizeof(path), "%s/model.safetensors", d->ckpt);
    if (!rc)
        rc = refit_st_writer_write(w, path);
    if (!rc)
        printf("checkpoint: %s-shaped, %zu tensors, %.3f GB bf16, in %s\n",
               demo_model_label(d->model),
               refit_layout_count(lay), (double)total / 1e9, d->ckpt);
    refit_st_writer_destroy(w);
    refit_layout_destroy(lay);
    refit_model_close(m);
    return rc ? refit_error_push(rc, "making the demo checkpoint") : 0;
}

/* ------------------------------------------------------------------ */
/* Processes */

static pid_t spawn(struct demo *d, const posix_spawn_file_actions_t *fa, char *const argv[])
{
    /* The child's GPU (cli_cuda_select) by role. */
    int gpu = !strcmp(argv[1], "publish") ? d->src_gpu : d->dst_gpu;
    if (d->src_gpu > 0 || d->dst_gpu > 0) {
        char g[16];
        snprintf(g, sizeof(g), "%d", gpu);
        setenv("REFIT_CUDA_DEVICE", g, 1);
    }
    pid_t pid;
    int e = posix_spawn(&pid, d->self, fa, NULL, argv, environ);
    if (e) {
        refit_error_set(REFIT_EIO, "starting %s %s: %s", argv[0], argv[1], strerror(e));
        return -1;
    }
    return pid;
}

static int free_port(void)
{
    /* A port from the ephemeral range unlikely to be in use; redis-server
     * fails loudly if it is, and the demo reports it. */
    return 20000 + (int)(getpid() % 20000);
}

static int start_redis(struct demo *d, int port)
{
    char portbuf[16];
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    char *argv[] = {"redis-server", "--port", portbuf, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    NULL};
    int e = posix_spawnp(&d->redis, "redis-server", NULL, NULL, argv, environ);
    if (e)
        return refit_error_set(REFIT_ENOENT, "--store redis: cannot start redis-server (%s); install it "
                               "(apt-get install redis-server) or use --store file", strerror(e));
    usleep(300000);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Verification */

static int expected_for(struct demo *d, refit_loader_t *loader, int version, int rank, const char *out)
{
    char dir[700], path[800];
    snprintf(dir, sizeof(dir), "%s/expected-v%d", d->dir, version);
    mkdir(dir, 0700);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    char src[700];
    snprintf(src, sizeof(src), "%s/config.json", d->ckpt);
    int rc = 0;
    /* Version V's checkpoint: the stand-in's change applied to every tensor. */
    if (access(path, F_OK) != 0) {
        char cfg[4096];
        FILE *f = fopen(src, "r");
        size_t n = f ? fread(cfg, 1, sizeof(cfg) - 1, f) : 0;
        if (f)
            fclose(f);
        cfg[n] = '\0';
        rc = write_text(path, cfg);
        refit_st_checkpoint_t *ck = NULL;
        refit_st_writer_t *w = NULL;
        if (!rc)
            rc = refit_st_checkpoint_open(d->ckpt, &ck);
        if (!rc)
            rc = refit_st_writer_create(&w);
        for (size_t i = 0; !rc && i < refit_st_checkpoint_count(ck); i++) {
            const struct refit_st_tensor *t = refit_st_checkpoint_at(ck, i);
            void *copy = malloc(t->nbytes + 1);
            if (!copy) {
                rc = REFIT_ENOMEM;
                break;
            }
            memcpy(copy, t->data, t->nbytes);
            rc = refit_standin_step(copy, t->nbytes, t->dtype, 1, (uint64_t)version);
            if (!rc)
                rc = refit_st_writer_add_copy(w, t->name, t->dtype, t->ndim, t->shape, copy, t->nbytes);
            free(copy);
        }
        snprintf(path, sizeof(path), "%s/model.safetensors", dir);
        if (!rc)
            rc = refit_st_writer_write(w, path);
        refit_st_writer_destroy(w);
        refit_st_checkpoint_close(ck);
        if (rc)
            return rc;
    }
    snprintf(path, sizeof(path), "%s/config.json", dir);
    refit_model_t *m = NULL;
    refit_hf_view_t *v = NULL;
    struct refit_convert_opts o = {.target = REFIT_TARGET_VLLM, .tp = d->dst_tp, .rank = rank,
                                   .ep = d->dst_ep > 1 ? d->dst_ep : 0};
    if (strcmp(d->fp8, "off")) {
        o.fp8.enabled = true;
        o.fp8.rule = !strcmp(d->fp8, "deepgemm") ? REFIT_FP8_DEEPGEMM : REFIT_FP8_TRAINER;
        o.fp8.floor = -1;
    }
    rc = refit_model_open(loader, NULL, path, &m);
    if (!rc)
        rc = refit_hf_view_open(m, dir, &o, &v);
    if (!rc)
        rc = refit_convert_write(m, v, &o, out);
    refit_hf_view_close(v);
    refit_model_close(m);
    return rc;
}

static int compare_files(const char *want_path, const char *got_path, size_t *n_tensors, uint64_t *bytes)
{
    refit_st_file_t *a = NULL, *b = NULL;
    int rc = refit_st_open(want_path, &a);
    if (!rc)
        rc = refit_st_open(got_path, &b);
    if (!rc && refit_st_count(a) != refit_st_count(b))
        rc = refit_error_set(REFIT_ECHECKSUM, "%s holds %zu tensors, the offline conversion %zu", got_path,
                             refit_st_count(b), refit_st_count(a));
    *n_tensors = 0;
    *bytes = 0;
    for (size_t i = 0; !rc && i < refit_st_count(a); i++) {
        const struct refit_st_tensor *x = refit_st_at(a, i);
        const struct refit_st_tensor *y = refit_st_find(b, x->name);
        if (!y)
            rc = refit_error_set(REFIT_ECHECKSUM, "%s lacks '%s'", got_path, x->name);
        else if (x->dtype != y->dtype || x->ndim != y->ndim || x->nbytes != y->nbytes ||
                 memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim))
            rc = refit_error_set(REFIT_ECHECKSUM, "%s: '%s' differs in dtype or shape", got_path, x->name);
        else if (memcmp(x->data, y->data, x->nbytes)) {
            size_t k = 0;
            while (((const char *)x->data)[k] == ((const char *)y->data)[k])
                k++;
            rc = refit_error_set(REFIT_ECHECKSUM, "%s: '%s' differs from the offline conversion at byte %zu",
                                 got_path, x->name, k);
        }
        *bytes += x->nbytes;
        (*n_tensors)++;
    }
    refit_st_close(a);
    refit_st_close(b);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The table */


int demo_print_table(const char *stats_path)
{
    FILE *f = fopen(stats_path, "r");
    if (!f)
        return 0;
    printf("\n%-12s %3s %8s %8s %8s %8s %8s %8s %8s %8s %8s %8s %7s\n", "engine", "v", "alloc", "register",
           "connect", "plan", "transfer", "convert", "verify", "commit", "total", "GB", "GB/s");
    char line[2048];
    int rows = 0;
    while (fgets(line, sizeof(line), f)) {
        char who[64] = "";
        const char *w = strstr(line, "\"receiver\":\"");
        if (w)
            sscanf(w + 12, "%63[^\"]", who);
        double bytes = cli_json_num(line, "bytes_wire"), tr = cli_json_num(line, "transfer_s");
        printf("%-12s %3.0f %8.4f %8.4f %8.4f %8.4f %8.4f %8.4f %8.4f %8.4f %8.4f %8.3f %7.2f\n", who,
               cli_json_num(line, "version"), cli_json_num(line, "alloc_s"), cli_json_num(line, "register_s"), cli_json_num(line, "connect_s"),
               cli_json_num(line, "plan_s"), tr, cli_json_num(line, "convert_s"), cli_json_num(line, "verify_s"), cli_json_num(line, "commit_s"),
               cli_json_num(line, "total_s"), bytes / 1e9, tr > 0 ? bytes / tr / 1e9 : 0);
        rows++;
    }
    fclose(f);
    printf("(seconds; GB on the wire; transfer is wire time, convert and verify run between batches)\n");
    return rows;
}

/* ------------------------------------------------------------------ */

int demo_check(struct demo *d)
{
    size_t ml = strlen(d->model);
    if (strcmp(d->model, "qwen3") && strcmp(d->model, "qwen3_moe") && strcmp(d->model, "glm") &&
        strcmp(d->model, "deepseek_v3") && strcmp(d->model, "glm5") && !(ml > 5 && !strcmp(d->model + ml - 5, ".yaml")))
        return refit_error_set(REFIT_EINVAL, "--model '%s': qwen3, qwen3_moe, glm, deepseek_v3, glm5 or a model YAML",
                               d->model);
    if (strcmp(d->fp8, "trainer") && strcmp(d->fp8, "deepgemm") && strcmp(d->fp8, "off"))
        return refit_error_set(REFIT_EINVAL, "--fp8 '%s': trainer, deepgemm or off", d->fp8);
    if (!d->device)
        d->device = "host";
    if (strcmp(d->device, "host") && strcmp(d->device, "cuda") && strcmp(d->device, "cuda-src") &&
        strcmp(d->device, "cuda-dst"))
        return refit_error_set(REFIT_EINVAL, "--device '%s': host, cuda, cuda-src or cuda-dst", d->device);
    if (strcmp(d->mode, "pull") && strcmp(d->mode, "push"))
        return refit_error_set(REFIT_EINVAL, "--mode '%s': pull or push", d->mode);
    if (d->dst_ep > 1 && d->dst_ep != d->dst_tp)
        return refit_error_set(REFIT_EINVAL, "--dst-ep %d: vLLM expert parallelism here means ep = tp (%d)",
                               d->dst_ep, d->dst_tp);
    return 0;
}

void demo_cleanup(struct demo *d)
{
    if (d->keep || !d->dir[0])
        return;
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "refit: could not remove %s\n", d->dir);
}

int demo_run(struct demo *d)
{
    ssize_t sl = readlink("/proc/self/exe", d->self, sizeof(d->self) - 1);
    if (sl <= 0)
        return refit_error_set(REFIT_EIO, "cannot find the refit binary (/proc/self/exe)");
    d->self[sl] = '\0';
    if (!d->config)
        d->config = access("configs/clusters/local.yaml", R_OK) == 0 ? "configs/clusters/local.yaml" : NULL;
    if (!d->config)
        return refit_error_set(REFIT_ENOENT, "no configs/clusters/local.yaml here; run from the source tree or "
                               "pass --config FILE");
    if (d->keep) {
        snprintf(d->dir, sizeof(d->dir), "%s", d->keep);
        mkdir(d->dir, 0700);
    } else {
        snprintf(d->dir, sizeof(d->dir), "/tmp/refit-demo-XXXXXX");
        if (!mkdtemp(d->dir))
            return refit_error_set(REFIT_EIO, "mkdtemp: %s", strerror(errno));
    }
    struct cli_common c;
    int rc = cli_config_from(&c, NULL, NULL);
    if (!rc && d->hf)
        snprintf(d->ckpt, sizeof(d->ckpt), "%s", d->hf);
    else if (!rc)
        rc = make_checkpoint(d, c.loader);
    /* The store directory and the job's knobs reach the children through
     * the environment (REFIT_<SECTION>_<KEY>). */
    char store_dir[700], receivers[32], ns[64];
    snprintf(store_dir, sizeof(store_dir), "%s/store", d->dir);
    snprintf(receivers, sizeof(receivers), "%d", d->engines * d->dst_tp);
    snprintf(ns, sizeof(ns), "demo-%d", (int)getpid());
    setenv("REFIT_STORE_DIR", store_dir, 1);
    setenv("REFIT_REFIT_RECEIVERS", receivers, 1);
    setenv("REFIT_STORE_NAMESPACE", ns, 1);
    setenv("REFIT_TRANSPORT_PLUGIN", d->transport, 1);
    setenv("REFIT_STORE_PLUGIN", d->store, 1);
    setenv("REFIT_REFIT_MODE", d->mode, 1);
    char port[16];
    if (!rc && !strcmp(d->store, "redis")) {
        int p = free_port();
        snprintf(port, sizeof(port), "%d", p);
        rc = start_redis(d, p);
        setenv("REFIT_STORE_REDIS_HOST", "127.0.0.1", 1);
        setenv("REFIT_STORE_REDIS_PORT", port, 1);
    }
    snprintf(d->stats, sizeof(d->stats), "%s/stats.jsonl", d->dir);
    remove(d->stats);
    snprintf(d->pstats, sizeof(d->pstats), "%s/publish.jsonl", d->dir);
    remove(d->pstats);
    const char *dev = d->device ? d->device : "host";
    char *src_dev = !strcmp(dev, "cuda") || !strcmp(dev, "cuda-src") ? "cuda" : "host";
    char *dst_dev = !strcmp(dev, "cuda") || !strcmp(dev, "cuda-dst") ? "cuda" : "host";
    int stage = d->src_tp > d->src_ep ? d->src_tp : d->src_ep, pp = d->src_pp > 0 ? d->src_pp : 1;
    int dp = d->src_dp > 0 ? d->src_dp : 1;
    int per_dp = d->src_fsdp > 0 ? d->src_fsdp : pp * stage, n_tr = per_dp * dp;
    int n_en = d->engines * d->dst_tp;
    pid_t *pids = calloc((size_t)(n_tr + n_en), sizeof(pid_t));
    char **names = calloc((size_t)(n_tr + n_en), sizeof(char *));
    int np = 0;
    if (!pids || !names)
        rc = REFIT_ENOMEM;
    char a_tp[16], a_ep[16], a_cyc[16], a_dtp[16], a_dep[16], a_pp[16], a_fsdp[16], a_dp[16];
    snprintf(a_pp, sizeof(a_pp), "%d", pp);
    snprintf(a_fsdp, sizeof(a_fsdp), "%d", d->src_fsdp);
    snprintf(a_dp, sizeof(a_dp), "%d", dp);
    snprintf(a_tp, sizeof(a_tp), "%d", d->src_tp);
    snprintf(a_ep, sizeof(a_ep), "%d", d->src_ep);
    snprintf(a_cyc, sizeof(a_cyc), "%d", d->cycles);
    snprintf(a_dtp, sizeof(a_dtp), "%d", d->dst_tp);
    snprintf(a_dep, sizeof(a_dep), "%d", d->dst_ep ? d->dst_ep : 1);
    if (!rc)
        printf("starting %d trainer rank%s (%s %d, ep %d, pp %d, dp %d) and %d engine%s (vLLM tp %d%s%s, fp8 %s) "
               "over %s + %s, %d cycle%s\n",
               n_tr, n_tr == 1 ? "" : "s", d->src_fsdp > 0 ? "fsdp" : "tp", d->src_fsdp > 0 ? d->src_fsdp : d->src_tp,
               d->src_ep, pp, dp, d->engines, d->engines == 1 ? "" : "s", d->dst_tp,
               d->dst_ep > 1 ? ", ep " : "", d->dst_ep > 1 ? a_dep : "", d->fp8, d->transport, d->store, d->cycles,
               d->cycles == 1 ? "" : "s");
    fflush(stdout);
    int devnull = d->quiet ? open("/dev/null", O_WRONLY) : -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (devnull >= 0)
        posix_spawn_file_actions_adddup2(&fa, devnull, STDOUT_FILENO);
    for (int r = 0; !rc && r < n_tr; r++) {
        char rank[16], id[64], dpr[16];
        snprintf(rank, sizeof(rank), "%d", r % per_dp);
        snprintf(dpr, sizeof(dpr), "%d", r / per_dp);
        snprintf(id, sizeof(id), "trainer-%d", r);
        char *av[40] = {"refit", "publish", "--config", (char *)d->config, "--hf", d->ckpt, "--rank", rank,
                        "--cycles", a_cyc, "--id", id, "--device", src_dev, "--dp", a_dp, "--dp-rank", dpr};
        int k = 18;
        if (d->src_fsdp > 0) {
            av[k++] = "--layout";
            av[k++] = "fsdp";
            av[k++] = "--shards";
            av[k++] = a_fsdp;
        } else {
            char *more[] = {"--tp", a_tp, "--ep", a_ep, "--pp", a_pp};
            for (int j = 0; j < 6; j++)
                av[k++] = more[j];
        }
        if (d->pub_stats) {
            av[k++] = "--stats";
            av[k++] = d->pstats;
        }
        av[k] = NULL;
        pid_t p = spawn(d, &fa, av);
        if (p < 0)
            rc = REFIT_EIO;
        else {
            pids[np] = p;
            names[np++] = strdup(id);
        }
    }
    for (int e = 0; !rc && e < d->engines; e++)
        for (int q = 0; !rc && q < d->dst_tp; q++) {
            char rank[16], id[64], out[800];
            snprintf(rank, sizeof(rank), "%d", q);
            snprintf(id, sizeof(id), "engine-%d-%d", e, q);
            snprintf(out, sizeof(out), "%s/%s.v{V}.safetensors", d->dir, id);
            char *av[32] = {"refit", "pull", "--config", (char *)d->config, "--hf", d->ckpt, "--tp", a_dtp, "--rank",
                            rank, "--cycles", a_cyc, "--version", "next", "--id", id, "--stats", d->stats,
                            "--target", "vllm", "--ep", a_dep, "--device", dst_dev};
            int k = 24;
            if (d->verify) {
                av[k++] = "--out";
                av[k++] = out;
            }
            if (strcmp(d->fp8, "off")) {
                av[k++] = "--fp8";
                av[k++] = (char *)d->fp8;
            }
            av[k] = NULL;
            pid_t p = spawn(d, &fa, av);
            if (p < 0)
                rc = REFIT_EIO;
            else {
                pids[np] = p;
                names[np++] = strdup(id);
            }
        }
    posix_spawn_file_actions_destroy(&fa);
    if (devnull >= 0)
        close(devnull);
    int failed = 0;
    for (int i = 0; i < np; i++) {
        int status = 0;
        if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
            fprintf(stderr, "refit: %s failed (%s %d)\n", names[i], WIFSIGNALED(status) ? "signal" : "exit status",
                    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            if (!failed)
                for (int j = 0; j < np; j++)
                    if (j != i)
                        kill(pids[j], SIGTERM);
            failed = 1;
        }
    }
    if (d->redis > 0) {
        kill(d->redis, SIGTERM);
        waitpid(d->redis, NULL, 0);
    }
    if (!rc && failed)
        rc = refit_error_set(REFIT_EPLUGIN, "a trainer or engine process failed (its message is above)");
    /* Byte-for-byte check of every engine against the offline conversion. */
    int mismatches = 0;
    if (!rc && d->verify)
        printf("\nverifying every engine against an offline conversion (refit convert) of the same weights:\n");
    for (int v = 1; !rc && d->verify && v <= d->cycles; v++)
        for (int q = 0; !rc && q < d->dst_tp; q++) {
            char want[800];
            snprintf(want, sizeof(want), "%s/expected-v%d-tp%d.safetensors", d->dir, v, q);
            rc = expected_for(d, c.loader, v, q, want);
            for (int e = 0; !rc && e < d->engines; e++) {
                char got[800];
                snprintf(got, sizeof(got), "%s/engine-%d-%d.v%d.safetensors", d->dir, e, q, v);
                size_t nt;
                uint64_t bytes;
                int cr = compare_files(want, got, &nt, &bytes);
                if (cr) {
                    printf("  v%d engine-%d-%d: MISMATCH: %s\n", v, e, q, refit_error_message());
                    mismatches++;
                } else {
                    printf("  v%d engine-%d-%d: %zu tensors, %.3f GB, byte-identical\n", v, e, q, nt,
                           (double)bytes / 1e9);
                }
            }
        }
    if (!rc && mismatches)
        rc = refit_error_set(REFIT_ECHECKSUM, "%d engine result%s differ from the offline conversion", mismatches,
                             mismatches == 1 ? "" : "s");
    for (int i = 0; i < np; i++)
        free(names[i]);
    free(names);
    free(pids);
    cli_common_close(&c);
    return rc;
}

int cmd_demo(int argc, char **argv)
{
    struct demo_opts o = {.d = {.model = "qwen3", .transport = "tcp", .store = "file", .mode = "pull",
                                .fp8 = "trainer", .src_tp = 2, .src_ep = 1, .dst_tp = 1, .engines = 2, .cycles = 3,
                                .verify = 1}};
    int rc = cli_opts_parse(&demo_spec, argc, argv, &o, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    struct demo d = o.d;
    if (!rc)
        rc = demo_check(&d);
    if (rc)
        return cli_fail("demo", rc);
    if (d.make_only) {
        struct cli_common c;
            snprintf(d.dir, sizeof(d.dir), "%s", d.make_only);
        mkdir(d.dir, 0700);
        rc = cli_config_from(&c, NULL, NULL);
        if (!rc)
            rc = make_checkpoint(&d, c.loader);
        cli_common_close(&c);
        return rc ? cli_fail("demo", rc) : 0;
    }
    rc = demo_run(&d);
    if (!rc)
        demo_print_table(d.stats);
    demo_cleanup(&d);
    if (rc)
        return cli_fail("demo", rc);
    printf("\nrefit demo: all %d engine results of %d cycles are byte-identical to the offline conversion\n",
           d.engines * d.dst_tp, d.cycles);
    return 0;
}
