/* test_tp_nq.c — the notification queue the transports share
 * (plugins/transport/common/tp_nq.h), alone: first in, first out; a note
 * past either bound (count, bytes) refused with the reason and counted;
 * a note larger than the poller's buffer counted dropped, not delivered;
 * the stats copied no further than the caller's size.  The plugins' use of
 * it (locks, logs, answers) is the conformance suite's (test_transport.c). */
#include <check.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "tp_nq.h"
#include "../check_run.h"

static struct rtp_notice *note(const char *from, const char *text)
{
    size_t len = strlen(text);
    struct rtp_notice *n = malloc(sizeof(*n) + len + 1);
    ck_assert_ptr_nonnull(n);
    n->len = len;
    strcpy(n->from, from);
    memcpy(n->data, text, len + 1);
    return n;
}

START_TEST(t_fifo)
{
    struct rtp_nq q = {.max = 8, .max_bytes = 1024};
    ck_assert_ptr_null(rtp_nq_take(&q));
    rtp_nq_append(&q, note("a", "one"));
    rtp_nq_append(&q, note("b", "three"));
    ck_assert_uint_eq(q.count, 2);
    ck_assert_uint_eq(q.bytes, 8);
    ck_assert_uint_eq(q.received, 2);
    struct rtp_notice *n = rtp_nq_take(&q);
    ck_assert_str_eq(n->from, "a");
    ck_assert_uint_eq(q.count, 1);
    ck_assert_uint_eq(q.bytes, 5);
    free(n);
    n = rtp_nq_take(&q);
    ck_assert_str_eq(n->from, "b");
    free(n);
    ck_assert_ptr_null(rtp_nq_take(&q));
    ck_assert_ptr_null(q.tail); /* emptied: the next append starts the list again */
    rtp_nq_append(&q, note("c", "x"));
    ck_assert_ptr_eq(q.head, q.tail);
    free(rtp_nq_take(&q));
}
END_TEST

START_TEST(t_bounds)
{
    char why[128] = "";
    struct rtp_nq q = {.max = 2, .max_bytes = 10};
    ck_assert_uint_eq(rtp_nq_refuse(&q, 4, why, sizeof(why)), 0);
    rtp_nq_append(&q, note("a", "abcd"));
    /* 4 + 7 > 10 bytes */
    ck_assert_uint_eq(rtp_nq_refuse(&q, 7, why, sizeof(why)), 1);
    ck_assert_msg(strstr(why, "1 notifications, 4 bytes"), "why: %s", why);
    ck_assert_uint_eq(rtp_nq_refuse(&q, 6, why, sizeof(why)), 0); /* exactly full is fine */
    rtp_nq_append(&q, note("b", "abcdef"));
    /* two notes: the count is the bound now, even for an empty one */
    ck_assert_uint_eq(rtp_nq_refuse(&q, 0, why, sizeof(why)), 2);
    ck_assert_uint_eq(q.dropped_full, 2);
    ck_assert_uint_eq(q.received, 2);
    for (struct rtp_notice *n; (n = rtp_nq_take(&q));)
        free(n);
}
END_TEST

START_TEST(t_count_out_and_copy)
{
    struct rtp_nq q = {.max = 8, .max_bytes = 1024};
    rtp_nq_append(&q, note("big", "0123456789"));
    rtp_nq_append(&q, note("small", "ok"));
    struct rtp_notice *n = rtp_nq_take(&q);
    ck_assert_uint_eq(rtp_nq_count_out(&q, n, 4), 1); /* larger than the buffer */
    ck_assert_uint_eq(q.dropped_big, 1);
    ck_assert_uint_eq(q.delivered, 0);
    free(n);
    n = rtp_nq_take(&q);
    ck_assert_uint_eq(rtp_nq_count_out(&q, n, 4), 0);
    ck_assert_uint_eq(q.delivered, 1);
    char buf[4] = "zzz", from[REFIT_TP_NAME_MAX + 1];
    rtp_notice_copy(n, buf, from, sizeof(from));
    ck_assert_mem_eq(buf, "okz", 3);
    ck_assert_str_eq(from, "small");
    rtp_notice_copy(n, buf, NULL, 0);
    free(n);
}
END_TEST

START_TEST(t_stats_size)
{
    struct rtp_nq q = {.max = 7, .max_bytes = 99, .received = 5, .delivered = 4, .dropped_full = 3,
                       .dropped_big = 2};
    struct refit_tp_notify_stats full = {.size = sizeof(full)};
    rtp_nq_stats(&q, &full);
    ck_assert_uint_eq(full.size, sizeof(full));
    ck_assert_uint_eq(full.received, 5);
    ck_assert_uint_eq(full.delivered, 4);
    ck_assert_uint_eq(full.dropped_full, 3);
    ck_assert_uint_eq(full.dropped_oversize, 2);
    ck_assert_uint_eq(full.max_count, 7);
    ck_assert_uint_eq(full.max_bytes, 99);
    /* an older caller's struct ends after delivered: nothing past it written */
    struct refit_tp_notify_stats old;
    memset(&old, 0xab, sizeof(old));
    old.size = offsetof(struct refit_tp_notify_stats, dropped_full);
    rtp_nq_stats(&q, &old);
    ck_assert_uint_eq(old.size, offsetof(struct refit_tp_notify_stats, dropped_full));
    ck_assert_uint_eq(old.delivered, 4);
    ck_assert_uint_eq(old.dropped_full, 0xababababababababull);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tp_nq");
    TCase *tc = tcase_create("queue");
    tcase_add_test(tc, t_fifo);
    tcase_add_test(tc, t_bounds);
    tcase_add_test(tc, t_count_out_and_copy);
    tcase_add_test(tc, t_stats_size);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
