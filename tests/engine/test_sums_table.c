/* test_sums_table.c — a pull publisher's checksum table over the transport
 * (refit.sums: transport; sums.h, pub_sums.c, verify.c), one process,
 * the file store and tcp:
 *   - pulls verify every chunk against the table and put no checksum in
 *     the store; a warm pull still costs at most 2 store round trips
 *     (the first one 4);
 *   - a source that changes its bytes behind its table fails the chunk
 *     check, naming the tensor;
 *   - a table of another version (the one before, put back) is refused;
 *   - a table whose bytes were changed fails its trailer.
 * The table is reached through the publisher's internals (publisher.h), as
 * a publisher with a bug or a torn read would leave it. */
#include "../../core/src/engine/publisher.h"
#include "harness.h"
#include "../check_run.h"

static char dir[256], ckpt[300], cfg_path[300], ns[64];
static refit_context_t *ctx;
static struct refit_standin_shard sh;
static refit_publisher_t *pub;
static refit_receiver_t *rcv;

/* One checkpoint for every test; a store namespace each. */
static void make_workdir(void)
{
    th_workdir(REFIT_BIN, "sumtab", 2, 1024, dir, sizeof(dir), ckpt, sizeof(ckpt));
}

static void remove_workdir(void)
{
    th_rmdir(dir);
}

static void setup(void)
{
    static int run;
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "st%d_", run++);
    th_cluster_file(dir, ckpt, prefix, ns, sizeof(ns), cfg_path, sizeof(cfg_path));
    const char *ovr[] = {"refit.sums=transport"};
    ctx = th_context(cfg_path, ovr, 1);
    ck_assert_msg(th_publisher(ctx, ckpt, "tabpub", &sh, &pub) == 0, "%s", refit_error_message());
    rcv = th_receiver(ctx, "r0", 1, 0);
}

static void teardown(void)
{
    refit_receiver_destroy(rcv);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_context_destroy(ctx);
}

/* Keys under versions/ that hold checksums. */
static size_t sums_keys(void)
{
    refit_store_t *st;
    refit_loader_t *ld;
    ck_assert_int_eq(refit_loader_create((refit_config_t *)refit_context_config(ctx), &ld), 0);
    ck_assert_int_eq(refit_store_open((refit_config_t *)refit_context_config(ctx), ld, NULL, &st), 0);
    char **keys = NULL;
    size_t n = 0, found = 0;
    ck_assert_int_eq(refit_store_list(st, "versions/", &keys, &n), 0);
    for (size_t i = 0; i < n; i++)
        found += strstr(keys[i], "/sums/") != NULL;
    free(keys);
    refit_store_close(st);
    refit_loader_destroy(ld);
    return found;
}

static void step(int from, int to)
{
    for (size_t i = 0; i < sh.n; i++)
        ck_assert_int_eq(refit_standin_step(sh.t[i].data, sh.t[i].nbytes, sh.t[i].dtype, from, to), 0);
}

START_TEST(table_pulls_without_store_checksums)
{
    ck_assert_int_eq(refit_publisher_publish(pub, 1), 0);
    ck_assert_ptr_nonnull(pub->sumtab[0].rkey);
    struct refit_pull_stats st = {.size = sizeof(st)};
    ck_assert_msg(refit_receiver_pull(rcv, 1, &st) == 0, "%s", refit_error_message());
    size_t n;
    char *v1 = th_snapshot(rcv, &n);
    for (int v = 2; v <= 3; v++) {
        step(v - 1, v);
        ck_assert_int_eq(refit_publisher_publish(pub, (uint64_t)v), 0);
        ck_assert_msg(refit_receiver_pull(rcv, REFIT_NEXT, &st) == 0, "%s", refit_error_message());
        ck_assert_uint_eq(st.version, (uint64_t)v);
        ck_assert_uint_eq(st.plan_cached, 1);
        /* The first warm pull may list the sources again (the membership
         * key moved while the trainer joined); later ones read the records,
         * the membership key and the fence with the ack: 2 round trips. */
        unsigned long long most = v == 2 ? 4 : 2;
        ck_assert_msg(st.store_round_trips <= most, "warm pull of v%d: %llu store round trips (at most %llu)", v,
                      (unsigned long long)st.store_round_trips, most);
    }
    ck_assert_msg(!th_same_as(rcv, v1), "v3 equals v1");
    ck_assert_uint_eq(sums_keys(), 0);
    free(v1);
}
END_TEST

START_TEST(table_catches_changed_bytes)
{
    ck_assert_int_eq(refit_publisher_publish(pub, 1), 0);
    size_t big = 0;
    for (size_t i = 0; i < sh.n; i++)
        if (sh.t[i].nbytes > sh.t[big].nbytes)
            big = i;
    ((unsigned char *)sh.t[big].data)[sh.t[big].nbytes / 2] ^= 0x40;
    ck_assert_int_eq(refit_receiver_pull(rcv, 1, NULL), REFIT_ECHECKSUM);
    ck_assert_msg(strstr(refit_error_message(), "from source tabpub: checksum mismatch"), "%s",
                  refit_error_message());
}
END_TEST

START_TEST(table_of_another_version_refused)
{
    ck_assert_int_eq(refit_publisher_publish(pub, 1), 0);
    size_t len = pub->sumtab[0].len;
    char *old = malloc(len);
    ck_assert_ptr_nonnull(old);
    memcpy(old, pub->sumtab[0].buf, len);
    step(1, 2);
    ck_assert_int_eq(refit_publisher_publish(pub, 2), 0);
    ck_assert_uint_eq(pub->sumtab[0].len, len);
    memcpy(pub->sumtab[0].buf, old, len); /* v1's table behind v2's record */
    int rc = refit_receiver_pull(rcv, 2, NULL);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(refit_error_message(), "checksum table segment") &&
                      strstr(refit_error_message(), "holds version 1, not 2"),
                  "%s", refit_error_message());
    free(old);
}
END_TEST

START_TEST(table_bytes_changed_fail_the_trailer)
{
    ck_assert_int_eq(refit_publisher_publish(pub, 1), 0);
    ck_assert_uint_gt(pub->sumtab[0].len, 80);
    ((unsigned char *)pub->sumtab[0].buf)[64] ^= 1; /* tensor 0's whole hash in segment 0 */
    ck_assert_int_eq(refit_receiver_pull(rcv, 1, NULL), REFIT_ECHECKSUM);
    ck_assert_msg(strstr(refit_error_message(), "checksum segment is corrupt"), "%s", refit_error_message());
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sums-table");
    TCase *tc = tcase_create("sums-table");
    tcase_add_unchecked_fixture(tc, make_workdir, remove_workdir);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, table_pulls_without_store_checksums);
    tcase_add_test(tc, table_catches_changed_bytes);
    tcase_add_test(tc, table_of_another_version_refused);
    tcase_add_test(tc, table_bytes_changed_fail_the_trailer);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? EXIT_FAILURE : EXIT_SUCCESS;
}
