/* test_sched.c — core/src/sched.c: the naive rule is the planner's
 * (rf_plan_build's choose_candidates in core/src/engine/plan.c: largest
 * piece first, least-loaded candidate, ties to the first), spread gives
 * the engines of one layout different replicas, and the visiting orders
 * are permutations rotated per participant.  Expected choices are worked
 * out by hand in the comments. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "refit/status.h"
#include "sched.h"
#include "../check_run.h"

static const uint32_t C01[] = {0, 1}, C0123[] = {0, 1, 2, 3}, C23[] = {2, 3};

START_TEST(test_naive_is_the_planner_rule)
{
    /* Sizes 5, 10, 6 on {0,1}: 10 -> 0 (tie, first); 6 -> 1 (0 < 10);
     * 5 -> 1 (6 < 10).  Loads 10 and 11. */
    struct rf_sched_item it[] = {{2, C01, 5}, {2, C01, 10}, {2, C01, 6}};
    uint32_t ch[3];
    uint64_t load[2] = {0, 0};
    ck_assert_int_eq(rf_sched_choose(it, 3, 2, RF_SCHED_NAIVE, NULL, ch, load), 0);
    ck_assert_uint_eq(C01[ch[1]], 0);
    ck_assert_uint_eq(C01[ch[2]], 1);
    ck_assert_uint_eq(C01[ch[0]], 1);
    ck_assert_uint_eq(load[0], 10);
    ck_assert_uint_eq(load[1], 11);
}
END_TEST

START_TEST(test_naive_same_for_every_engine)
{
    /* One piece of 4 replicas: every engine alone picks source 0. */
    struct rf_sched_item it[] = {{4, C0123, 100}};
    for (uint32_t e = 0; e < 4; e++) {
        struct rf_sched_who who = {e, 4};
        uint32_t ch = 9;
        ck_assert_int_eq(rf_sched_choose(it, 1, 4, RF_SCHED_NAIVE, &who, &ch, NULL), 0);
        ck_assert_uint_eq(ch, 0);
    }
}
END_TEST

START_TEST(test_spread_gives_each_engine_a_replica)
{
    /* Four engines, a piece on 4 replicas and one on 2 ({2,3}): taken in
     * turn, the big piece goes to 0,1,2,3; the small one to the least
     * loaded of {2,3} each time: 2,3 then both at 100+50: 2,3 again. */
    struct rf_sched_item it[] = {{4, C0123, 100}, {2, C23, 50}};
    uint64_t load[4] = {0, 0, 0, 0};
    uint32_t seen[4] = {0, 0, 0, 0};
    for (uint32_t e = 0; e < 4; e++) {
        struct rf_sched_who who = {e, 4};
        uint32_t ch[2];
        ck_assert_int_eq(rf_sched_choose(it, 2, 4, RF_SCHED_SPREAD, &who, ch, load), 0);
        seen[C0123[ch[0]]]++;
    }
    for (int s = 0; s < 4; s++)
        ck_assert_uint_eq(seen[s], 1);
    ck_assert_uint_eq(load[0], 100);
    ck_assert_uint_eq(load[1], 100);
    ck_assert_uint_eq(load[2], 200);
    ck_assert_uint_eq(load[3], 200);
}
END_TEST

START_TEST(test_spread_deterministic)
{
    /* The same inputs give the same row: engines compute alone. */
    struct rf_sched_item it[64];
    uint32_t cand[64][3];
    for (int i = 0; i < 64; i++) {
        for (int c = 0; c < 3; c++)
            cand[i][c] = (uint32_t)((i + c * 5) % 8);
        it[i] = (struct rf_sched_item){3, cand[i], (uint64_t)(1000 + (i * 37) % 300)};
    }
    struct rf_sched_who who = {3, 6};
    uint32_t a[64], b[64];
    ck_assert_int_eq(rf_sched_choose(it, 64, 8, RF_SCHED_SPREAD, &who, a, NULL), 0);
    ck_assert_int_eq(rf_sched_choose(it, 64, 8, RF_SCHED_SPREAD, &who, b, NULL), 0);
    ck_assert_mem_eq(a, b, sizeof(a));
    for (int i = 0; i < 64; i++)
        ck_assert_uint_lt(a[i], 3);
}
END_TEST

