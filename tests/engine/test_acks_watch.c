/* test_acks_watch.c — refit_publisher_wait_released waiting on a watch of
 * the acks (core/src/engine/acks.c), with the file store and with Redis
 * (argument "redis"; SKIP, 77, without redis-server): acks that arrive
 * while it waits are counted, a malformed ack or one of another version is
 * not (not even once replaced by a good one twice over), an ack deleted
 * while it waits no longer counts, and the missing receivers are named on
 * a timeout.  And the verdict (release.c): one publisher counts and leaves
 * "released/<V>", a later waiter reads it in one round trip; a counter
 * that died (its claim expired) is taken over; a verdict that cannot be
 * read, or one below refit.receivers, makes a waiter count for itself. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "refit/catalog.h"
#include "refit/refit.h"
#include "sums.h" /* rf_release_wait: a second waiter on a handle of the test's */
#include "../check_run.h"
#include "../store/fixture.h"

#define NS "acks"

static refit_context_t *ctx;
static refit_publisher_t *pub;
static struct fx_store fs;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void put_ack(uint64_t v, uint64_t says, const char *receiver)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    ck_assert_int_eq(refit_key_ack(key, v, receiver), 0);
    struct refit_ack a = {.schema = 1, .version = says, .receiver = receiver, .time_ms = 1};
    void *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(refit_ack_encode(&a, &buf, &len), 0);
    ck_assert_int_eq(refit_store_put(fs.s, key, buf, len), 0);
    free(buf);
}

static void put_raw(uint64_t v, const char *receiver, const char *val)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    ck_assert_int_eq(refit_key_ack(key, v, receiver), 0);
    ck_assert_int_eq(refit_store_put(fs.s, key, val, strlen(val)), 0);
}

static void del_ack(uint64_t v, const char *receiver)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    ck_assert_int_eq(refit_key_ack(key, v, receiver), 0);
    ck_assert_int_eq(refit_store_del(fs.s, key), 0);
}

static void setup(void)
{
    char cfg[700], o_cfg[800], o_store[800];
    snprintf(cfg, sizeof(cfg), "%s/config.json", fx_dir());
    FILE *f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", \"num_hidden_layers\": 1, "
          "\"hidden_size\": 64, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 32, "
          "\"intermediate_size\": 128, \"vocab_size\": 128, \"tie_word_embeddings\": true, "
          "\"attention_bias\": false, \"rms_norm_eps\": 1e-06, \"torch_dtype\": \"bfloat16\"}\n", f);
    fclose(f);
    snprintf(o_cfg, sizeof(o_cfg), "model.hf_config=%s", cfg);
    int redis = !strcmp(fx_plugin(), "redis");
    if (redis)
        snprintf(o_store, sizeof(o_store), "store.redis.port=%d", fx_port());
    else
        snprintf(o_store, sizeof(o_store), "store.file.path=%s/files", fx_dir());
    const char *ovr[] = {"model.plugin=auto", o_cfg, redis ? "store.plugin=redis" : "store.plugin=file", o_store,
                         "store.namespace=" NS, "transport.plugin=tcp", "refit.receivers=3"};
    ck_assert_int_eq(refit_context_create(NULL, ovr, sizeof(ovr) / sizeof(ovr[0]), &ctx), 0);
    struct refit_parallel par = {.tp_size = 1, .pp_size = 1, .ep_size = 1, .etp_size = 1};
    ck_assert_int_eq(refit_publisher_create(ctx, &par, "acks-pub", &pub), 0);
    ck_assert_int_eq(fx_open(&fs, NS, NULL), 0);
}

static void teardown(void)
{
    fx_close(&fs);
    refit_publisher_destroy(pub);
    refit_context_destroy(ctx);
}

/* The acks of v 7 as they come: one good, one malformed, one of another
 * version; `last` set just before the ack that makes three. */
static volatile int last;

static void *writer(void *arg)
{
    (void)arg;
    sleep_ms(100);
    put_ack(7, 7, "r1");
    put_raw(7, "r2", "not an ack");
    sleep_ms(100);
    put_ack(7, 6, "r3");
    sleep_ms(100);
    put_ack(7, 7, "r2");
    sleep_ms(100);
    last = 1;
    put_ack(7, 7, "r3");
    return NULL;
}

START_TEST(acks_as_they_come)
{
    last = 0;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, writer, NULL), 0);
    int rc = refit_publisher_wait_released(pub, 7, 20000);
    pthread_join(t, NULL);
    if (rc)
        fprintf(stderr, "%s\n", refit_error_message());
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(last, "released before the third good ack was written");
}
END_TEST

