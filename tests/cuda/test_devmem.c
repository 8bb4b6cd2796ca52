/* test_devmem.c — device pointers in the publisher and the receiver, with a
 * CUDA device (exits 77, skipped, without one):
 *   - refits with trainers' tensors and engines' destinations in GPU memory
 *     over tcp, several cycles of changing weights, byte for byte against
 *     an offline conversion (`refit demo --device ...` as real processes):
 *     FP8 (trainer and deepgemm rules) and bf16, TP 2 -> 1 and 1 -> 2, zero-
 *     copy and publish: copy, push mode, device on both sides or on one;
 *   - a device receiver beside a host receiver pulling the same versions
 *     from a device publisher: the same bytes; then a failed pull (the
 *     publisher died after READY) leaves the device destinations as they
 *     were;
 *   - errors: host memory passed as REFIT_MEM_CUDA (publisher, receiver),
 *     device destinations with refit.in_place, a foreign pointer freed to
 *     the pool;
 *   - the pool: allocations, reuse after free, stats, trim.
 * The process itself never touches CUDA outside Check's forked children
 * (a CUDA context does not survive fork).  The refit binary is
 * $REFIT_BIN or the build tree's; configs come from $REFIT_SOURCE_ROOT. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "refit/cuda_pool.h"
#include "refit/fp8_cuda.h"
#include "refit/refit.h"
#include "refit/standin.h"
#include "refit/status.h"
#include "../check_run.h"

#ifdef REFIT_TEST_HAVE_CUDA
#include <cuda_runtime_api.h>

#define CK_CUDA(call)                                                                       \
    do {                                                                                    \
        cudaError_t e_ = (call);                                                            \
        ck_assert_msg(e_ == cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));          \
    } while (0)

static const char *refit_bin(void)
{
    const char *b = getenv("REFIT_BIN");
    return b && *b ? b : REFIT_BIN;
}

static const char *src_root(void)
{
    const char *r = getenv("REFIT_SOURCE_ROOT");
    return r && *r ? r : ".";
}

/* `refit demo` with these arguments (and an optional environment setting);
 * its exit status 0 means every engine was byte-identical. */
static void demo(const char *env, const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "%s '%s' demo --layers 2 --vocab 1000 --config '%s/configs/clusters/local.yaml' %s",
             env ? env : "", refit_bin(), src_root(), args);
    fprintf(stderr, "running: %s\n", cmd);
    int st = system(cmd);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "failed (status %d): %s", st, cmd);
}

START_TEST(demo_cuda_fp8_tp2_tp1)
{
    demo(NULL, "--device cuda --fp8 trainer --src-tp 2 --dst-tp 1 --engines 2 --cycles 3");
}
END_TEST

START_TEST(demo_cuda_bf16_tp1_tp2_copy)
{
    demo("REFIT_REFIT_PUBLISH=copy", "--device cuda --fp8 off --src-tp 1 --dst-tp 2 --engines 1 --cycles 3");
}
END_TEST

START_TEST(demo_cuda_src_deepgemm)
{
    demo(NULL, "--device cuda-src --fp8 deepgemm --src-tp 2 --dst-tp 2 --engines 1 --cycles 2");
}
END_TEST

START_TEST(demo_cuda_dst_verify_sample)
{
    demo("REFIT_REFIT_VERIFY=sample", "--device cuda-dst --fp8 trainer --src-tp 2 --dst-tp 1 --engines 1 --cycles 2");
}
END_TEST

START_TEST(demo_cuda_push)
{
    demo(NULL, "--mode push --device cuda --fp8 trainer --src-tp 2 --dst-tp 1 --engines 1 --cycles 2");
}
END_TEST

/* refit.delta.enabled with CUDA tensors: the publisher encodes them on the
 * device (engine/delta_dev.c); every version byte-identical.  Needs the
 * kernels: not under the mock runtime, which has none (there the publish
 * falls back to whole, which the other demos cover). */
