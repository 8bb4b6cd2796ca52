/* test_devmem_api.c — REFIT_MEM_CUDA at the API's edge, in every build
 * (CI has no CUDA): without CUDA in librefit a device tensor or destination
 * is REFIT_ENOTSUP with a message naming it and saying why; with CUDA but
 * no device, or with a host pointer passed as device memory, an error
 * naming the tensor; an unknown memory type is REFIT_EINVAL.  The device
 * paths themselves are tests/cuda/test-cuda-devmem. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "refit/convert.h"
#include "refit/cuda_pool.h"
#include "refit/fp8_cuda.h"
#include "refit/refit.h"
#include "../check_run.h"

static char dir[256], cfg_path[300];

static void setup(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/refit-devapi-XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char p[400];
    snprintf(p, sizeof(p), "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", \"num_hidden_layers\": 2, "
          "\"hidden_size\": 1024, \"num_attention_heads\": 16, \"num_key_value_heads\": 8, \"head_dim\": 128, "
          "\"intermediate_size\": 3072, \"vocab_size\": 1024, \"tie_word_embeddings\": true, "
          "\"attention_bias\": false, \"rms_norm_eps\": 1e-06, \"torch_dtype\": \"bfloat16\"}\n", f);
    fclose(f);
    snprintf(cfg_path, sizeof(cfg_path), "%s/cluster.yaml", dir);
    f = fopen(cfg_path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "store:\n  plugin: file\n  namespace: t%d\n  file:\n    path: %s/store\n    fsync: false\n"
            "transport:\n  plugin: tcp\n  timeout: 5s\n"
            "refit:\n  timeout: 2s\n  receivers: 1\n"
            "model:\n  plugin: auto\n  hf_config: %s/config.json\n  target: vllm\n",
            (int)getpid(), dir, dir);
    fclose(f);
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* The first tensor of trainer rank 0 of 1. */
static const struct refit_layout_tensor *first_tensor(refit_context_t *ctx, refit_layout_t **lay)
{
    struct refit_megatron_rank r = {.tp = 1, .ep = 1, .etp = 1};
    ck_assert_int_eq(refit_layout_megatron(refit_context_model(ctx), &r, NULL, lay), 0);
    ck_assert_uint_gt(refit_layout_count(*lay), 0);
    return refit_layout_at(*lay, 0);
}

static void check_device_error(int rc, const char *name)
{
    const char *m = refit_error_message();
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(m, name) != NULL, "the error does not name '%s': %s", name, m);
    if (!refit_cuda_built()) {
        ck_assert_int_eq(rc, REFIT_ENOTSUP);
        ck_assert_msg(strstr(m, "without CUDA") != NULL, "the error does not say why: %s", m);
    } else {
        /* CUDA built: no device (ENOTSUP) or a host pointer (EINVAL). */
        ck_assert_msg(rc == REFIT_ENOTSUP || rc == REFIT_EINVAL, "rc %d: %s", rc, m);
    }
}

START_TEST(publisher_device_tensor)
{
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, NULL, 0, &ctx) == 0, "%s", refit_error_message());
    refit_layout_t *lay;
    const struct refit_layout_tensor *t = first_tensor(ctx, &lay);
    struct refit_parallel par = {.tp_size = 1, .pp_size = 1, .ep_size = 1, .etp_size = 1};
    refit_publisher_t *pub;
    ck_assert_int_eq(refit_publisher_create(ctx, &par, "p0", &pub), 0);
    size_t n = 2;
    for (int d = 0; d < t->ndim; d++)
        n *= (size_t)t->shape[d];
    void *host = calloc(1, n);
    check_device_error(refit_publisher_add(pub, t->name, host, REFIT_DTYPE_BF16, t->ndim, t->shape, REFIT_MEM_CUDA),
                       t->name);
    ck_assert_int_eq(refit_publisher_add(pub, t->name, host, REFIT_DTYPE_BF16, t->ndim, t->shape, 7),
                     REFIT_EINVAL);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "memory type"));
    /* The rejected tensor left nothing behind: a host tensor is fine. */
    ck_assert_int_eq(refit_publisher_add(pub, t->name, host, REFIT_DTYPE_BF16, t->ndim, t->shape, REFIT_MEM_HOST),
                     0);
    refit_publisher_destroy(pub);
    refit_layout_destroy(lay);
    refit_context_destroy(ctx);
    free(host);
}
END_TEST

START_TEST(receiver_device_destination)
{
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, NULL, 0, &ctx) == 0, "%s", refit_error_message());
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r0", &rcv), 0);
    struct refit_tensor_info ti;
    ck_assert_int_eq(refit_receiver_tensor(rcv, 0, &ti), 0);
    void *host = calloc(1, ti.nbytes);
    check_device_error(refit_receiver_bind(rcv, ti.name, host, ti.dtype, ti.ndim, ti.shape, REFIT_MEM_CUDA), ti.name);
    ck_assert_int_eq(refit_receiver_bind(rcv, ti.name, host, ti.dtype, ti.ndim, ti.shape, 9), REFIT_EINVAL);
    /* Still unbound: nothing was recorded for the refused binds. */
    ck_assert_int_eq(refit_receiver_tensor(rcv, 0, &ti), 0);
    ck_assert_ptr_null(ti.ptr);
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
    free(host);
}
END_TEST

START_TEST(pool_without_cuda)
{
    if (refit_cuda_built())
        return; /* the pool itself: tests/cuda/test-cuda-devmem */
    void *p = (void *)1;
    ck_assert_int_eq(refit_cuda_alloc(4096, &p), REFIT_ENOTSUP);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "without CUDA"));
    ck_assert_ptr_eq(p, (void *)1);
    ck_assert_int_eq(refit_cuda_free(NULL), 0);
    struct refit_cuda_pool_stats st = {.size = sizeof(st)};
    ck_assert_int_eq(refit_cuda_pool_stats(&st), REFIT_ENOTSUP);
    ck_assert_int_eq(refit_cuda_pool_trim(), REFIT_ENOTSUP);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("devmem-api");
    TCase *tc = tcase_create("api");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, publisher_device_tensor);
    tcase_add_test(tc, receiver_device_destination);
    tcase_add_test(tc, pool_without_cuda);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? 1 : 0;
}
