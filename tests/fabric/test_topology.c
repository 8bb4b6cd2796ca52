/* test_topology.c — the topology module against a fake sysfs tree: two
 * NUMA nodes, three RDMA NICs (RoCE, InfiniBand, a dual-port card whose
 * first port is down), a virtio NIC, three GPUs behind PCIe switches. */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "refit/config.h"
#include "refit/status.h"
#include "refit/topology.h"
#include "../check_run.h"

static char root[PATH_MAX];

static void mkdirs(const char *rel)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    for (char *s = p + strlen(root) + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0755);
            *s = '/';
        }
    mkdir(p, 0755);
}

static void put(const char *rel, const char *text)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    char *dir = strdup(rel);
    char *slash = strrchr(dir, '/');
    *slash = 0;
    mkdirs(dir);
    free(dir);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%s\n", text);
    fclose(f);
}

/* A relative symlink, as sysfs has them, so the tree can live anywhere. */
static void link_to(const char *rel, const char *target)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    char *dir = strdup(rel);
    *strrchr(dir, '/') = 0;
    mkdirs(dir);
    free(dir);
    /* A second port of the same card links the same device again. */
    if (symlink(target, p) != 0)
        ck_assert_int_eq(errno, EEXIST);
}

#define RC0 "devices/pci0000:00"
#define RC1 "devices/pci0000:80"

static void pci_dev(const char *path, int numa, const char *vendor, const char *cls)
{
    char f[512], v[16];
    snprintf(f, sizeof(f), "%s/numa_node", path);
    snprintf(v, sizeof(v), "%d", numa);
    put(f, v);
    snprintf(f, sizeof(f), "%s/vendor", path);
    put(f, vendor);
    snprintf(f, sizeof(f), "%s/class", path);
    put(f, cls);
    const char *bdf = strrchr(path, '/') + 1;
    snprintf(f, sizeof(f), "bus/pci/devices/%s", bdf);
    char target[512];
    snprintf(target, sizeof(target), "../../../%s", path);
    link_to(f, target);
}

static void ib_dev(const char *name, const char *pci_path, const char *netdev, int port,
                   const char *state, const char *ll)
{
    char f[512], t[512];
    snprintf(f, sizeof(f), "%s/infiniband/%s/ports/%d/state", pci_path, name, port);
    put(f, state);
    snprintf(f, sizeof(f), "%s/infiniband/%s/ports/%d/link_layer", pci_path, name, port);
    put(f, ll);
    snprintf(f, sizeof(f), "%s/infiniband/%s/device", pci_path, name);
    link_to(f, "../..");
    snprintf(f, sizeof(f), "class/infiniband/%s", name);
    snprintf(t, sizeof(t), "../../%s/infiniband/%s", pci_path, name);
    link_to(f, t);
    if (netdev) {
        snprintf(f, sizeof(f), "%s/net/%s/operstate", pci_path, netdev);
        put(f, "up");
        snprintf(f, sizeof(f), "%s/net/%s/device", pci_path, netdev);
        link_to(f, "../..");
        snprintf(f, sizeof(f), "class/net/%s", netdev);
        snprintf(t, sizeof(t), "../../%s/net/%s", pci_path, netdev);
        link_to(f, t);
    }
}

