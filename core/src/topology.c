/* topology.c — NUMA nodes, NICs and GPUs of the host, and the NIC choice
 * for a rank (topology.nic_pin).  Everything is read once into a snapshot;
 * sysfs is the source of truth so that a fake root can stand for any
 * machine in tests, libibverbs adds the devices it knows on the real one. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "refit/log.h"
#include "refit/status.h"
#include "refit/topology.h"
#include "util.h"

#ifdef REFIT_HAVE_NUMA
#include <numa.h>
#endif
#ifdef REFIT_HAVE_IBVERBS
#include <infiniband/verbs.h>
#endif

#define TOPO "topology"
#define MAX_NUMA 1024 /* sysfs node ids beyond this are not a host we know */

struct nic_priv {
    struct refit_topo_nic pub;
    char *path; /* resolved sysfs path of the PCI device (for PCI distance) */
};

struct gpu_priv {
    struct refit_topo_gpu pub;
    char *path;
};

struct refit_topology {
    char *root;
    bool real; /* root is the real /sys: libnuma and libibverbs apply */
    const char *source;
    struct nic_priv *nics;
    struct refit_topo_nic *nic_pub;
    size_t n_nics, cap_nics;
    struct gpu_priv *gpus;
    struct refit_topo_gpu *gpu_pub;
    size_t n_gpus, cap_gpus;
    int n_numa;     /* highest node id + 1 */
    char **cpulist; /* per node */
};

/* ------------------------------------------------------------------ */
/* sysfs reading */

/* One line of a small sysfs file, trailing newline removed; NULL when
 * absent.  Caller frees. */
static char *read_line(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    fclose(f);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
        line[--n] = 0;
    return line;
}

static char *path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

static int read_int(const char *dir, const char *file, int def)
{
    char *p = path_join(dir, file);
    char *s = p ? read_line(p) : NULL;
    free(p);
    if (!s)
        return def;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    int ok = !errno && end != s && v >= INT_MIN && v <= INT_MAX;
    free(s);
    return ok ? (int)v : def;
}

static char *read_str(const char *dir, const char *file)
{
    char *p = path_join(dir, file);
    char *s = p ? read_line(p) : NULL;
    free(p);
    return s;
}

/* "0000:17:00.0" (domain required in sysfs names). */
static bool is_pci_name(const char *s)
{
    unsigned d, b, v, f;
    char tail;
    return strlen(s) == 12 && sscanf(s, "%4x:%2x:%2x.%1x%c", &d, &b, &v, &f, &tail) == 4;
}

/* The PCI device dir a device path belongs to: the path itself or the
 * closest ancestor named like a PCI address (a virtio net device hangs
 * below its PCI function).  Modifies path in place; NULL when none. */
static char *pci_ancestor(char *path)
{
    for (;;) {
        char *slash = strrchr(path, '/');
        if (!slash)
            return NULL;
        if (is_pci_name(slash + 1))
            return path;
        *slash = 0;
    }
}

/* Resolved PCI device dir of <dir>/device; NULL when not on PCI. */
static char *pci_dir_of(const char *dir)
{
    char *p = path_join(dir, "device");
    if (!p)
        return NULL;
    char *real = realpath(p, NULL);
    free(p);
    if (!real)
        return NULL;
    if (!pci_ancestor(real)) {
        free(real);
        return NULL;
    }
    return real;
}

/* ------------------------------------------------------------------ */
/* Snapshot building */

static struct nic_priv *nic_add(refit_topology_t *t)
{
    if (t->n_nics == t->cap_nics) {
        size_t cap = t->cap_nics ? 2 * t->cap_nics : 8;
        struct nic_priv *n = realloc(t->nics, cap * sizeof(*n));
        if (!n)
            return NULL;
        t->nics = n;
        t->cap_nics = cap;
    }
    struct nic_priv *n = &t->nics[t->n_nics++];
    memset(n, 0, sizeof(*n));
    n->pub.numa = -1;
    return n;
}

static void nic_fill_pci(struct nic_priv *n, char *pci_path)
{
    n->path = pci_path;
    if (!pci_path)
        return;
    n->pub.pci = strrchr(pci_path, '/') + 1;
    int node = read_int(pci_path, "numa_node", -1);
    n->pub.numa = node >= 0 && node < MAX_NUMA ? node : -1;
}