START_TEST(demo_cuda_delta)
{
    if (getenv("MOCK_CUDA_STRICT_PINNED"))
        return;
    /* The stand-in step changes every element: its delta is ~0.56 of the bytes. */
    demo("REFIT_REFIT_DELTA_ENABLED=true REFIT_REFIT_DELTA_MAX_RATIO=0.9",
         "--device cuda --fp8 off --src-tp 1 --dst-tp 1 --engines 1 --cycles 3");
}
END_TEST

START_TEST(demo_cuda_verify_off)
{
    demo("REFIT_REFIT_VERIFY=off", "--device cuda --fp8 off --src-tp 2 --dst-tp 1 --engines 1 --cycles 2");
}
END_TEST

/* ------------------------------------------------------------------ */
/* In-process publishers and receivers */

static char dir[256], ckpt[300], cfg_path[300];

static void setup(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/refit-devmem-XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(ckpt, sizeof(ckpt), "%s/ckpt", dir);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' demo --make-checkpoint '%s' --layers 2 --vocab 1024 >/dev/null", refit_bin(),
             ckpt);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(cfg_path, sizeof(cfg_path), "%s/cluster.yaml", dir);
    FILE *f = fopen(cfg_path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "store:\n  plugin: file\n  namespace: t%d\n  file:\n    path: %s/store\n    fsync: false\n"
            "transport:\n  plugin: tcp\n  timeout: 5s\n"
            "refit:\n  timeout: 4s\n  release_timeout: 30s\n  stale_after: 1s\n  heartbeat: 150ms\n"
            "  receivers: 2\n"
            "model:\n  plugin: auto\n  hf_config: %s/config.json\n  target: vllm\n  fp8:\n    enabled: true\n",
            (int)getpid(), dir, ckpt);
    fclose(f);
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* A forked publisher with its shard in device memory: v1, then (after v1
 * is released) v2 with changed weights, and then it dies without
 * withdrawing.  Exit status 0 when it got that far. */
static void device_publisher(void)
{
    refit_context_t *ctx = NULL;
    refit_publisher_t *pub = NULL;
    struct refit_standin_shard sh = {0};
    struct refit_parallel par = {.tp_size = 1, .pp_size = 1, .ep_size = 1, .etp_size = 1};
    int rc = refit_context_create(cfg_path, NULL, 0, &ctx);
    if (!rc)
        rc = refit_standin_shard_load(refit_context_model(ctx), ckpt, &par, &sh);
    if (!rc)
        rc = refit_publisher_create(ctx, &par, "gpu-trainer", &pub);
    void **dev = calloc(sh.n + 1, sizeof(void *));
    for (size_t i = 0; !rc && i < sh.n; i++) {
        rc = refit_cuda_alloc(sh.t[i].nbytes, &dev[i]);
        if (!rc && cudaMemcpy(dev[i], sh.t[i].data, sh.t[i].nbytes, cudaMemcpyHostToDevice) != cudaSuccess)
            rc = refit_error_set(REFIT_EIO, "upload");
        if (!rc)
            rc = refit_publisher_add(pub, sh.t[i].name, dev[i], sh.t[i].dtype, sh.t[i].ndim, sh.t[i].shape,
                                     REFIT_MEM_CUDA);
    }
    if (!rc)
        rc = refit_publisher_publish(pub, 1);
    if (!rc)
        rc = refit_publisher_wait_released(pub, 1, -1);
    for (size_t i = 0; !rc && i < sh.n; i++) {
        rc = refit_standin_step(sh.t[i].data, sh.t[i].nbytes, sh.t[i].dtype, 1, 2);
        if (!rc && cudaMemcpy(dev[i], sh.t[i].data, sh.t[i].nbytes, cudaMemcpyHostToDevice) != cudaSuccess)
            rc = refit_error_set(REFIT_EIO, "upload");
    }
    if (!rc)
        rc = refit_publisher_publish(pub, 2);
    if (rc) {
        fprintf(stderr, "device publisher: %s\n", refit_error_message());
        _exit(1);
    }
    _exit(0); /* gone without withdrawing: v2 stays READY with a dead server */
}

