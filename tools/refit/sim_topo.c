/* sim_topo.c — which NIC each GPU of a simulated node uses.
 *
 * The node is written as a sysfs tree (the shape of an 8-GPU server: two
 * NUMA nodes, PCIe switches each holding GPUs and one RDMA NIC), and every
 * GPU's NIC is then chosen by refit_topology_pick in mode auto, exactly as
 * topology.nic_pin: auto pins a rank on such a host: a NUMA-local NIC,
 * the closest on the PCI tree, ties spread by local rank.  With as many
 * NICs as GPUs each GPU gets its switch-mate; with fewer, GPUs behind one
 * switch share its NIC. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "refit/status.h"
#include "refit/topology.h"
#include "sim.h"

static int mkdirs(const char *root, const char *rel)
{
    char p[PATH_MAX];
    if ((size_t)snprintf(p, sizeof(p), "%s/%s", root, rel) >= sizeof(p))
        return REFIT_ERANGE;
    for (char *s = p + strlen(root) + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0755) && errno != EEXIST)
                return REFIT_EIO;
            *s = '/';
        }
    return mkdir(p, 0755) && errno != EEXIST ? REFIT_EIO : 0;
}

/* root/rel into p (PATH_MAX bytes), its parent directories made. */
static int make_parent(const char *root, const char *rel, char *p)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", rel);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        if (mkdirs(root, dir))
            return REFIT_EIO;
    }
    snprintf(p, PATH_MAX, "%s/%s", root, rel);
    return 0;
}

static int put(const char *root, const char *rel, const char *text)
{
    char p[PATH_MAX];
    if (make_parent(root, rel, p))
        return REFIT_EIO;
    FILE *f = fopen(p, "w");
    if (!f)
        return REFIT_EIO;
    fprintf(f, "%s\n", text);
    return fclose(f) ? REFIT_EIO : 0;
}

/* A relative symlink, as sysfs has them. */
static int link_to(const char *root, const char *rel, const char *target)
{
    char p[PATH_MAX];
    if (make_parent(root, rel, p))
        return REFIT_EIO;
    return symlink(target, p) && errno != EEXIST ? REFIT_EIO : 0;
}

static int pci_dev(const char *root, const char *path, int numa, const char *vendor, const char *cls)
{
    char f[PATH_MAX], v[16], target[PATH_MAX];
    snprintf(v, sizeof(v), "%d", numa);
    snprintf(f, sizeof(f), "%s/numa_node", path);
    int rc = put(root, f, v);
    snprintf(f, sizeof(f), "%s/vendor", path);
    rc = rc ? rc : put(root, f, vendor);
    snprintf(f, sizeof(f), "%s/class", path);
    rc = rc ? rc : put(root, f, cls);
    snprintf(f, sizeof(f), "bus/pci/devices/%s", strrchr(path, '/') + 1);
    snprintf(target, sizeof(target), "../../../%s", path);
    return rc ? rc : link_to(root, f, target);
}

static int ib_dev(const char *root, int k, const char *pci_path)
{
    char f[PATH_MAX], t[PATH_MAX], name[32];
    snprintf(name, sizeof(name), "mlx5_%d", k);
    snprintf(f, sizeof(f), "%s/infiniband/%s/ports/1/state", pci_path, name);
    int rc = put(root, f, "4: ACTIVE");
    snprintf(f, sizeof(f), "%s/infiniband/%s/ports/1/link_layer", pci_path, name);
    rc = rc ? rc : put(root, f, "InfiniBand");
    snprintf(f, sizeof(f), "%s/infiniband/%s/device", pci_path, name);
    rc = rc ? rc : link_to(root, f, "../..");
    snprintf(f, sizeof(f), "class/infiniband/%s", name);
    snprintf(t, sizeof(t), "../../%s/infiniband/%s", pci_path, name);
    return rc ? rc : link_to(root, f, t);
}

