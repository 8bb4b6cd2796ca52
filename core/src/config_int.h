/* config_int.h — what config.c (lookup, schema, overrides) and
 * config_yaml.c (reading YAML into the tree) share: the tree of nodes with
 * their file:line:column and the limits every configuration file obeys.
 * Not installed. */
#ifndef REFIT_CONFIG_INT_H
#define REFIT_CONFIG_INT_H

#include <stddef.h>

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

#endif
