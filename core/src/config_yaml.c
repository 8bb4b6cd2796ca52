/* config_yaml.c — reading a configuration file into the tree of config.c.
 *
 * libyaml's event API, not its document API: a document is composed whole
 * before anyone can look at it, and libyaml's scanner costs time quadratic
 * in the nesting it has seen (200,000 levels of '[' took 68 s), so a depth
 * limit checked afterwards comes too late.  Reading events, we stop at the
 * first node deeper than CFG_MAX_DEPTH, having scanned at most the
 * scanner's own lookahead (1024 characters) past it.
 *
 * Anchors and aliases are resolved here: an alias is a copy of its anchor's
 * subtree, and it costs what the copy costs — its nodes and the bytes of
 * its keys and scalars — against CFG_MAX_NODES and CFG_MAX_EXPANDED before
 * anything is copied.  Anchors remember the cost of their subtree, so a
 * chain of aliases of aliases ("billion laughs") is refused at the first
 * copy that would cross a limit, never after. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config_int.h"
#include "refit/status.h"

/* What a subtree costs. */
struct cost {
    size_t nodes, bytes;
    int height; /* 1 for a scalar */
};

struct anchor {
    char *name;
    struct node *n; /* in the tree, or owned here (an anchored key) */
    int owned;
    struct cost c;
};

struct yp {
    yaml_parser_t p;
    yaml_event_t ev; /* the current event */
    int have_ev;
    const char *file;
    struct cost total;
    struct anchor *anchors;
    size_t n_anchors, cap_anchors;
};

/* ------------------------------------------------------------------ */
/* Nodes */

void rf_cfg_node_free(struct node *n)
{
    if (!n)
        return;
    free(n->value);
    for (size_t i = 0; i < n->n; i++) {
        rf_cfg_node_free(n->items[i]);
        if (n->keys)
            free(n->keys[i]);
    }
    free(n->items);
    free(n->keys);
    free(n->kline);
    free(n->kcol);
    free(n->seq_view);
    free(n);
}

struct node *rf_cfg_map_get(const struct node *m, const char *key, size_t klen, size_t *idx)
{
    if (!m || m->kind != N_MAP)
        return NULL;
    for (size_t i = 0; i < m->n; i++)
        if (strlen(m->keys[i]) == klen && !strncmp(m->keys[i], key, klen)) {
            if (idx)
                *idx = i;
            return m->items[i];
        }
    return NULL;
}

/* Room for one more item (and key, for a mapping). */
static int node_grow(struct node *n, size_t *cap)
{
    if (n->n < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    struct node **it = realloc(n->items, nc * sizeof(*it));
    if (!it)
        return REFIT_ENOMEM;
    n->items = it;
    if (n->kind == N_MAP) {
        char **k = realloc(n->keys, nc * sizeof(*k));
        if (!k)
            return REFIT_ENOMEM;
        n->keys = k;
        int *kl = realloc(n->kline, nc * sizeof(int));
        if (!kl)
            return REFIT_ENOMEM;
        n->kline = kl;
        int *kc = realloc(n->kcol, nc * sizeof(int));
        if (!kc)
            return REFIT_ENOMEM;
        n->kcol = kc;
    }
    *cap = nc;
    return 0;
}

/* A deep copy (an alias); its root takes the alias's position. */
static struct node *node_copy(const struct node *src, int line, int col)
{
    struct node *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->kind = src->kind;
    n->file = src->file;
    n->line = line;
    n->col = col;
    if (src->value && !(n->value = strdup(src->value)))
        goto fail;
    size_t cap = 0;
    for (size_t i = 0; i < src->n; i++) {
        if (node_grow(n, &cap))
            goto fail;
        if (n->kind == N_MAP) {
            n->keys[n->n] = strdup(src->keys[i]);
            n->kline[n->n] = src->kline[i];
            n->kcol[n->n] = src->kcol[i];
            if (!n->keys[n->n])
                goto fail;
        }
        n->items[n->n] = node_copy(src->items[i], src->items[i]->line, src->items[i]->col);
        if (!n->items[n->n]) {
            if (n->kind == N_MAP)
                free(n->keys[n->n]);
            goto fail;
        }
        n->n++;
    }
    return n;
fail:
    rf_cfg_node_free(n);
    return NULL;
}

/* ${VAR} and ${VAR:-default} in scalars, so a shipped file can say
 * "${TMPDIR:-/tmp}/refit-store".  Unset without default expands to "". */
static char *expand_vars(const char *s)
{
    size_t cap = strlen(s) + 64, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (const char *p = s; *p;) {
        const char *add = p;
        size_t alen = 1;
        char defbuf[256];
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            if (end && (size_t)(end - p) < 256) {
                char var[256];
                size_t vlen = (size_t)(end - p - 2);
                memcpy(var, p + 2, vlen);
                var[vlen] = '\0';
                const char *def = "";
                char *sep = strstr(var, ":-");
                if (sep) {
                    *sep = '\0';
                    snprintf(defbuf, sizeof(defbuf), "%s", sep + 2);
                    def = defbuf;
                }
                const char *val = getenv(var);
                add = (val && *val) ? val : def;
                alen = strlen(add);
                p = end + 1;
                goto append;
            }
        }
        p++;
    append:
        if (len + alen + 1 > cap) {
            cap = (len + alen + 1) * 2;
            char *n = realloc(out, cap);
            if (!n) {
                free(out);
                return NULL;
            }
            out = n;
        }
        memcpy(out + len, add, alen);
        len += alen;
    }
    out[len] = '\0';
    return out;
}