static char *device_snapshot(refit_receiver_t *r, size_t *total)
{
    size_t n = 0;
    for (size_t i = 0; i < refit_receiver_count(r); i++) {
        struct refit_tensor_info ti;
        ck_assert_int_eq(refit_receiver_tensor(r, i, &ti), 0);
        n += ti.nbytes;
    }
    char *buf = malloc(n + 1), *p = buf;
    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < refit_receiver_count(r); i++) {
        struct refit_tensor_info ti;
        refit_receiver_tensor(r, i, &ti);
        ck_assert_int_eq(ti.memtype, REFIT_MEM_CUDA);
        CK_CUDA(cudaMemcpy(p, ti.ptr, ti.nbytes, cudaMemcpyDeviceToHost));
        p += ti.nbytes;
    }
    *total = n;
    return buf;
}

static void bind_device(refit_receiver_t *r, void **dev)
{
    for (size_t i = 0; i < refit_receiver_count(r); i++) {
        struct refit_tensor_info ti;
        ck_assert_int_eq(refit_receiver_tensor(r, i, &ti), 0);
        ck_assert_int_eq(refit_cuda_alloc(ti.nbytes, &dev[i]), 0);
        CK_CUDA(cudaMemset(dev[i], 0x5a, ti.nbytes));
        ck_assert_msg(refit_receiver_bind(r, ti.name, dev[i], ti.dtype, ti.ndim, ti.shape, REFIT_MEM_CUDA) == 0,
                      "%s", refit_error_message());
    }
}

START_TEST(device_and_host_receivers_agree_failed_pull_keeps_device)
{
    fflush(NULL);
    pid_t p = fork(); /* before this process touches CUDA */
    ck_assert_int_ge(p, 0);
    if (p == 0)
        device_publisher();
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, NULL, 0, &ctx) == 0, "%s", refit_error_message());
    refit_receiver_t *rd, *rh;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "gpu", &rd), 0);
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "cpu", &rh), 0);
    size_t n_dev = refit_receiver_count(rd);
    void **dev = calloc(n_dev, sizeof(void *));
    ck_assert_ptr_nonnull(dev);
    bind_device(rd, dev);
    ck_assert_int_eq(refit_receiver_allocate(rh), 0);
    struct refit_pull_stats s = {.size = sizeof(s)};
    /* refit.timeout is short (4 s) for the failed pull below; on a loaded
     * machine the forked publisher may need longer than that to publish v1,
     * so a pull that timed out waiting for it is tried again (a minute at
     * most). */
    int rc = REFIT_ETIMEDOUT;
    for (int i = 0; i < 15 && rc == REFIT_ETIMEDOUT; i++)
        rc = refit_receiver_pull(rd, 1, &s);
    ck_assert_msg(rc == 0, "%s", refit_error_message());
    ck_assert_msg(refit_receiver_pull(rh, 1, &s) == 0, "%s", refit_error_message());
    size_t n;
    char *v1 = device_snapshot(rd, &n), *q = v1;
    for (size_t i = 0; i < refit_receiver_count(rh); i++) {
        struct refit_tensor_info ti;
        refit_receiver_tensor(rh, i, &ti);
        ck_assert_int_eq(ti.memtype, REFIT_MEM_HOST);
        ck_assert_msg(!memcmp(q, ti.ptr, ti.nbytes), "'%s' differs between the device and the host receiver",
                      ti.name);
        q += ti.nbytes;
    }
    /* The publisher published v2 and died: the pull fails (connection
     * refused, or the source is stale and v2 never comes). */
    int st = 0;
    ck_assert_int_eq(waitpid(p, &st, 0), p);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the device publisher failed");
    ck_assert_int_ne(refit_receiver_pull(rd, 2, &s), 0);
    size_t n2;
    char *after = device_snapshot(rd, &n2);
    ck_assert_uint_eq(n, n2);
    ck_assert_msg(!memcmp(v1, after, n), "device destinations changed after a failed pull");
    free(v1);
    free(after);
    refit_receiver_destroy(rd);
    refit_receiver_destroy(rh);
    for (size_t i = 0; i < n_dev; i++)
        ck_assert_int_eq(refit_cuda_free(dev[i]), 0);
    free(dev);
    refit_context_destroy(ctx);
}
END_TEST