static void *deleter(void *arg)
{
    (void)arg;
    sleep_ms(150);
    del_ack(8, "r1");
    sleep_ms(100);
    put_ack(8, 8, "r3");
    return NULL;
}

START_TEST(deleted_ack_no_longer_counts)
{
    put_ack(8, 8, "r1");
    put_ack(8, 8, "r2");
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, deleter, NULL), 0);
    int rc = refit_publisher_wait_released(pub, 8, 1500);
    pthread_join(t, NULL);
    ck_assert_int_eq(rc, REFIT_ETIMEDOUT);
    const char *m = refit_error_message();
    ck_assert_msg(strstr(m, "by 2 of 3 receivers") != NULL, "the timeout does not say what is missing: %s", m);
}
END_TEST

START_TEST(all_acked_before_waiting)
{
    put_ack(9, 9, "r1");
    put_ack(9, 9, "r2");
    put_ack(9, 9, "r3");
    ck_assert_int_eq(refit_publisher_wait_released(pub, 9, 5000), 0);
}
END_TEST

static void expect_verdict(uint64_t v, const char *want)
{
    char key[64];
    snprintf(key, sizeof(key), "released/%llu", (unsigned long long)v);
    void *val = NULL;
    size_t len = 0;
    ck_assert_msg(refit_store_get(fs.s, key, &val, &len) == 0, "no verdict: %s", refit_error_message());
    ck_assert_msg(len == strlen(want) && !memcmp(val, want, len), "verdict '%.*s'", (int)len, (char *)val);
    free(val);
}

START_TEST(one_counts_the_others_read_its_verdict)
{
    put_ack(10, 10, "r1");
    put_ack(10, 10, "r2");
    put_ack(10, 10, "r3");
    ck_assert_int_eq(refit_publisher_wait_released(pub, 10, 5000), 0);
    expect_verdict(10, "released 10 3");
    /* Another publisher: the verdict, one read, no listing of the acks. */
    uint64_t rt = refit_store_round_trips(fs.s);
    ck_assert_int_eq(rf_release_wait(fs.s, 10, 3, 5000, "other"), 0);
    ck_assert_uint_eq(refit_store_round_trips(fs.s) - rt, 1);
}
END_TEST

START_TEST(dead_counter_is_taken_over)
{
    put_ack(11, 11, "r1");
    put_ack(11, 11, "r2");
    put_ack(11, 11, "r3");
    /* A counter that claimed v11 and died: its claim expires. */
    ck_assert_int_eq(refit_store_put_ttl(fs.s, "released/11", "claim ghost", 11, 300), 0);
    ck_assert_msg(refit_publisher_wait_released(pub, 11, 10000) == 0, "%s", refit_error_message());
    expect_verdict(11, "released 11 3");
}
END_TEST

START_TEST(unreadable_or_short_verdict_counts_itself)
{
    put_ack(12, 12, "r1");
    put_ack(12, 12, "r2");
    put_ack(12, 12, "r3");
    ck_assert_int_eq(refit_store_put(fs.s, "released/12", "released 12 3 and more", 22), 0);
    ck_assert_msg(refit_publisher_wait_released(pub, 12, 5000) == 0, "%s", refit_error_message());
    /* A verdict of fewer receivers than refit.receivers (3) releases nothing. */
    put_ack(13, 13, "r1");
    put_ack(13, 13, "r2");
    ck_assert_int_eq(refit_store_put(fs.s, "released/13", "released 13 2", 13), 0);
    int rc = refit_publisher_wait_released(pub, 13, 800);
    ck_assert_int_eq(rc, REFIT_ETIMEDOUT);
    ck_assert_msg(strstr(refit_error_message(), "by 2 of 3 receivers") != NULL, "%s", refit_error_message());
}
END_TEST

int main(int argc, char **argv)
{
    /* Decide on skipping (no redis-server) before creating anything. */
    fx_setup(argc > 1 ? argv[1] : "file");
    Suite *s = suite_create("acks_watch");
    TCase *tc = tcase_create(fx_plugin());
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, acks_as_they_come);
    tcase_add_test(tc, deleted_ack_no_longer_counts);
    tcase_add_test(tc, all_acked_before_waiting);
    tcase_add_test(tc, one_counts_the_others_read_its_verdict);
    tcase_add_test(tc, dead_counter_is_taken_over);
    tcase_add_test(tc, unreadable_or_short_verdict_counts_itself);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
