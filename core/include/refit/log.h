/* refit/log.h — leveled logging.  Library code never prints: it logs
 * through here (plugins through the host table), and the level comes from
 * REFIT_LOG=debug|info|warn|error (default warn) or refit_log_set_level. */
#ifndef REFIT_LOG_H
#define REFIT_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

enum refit_log_level {
    REFIT_LOG_DEBUG = 0,
    REFIT_LOG_INFO = 1,
    REFIT_LOG_WARN = 2,
    REFIT_LOG_ERROR = 3,
    REFIT_LOG_OFF = 4
};

void refit_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void refit_vlog(int level, const char *component, const char *fmt,
                __builtin_va_list ap);
void refit_log_set_level(int level);
int refit_log_get_level(void);
/* Parses "debug", "info", "warn", "error", "off"; -1 when unknown. */
int refit_log_parse_level(const char *s);

#ifdef __cplusplus
}
#endif
#endif