START_TEST(host_memory_as_cuda_is_refused)
{
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, NULL, 0, &ctx) == 0, "%s", refit_error_message());
    struct refit_standin_shard sh = {0};
    struct refit_parallel par = {.tp_size = 1, .pp_size = 1, .ep_size = 1, .etp_size = 1};
    ck_assert_int_eq(refit_standin_shard_load(refit_context_model(ctx), ckpt, &par, &sh), 0);
    refit_publisher_t *pub;
    ck_assert_int_eq(refit_publisher_create(ctx, &par, "p", &pub), 0);
    const struct refit_standin_tensor *t = &sh.t[0];
    int rc = refit_publisher_add(pub, t->name, t->data, t->dtype, t->ndim, t->shape, REFIT_MEM_CUDA);
    ck_assert_int_eq(rc, REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), t->name) && strstr(refit_error_message(), "not device memory"),
                  "%s", refit_error_message());
    void *pinned = NULL;
    CK_CUDA(cudaMallocHost(&pinned, t->nbytes));
    rc = refit_publisher_add(pub, t->name, pinned, t->dtype, t->ndim, t->shape, REFIT_MEM_CUDA);
    ck_assert_int_eq(rc, REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), "pinned host memory"), "%s", refit_error_message());
    refit_receiver_t *r;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r", &r), 0);
    struct refit_tensor_info ti;
    refit_receiver_tensor(r, 0, &ti);
    void *host = calloc(1, ti.nbytes);
    rc = refit_receiver_bind(r, ti.name, host, ti.dtype, ti.ndim, ti.shape, REFIT_MEM_CUDA);
    ck_assert_int_eq(rc, REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), ti.name), "%s", refit_error_message());
    free(host);
    cudaFreeHost(pinned);
    refit_receiver_destroy(r);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_context_destroy(ctx);
}
END_TEST

START_TEST(in_place_device_is_refused)
{
    refit_context_t *ctx;
    const char *ovr[] = {"refit.in_place=true"};
    ck_assert_msg(refit_context_create(cfg_path, ovr, 1, &ctx) == 0, "%s", refit_error_message());
    refit_receiver_t *r;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r", &r), 0);
    struct refit_tensor_info ti;
    refit_receiver_tensor(r, 0, &ti);
    void *d = NULL;
    ck_assert_int_eq(refit_cuda_alloc(ti.nbytes, &d), 0);
    int rc = refit_receiver_bind(r, ti.name, d, ti.dtype, ti.ndim, ti.shape, REFIT_MEM_CUDA);
    ck_assert_int_eq(rc, REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), ti.name) && strstr(refit_error_message(), "cannot land in place"),
                  "%s", refit_error_message());
    refit_receiver_destroy(r);
    ck_assert_int_eq(refit_cuda_free(d), 0);
    refit_context_destroy(ctx);
}
END_TEST