static void build_tree(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(root, sizeof(root), "%s/refit-sysfs-XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(root));
    put("devices/system/node/node0/cpulist", "0-3");
    put("devices/system/node/node1/cpulist", "4-7");
    /* Node 0: switch 00:01.0 holds mlx5_0 (RoCE) and GPU 18:00.0; switch
     * 00:02.0 holds mlx5_1 (InfiniBand) and GPU 1a:00.0; virtio eth0. */
    pci_dev(RC0 "/0000:00:01.0/0000:17:00.0", 0, "0x15b3", "0x020000");
    pci_dev(RC0 "/0000:00:01.0/0000:18:00.0", 0, "0x10de", "0x030200");
    pci_dev(RC0 "/0000:00:02.0/0000:19:00.0", 0, "0x15b3", "0x020700");
    pci_dev(RC0 "/0000:00:02.0/0000:1a:00.0", 0, "0x10de", "0x030200");
    ib_dev("mlx5_0", RC0 "/0000:00:01.0/0000:17:00.0", "eth2", 1, "4: ACTIVE", "Ethernet");
    ib_dev("mlx5_1", RC0 "/0000:00:02.0/0000:19:00.0", NULL, 1, "4: ACTIVE", "InfiniBand");
    pci_dev(RC0 "/0000:00:03.0", 0, "0x1af4", "0x020000");
    put(RC0 "/0000:00:03.0/virtio2/net/eth0/operstate", "up");
    link_to(RC0 "/0000:00:03.0/virtio2/net/eth0/device", "../..");
    link_to("class/net/eth0", "../../" RC0 "/0000:00:03.0/virtio2/net/eth0");
    put("devices/virtual/net/lo/operstate", "unknown");
    link_to("class/net/lo", "../../devices/virtual/net/lo");
    /* Node 1: a dual-port card with port 1 down, and GPU 82:00.0. */
    pci_dev(RC1 "/0000:80:01.0/0000:81:00.0", 1, "0x15b3", "0x020700");
    pci_dev(RC1 "/0000:80:01.0/0000:82:00.0", 1, "0x10de", "0x030200");
    ib_dev("mlx5_2", RC1 "/0000:80:01.0/0000:81:00.0", NULL, 1, "1: DOWN", "InfiniBand");
    ib_dev("mlx5_2", RC1 "/0000:80:01.0/0000:81:00.0", NULL, 2, "4: ACTIVE", "InfiniBand");
}

static void rm_tree(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    ck_assert_int_eq(system(cmd), 0);
}

static refit_topology_t *T;

static void setup(void)
{
    build_tree();
    int rc = refit_topology_create(root, &T);
    ck_assert_msg(rc == 0, "%s", refit_error_message());
}

static void teardown(void)
{
    refit_topology_destroy(T);
    rm_tree();
}

static const struct refit_topo_nic *nic(const char *name)
{
    const struct refit_topo_nic *n;
    size_t k = refit_topology_nics(T, &n);
    for (size_t i = 0; i < k; i++)
        if (!strcmp(n[i].name, name))
            return &n[i];
    return NULL;
}

START_TEST(inventory)
{
    const struct refit_topo_nic *n;
    ck_assert_uint_eq(refit_topology_nics(T, &n), 4); /* mlx5_0..2 and eth0; not lo, not eth2 twice */
    ck_assert_int_eq(refit_topology_numa_count(T), 2);
    ck_assert_str_eq(refit_topology_numa_cpus(T, 1), "4-7");
    const struct refit_topo_nic *m0 = nic("mlx5_0:1");
    ck_assert_ptr_nonnull(m0);
    ck_assert_str_eq(m0->netdev, "eth2");
    ck_assert_str_eq(m0->pci, "0000:17:00.0");
    ck_assert_str_eq(m0->link_layer, "Ethernet");
    ck_assert_int_eq(m0->numa, 0);
    const struct refit_topo_nic *m2 = nic("mlx5_2:2"); /* the active port, not port 1 */
    ck_assert_ptr_nonnull(m2);
    ck_assert_int_eq(m2->numa, 1);
    ck_assert_ptr_null(m2->netdev);
    const struct refit_topo_nic *e0 = nic("eth0");
    ck_assert_ptr_nonnull(e0);
    ck_assert_str_eq(e0->pci, "0000:00:03.0");
    ck_assert_ptr_null(nic("lo"));
    const struct refit_topo_gpu *g;
    ck_assert_uint_eq(refit_topology_gpus(T, &g), 3);
}
END_TEST

START_TEST(numa_lookup)
{
    ck_assert_int_eq(refit_topology_numa_of_cpu(T, 2), 0);
    ck_assert_int_eq(refit_topology_numa_of_cpu(T, 7), 1);
    ck_assert_int_eq(refit_topology_numa_of_pci(T, "0000:82:00.0"), 1);
    ck_assert_int_eq(refit_topology_numa_of_pci(T, "18:00.0"), 0);
    ck_assert_int_eq(refit_topology_numa_of_pci(T, "0000:1A:00.0"), 0);
    ck_assert_int_eq(refit_topology_numa_of_pci(T, "0000:99:00.0"), -1);
    ck_assert_int_eq(refit_topology_numa_of_pci(T, "garbage/../../x"), -1);
}
END_TEST

static char *pick1(enum refit_topo_mode mode, const char *gpu, int cpu, int rank, size_t *n)
{
    struct refit_topo_query q = {sizeof(q), mode, gpu, cpu, rank, 4, NULL, 0, false};
    char **names;
    int rc = refit_topology_pick(T, &q, &names, n);
    ck_assert_msg(rc == 0, "%s", refit_error_message());
    static char buf[256];
    buf[0] = 0;
    for (size_t i = 0; i < *n; i++) {
        strcat(buf, i ? "," : "");
        strcat(buf, names[i]);
    }
    free(names);
    return buf;
}

START_TEST(auto_gpu_closest)
{
    size_t n;
    /* Each GPU gets the NIC behind its own PCIe switch. */
    ck_assert_str_eq(pick1(REFIT_TOPO_AUTO, "0000:18:00.0", -1, 0, &n), "mlx5_0:1");
    ck_assert_str_eq(pick1(REFIT_TOPO_AUTO, "0000:1a:00.0", -1, 0, &n), "mlx5_1:1");
    ck_assert_str_eq(pick1(REFIT_TOPO_AUTO, "82:00.0", 0, 0, &n), "mlx5_2:2");
    ck_assert_uint_eq(n, 1);
}
END_TEST

START_TEST(auto_cpu_local)
{
    size_t n;
    ck_assert_str_eq(pick1(REFIT_TOPO_AUTO, NULL, 5, 0, &n), "mlx5_2:2");
    /* Two equally close devices on node 0: ranks take turns; the plain
     * NIC is not used next to an RDMA fabric. */
    ck_assert_str_eq(pick1(REFIT_TOPO_AUTO, NULL, 1, 0, &n), "mlx5_0:1");
    ck_assert_str_eq(pick1(REFIT_TOPO_AUTO, NULL, 1, 1, &n), "mlx5_1:1");
    ck_assert_str_eq(pick1(REFIT_TOPO_AUTO, NULL, 1, 2, &n), "mlx5_0:1");
}
END_TEST

START_TEST(stripe_and_off)
{
    size_t n;
    ck_assert_str_eq(pick1(REFIT_TOPO_STRIPE, NULL, 0, 0, &n), "mlx5_0:1,mlx5_1:1");
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(pick1(REFIT_TOPO_STRIPE, "0000:1a:00.0", -1, 0, &n), "mlx5_1:1,mlx5_0:1");
    ck_assert_str_eq(pick1(REFIT_TOPO_OFF, NULL, 0, 0, &n), "");
    ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(allow_list)
{
    const char *allow[] = {"eth0"};
    struct refit_topo_query q = {sizeof(q), REFIT_TOPO_AUTO, NULL, 0, 0, 4, allow, 1, false};
    char **names;
    size_t n;
    ck_assert_int_eq(refit_topology_pick(T, &q, &names, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(names[0], "eth0");
    free(names);
    const char *allow2[] = {"mlx5_2"}; /* remote node, but the only one allowed */
    q.allow = allow2;
    ck_assert_int_eq(refit_topology_pick(T, &q, &names, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(names[0], "mlx5_2:2");
    free(names);
}
END_TEST

START_TEST(from_config)
{
    refit_config_t *cfg;
    ck_assert_int_eq(refit_config_create(&cfg), 0);
    const char *y = "topology:\n  nic_pin: stripe\n  max_stripe: 1\n";
    ck_assert_int_eq(refit_config_load_string(cfg, "t.yaml", y, strlen(y)), 0);
    char **names;
    size_t n;
    int rc = refit_topology_hint(T, cfg, "0000:1a:00.0", 0, &names, &n);
    ck_assert_msg(rc == 0, "%s", refit_error_message());
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(names[0], "mlx5_1:1");
    free(names);
    refit_config_destroy(cfg);
}
END_TEST

START_TEST(empty_host)
{
    refit_topology_t *t;
    ck_assert_int_eq(refit_topology_create("/nonexistent-refit-sysfs", &t), 0);
    ck_assert_uint_eq(refit_topology_nics(t, NULL), 0);
    ck_assert_int_eq(refit_topology_numa_count(t), 0);
    struct refit_topo_query q = {sizeof(q), REFIT_TOPO_AUTO, NULL, 0, 0, 4, NULL, 0, false};
    char **names;
    size_t n = 7;
    ck_assert_int_eq(refit_topology_pick(t, &q, &names, &n), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(names);
    refit_topology_destroy(t);
}
END_TEST

/* The real host: whatever it has, reading it must work. */
START_TEST(real_host)
{
    refit_topology_t *t;
    ck_assert_int_eq(refit_topology_create("/sys", &t), 0);
    ck_assert_str_eq(refit_topology_root(t), "/sys");
    refit_topology_destroy(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("topology");
    TCase *tc = tcase_create("fake_sysfs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, inventory);
    tcase_add_test(tc, numa_lookup);
    tcase_add_test(tc, auto_gpu_closest);
    tcase_add_test(tc, auto_cpu_local);
    tcase_add_test(tc, stripe_and_off);
    tcase_add_test(tc, allow_list);
    tcase_add_test(tc, from_config);
    suite_add_tcase(s, tc);
    TCase *tr = tcase_create("hosts");
    tcase_add_test(tr, empty_host);
    tcase_add_test(tr, real_host);
    suite_add_tcase(s, tr);
    int nf = t_run_suite(s, CK_NORMAL);
    return nf ? 1 : 0;
}
