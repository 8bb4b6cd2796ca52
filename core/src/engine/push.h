/* push.h — what both sides of push mode share (internal): the mailbox
 * slot a publisher writes into a receiver's memory and the completion
 * notification.  The store values are push_work.h; the receiver's side is
 * push_rcv.c (rf_mode_push), the publisher's push_pub.c. */
#ifndef RF_PUSH_H
#define RF_PUSH_H

#include <stdint.h>

/* Mailbox slot (little-endian u64 words): magic, version, n units, per unit
 * the XXH3-64 of its FP8 bytes and of its scale row, the XXH3-64 of the
 * slot before it.  The receiver zeroes the mailbox before advertising. */
#define RF_PUSH_MAIL_MAGIC 0x31304c49414d5052ull /* "RPMAIL01" */
#define RF_PUSH_MAIL_HEAD 32                     /* magic, version, count, trailer */
#define RF_PUSH_MAIL_UNIT 16                     /* two hashes per unit */

/* Notification: "RFPUSH <V> <source> ok" or "... err <message>". */
#define RF_PUSH_NOTE_PREFIX "RFPUSH "
#define RF_PUSH_MAX_NOTE 512

static inline uint64_t rf_push_rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline void rf_push_wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

#endif