START_TEST(test_bad_items)
{
    const uint32_t bad[] = {7};
    struct rf_sched_item none[] = {{0, C01, 1}}, range[] = {{1, bad, 1}};
    uint32_t ch;
    ck_assert_int_eq(rf_sched_choose(none, 1, 4, RF_SCHED_NAIVE, NULL, &ch, NULL), REFIT_EINVAL);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "piece 0"));
    ck_assert_int_eq(rf_sched_choose(range, 1, 4, RF_SCHED_SPREAD, NULL, &ch, NULL), REFIT_EINVAL);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "source 7 of 4"));
}
END_TEST

START_TEST(test_orders)
{
    uint32_t o[8];
    rf_sched_order(RF_SCHED_NAIVE, 8, 5, 4, o);
    for (uint32_t k = 0; k < 8; k++)
        ck_assert_uint_eq(o[k], k);
    /* Participant 3 of 4 over 8 peers starts at 6 and walks with the 4th
     * step coprime with 8 (1, 3, 5, 7): 6, 5, 4, ... */
    rf_sched_order(RF_SCHED_SPREAD, 8, 3, 4, o);
    ck_assert_uint_eq(o[0], 6);
    ck_assert_uint_eq(o[1], 5);
    ck_assert_uint_eq(o[2], 4);
    /* Participant 0 walks 0, 1, 2, ... as before. */
    rf_sched_order(RF_SCHED_SPREAD, 8, 0, 4, o);
    for (uint32_t k = 0; k < 8; k++)
        ck_assert_uint_eq(o[k], k);
    /* Two participants per peer (16 over 8): the pair that starts on one
     * peer parts at the next (a convoy would stay together). */
    for (uint32_t s = 0; s < 16; s += 2) {
        uint32_t a[8], b[8];
        rf_sched_order(RF_SCHED_SPREAD, 8, s, 16, a);
        rf_sched_order(RF_SCHED_SPREAD, 8, s + 1, 16, b);
        ck_assert_uint_eq(a[0], b[0]);
        ck_assert_uint_ne(a[1], b[1]);
        uint32_t ma = 0, mb = 0;
        for (int k = 0; k < 8; k++) {
            ma |= 1u << a[k];
            mb |= 1u << b[k];
        }
        ck_assert_uint_eq(ma, 0xff);
        ck_assert_uint_eq(mb, 0xff);
    }
    /* One or two peers: the only walks there are. */
    rf_sched_order(RF_SCHED_SPREAD, 2, 1, 2, o);
    ck_assert_uint_eq(o[0], 1);
    ck_assert_uint_eq(o[1], 0);
    rf_sched_order(RF_SCHED_SPREAD, 1, 5, 7, o);
    ck_assert_uint_eq(o[0], 0);
    /* Every participant's order is a permutation; starts are distinct. */
    uint32_t starts = 0;
    for (uint32_t s = 0; s < 8; s++) {
        rf_sched_order(RF_SCHED_SPREAD, 8, s, 8, o);
        uint32_t mask = 0;
        for (int k = 0; k < 8; k++)
            mask |= 1u << o[k];
        ck_assert_uint_eq(mask, 0xff);
        starts |= 1u << o[0];
    }
    ck_assert_uint_eq(starts, 0xff);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("sched");
    tcase_add_test(tc, test_naive_is_the_planner_rule);
    tcase_add_test(tc, test_naive_same_for_every_engine);
    tcase_add_test(tc, test_spread_gives_each_engine_a_replica);
    tcase_add_test(tc, test_spread_deterministic);
    tcase_add_test(tc, test_bad_items);
    tcase_add_test(tc, test_orders);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_ENV) ? 1 : 0;
}
