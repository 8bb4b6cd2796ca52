/* refit/config.h — cluster configuration: YAML loaded with libyaml's document
 * API into a tree that keeps every node's file:line:column, validated against
 * a schema (the core's sections plus each plugin's own field table), with
 * environment (REFIT_<SECTION>_<KEY>) and command-line (--set key=value)
 * overrides.  Accessors are typed; the default and the range of every key
 * live in its schema entry, so a key has one definition. */
#ifndef REFIT_CONFIG_H
#define REFIT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum refit_cfg_type {
    REFIT_CFG_STRING = 1,
    REFIT_CFG_INT,      /* integer, range [min, max] */
    REFIT_CFG_BOOL,     /* true/false/yes/no/on/off */
    REFIT_CFG_DOUBLE,   /* range [min, max] */
    REFIT_CFG_SIZE,     /* bytes; accepts 4096, 64KiB, 2MiB, 1GiB, 1G */
    REFIT_CFG_DURATION, /* milliseconds; accepts 250ms, 30s, 5m, or a bare ms count */
    REFIT_CFG_ENUM,     /* one of choices (a '|'-separated list) */
    REFIT_CFG_LIST,     /* a sequence of scalars (strings) */
    REFIT_CFG_MAP       /* a mapping of free-form string keys to scalars (e.g. UCX_* variables) */
};

/* One schema entry.  `name` is the dotted path below the section
 * ("fp8.rule" below "model"). */
struct refit_cfg_field {
    const char *name;
    enum refit_cfg_type type;
    const char *def;     /* default as text; NULL: no default (optional) */
    double min, max;     /* INT/DOUBLE/SIZE/DURATION range; min > max: unchecked */
    const char *choices; /* ENUM: "pull|push" */
    const char *doc;     /* one line for `refit config check --explain` */
};

typedef struct refit_config refit_config_t;

/* Where a value came from, for error messages and `refit config check`.
 * Filled by refit_config_origin, which owns nothing afterwards: `file` is
 * malloc'ed for the caller, who releases it with refit_config_origin_clear
 * (so two origins can be held at once, from any thread). */
struct refit_cfg_origin {
    char *file;       /* "configs/clusters/local.yaml", "env REFIT_X", "--set", "default" */
    int line, column; /* 1-based; 0 when not from a file */
};

/* Create an empty configuration holding only the core schema.
 * The caller frees it with refit_config_destroy. */
int refit_config_create(refit_config_t **out);

/* Load a cluster YAML file (and a model file it references with
 * model.file).  Files are capped at 1 MiB and nesting at 32 levels.  On
 * error the message names file:line:column and the key. */
int refit_config_load(refit_config_t *cfg, const char *path);

/* Parse YAML text (for tests and for --config -). `name` stands for the file
 * name in messages. */
int refit_config_load_string(refit_config_t *cfg, const char *name,
                             const char *text, size_t len);

/* Apply environment overrides: every schema key K of section S is looked up
 * as REFIT_<S>_<K> (upper case, dots to underscores).  `envp` NULL means the
 * process environment. */
int refit_config_apply_env(refit_config_t *cfg, char *const *envp);

/* Apply one "path=value" override (command line). */
int refit_config_set(refit_config_t *cfg, const char *assignment,
                     const char *origin);

/* Add the schema of a plugin section, e.g. section "transport.tcp".  Called
 * by the loader with the plugin's field table. The table must outlive cfg. */
int refit_config_add_schema(refit_config_t *cfg, const char *section,
                            const struct refit_cfg_field *fields,
                            size_t n_fields);

/* Check every key present against the schema: unknown keys (with the
 * closest known key suggested), types, ranges, choices.  Sections whose
 * schema is not known (a plugin not loaded) are reported only when
 * `strict` is true. */
int refit_config_validate(const refit_config_t *cfg, bool strict);

void refit_config_destroy(refit_config_t *cfg);

/* Typed accessors by full dotted path ("refit.flush_every").  The path must
 * be in the schema (else REFIT_EINVAL: a programming error).  A key that is
 * absent yields the schema default; an optional key without default yields
 * REFIT_ENOENT.  Range and type errors name the origin. */
int refit_config_str(const refit_config_t *cfg, const char *path, const char **out);
int refit_config_int(const refit_config_t *cfg, const char *path, int64_t *out);
int refit_config_bool(const refit_config_t *cfg, const char *path, bool *out);
int refit_config_double(const refit_config_t *cfg, const char *path, double *out);
int refit_config_size(const refit_config_t *cfg, const char *path, uint64_t *out);
int refit_config_duration_ms(const refit_config_t *cfg, const char *path, int64_t *out);
/* LIST: *items points into cfg; valid until cfg is destroyed or changed. */
int refit_config_list(const refit_config_t *cfg, const char *path,
                      const char *const **items, size_t *n);
/* MAP: calls fn for each key/value in file order; stops on non-zero. */
int refit_config_map_each(const refit_config_t *cfg, const char *path,
                          int (*fn)(void *arg, const char *key, const char *value),
                          void *arg);

/* Whether the path was given (file, env or --set), as opposed to defaulted. */
bool refit_config_has(const refit_config_t *cfg, const char *path);
/* Where path's effective value comes from ("default" when nowhere).  On
 * success out->file is the caller's (refit_config_origin_clear frees it). */
int refit_config_origin(const refit_config_t *cfg, const char *path,
                        struct refit_cfg_origin *out);
/* Frees out->file and sets it NULL; safe on a cleared origin. */
void refit_config_origin_clear(struct refit_cfg_origin *o);

/* The file the configuration was loaded from (NULL for none), so relative
 * paths in it resolve against its directory. */
const char *refit_config_file(const refit_config_t *cfg);

/* Resolve a path value relative to the directory of the file that set it.
 * Returns a malloc'ed string (caller frees) in *out. */
int refit_config_path(const refit_config_t *cfg, const char *path, char **out);

/* Print the effective configuration (every schema key of every known
 * section, value and origin) as YAML with comments. */
int refit_config_dump(const refit_config_t *cfg, void *file /* FILE * */);

/* Every schema key known (core sections, then plugin sections in load
 * order), for `refit config keys` and documentation. */
int refit_config_schema_each(const refit_config_t *cfg,
                             int (*fn)(void *arg, const char *section,
                                       const struct refit_cfg_field *f),
                             void *arg);

/* A view of one section for a plugin: keys are relative to `section`. */
struct refit_cfg_view {
    const refit_config_t *cfg;
    const char *section; /* "transport.tcp" */
};

#ifdef __cplusplus
}
#endif
#endif
