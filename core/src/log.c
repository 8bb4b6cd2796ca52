/* log.c — the logger.  One line per message on stderr, with level,
 * component and pid, so the interleaved output of several processes
 * (trainer and inference ranks in `refit demo`) can be told apart. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "refit/log.h"

static atomic_int log_level = -1;

int refit_log_parse_level(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    if (!s)
        return -1;
    for (int i = 0; i < 5; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return REFIT_LOG_WARN;
    return -1;
}

int refit_log_get_level(void)
{
    int l = atomic_load(&log_level);
    if (l < 0) {
        l = refit_log_parse_level(getenv("REFIT_LOG"));
        if (l < 0)
            l = REFIT_LOG_WARN;
        atomic_store(&log_level, l);
    }
    return l;
}

void refit_log_set_level(int level)
{
    atomic_store(&log_level, level);
}

void refit_vlog(int level, const char *component, const char *fmt, va_list ap)
{
    static const char *tags[] = {"debug", "info", "warn", "error"};
    if (level < refit_log_get_level() || level < 0 || level > REFIT_LOG_ERROR)
        return;
    /* Format into one buffer and write once so lines from threads and
     * processes do not interleave mid-line. */
    char line[2048];
    int n = snprintf(line, sizeof(line), "refit[%d] %s %s: ", (int)getpid(),
                     tags[level], component ? component : "core");
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0)
        return;
    size_t len = strlen(line);
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void refit_log(int level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    refit_vlog(level, component, fmt, ap);
    va_end(ap);
}
