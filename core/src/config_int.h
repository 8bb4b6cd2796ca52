/* config_int.h — what the configuration's files share: config.c (the
 * object, lookup, overrides), config_check.c (validate, dump),
 * config_schema.c (the core keys and their defaults), config_value.c (a
 * value's text as a number) and config_yaml.c (reading YAML into the tree
 * of nodes with their file:line:column, within the limits every
 * configuration file obeys).  Not installed. */
#ifndef REFIT_CONFIG_INT_H
#define REFIT_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "refit/config.h"

/* A configuration is a few KiB; these bound what a hostile or broken file
 * can cost before it is refused (docs/security.md lists them). */
#define CFG_MAX_FILE (1u << 20)      /* bytes of one file */
#define CFG_MAX_DEPTH 32             /* nesting of mappings and sequences */
#define CFG_MAX_NODES 100000         /* nodes, aliases counted by their expansion */
#define CFG_MAX_EXPANDED (4u << 20)  /* bytes of keys and scalars, aliases by their expansion */

enum node_kind { N_SCALAR, N_MAP, N_SEQ };

struct node {
    enum node_kind kind;
    char *value; /* scalar */
    const char *file;
    int line, col;
    size_t n;
    struct node **items; /* SEQ items or MAP values */
    char **keys;         /* MAP keys */
    int *kline, *kcol;   /* MAP key marks */
    const char **seq_view; /* SEQ: cached char* view for refit_config_list */
};

void rf_cfg_node_free(struct node *n);
/* The value under key (klen bytes) of mapping m, or NULL; *idx its index. */
struct node *rf_cfg_map_get(const struct node *m, const char *key, size_t klen, size_t *idx);

/* Parse YAML text into a tree (the first document; an empty text is an
 * empty mapping).  `file` names the text in messages and in the nodes, and
 * must outlive the tree.  Every limit above is checked while parsing, so a
 * refused file costs at most the limits; errors say file:line:column. */
int rf_cfg_yaml_parse(const char *file, const char *text, size_t len, struct node **out);

/* A whole regular file of at most CFG_MAX_FILE bytes, NUL-terminated
 * (malloc'ed; the caller frees). */
int rf_cfg_read_file(const char *path, char **text, size_t *len);

/* The configuration object and one value's lookup (config.c), shared with
 * config_check.c. */
struct section {
    char *name;
    const struct refit_cfg_field *fields;
    size_t n;
};

struct override {
    char *path, *value, *origin;
};

struct refit_config {
    struct node *root;   /* NULL until a file is loaded */
    char *file;          /* main file */
    char **files;        /* every file name a node points at */
    size_t n_files;
    struct section *sections;
    size_t n_sections;
    struct override *ovr;
    size_t n_ovr;
    int use_env;
    char *const *envp;
    /* Scratch for env values returned by refit_config_str. */
    char **scratch;
    size_t n_scratch;
};

/* One value in precedence order: --set, environment, file, default. */
struct lookup {
    const char *value;     /* NULL: absent */
    const struct node *node; /* from the file */
    struct {
        const char *file; /* points into cfg, or into env below */
        int line, column;
    } origin;
    char env[320]; /* "env REFIT_..." while the lookup is in use */
};

/* Sections whose children named after a plugin are plugin sections. */
int rf_cfg_is_plugin_parent(const char *s);
/* Walk a dotted path; NULL when any component is absent. */
struct node *rf_cfg_tree_find(const struct node *root, const char *path, struct node **parent, size_t *pidx);
/* The schema's field of path, and its section. */
const struct refit_cfg_field *rf_cfg_schema_find(const refit_config_t *cfg, const char *path,
                                                 const struct section **sec_out);
/* Is path a proper prefix of a known field (so a mapping belongs there)? */
int rf_cfg_schema_is_prefix(const refit_config_t *cfg, const char *path);
/* The closest known key to path into out ("" when none is close). */
void rf_cfg_suggest(const refit_config_t *cfg, const char *path, char *out, size_t cap);
void rf_cfg_lookup(const refit_config_t *cfg, const char *path, struct lookup *lk);
/* Check one scalar value against its field; numbers go to *num.  Errors
 * name the value's origin. */
int rf_cfg_check_value(const struct refit_cfg_field *f, const struct lookup *lk, const char *path, double *num);
/* Whether path lies in a plugin section no loaded plugin declared. */
int rf_cfg_plugin_section_unknown(const refit_config_t *cfg, const char *path);

/* The core's schema (config_schema.c): one entry per section. */
struct rf_cfg_schema_section {
    const char *name;
    const struct refit_cfg_field *f;
    size_t n;
};
const struct rf_cfg_schema_section *rf_cfg_core_schema(size_t *n);

/* A value's text as each type (config_value.c): 0, or -1 when the text is
 * not one.  Sizes are bytes and durations milliseconds, as doubles (a
 * range check follows); enum_has says whether v is one of "a|b|c". */
int rf_cfg_parse_int(const char *s, int64_t *out);
int rf_cfg_parse_double(const char *s, double *out);
int rf_cfg_parse_bool(const char *s, bool *out);
int rf_cfg_parse_size(const char *s, double *out);
int rf_cfg_parse_duration(const char *s, double *out);
int rf_cfg_enum_has(const char *choices, const char *v);

#endif