/* First ACTIVE port of an RDMA device (else the first port). */
static void ib_port(const char *dev_dir, struct nic_priv *n)
{
    char *ports = path_join(dev_dir, "ports");
    DIR *d = ports ? opendir(ports) : NULL;
    int first = 0, active = 0;
    char *first_ll = NULL, *active_ll = NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char *end;
        long port = strtol(e->d_name, &end, 10);
        if (*end || port <= 0 || port > 255)
            continue;
        char *pd = path_join(ports, e->d_name);
        char *state = pd ? read_str(pd, "state") : NULL;
        char *ll = pd ? read_str(pd, "link_layer") : NULL;
        bool up = state && strstr(state, "ACTIVE");
        if (up && (!active || port < active)) {
            active = (int)port;
            free(active_ll);
            active_ll = ll ? strdup(ll) : NULL;
        }
        if (!first || port < first) {
            first = (int)port;
            free(first_ll);
            first_ll = ll ? strdup(ll) : NULL;
        }
        free(state);
        free(ll);
        free(pd);
    }
    if (d)
        closedir(d);
    free(ports);
    n->pub.port = active ? active : (first ? first : 1);
    n->pub.active = active != 0 || !first;
    n->pub.link_layer = active ? active_ll : first_ll;
    free(active ? first_ll : active_ll);
}

/* The first interface an RDMA device's PCI function carries (RoCE). */
static char *ib_netdev(const char *dev_dir)
{
    char *net = path_join(dev_dir, "device/net");
    DIR *d = net ? opendir(net) : NULL;
    free(net);
    if (!d)
        return NULL;
    char *best = NULL;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && (!best || strcmp(e->d_name, best) < 0)) {
            free(best);
            best = strdup(e->d_name);
        }
    closedir(d);
    return best;
}

static int add_ib_device(refit_topology_t *t, const char *name)
{
    for (size_t i = 0; i < t->n_nics; i++)
        if (t->nics[i].pub.ibdev && !strcmp(t->nics[i].pub.ibdev, name))
            return 0;
    char *cls = path_join(t->root, "class/infiniband");
    char *dir = cls ? path_join(cls, name) : NULL;
    free(cls);
    if (!dir)
        return REFIT_ENOMEM;
    struct nic_priv *n = nic_add(t);
    if (!n) {
        free(dir);
        return REFIT_ENOMEM;
    }
    n->pub.ibdev = strdup(name);
    ib_port(dir, n);
    n->pub.netdev = ib_netdev(dir);
    nic_fill_pci(n, pci_dir_of(dir));
    free(dir);
    char buf[300];
    snprintf(buf, sizeof(buf), "%s:%d", name, n->pub.port);
    n->pub.name = strdup(buf);
    return n->pub.ibdev && n->pub.name ? 0 : REFIT_ENOMEM;
}

static int scan_ib(refit_topology_t *t)
{
#ifdef REFIT_HAVE_IBVERBS
    if (t->real) {
        int num = 0;
        struct ibv_device **list = ibv_get_device_list(&num);
        for (int i = 0; list && i < num; i++) {
            int rc = add_ib_device(t, ibv_get_device_name(list[i]));
            if (rc) {
                ibv_free_device_list(list);
                return rc;
            }
        }
        if (list) {
            ibv_free_device_list(list);
            t->source = "libibverbs+sysfs";
        }
    }
#endif
    /* sysfs too: a device the verbs library has no provider for still
     * tells where the fabric is. */
    char *cls = path_join(t->root, "class/infiniband");
    DIR *d = cls ? opendir(cls) : NULL;
    free(cls);
    if (!d)
        return 0;
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d)))
        if (e->d_name[0] != '.')
            rc = add_ib_device(t, e->d_name);
    closedir(d);
    return rc;
}

