/* fixture.h — what the store tests share: a scratch directory, a private
 * redis-server (random free port, no persistence) that can be killed and
 * restarted, and stores opened on either plugin with the same code. */
#ifndef REFIT_TEST_STORE_FIXTURE_H
#define REFIT_TEST_STORE_FIXTURE_H

#include <stddef.h>
#include <sys/types.h>

#include "refit/config.h"
#include "refit/loader.h"
#include "refit/store_core.h"

struct fx_store {
    refit_config_t *cfg;
    refit_loader_t *loader;
    refit_store_t *s;
};

/* Set up for plugin "file" or "redis" (starts the server; exits 77 when
 * redis-server is not installed).  Registers an atexit teardown in the
 * calling (main) process. */
void fx_setup(const char *plugin);
const char *fx_plugin(void);
const char *fx_dir(void);
int fx_port(void);

/* Open a store in namespace ns; extra "key=value" settings may follow,
 * terminated by NULL.  Returns the status of refit_store_open. */
int fx_open(struct fx_store *f, const char *ns, ...);
void fx_close(struct fx_store *f);

/* Kill the service and start it again, empty (redis: SIGKILL and a new
 * server on the same port; file: nothing, files outlive processes).
 * Returns 1 when a restart actually happened. */
int fx_restart(void);
/* Kill the service and leave it down (redis only; fx_restart starts it
 * again).  Returns 1 when a server was killed. */
int fx_kill(void);

/* Overwrite key (relative, in namespace ns) with something that is not a
 * value the plugin wrote: file: a file without the header; redis: a list. */
void fx_corrupt(const char *ns, const char *key);

/* Start / stop a redis-server of our own (used by the bench too).  Returns
 * the pid, or -1 when redis-server is missing or did not come up. */
pid_t fx_redis_start(const char *dir, int port);
/* The same with extra redis-server arguments (NULL-terminated). */
pid_t fx_redis_start_args(const char *dir, int port, const char *const *extra);
void fx_redis_stop(pid_t pid);
int fx_free_port(void);
/* Send one command (argv form) to 127.0.0.1:port and read one reply line;
 * returns 0 when the reply starts with want (NULL: anything). */
int fx_redis_cmd(int port, int argc, const char **argv, const char *want);

#endif
