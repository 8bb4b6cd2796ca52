/* loader.c — finds plugin files, checks their descriptor before use and
 * keeps them loaded for the loader's lifetime (libltdl). */
#include <dirent.h>
#include <errno.h>
#include <ltdl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "refit/loader.h"
#include "refit/log.h"
#include "refit/status.h"
#include "refit_build.h"
#include "util.h"

struct loaded {
    lt_dlhandle h;
    const struct refit_plugin *desc;
    char *path;
};

struct refit_loader {
    refit_config_t *cfg;
    char **dirs;
    size_t n_dirs;
    struct loaded *plugins;
    size_t n_plugins;
};

static pthread_mutex_t lt_lock = PTHREAD_MUTEX_INITIALIZER;
static int lt_users;

/* Paths are built in PATH_BUF bytes from a directory and a file name of at
 * most NAME_MAX: directories longer than MAX_DIR are refused when added, so
 * no path is ever cut short. */
#define PATH_BUF 4096
#define MAX_DIR (PATH_BUF - 256 - 2)

static int add_dir(refit_loader_t *l, const char *d)
{
    if (!d || !*d)
        return 0;
    if (strlen(d) > MAX_DIR)
        return refit_error_set(REFIT_ECONFIG, "plugin directory '%.64s...' is %zu bytes long; at most %d",
                               d, strlen(d), MAX_DIR);
    for (size_t i = 0; i < l->n_dirs; i++)
        if (!strcmp(l->dirs[i], d))
            return 0;
    char **nd = realloc(l->dirs, (l->n_dirs + 1) * sizeof(*nd));
    if (!nd)
        return REFIT_ENOMEM;
    l->dirs = nd;
    nd[l->n_dirs] = strdup(d);
    if (!nd[l->n_dirs])
        return REFIT_ENOMEM;
    l->n_dirs++;
    return 0;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The build tree keeps plugins at <root>/<kind>/<name>/. */
static int add_build_tree(refit_loader_t *l)
{
    static const char *kinds[] = {"transport", "store", "model"};
    if (getenv("REFIT_NO_BUILD_TREE"))
        return 0;
    for (int k = 0; k < 3; k++) {
        char kd[PATH_BUF];
        if (snprintf(kd, sizeof(kd), "%s/%s", REFIT_PLUGIN_BUILD_ROOT, kinds[k]) >= (int)sizeof(kd))
            return 0; /* a build root this long holds no plugins we could name */
        DIR *d = opendir(kd);
        if (!d)
            continue;
        struct dirent *e;
        char **names = NULL;
        size_t n = 0;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char **nn = realloc(names, (n + 1) * sizeof(*nn));
            if (!nn)
                break;
            names = nn;
            names[n] = malloc(strlen(kd) + strlen(e->d_name) + 2);
            if (!names[n])
                break;
            sprintf(names[n], "%s/%s", kd, e->d_name);
            n++;
        }
        closedir(d);
        /* Deterministic order for `refit plugins`. */
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
                char *t = names[j];
                names[j] = names[j - 1];
                names[j - 1] = t;
            }
        int rc = 0;
        for (size_t i = 0; i < n; i++) {
            if (!rc && is_dir(names[i]))
                rc = add_dir(l, names[i]);
            free(names[i]);
        }
        free(names);
        if (rc)
            return rc;
    }
    return 0;
}