/* Plain NICs: interfaces on PCI that no RDMA device already covers. */
static int scan_net(refit_topology_t *t)
{
    char *cls = path_join(t->root, "class/net");
    DIR *d = cls ? opendir(cls) : NULL;
    if (!d) {
        free(cls);
        return 0;
    }
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        bool covered = false;
        for (size_t i = 0; i < t->n_nics && !covered; i++)
            covered = t->nics[i].pub.netdev && !strcmp(t->nics[i].pub.netdev, e->d_name);
        if (covered)
            continue;
        char *dir = path_join(cls, e->d_name);
        char *pci = dir ? pci_dir_of(dir) : NULL;
        if (!pci) { /* lo, bridges, ifb: not a device to pin to */
            free(dir);
            continue;
        }
        struct nic_priv *n = nic_add(t);
        if (!n) {
            free(pci);
            free(dir);
            rc = REFIT_ENOMEM;
            break;
        }
        n->pub.netdev = strdup(e->d_name);
        n->pub.name = strdup(e->d_name);
        char *oper = read_str(dir, "operstate");
        n->pub.active = !oper || strcmp(oper, "down") != 0;
        free(oper);
        nic_fill_pci(n, pci);
        free(dir);
        if (!n->pub.netdev || !n->pub.name)
            rc = REFIT_ENOMEM;
    }
    closedir(d);
    free(cls);
    return rc;
}

/* NVIDIA display/3D controllers on PCI (vendor 0x10de, class 0x03xxxx). */
static int scan_gpus(refit_topology_t *t)
{
    char *bus = path_join(t->root, "bus/pci/devices");
    DIR *d = bus ? opendir(bus) : NULL;
    if (!d) {
        free(bus);
        return 0;
    }
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (!is_pci_name(e->d_name))
            continue;
        char *dir = path_join(bus, e->d_name);
        if (!dir) {
            rc = REFIT_ENOMEM;
            break;
        }
        int vendor = read_int(dir, "vendor", 0), cls = read_int(dir, "class", 0);
        if (vendor != 0x10de || (cls >> 16) != 0x03) {
            free(dir);
            continue;
        }
        if (t->n_gpus == t->cap_gpus) {
            size_t cap = t->cap_gpus ? 2 * t->cap_gpus : 8;
            struct gpu_priv *g = realloc(t->gpus, cap * sizeof(*g));
            if (!g) {
                free(dir);
                rc = REFIT_ENOMEM;
                break;
            }
            t->gpus = g;
            t->cap_gpus = cap;
        }
        struct gpu_priv *g = &t->gpus[t->n_gpus++];
        g->path = realpath(dir, NULL);
        g->pub.pci = g->path ? strrchr(g->path, '/') + 1 : NULL;
        int node = read_int(dir, "numa_node", -1);
        g->pub.numa = node >= 0 && node < MAX_NUMA ? node : -1;
        free(dir);
        if (!g->path)
            t->n_gpus--; /* unresolvable link: skip it */
    }
    closedir(d);
    free(bus);
    return rc;
}

static int scan_numa(refit_topology_t *t)
{
    char *nd = path_join(t->root, "devices/system/node");
    DIR *d = nd ? opendir(nd) : NULL;
    int hi = -1;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "node", 4))
            continue;
        long v = strtol(e->d_name + 4, &end, 10);
        if (*end || end == e->d_name + 4 || v < 0 || v >= MAX_NUMA)
            continue;
        if (v > hi)
            hi = (int)v;
    }
    if (d)
        closedir(d);
#ifdef REFIT_HAVE_NUMA
    if (t->real && hi < 0 && numa_available() >= 0)
        hi = numa_max_node();
#endif
    t->n_numa = hi + 1;
    if (t->n_numa) {
        t->cpulist = calloc((size_t)t->n_numa, sizeof(char *));
        if (!t->cpulist) {
            free(nd);
            return REFIT_ENOMEM;
        }
        for (int i = 0; i < t->n_numa; i++) {
            char sub[32];
            snprintf(sub, sizeof(sub), "node%d", i);
            char *dir = path_join(nd, sub);
            t->cpulist[i] = dir ? read_str(dir, "cpulist") : NULL;
            free(dir);
        }
    }
    free(nd);
    return 0;
}

