/* util.h — small helpers shared by the core's modules (not installed). */
#ifndef REFIT_UTIL_H
#define REFIT_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* strdup that returns NULL for NULL. */
char *rf_strdup(const char *s);
/* Edit distance, capped: returns > cap as soon as it exceeds cap. */
size_t rf_edit_distance(const char *a, const char *b, size_t cap);
/* Monotonic clock in nanoseconds. */
uint64_t rf_now_ns(void);

/* a + b <= limit without wrapping: every offset + length read from outside
 * is checked this way (style rule 11), never with a plain + on u64. */
static inline int rf_fits(uint64_t a, uint64_t b, uint64_t limit)
{
    return a <= limit && b <= limit - a;
}

/* a * b <= limit without wrapping. */
static inline int rf_mul_fits(uint64_t a, uint64_t b, uint64_t limit)
{
    return !a || b <= limit / a;
}

#endif
