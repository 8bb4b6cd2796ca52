/* test_sim_net.c — the simulator's fluid network (tools/refit/sim_net.c)
 * against max-min fair shares worked out by hand: the first link to
 * saturate as rates rise together freezes its flows (Bertsekas and
 * Gallager, Data Networks, 6.5.2), and flows re-share when one ends. */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "refit/status.h"
#include "sim.h"
#include "../check_run.h"

#define EQ(a, b) ck_assert_msg(fabs((double)(a) - (double)(b)) < 1e-6 * fabs((double)(b)) + 1e-9, "%.9f != %.9f", (double)(a), (double)(b))

struct ends {
    double t[16];
    int added;
};

static int record(void *arg, sim_net_t *n, int flow, int tag, double t)
{
    (void)n;
    (void)tag;
    struct ends *e = arg;
    if (flow < 16)
        e->t[flow] = t;
    return 0;
}

START_TEST(test_one_flow)
{
    double cap[2] = {100, 100}, end = 0;
    sim_net_t *n;
    ck_assert_int_eq(sim_net_create(2, cap, &n), 0);
    ck_assert_int_eq(sim_net_add(n, 0, 1, 1000, 0.5, 0), 0);
    ck_assert_int_eq(sim_net_run(n, NULL, NULL, &end), 0);
    EQ(end, 10.5);
    EQ(sim_net_carried(n)[0], 1000);
    EQ(sim_net_carried(n)[1], 1000);
    sim_net_destroy(n);
}
END_TEST

START_TEST(test_max_min)
{
    /* Links: 0 (cap 60) the shared egress, 1 and 2 ingresses (100), 3 an
     * egress (100).  A: 0->1, B: 0->2, C: 3->2, 70 bytes each.  Link 0
     * saturates first (60/2 = 30 < 100/2): A = B = 30; link 2 has 70 left
     * for C.  C ends at 1 s; A and B keep 30 each (link 0 still binds)
     * and end at 70/30 s. */
    double cap[4] = {60, 100, 100, 100}, end = 0;
    sim_net_t *n;
    struct ends e = {{0}, 0};
    ck_assert_int_eq(sim_net_create(4, cap, &n), 0);
    ck_assert_int_eq(sim_net_add(n, 0, 1, 70, 0, 0), 0);
    ck_assert_int_eq(sim_net_add(n, 0, 2, 70, 0, 1), 1);
    ck_assert_int_eq(sim_net_add(n, 3, 2, 70, 0, 2), 2);
    ck_assert_int_eq(sim_net_run(n, record, &e, &end), 0);
    EQ(e.t[2], 1.0);
    EQ(e.t[0], 70.0 / 30.0);
    EQ(e.t[1], 70.0 / 30.0);
    EQ(end, 70.0 / 30.0);
    sim_net_destroy(n);
}
END_TEST

START_TEST(test_reshare_after_end)
{
    /* Two flows share egress 0 (100): 50 each.  The 100-byte one ends at
     * 2 s; the 300-byte one has 200 left and then runs alone at 100:
     * ends at 4 s. */
    double cap[3] = {100, 1000, 1000}, end = 0;
    sim_net_t *n;
    struct ends e = {{0}, 0};
    ck_assert_int_eq(sim_net_create(3, cap, &n), 0);
    sim_net_add(n, 0, 1, 100, 0, 0);
    sim_net_add(n, 0, 2, 300, 0, 1);
    ck_assert_int_eq(sim_net_run(n, record, &e, &end), 0);
    EQ(e.t[0], 2.0);
    EQ(e.t[1], 4.0);
    sim_net_destroy(n);
}
END_TEST

/* A chain: each end starts the next flow 1 s later (a timer in between). */
static int chain(void *arg, sim_net_t *n, int flow, int tag, double t)
{
    (void)flow;
    struct ends *e = arg;
    if (tag == 0 && e->added < 2) {
        e->added++;
        return sim_net_add(n, -1, -1, 0, t + 1, 1) < 0;
    }
    if (tag == 1)
        return sim_net_add(n, 0, 1, 100, t, 0) < 0;
    return 0;
}

START_TEST(test_timers_and_added_flows)
{
    /* 100 bytes at 100 B/s: 1 s, wait 1 s, again, wait, again: 5 s. */
    double cap[2] = {100, 100}, end = 0;
    sim_net_t *n;
    struct ends e = {{0}, 0};
    ck_assert_int_eq(sim_net_create(2, cap, &n), 0);
    sim_net_add(n, 0, 1, 100, 0, 0);
    ck_assert_int_eq(sim_net_run(n, chain, &e, &end), 0);
    EQ(end, 5.0);
    EQ(sim_net_carried(n)[0], 300);
    sim_net_destroy(n);
}
END_TEST

START_TEST(test_bad_flows)
{
    double cap[2] = {100, 100};
    sim_net_t *n;
    ck_assert_int_eq(sim_net_create(2, cap, &n), 0);
    ck_assert_int_eq(sim_net_add(n, 0, 5, 10, 0, 0), REFIT_EINVAL);
    ck_assert_int_eq(sim_net_add(n, 0, 1, -1, 0, 0), REFIT_EINVAL);
    sim_net_destroy(n);
    double zero[1] = {0};
    ck_assert_int_eq(sim_net_create(1, zero, &n), REFIT_EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sim_net");
    TCase *tc = tcase_create("net");
    tcase_add_test(tc, test_one_flow);
    tcase_add_test(tc, test_max_min);
    tcase_add_test(tc, test_reshare_after_end);
    tcase_add_test(tc, test_timers_and_added_flows);
    tcase_add_test(tc, test_bad_flows);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_ENV) ? 1 : 0;
}
