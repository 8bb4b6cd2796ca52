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

#endif