int refit_topology_create(const char *sysfs_root, refit_topology_t **out)
{
    if (!out)
        return refit_error_set(REFIT_EINVAL, "topology: no output");
    refit_topology_t *t = calloc(1, sizeof(*t));
    if (!t)
        return refit_error_set(REFIT_ENOMEM, "topology: out of memory");
    const char *root = sysfs_root ? sysfs_root : getenv("REFIT_SYSFS_ROOT");
    if (!root || !*root)
        root = "/sys";
    t->root = strdup(root);
    t->real = !strcmp(root, "/sys");
    t->source = "sysfs";
    int rc = t->root ? 0 : REFIT_ENOMEM;
    if (!rc)
        rc = scan_numa(t);
    if (!rc)
        rc = scan_ib(t);
    if (!rc)
        rc = scan_net(t);
    if (!rc)
        rc = scan_gpus(t);
    if (!rc) {
        t->nic_pub = calloc(t->n_nics ? t->n_nics : 1, sizeof(*t->nic_pub));
        t->gpu_pub = calloc(t->n_gpus ? t->n_gpus : 1, sizeof(*t->gpu_pub));
        if (!t->nic_pub || !t->gpu_pub)
            rc = REFIT_ENOMEM;
    }
    if (rc) {
        refit_topology_destroy(t);
        return refit_error_set(rc, "topology: reading %s: %s", root, refit_strerror(rc));
    }
    for (size_t i = 0; i < t->n_nics; i++)
        t->nic_pub[i] = t->nics[i].pub;
    for (size_t i = 0; i < t->n_gpus; i++)
        t->gpu_pub[i] = t->gpus[i].pub;
    refit_log(REFIT_LOG_DEBUG, TOPO, "%s: %d NUMA nodes, %zu NICs, %zu GPUs (%s)", root, t->n_numa,
              t->n_nics, t->n_gpus, t->source);
    *out = t;
    return 0;
}

void refit_topology_destroy(refit_topology_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_nics; i++) {
        struct nic_priv *n = &t->nics[i];
        free((char *)n->pub.name);
        free((char *)n->pub.ibdev);
        free((char *)n->pub.netdev);
        free((char *)n->pub.link_layer);
        free(n->path);
    }
    for (size_t i = 0; i < t->n_gpus; i++)
        free(t->gpus[i].path);
    for (int i = 0; i < t->n_numa && t->cpulist; i++)
        free(t->cpulist[i]);
    free(t->cpulist);
    free(t->nics);
    free(t->nic_pub);
    free(t->gpus);
    free(t->gpu_pub);
    free(t->root);
    free(t);
}

const char *refit_topology_root(const refit_topology_t *t)
{
    return t ? t->root : "";
}

const char *refit_topology_source(const refit_topology_t *t)
{
    return t ? t->source : "";
}

size_t refit_topology_nics(const refit_topology_t *t, const struct refit_topo_nic **out)
{
    if (out)
        *out = t ? t->nic_pub : NULL;
    return t ? t->n_nics : 0;
}

size_t refit_topology_gpus(const refit_topology_t *t, const struct refit_topo_gpu **out)
{
    if (out)
        *out = t ? t->gpu_pub : NULL;
    return t ? t->n_gpus : 0;
}

int refit_topology_numa_count(const refit_topology_t *t)
{
    return t ? t->n_numa : 0;
}

const char *refit_topology_numa_cpus(const refit_topology_t *t, int node)
{
    if (!t || node < 0 || node >= t->n_numa || !t->cpulist[node])
        return "";
    return t->cpulist[node];
}

/* Whether cpu is in a sysfs list "0-3,8,10-11". */
static bool in_cpulist(const char *list, int cpu)
{
    const char *p = list;
    while (p && *p) {
        char *end;
        long a = strtol(p, &end, 10), b;
        if (end == p)
            return false;
        b = a;
        if (*end == '-') {
            p = end + 1;
            b = strtol(p, &end, 10);
            if (end == p)
                return false;
        }
        if (cpu >= a && cpu <= b)
            return true;
        p = *end == ',' ? end + 1 : NULL;
    }
    return false;
}

int refit_topology_numa_of_cpu(const refit_topology_t *t, int cpu)
{
    if (!t || cpu < 0)
        return -1;
    for (int i = 0; i < t->n_numa; i++)
        if (t->cpulist[i] && in_cpulist(t->cpulist[i], cpu))
            return i;
#ifdef REFIT_HAVE_NUMA
    if (t->real && numa_available() >= 0)
        return numa_node_of_cpu(cpu);
#endif
    return -1;
}