/* ------------------------------------------------------------------ */
/* Events and limits */

static int mark_line(const yaml_mark_t *m) { return (int)m->line + 1; }
static int mark_col(const yaml_mark_t *m) { return (int)m->column + 1; }

static int next(struct yp *y)
{
    if (y->have_ev)
        yaml_event_delete(&y->ev);
    y->have_ev = 0;
    if (!yaml_parser_parse(&y->p, &y->ev)) {
        if (y->p.error == YAML_MEMORY_ERROR)
            return refit_error_set(REFIT_ENOMEM, "%s: out of memory parsing YAML", y->file);
        return refit_error_set(REFIT_ECONFIG, "%s:%zu:%zu: %s%s%s", y->file, y->p.problem_mark.line + 1,
                               y->p.problem_mark.column + 1,
                               y->p.problem ? y->p.problem : "YAML syntax error",
                               y->p.context ? " " : "", y->p.context ? y->p.context : "");
    }
    y->have_ev = 1;
    return 0;
}

/* Charge c to the file at mark m (before building what it costs). */
static int charge(struct yp *y, const struct cost *c, int depth, const yaml_mark_t *m)
{
    if (depth + c->height - 1 > CFG_MAX_DEPTH)
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: nesting deeper than %d levels", y->file,
                               mark_line(m), mark_col(m), CFG_MAX_DEPTH);
    if (c->nodes > CFG_MAX_NODES - y->total.nodes)
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: more than %d nodes (aliases count by their "
                               "expansion)", y->file, mark_line(m), mark_col(m), CFG_MAX_NODES);
    if (c->bytes > CFG_MAX_EXPANDED - y->total.bytes)
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: keys and values exceed %u bytes (aliases "
                               "count by their expansion)", y->file, mark_line(m), mark_col(m),
                               CFG_MAX_EXPANDED);
    y->total.nodes += c->nodes;
    y->total.bytes += c->bytes;
    return 0;
}

static const struct anchor *anchor_find(const struct yp *y, const char *name)
{
    for (size_t i = y->n_anchors; i-- > 0;) /* a redefinition wins */
        if (!strcmp(y->anchors[i].name, name))
            return &y->anchors[i];
    return NULL;
}

/* Remember `name` for n (taking the name; n owned here when `owned`). */
static int anchor_add(struct yp *y, char *name, struct node *n, int owned, const struct cost *c)
{
    if (y->n_anchors == y->cap_anchors) {
        size_t nc = y->cap_anchors ? 2 * y->cap_anchors : 8;
        struct anchor *a = realloc(y->anchors, nc * sizeof(*a));
        if (!a)
            return REFIT_ENOMEM;
        y->anchors = a;
        y->cap_anchors = nc;
    }
    y->anchors[y->n_anchors++] = (struct anchor){name, n, owned, *c};
    return 0;
}

/* ------------------------------------------------------------------ */
/* Nodes from events */

static int parse_node(struct yp *y, int depth, struct node **out, struct cost *c);

static struct node *node_new(struct yp *y, enum node_kind kind, const yaml_mark_t *m)
{
    struct node *n = calloc(1, sizeof(*n));
    if (n) {
        n->kind = kind;
        n->file = y->file;
        n->line = mark_line(m);
        n->col = mark_col(m);
    }
    return n;
}

static int parse_alias(struct yp *y, int depth, struct node **out, struct cost *c)
{
    const yaml_mark_t m = y->ev.start_mark;
    const char *name = (const char *)y->ev.data.alias.anchor;
    const struct anchor *a = anchor_find(y, name);
    if (!a)
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: alias '*%s' names no anchor defined before it "
                               "(or one that contains the alias)", y->file, mark_line(&m),
                               mark_col(&m), name);
    int rc = charge(y, &a->c, depth, &m);
    if (rc)
        return rc;
    *out = node_copy(a->n, mark_line(&m), mark_col(&m));
    *c = a->c;
    return *out ? 0 : REFIT_ENOMEM;
}