START_TEST(pool)
{
    void *a, *b, *c, *b2;
    ck_assert_int_eq(refit_cuda_alloc(1000, &a), 0);
    ck_assert_int_eq(refit_cuda_alloc(3 << 20, &b), 0);
    ck_assert_int_eq(refit_cuda_alloc(1, &c), 0);
    ck_assert_uint_eq((uintptr_t)a % 256, 0);
    ck_assert_uint_eq((uintptr_t)b % 256, 0);
    ck_assert_ptr_eq((char *)b, (char *)a + 1024); /* first fit, 256-byte granules, one slab */
    struct cudaPointerAttributes at;
    CK_CUDA(cudaPointerGetAttributes(&at, b));
    ck_assert_int_eq(at.type, cudaMemoryTypeDevice);
    CK_CUDA(cudaMemset(b, 7, 3 << 20));
    struct refit_cuda_pool_stats st = {.size = sizeof(st)};
    ck_assert_int_eq(refit_cuda_pool_stats(&st), 0);
    ck_assert_uint_eq(st.allocations, 3);
    ck_assert_uint_eq(st.slabs, 1);
    ck_assert_uint_eq(st.used_bytes, 1024 + (3 << 20) + 256);
    ck_assert_int_eq(refit_cuda_free(b), 0);
    ck_assert_int_eq(refit_cuda_alloc(2 << 20, &b2), 0);
    ck_assert_ptr_eq(b2, b); /* the freed hole is reused */
    int x;
    ck_assert_int_eq(refit_cuda_free(&x), REFIT_EINVAL);
    ck_assert_int_eq(refit_cuda_pool_trim(), 0); /* the slab is in use */
    void *big;
    ck_assert_int_eq(refit_cuda_alloc((size_t)300 << 20, &big), 0); /* a slab of its own */
    ck_assert_int_eq(refit_cuda_pool_stats(&st), 0);
    ck_assert_uint_eq(st.slabs, 2);
    ck_assert_int_eq(refit_cuda_free(big), 0);
    ck_assert_int_eq(refit_cuda_free(a), 0);
    ck_assert_int_eq(refit_cuda_free(b2), 0);
    ck_assert_int_eq(refit_cuda_free(c), 0);
    ck_assert_int_eq(refit_cuda_pool_trim(), 2);
    ck_assert_int_eq(refit_cuda_pool_stats(&st), 0);
    ck_assert_uint_eq(st.slabs, 0);
    ck_assert_uint_eq(st.used_bytes, 0);
}
END_TEST
#endif /* REFIT_TEST_HAVE_CUDA */

START_TEST(pool_api_without_device)
{
    if (refit_cuda_built())
        return;
    void *p = NULL;
    ck_assert_int_eq(refit_cuda_alloc(16, &p), REFIT_ENOTSUP);
    ck_assert_ptr_null(p);
}
END_TEST

/* CUDA devices, counted in a child (see test_fp8_cuda.c). */
static int probe_devices(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(refit_cuda_device_count() > 0 ? 1 : 0);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 0;
}

int main(void)
{
    Suite *s = suite_create("cuda-devmem");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, pool_api_without_device);
    suite_add_tcase(s, tc);
    int devices = probe_devices();
#ifdef REFIT_TEST_HAVE_CUDA
    if (devices > 0) {
        tc = tcase_create("refits");
        tcase_set_timeout(tc, 300);
        tcase_add_test(tc, demo_cuda_fp8_tp2_tp1);
        tcase_add_test(tc, demo_cuda_bf16_tp1_tp2_copy);
        tcase_add_test(tc, demo_cuda_src_deepgemm);
        tcase_add_test(tc, demo_cuda_dst_verify_sample);
        tcase_add_test(tc, demo_cuda_verify_off);
        tcase_add_test(tc, demo_cuda_push);
        tcase_add_test(tc, demo_cuda_delta);
        suite_add_tcase(s, tc);
        tc = tcase_create("engine");
        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, device_and_host_receivers_agree_failed_pull_keeps_device);
        tcase_add_test(tc, host_memory_as_cuda_is_refused);
        tcase_add_test(tc, in_place_device_is_refused);
        tcase_add_test(tc, pool);
        suite_add_tcase(s, tc);
    }
#endif
    int failed = t_run_suite(s, CK_NORMAL);
    if (failed)
        return 1;
    if (devices <= 0) {
        printf("SKIP: %s: the device-memory tests need a CUDA device (%s); only the API checks ran\n",
               "test-cuda-devmem", refit_cuda_built() ? "none found" : "librefit built without CUDA");
        return 77;
    }
    return 0;
}