int refit_loader_create(refit_config_t *cfg, refit_loader_t **out)
{
    refit_loader_t *l = calloc(1, sizeof(*l));
    if (!l)
        return REFIT_ENOMEM;
    l->cfg = cfg;
    int rc = 0;
    const char *env = getenv("REFIT_PLUGIN_PATH");
    if (env) {
        char *copy = strdup(env), *save = NULL;
        if (!copy)
            rc = REFIT_ENOMEM;
        for (char *t = copy ? strtok_r(copy, ":", &save) : NULL; t && !rc; t = strtok_r(NULL, ":", &save))
            rc = add_dir(l, t);
        free(copy);
    }
    if (!rc && cfg) {
        const char *const *items;
        size_t n;
        rc = refit_config_list(cfg, "plugins.path", &items, &n);
        for (size_t i = 0; !rc && i < n; i++) {
            /* Relative entries resolve against the config file's directory. */
            const char *file = refit_config_file(cfg);
            if (items[i][0] != '/' && file && strchr(file, '/')) {
                char buf[PATH_BUF];
                int dl = (int)(strrchr(file, '/') - file);
                if (snprintf(buf, sizeof(buf), "%.*s/%s", dl, file, items[i]) >= (int)sizeof(buf))
                    rc = refit_error_set(REFIT_ECONFIG, "%s: plugins.path entry '%.64s...' is too long", file,
                                         items[i]);
                else
                    rc = add_dir(l, buf);
            } else {
                rc = add_dir(l, items[i]);
            }
        }
    }
    if (!rc)
        rc = add_build_tree(l);
    if (!rc)
        rc = add_dir(l, REFIT_PLUGIN_INSTALL_DIR);
    if (!rc) {
        pthread_mutex_lock(&lt_lock);
        if (lt_users++ == 0 && lt_dlinit() != 0) {
            lt_users--;
            rc = refit_error_set(REFIT_EPLUGIN, "libltdl: lt_dlinit failed: %s", lt_dlerror());
        }
        pthread_mutex_unlock(&lt_lock);
    }
    if (rc) {
        for (size_t i = 0; i < l->n_dirs; i++)
            free(l->dirs[i]);
        free(l->dirs);
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

void refit_loader_destroy(refit_loader_t *l)
{
    if (!l)
        return;
    for (size_t i = l->n_plugins; i-- > 0;) {
        if (l->plugins[i].desc->unload)
            l->plugins[i].desc->unload();
        lt_dlclose(l->plugins[i].h);
        free(l->plugins[i].path);
    }
    free(l->plugins);
    for (size_t i = 0; i < l->n_dirs; i++)
        free(l->dirs[i]);
    free(l->dirs);
    pthread_mutex_lock(&lt_lock);
    if (--lt_users == 0)
        lt_dlexit();
    pthread_mutex_unlock(&lt_lock);
    free(l);
}

size_t refit_loader_dirs(const refit_loader_t *l, const char *const **dirs)
{
    *dirs = (const char *const *)l->dirs;
    return l->n_dirs;
}

/* Open one candidate and check it.  want_kind/want_name 0/NULL accept any
 * (scan).  On success the plugin's load() has run and *h stays open; on
 * failure *why says why (static or in whybuf) and nothing stays open. */
static int try_candidate(const char *path, uint32_t want_kind, const char *want_name,
                         lt_dlhandle *h_out, const struct refit_plugin **d_out, char *whybuf,
                         size_t whycap)
{
    lt_dladvise adv;
    lt_dlhandle h = NULL;
    if (!lt_dladvise_init(&adv) && !lt_dladvise_local(&adv))
        h = lt_dlopenadvise(path, adv);
    lt_dladvise_destroy(&adv);
    if (!h) {
        const char *e = lt_dlerror();
        snprintf(whybuf, whycap, "not a loadable shared object (%s)", e ? e : "dlopen failed");
        return REFIT_EPLUGIN;
    }
    refit_plugin_entry_fn entry = (refit_plugin_entry_fn)(uintptr_t)lt_dlsym(h, REFIT_PLUGIN_ENTRY_SYMBOL);
    if (!entry) {
        snprintf(whybuf, whycap, "no symbol %s: not a refit plugin", REFIT_PLUGIN_ENTRY_SYMBOL);
        lt_dlclose(h);
        return REFIT_EABI;
    }
    const struct refit_plugin *d = entry();
    int rc = 0;
    if (!d) {
        snprintf(whybuf, whycap, "%s returned NULL", REFIT_PLUGIN_ENTRY_SYMBOL);
        rc = REFIT_EABI;
    } else if (d->abi_major != REFIT_ABI_MAJOR) {
        snprintf(whybuf, whycap, "built for plugin ABI %u.%u, this refit speaks %u.%u", d->abi_major,
                 d->abi_minor, REFIT_ABI_MAJOR, REFIT_ABI_MINOR);
        rc = REFIT_EABI;
    } else if (d->kind < REFIT_PLUGIN_TRANSPORT || d->kind > REFIT_PLUGIN_MODEL) {
        snprintf(whybuf, whycap, "unknown plugin kind %u", d->kind);
        rc = REFIT_EABI;
    } else if (want_kind && d->kind != want_kind) {
        snprintf(whybuf, whycap, "is a %s plugin, a %s plugin was wanted", refit_plugin_kind_name(d->kind),
                 refit_plugin_kind_name(want_kind));
        rc = REFIT_EABI;
    } else if (!d->name || !d->ops || !d->version) {
        snprintf(whybuf, whycap, "descriptor without name, version or ops");
        rc = REFIT_EABI;
    } else if (want_name && strcmp(d->name, want_name)) {
        snprintf(whybuf, whycap, "calls itself '%s', '%s' was wanted", d->name, want_name);
        rc = REFIT_EABI;
    } else if (*(const size_t *)d->ops < sizeof(size_t)) {
        snprintf(whybuf, whycap, "ops table with a bad size");
        rc = REFIT_EABI;
    } else if (d->load) {
        refit_error_clear();
        int lrc = d->load(refit_host_get());
        if (lrc) {
            snprintf(whybuf, whycap, "its load() failed: %s",
                     refit_error_message()[0] ? refit_error_message() : refit_strerror(lrc));
            rc = REFIT_EPLUGIN;
        }
    }
    if (rc) {
        lt_dlclose(h); /* a mismatch is unloaded */
        return rc;
    }
    /* An accepted plugin stays mapped until the process ends: its libraries
     * (UCX, libfabric) set up global state in their constructors that they
     * never free, so unmapping them would only turn that state into leaks
     * (and make sanitizer reports unreadable).  Closing still runs the
     * plugin's unload(). */
    lt_dlmakeresident(h);
    *h_out = h;
    *d_out = d;
    return 0;
}

static const struct loaded *find_loaded(const refit_loader_t *l, uint32_t kind, const char *name)
{
    for (size_t i = 0; i < l->n_plugins; i++)
        if (l->plugins[i].desc->kind == kind && !strcmp(l->plugins[i].desc->name, name))
            return &l->plugins[i];
    return NULL;
}

static int valid_name(const char *name)
{
    if (!name || !*name || strlen(name) > 64)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return 0;
    return 1;
}

static int load_impl(refit_loader_t *l, uint32_t kind, const char *name,
                     const struct refit_plugin **out, int optional)
{
    const char *kname = refit_plugin_kind_name(kind);
    if (!valid_name(name))
        return refit_error_set(REFIT_EINVAL, "%s plugin name '%s': use lower-case letters, digits and '_'",
                               kname, name ? name : "(null)");
    const struct loaded *have = find_loaded(l, kind, name);
    if (have) {
        *out = have->desc;
        return 0;
    }
    char fname[128];
    snprintf(fname, sizeof(fname), "refit-%s-%s.so", kname, name);
    /* Collect the story of the search for the error message. */
    char story[2048] = "";
    size_t sl = 0;
    int found_any = 0;
    for (size_t i = 0; i < l->n_dirs; i++) {
        char path[PATH_BUF]; /* dirs[i] is at most MAX_DIR bytes, fname 127 */
        snprintf(path, sizeof(path), "%s/%s", l->dirs[i], fname);
        if (access(path, F_OK) != 0)
            continue;
        found_any = 1;
        char why[512];
        lt_dlhandle h;
        const struct refit_plugin *d;
        if (try_candidate(path, kind, name, &h, &d, why, sizeof(why)) == 0) {
            struct loaded *np = realloc(l->plugins, (l->n_plugins + 1) * sizeof(*np));
            char *pc = strdup(path);
            if (!np || !pc) {
                free(pc);
                if (np)
                    l->plugins = np;
                if (d->unload)
                    d->unload();
                lt_dlclose(h);
                return REFIT_ENOMEM;
            }
            l->plugins = np;
            np[l->n_plugins++] = (struct loaded){h, d, pc};
            if (l->cfg && d->n_config) {
                char sec[128];
                snprintf(sec, sizeof(sec), "%s.%s", kname, name);
                int rc = refit_config_add_schema(l->cfg, sec, d->config, d->n_config);
                if (rc)
                    return rc;
            }
            refit_log(REFIT_LOG_DEBUG, "loader", "loaded %s plugin '%s' %s from %s", kname, name,
                      d->version, path);
            *out = d;
            return 0;
        }
        refit_log(REFIT_LOG_WARN, "loader", "rejected %s: %s", path, why);
        if (sl < sizeof(story))
            sl += (size_t)snprintf(story + sl, sizeof(story) - sl, "; rejected %s: %s", path, why);
    }
    if (optional && !found_any)
        return REFIT_ENOENT;
    char dirs[2048] = "";
    size_t dl = 0;
    for (size_t i = 0; i < l->n_dirs && dl < sizeof(dirs); i++)
        dl += (size_t)snprintf(dirs + dl, sizeof(dirs) - dl, "%s%s", i ? ":" : "", l->dirs[i]);
    return refit_error_set(found_any ? REFIT_EPLUGIN : REFIT_ENOENT,
                           "%s plugin '%s' (%s) %s; searched %s%s%s", kname, name, fname,
                           found_any ? "could not be used" : "not found", dirs[0] ? dirs : "(nothing)",
                           story, found_any ? "" : " (set REFIT_PLUGIN_PATH or plugins.path)");
}

int refit_loader_load(refit_loader_t *l, uint32_t kind, const char *name, const struct refit_plugin **out)
{
    return load_impl(l, kind, name, out, 0);
}

int refit_loader_load_optional(refit_loader_t *l, uint32_t kind, const char *name,
                               const struct refit_plugin **out)
{
    return load_impl(l, kind, name, out, 1);
}

const char *refit_loader_path_of(const refit_loader_t *l, const struct refit_plugin *p)
{
    for (size_t i = 0; i < l->n_plugins; i++)
        if (l->plugins[i].desc == p)
            return l->plugins[i].path;
    return "";
}

/* refit-<kind>-<name>.so → kind and name parsed from the file name. */
static int parse_fname(const char *f, uint32_t *kind, char *name, size_t cap)
{
    static const char *kinds[] = {NULL, "transport", "store", "model"};
    if (strncmp(f, "refit-", 6))
        return -1;
    size_t fl = strlen(f);
    if (fl < 4 || strcmp(f + fl - 3, ".so"))
        return -1;
    for (uint32_t k = 1; k <= 3; k++) {
        size_t kl = strlen(kinds[k]);
        if (!strncmp(f + 6, kinds[k], kl) && f[6 + kl] == '-') {
            const char *n = f + 6 + kl + 1;
            size_t nl = fl - 3 - (size_t)(n - f);
            if (nl == 0 || nl >= cap)
                return -1;
            memcpy(name, n, nl);
            name[nl] = '\0';
            *kind = k;
            return 0;
        }
    }
    *kind = 0;
    snprintf(name, cap, "%.*s", (int)(fl - 9), f + 6);
    return 0;
}

int refit_loader_scan(refit_loader_t *l, void (*fn)(void *arg, const struct refit_plugin_report *r),
                      void *arg)
{
    for (size_t i = 0; i < l->n_dirs; i++) {
        DIR *d = opendir(l->dirs[i]);
        if (!d)
            continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            uint32_t kind;
            char name[128];
            if (parse_fname(e->d_name, &kind, name, sizeof(name)))
                continue;
            char path[PATH_BUF]; /* dirs[i] is at most MAX_DIR bytes, d_name 255 */
            snprintf(path, sizeof(path), "%s/%s", l->dirs[i], e->d_name);
            struct refit_plugin_report r = {.kind = kind, .name = name, .path = path};
            char why[512];
            if (!kind) {
                snprintf(why, sizeof(why), "file name does not say transport, store or model");
                r.why = why;
                fn(arg, &r);
                continue;
            }
            const struct loaded *have = find_loaded(l, kind, name);
            if (have && strcmp(have->path, path)) {
                r.ok = true;
                r.shadowed = true;
                r.version = "";
                fn(arg, &r);
                continue;
            }
            if (have) {
                r.ok = true;
                r.version = have->desc->version;
                r.description = have->desc->description;
                fn(arg, &r);
                continue;
            }
            const struct refit_plugin *dsc;
            if (load_impl(l, kind, name, &dsc, 0) == 0 && !strcmp(refit_loader_path_of(l, dsc), path)) {
                r.ok = true;
                r.version = dsc->version;
                r.description = dsc->description;
            } else {
                lt_dlhandle h;
                const struct refit_plugin *dd;
                if (try_candidate(path, kind, name, &h, &dd, why, sizeof(why)) == 0) {
                    /* Valid but an earlier directory's copy won. */
                    if (dd->unload)
                        dd->unload();
                    lt_dlclose(h);
                    r.ok = true;
                    r.shadowed = true;
                    r.version = dd->version;
                } else {
                    r.why = why;
                }
            }
            refit_error_clear();
            fn(arg, &r);
        }
        closedir(d);
    }
    return 0;
}