static int parse_scalar(struct yp *y, int depth, struct node **out, struct cost *c)
{
    const yaml_mark_t m = y->ev.start_mark;
    struct node *n = node_new(y, N_SCALAR, &m);
    if (!n || !(n->value = expand_vars((const char *)y->ev.data.scalar.value))) {
        rf_cfg_node_free(n);
        return REFIT_ENOMEM;
    }
    *c = (struct cost){1, strlen(n->value), 1};
    int rc = charge(y, c, depth, &m);
    if (rc) {
        rf_cfg_node_free(n);
        return rc;
    }
    *out = n;
    return 0;
}

/* A key: a scalar, or an alias of one.  *key is malloc'ed. */
static int parse_key(struct yp *y, char **key, struct cost *c)
{
    const yaml_mark_t m = y->ev.start_mark;
    struct node *k = NULL;
    int rc;
    if (y->ev.type == YAML_SCALAR_EVENT) {
        char *anchor = y->ev.data.scalar.anchor ? strdup((const char *)y->ev.data.scalar.anchor) : NULL;
        if (y->ev.data.scalar.anchor && !anchor)
            return REFIT_ENOMEM;
        rc = parse_scalar(y, 1, &k, c);
        if (!rc && anchor) {
            /* The key's node is kept for later aliases; the map keeps a copy
             * of its text. */
            rc = anchor_add(y, anchor, k, 1, c);
            if (!rc) {
                anchor = NULL;
                *key = strdup(k->value);
                return *key ? 0 : REFIT_ENOMEM;
            }
        }
        free(anchor);
    } else if (y->ev.type == YAML_ALIAS_EVENT) {
        rc = parse_alias(y, 1, &k, c);
        if (!rc && k->kind != N_SCALAR)
            rc = refit_error_set(REFIT_ECONFIG, "%s:%d:%d: mapping keys must be plain scalars", y->file,
                                 mark_line(&m), mark_col(&m));
    } else {
        rc = refit_error_set(REFIT_ECONFIG, "%s:%d:%d: mapping keys must be plain scalars", y->file,
                             mark_line(&m), mark_col(&m));
    }
    if (!rc) {
        *key = k->value;
        k->value = NULL;
    }
    rf_cfg_node_free(k);
    return rc;
}

static int check_key(struct yp *y, const struct node *map, const char *key, const yaml_mark_t *m)
{
    if (strchr(key, '.') || !*key)
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': keys may not be empty or contain '.'; "
                               "nest mappings instead", y->file, mark_line(m), mark_col(m), key);
    if (rf_cfg_map_get(map, key, strlen(key), NULL))
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s' appears twice", y->file, mark_line(m),
                               mark_col(m), key);
    return 0;
}

/* One key and its value, the key's event being current. */
static int parse_pair(struct yp *y, int depth, struct node *n, size_t *cap, struct cost *c)
{
    const yaml_mark_t km = y->ev.start_mark;
    char *key = NULL;
    struct cost kc, vc;
    int rc = parse_key(y, &key, &kc);
    if (!rc)
        rc = check_key(y, n, key, &km);
    if (!rc)
        rc = node_grow(n, cap);
    if (!rc)
        rc = next(y);
    struct node *v = NULL;
    if (!rc)
        rc = parse_node(y, depth + 1, &v, &vc);
    if (rc) {
        free(key);
        return rc;
    }
    n->keys[n->n] = key;
    n->kline[n->n] = mark_line(&km);
    n->kcol[n->n] = mark_col(&km);
    n->items[n->n++] = v;
    /* A key is bytes of the tree, not a node of it. */
    c->nodes += vc.nodes;
    c->bytes += kc.bytes + vc.bytes;
    if (vc.height + 1 > c->height)
        c->height = vc.height + 1;
    return 0;
}