/* "18:00.0" and "0000:18:00.0" in any case name the same device. */
static bool same_pci(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la == 7 && lb == 12)
        return !strncmp(b, "0000:", 5) && !strcasecmp(a, b + 5);
    if (la == 12 && lb == 7)
        return !strncmp(a, "0000:", 5) && !strcasecmp(a + 5, b);
    return la == lb && !strcasecmp(a, b);
}

static const struct gpu_priv *find_gpu(const refit_topology_t *t, const char *bus_id)
{
    for (size_t i = 0; i < t->n_gpus; i++)
        if (t->gpus[i].pub.pci && same_pci(t->gpus[i].pub.pci, bus_id))
            return &t->gpus[i];
    return NULL;
}

int refit_topology_numa_of_pci(const refit_topology_t *t, const char *bus_id)
{
    if (!t || !bus_id)
        return -1;
    const struct gpu_priv *g = find_gpu(t, bus_id);
    if (g)
        return g->pub.numa;
    for (size_t i = 0; i < t->n_nics; i++)
        if (t->nics[i].pub.pci && same_pci(t->nics[i].pub.pci, bus_id))
            return t->nics[i].pub.numa;
    /* A device we did not classify (CUDA will name GPUs we did not see):
     * look it up directly. */
    char name[16];
    if (strlen(bus_id) == 7)
        snprintf(name, sizeof(name), "0000:%s", bus_id);
    else
        snprintf(name, sizeof(name), "%.12s", bus_id);
    for (char *p = name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (!is_pci_name(name))
        return -1;
    char *bus = path_join(t->root, "bus/pci/devices");
    char *dir = bus ? path_join(bus, name) : NULL;
    free(bus);
    int node = dir ? read_int(dir, "numa_node", -1) : -1;
    free(dir);
    return node >= 0 && node < MAX_NUMA ? node : -1;
}

/* ------------------------------------------------------------------ */
/* Choosing devices */

/* Path components two resolved sysfs paths share: devices under the same
 * PCIe switch share more than devices that meet only at the root complex. */
static size_t pci_closeness(const char *a, const char *b)
{
    if (!a || !b)
        return 0;
    size_t n = 0;
    while (*a && *a == *b) {
        if (*a == '/')
            n++;
        a++;
        b++;
    }
    if ((!*a || *a == '/') && (!*b || *b == '/'))
        n++;
    return n;
}

static bool allowed(const struct refit_topo_nic *n, const struct refit_topo_query *q)
{
    if (!q->n_allow)
        return true;
    for (size_t i = 0; i < q->n_allow; i++) {
        const char *a = q->allow[i];
        if (!strcmp(a, n->name) || (n->ibdev && !strcmp(a, n->ibdev)) ||
            (n->netdev && !strcmp(a, n->netdev)))
            return true;
    }
    return false;
}

struct cand {
    size_t idx;
    int local;        /* on the rank's NUMA node (or unknown) */
    size_t closeness; /* to the GPU on the PCI tree */
};

static int cand_cmp(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    if (a->local != b->local)
        return b->local - a->local;
    if (a->closeness != b->closeness)
        return a->closeness < b->closeness ? 1 : -1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int rank_numa(const refit_topology_t *t, const struct refit_topo_query *q, const char **gpu_path)
{
    *gpu_path = NULL;
    if (q->gpu_pci) {
        const struct gpu_priv *g = find_gpu(t, q->gpu_pci);
        if (g)
            *gpu_path = g->path;
        int node = refit_topology_numa_of_pci(t, q->gpu_pci);
        if (node >= 0)
            return node;
    }
    int cpu = q->cpu >= 0 ? q->cpu : sched_getcpu();
    return refit_topology_numa_of_cpu(t, cpu);
}

int refit_topology_pick(const refit_topology_t *t, const struct refit_topo_query *q, char ***names,
                        size_t *n)
{
    if (!t || !q || !names || !n || q->size < sizeof(*q))
        return refit_error_set(REFIT_EINVAL, "topology: pick without a query");
    *names = NULL;
    *n = 0;
    if (q->mode == REFIT_TOPO_OFF || !t->n_nics)
        return 0;
    const char *gpu_path;
    int node = rank_numa(t, q, &gpu_path);
    bool any_rdma = false;
    for (size_t i = 0; i < t->n_nics; i++)
        any_rdma |= t->nics[i].pub.ibdev && t->nics[i].pub.active && allowed(&t->nics[i].pub, q);

    struct cand *c = calloc(t->n_nics, sizeof(*c));
    if (!c)
        return refit_error_set(REFIT_ENOMEM, "topology: out of memory");
    size_t nc = 0;
    for (size_t i = 0; i < t->n_nics; i++) {
        const struct refit_topo_nic *nic = &t->nics[i].pub;
        if (!nic->active || !allowed(nic, q))
            continue;
        if ((any_rdma || q->rdma_only) && !nic->ibdev)
            continue; /* a management NIC next to the RDMA fabric */
        c[nc].idx = i;
        c[nc].local = node < 0 || nic->numa < 0 || nic->numa == node;
        c[nc].closeness = pci_closeness(gpu_path, t->nics[i].path);
        nc++;
    }
    qsort(c, nc, sizeof(*c), cand_cmp);
    /* Only NUMA-local devices when there are any. */
    size_t nlocal = 0;
    while (nlocal < nc && c[nlocal].local)
        nlocal++;
    if (nlocal)
        nc = nlocal;
    size_t want = q->mode == REFIT_TOPO_STRIPE ? (q->max_stripe ? q->max_stripe : 1) : 1;
    if (want > nc)
        want = nc;
    /* Ranks that tie (no GPU, or several devices equally close) take turns
     * so that they do not all load the first device. */
    size_t ties = 0;
    while (ties < nc && c[ties].closeness == c[0].closeness)
        ties++;
    size_t start = (want == 1 && ties > 1) ? (size_t)(q->local_rank > 0 ? q->local_rank : 0) % ties : 0;

    size_t bytes = want * sizeof(char *);
    for (size_t k = 0; k < want; k++)
        bytes += strlen(t->nics[c[(start + k) % nc].idx].pub.name) + 1;
    char **out = want ? malloc(bytes) : NULL;
    if (want && !out) {
        free(c);
        return refit_error_set(REFIT_ENOMEM, "topology: out of memory");
    }
    char *s = (char *)(out + want);
    for (size_t k = 0; k < want; k++) {
        const char *nm = t->nics[c[(start + k) % nc].idx].pub.name;
        out[k] = s;
        strcpy(s, nm);
        s += strlen(nm) + 1;
    }
    free(c);
    *names = out;
    *n = want;
    return 0;
}

int refit_topology_hint(const refit_topology_t *t, const refit_config_t *cfg, const char *gpu_pci,
                        int local_rank, char ***names, size_t *n)
{
    if (!t || !cfg || !names || !n)
        return refit_error_set(REFIT_EINVAL, "topology: hint without configuration");
    const char *pin = NULL;
    int64_t stripe = 4;
    int rc = refit_config_str(cfg, "topology.nic_pin", &pin);
    if (!rc)
        rc = refit_config_int(cfg, "topology.max_stripe", &stripe);
    if (rc)
        return rc;
    struct refit_topo_query q = {0};
    q.size = sizeof(q);
    q.mode = !strcmp(pin, "auto") ? REFIT_TOPO_AUTO : !strcmp(pin, "stripe") ? REFIT_TOPO_STRIPE
                                                                              : REFIT_TOPO_OFF;
    q.gpu_pci = gpu_pci;
    q.cpu = -1;
    q.local_rank = local_rank;
    q.max_stripe = (size_t)stripe;
    if (refit_config_has(cfg, "topology.devices")) {
        rc = refit_config_list(cfg, "topology.devices", &q.allow, &q.n_allow);
        if (rc)
            return rc;
    }
    rc = refit_topology_pick(t, &q, names, n);
    if (!rc && q.mode != REFIT_TOPO_OFF && !*n)
        refit_log(REFIT_LOG_INFO, TOPO, "nic_pin %s: no network device found under %s; "
                  "the transport chooses", pin, t->root);
    return rc;
}