/* Switch s (of nics) holds NIC s and the GPUs g with g * nics / gpus == s;
 * the first half of the switches hangs off NUMA node 0, the rest off node
 * 1.  gpu_pci[g] receives GPU g's bus id. */
static int build_node(const char *root, int gpus, int nics, char (*gpu_pci)[16])
{
    int numa = gpus >= 2 && nics >= 2 ? 2 : 1;
    int rc = put(root, "devices/system/node/node0/cpulist", "0-63");
    if (!rc && numa == 2)
        rc = put(root, "devices/system/node/node1/cpulist", "64-127");
    int next_bus[2] = {0x10, 0x90};
    for (int s = 0; !rc && s < nics; s++) {
        int node = s * numa / nics;
        char sw[128], dev[192];
        snprintf(sw, sizeof(sw), "devices/pci0000:%02x/0000:%02x:%02x.0", node * 0x80, node * 0x80, s + 1);
        snprintf(dev, sizeof(dev), "%s/0000:%02x:00.0", sw, next_bus[node]++);
        rc = pci_dev(root, dev, node, "0x15b3", "0x020700");
        if (!rc)
            rc = ib_dev(root, s, dev);
        for (int g = 0; !rc && g < gpus; g++) {
            if (g * nics / gpus != s)
                continue;
            snprintf(gpu_pci[g], sizeof(gpu_pci[g]), "0000:%02x:00.0", next_bus[node]++);
            snprintf(dev, sizeof(dev), "%s/%s", sw, gpu_pci[g]);
            rc = pci_dev(root, dev, node, "0x10de", "0x030200");
        }
    }
    return rc ? refit_error_set(REFIT_EIO, "writing the simulated node's sysfs tree under %s", root) : 0;
}

static int pick_all(const char *root, int gpus, char (*gpu_pci)[16], int *nic)
{
    refit_topology_t *t = NULL;
    int rc = refit_topology_create(root, &t);
    const struct refit_topo_gpu *tg = NULL;
    size_t ng = rc ? 0 : refit_topology_gpus(t, &tg);
    if (!rc && ng != (size_t)gpus)
        rc = refit_error_set(REFIT_EPROTO, "simulated node: topology sees %zu GPUs, %d written", ng, gpus);
    for (int g = 0; !rc && g < gpus; g++) {
        struct refit_topo_query q = {.size = sizeof(q), .mode = REFIT_TOPO_AUTO, .gpu_pci = gpu_pci[g], .cpu = -1,
                                     .local_rank = g, .max_stripe = 1, .rdma_only = true};
        char **names = NULL;
        size_t n = 0;
        rc = refit_topology_pick(t, &q, &names, &n);
        int k = -1;
        if (!rc && (!n || sscanf(names[0], "mlx5_%d", &k) != 1))
            k = -1;
        free(names);
        if (!rc && (k < 0 || k >= gpus))
            rc = refit_error_set(REFIT_EPROTO, "simulated node: no NIC for GPU %s", gpu_pci[g]);
        if (!rc)
            nic[g] = k;
    }
    refit_topology_destroy(t);
    return rc;
}

int sim_topo_pin(int gpus, int nics, int *nic)
{
    if (gpus < 1 || nics < 1 || nics > gpus || gpus > 32 || nics > 32)
        return refit_error_set(REFIT_EINVAL, "simulated node: %d GPUs and %d NICs (1 <= NICs <= GPUs <= 32)",
                               gpus, nics);
    char (*pci)[16] = calloc((size_t)gpus, sizeof(*pci));
    if (!pci)
        return REFIT_ENOMEM;
    char root[] = "/tmp/refit-sim-sysfs-XXXXXX";
    if (!mkdtemp(root)) {
        free(pci);
        return refit_error_set(REFIT_EIO, "mkdtemp: %s", strerror(errno));
    }
    int rc = build_node(root, gpus, nics, pci);
    if (!rc)
        rc = pick_all(root, gpus, pci, nic);
    free(pci);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "refit sim: could not remove %s\n", root);
    return rc;
}