static int parse_collection(struct yp *y, int depth, struct node **out, struct cost *c)
{
    const yaml_mark_t m = y->ev.start_mark;
    int is_map = y->ev.type == YAML_MAPPING_START_EVENT;
    yaml_event_type_t end = is_map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT;
    *c = (struct cost){1, 0, 1};
    int rc = charge(y, c, depth, &m);
    if (rc)
        return rc;
    struct node *n = node_new(y, is_map ? N_MAP : N_SEQ, &m);
    if (!n)
        return REFIT_ENOMEM;
    size_t cap = 0;
    while (!(rc = next(y)) && y->ev.type != end) {
        if (is_map) {
            rc = parse_pair(y, depth, n, &cap, c);
        } else {
            struct node *v = NULL;
            struct cost vc;
            rc = node_grow(n, &cap);
            if (!rc)
                rc = parse_node(y, depth + 1, &v, &vc);
            if (!rc) {
                n->items[n->n++] = v;
                c->nodes += vc.nodes;
                c->bytes += vc.bytes;
                if (vc.height + 1 > c->height)
                    c->height = vc.height + 1;
            }
        }
        if (rc)
            break;
    }
    if (rc) {
        rf_cfg_node_free(n);
        return rc;
    }
    *out = n;
    return 0;
}

/* The node whose first event is current; its anchor, if any, is
 * remembered once the node is complete (so it cannot contain itself). */
static int parse_node(struct yp *y, int depth, struct node **out, struct cost *c)
{
    const unsigned char *an = NULL;
    switch (y->ev.type) {
    case YAML_ALIAS_EVENT:
        return parse_alias(y, depth, out, c);
    case YAML_SCALAR_EVENT: an = y->ev.data.scalar.anchor; break;
    case YAML_SEQUENCE_START_EVENT: an = y->ev.data.sequence_start.anchor; break;
    case YAML_MAPPING_START_EVENT: an = y->ev.data.mapping_start.anchor; break;
    default:
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: unsupported YAML node", y->file,
                               mark_line(&y->ev.start_mark), mark_col(&y->ev.start_mark));
    }
    char *anchor = an ? strdup((const char *)an) : NULL;
    if (an && !anchor)
        return REFIT_ENOMEM;
    int rc = y->ev.type == YAML_SCALAR_EVENT ? parse_scalar(y, depth, out, c)
                                             : parse_collection(y, depth, out, c);
    if (!rc && anchor) {
        rc = anchor_add(y, anchor, *out, 0, c);
        if (rc)
            rf_cfg_node_free(*out);
        else
            anchor = NULL;
    }
    free(anchor);
    return rc;
}

/* STREAM-START, then DOCUMENT-START or STREAM-END (an empty text). */
static int parse_document(struct yp *y, struct node **out)
{
    int rc = next(y);
    if (!rc)
        rc = next(y);
    if (rc)
        return rc;
    if (y->ev.type == YAML_STREAM_END_EVENT) {
        yaml_mark_t m = {0};
        *out = node_new(y, N_MAP, &m);
        return *out ? 0 : REFIT_ENOMEM;
    }
    if ((rc = next(y)))
        return rc;
    if (y->ev.type != YAML_MAPPING_START_EVENT)
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: the top level must be a mapping of sections",
                               y->file, mark_line(&y->ev.start_mark), mark_col(&y->ev.start_mark));
    struct cost c;
    rc = parse_node(y, 0, out, &c);
    /* The document's end, so an error after the root still counts; later
     * documents are not read. */
    if (!rc && (rc = next(y)))
        rf_cfg_node_free(*out);
    return rc;
}

int rf_cfg_yaml_parse(const char *file, const char *text, size_t len, struct node **out)
{
    if (len > CFG_MAX_FILE)
        return refit_error_set(REFIT_ECONFIG, "%s: %zu bytes, more than the %u allowed", file, len,
                               CFG_MAX_FILE);
    struct yp y = {.file = file};
    if (!yaml_parser_initialize(&y.p))
        return REFIT_ENOMEM;
    yaml_parser_set_input_string(&y.p, (const unsigned char *)text, len);
    struct node *root = NULL;
    int rc = parse_document(&y, &root);
    if (y.have_ev)
        yaml_event_delete(&y.ev);
    yaml_parser_delete(&y.p);
    for (size_t i = 0; i < y.n_anchors; i++) {
        free(y.anchors[i].name);
        if (y.anchors[i].owned)
            rf_cfg_node_free(y.anchors[i].n);
    }
    free(y.anchors);
    if (!rc)
        *out = root;
    return rc;
}

int rf_cfg_read_file(const char *path, char **text, size_t *len)
{
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return refit_error_set(e == ENOENT ? REFIT_ENOENT : REFIT_EIO, "%s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return refit_error_set(REFIT_ECONFIG, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > CFG_MAX_FILE) {
        fclose(f);
        return refit_error_set(REFIT_ECONFIG, "%s: %lld bytes, more than the %u allowed", path,
                               (long long)st.st_size, CFG_MAX_FILE);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        fclose(f);
        return REFIT_ENOMEM;
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}
