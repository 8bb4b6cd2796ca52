/* cmd_doctor.c — `refit doctor`: what this host offers and what refit would
 * use on it.  Prints the topology map (NUMA nodes, NICs, GPUs and the NICs
 * local to each), the fabrics the libraries see (ibverbs devices, UCX
 * transports from `ucx_info -d`, libfabric providers from fi_getinfo), the
 * plugins found, and for each transport plugin what it would pick with
 * this configuration (topology.nic_pin applied).  Works on a machine with
 * no RDMA device: every section says what it found, empty or not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/status.h"
#include "refit/topology.h"
#include "refit/transport_core.h"

#ifdef REFIT_HAVE_OFI
#include <rdma/fabric.h>
#endif

static void print_topology(const refit_topology_t *t)
{
    printf("topology (%s, from %s):\n", refit_topology_root(t), refit_topology_source(t));
    int nn = refit_topology_numa_count(t);
    const struct refit_topo_nic *nics;
    size_t n = refit_topology_nics(t, &nics);
    const struct refit_topo_gpu *gpus;
    size_t ng = refit_topology_gpus(t, &gpus);
    if (!nn)
        printf("  NUMA: none reported (every device counts as local)\n");
    for (int i = 0; i < nn; i++) {
        printf("  numa %d: cpus %s\n", i, refit_topology_numa_cpus(t, i)[0] ? refit_topology_numa_cpus(t, i) : "?");
        for (size_t k = 0; k < n; k++)
            if (nics[k].numa == i)
                printf("    nic %s\n", nics[k].name);
        for (size_t k = 0; k < ng; k++)
            if (gpus[k].numa == i)
                printf("    gpu %s\n", gpus[k].pci);
    }
    printf("  network devices: %zu\n", n);
    for (size_t k = 0; k < n; k++)
        printf("    %-14s %-8s ibdev %-10s netdev %-10s pci %-12s numa %2d %s%s\n", nics[k].name,
               nics[k].ibdev ? "rdma" : "plain", nics[k].ibdev ? nics[k].ibdev : "-",
               nics[k].netdev ? nics[k].netdev : "-", nics[k].pci ? nics[k].pci : "-", nics[k].numa,
               nics[k].link_layer ? nics[k].link_layer : "", nics[k].active ? "" : " (down)");
    printf("  GPUs (NVIDIA, on PCI): %zu\n", ng);
    for (size_t k = 0; k < ng; k++) {
        struct refit_topo_query q = {sizeof(q), REFIT_TOPO_AUTO, gpus[k].pci, -1, 0, 4, NULL, 0, false};
        char **names = NULL;
        size_t nn2 = 0;
        refit_topology_pick(t, &q, &names, &nn2);
        printf("    %s numa %d -> %s\n", gpus[k].pci, gpus[k].numa, nn2 ? names[0] : "(no NIC)");
        free(names);
    }
}

/* `ucx_info -d` lists "Transport: X" then "Device: Y" per resource. */
static void print_ucx(void)
{
    FILE *p = popen("ucx_info -d 2>/dev/null", "r");
    if (!p) {
        printf("  UCX: ucx_info not runnable\n");
        return;
    }
    char line[512], tl[128] = "";
    int n = 0;
    printf("  UCX transports (ucx_info -d):");
    while (fgets(line, sizeof(line), p)) {
        char v[128];
        if (sscanf(line, " # Transport: %127s", v) == 1)
            snprintf(tl, sizeof(tl), "%s", v);
        else if (sscanf(line, " # Device: %127s", v) == 1 && tl[0]) {
            printf("%s %s/%s", n % 6 ? "," : "\n   ", tl, v);
            n++;
        }
    }
    int st = pclose(p);
    printf("%s\n", n ? "" : (st ? " ucx_info not found" : " none"));
}

static void print_ofi(void)
{
#ifdef REFIT_HAVE_OFI
    struct fi_info *hints = fi_allocinfo(), *list = NULL;
    if (!hints)
        return;
    hints->ep_attr->type = FI_EP_RDM;
    hints->caps = FI_RMA;
    hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY |
                                  FI_MR_ENDPOINT;
    int ret = fi_getinfo(FI_VERSION(1, 9), NULL, NULL, 0, hints, &list);
    fi_freeinfo(hints);
    printf("  libfabric %u.%u providers with FI_EP_RDM + FI_RMA:", FI_MAJOR(fi_version()),
           FI_MINOR(fi_version()));
    if (ret) {
        printf(" none (%s)\n", fi_strerror(-ret));
        return;
    }
    int n = 0;
    for (struct fi_info *i = list; i; i = i->next) {
        /* One line per provider and domain (fi_getinfo lists each per
         * address format and protocol). */
        int seen = 0;
        for (struct fi_info *j = list; j != i && !seen; j = j->next)
            seen = !strcmp(j->fabric_attr->prov_name, i->fabric_attr->prov_name) &&
                   !strcmp(j->domain_attr->name, i->domain_attr->name);
        if (!seen)
            printf("%s %s/%s", n++ % 4 ? "," : "\n   ", i->fabric_attr->prov_name,
                   i->domain_attr->name);
    }
    printf("\n");
    fi_freeinfo(list);
#else
    printf("  libfabric: not built in (feature ofi)\n");
#endif
}

static void print_fabrics(const refit_topology_t *t)
{
    printf("fabrics:\n");
    const struct refit_topo_nic *nics;
    size_t n = refit_topology_nics(t, &nics), k = 0;
    printf("  RDMA devices:");
    for (size_t i = 0; i < n; i++)
        if (nics[i].ibdev)
            printf("%s %s (%s)", k++ ? "," : "", nics[i].name,
                   nics[i].link_layer ? nics[i].link_layer : "?");
    printf("%s\n", k ? "" : " none (no /sys/class/infiniband device): tcp and shared memory only");
    print_ucx();
    print_ofi();
}

static void print_plugin(void *arg, const struct refit_plugin_report *r)
{
    (void)arg;
    if (r->ok && !r->shadowed)
        printf("  %-10s %-10s %s\n", refit_plugin_kind_name(r->kind), r->name, r->path);
    else if (!r->ok)
        printf("  rejected   %-10s %s: %s\n", r->name, r->path, r->why);
}

/* Initialise one transport as the configuration says and report its
 * choice; a plugin that cannot start here says why. */
static void try_transport(struct cli_common *c, const refit_topology_t *t, const char *name,
                          const char *gpu)
{
    char **hint = NULL;
    size_t nh = 0;
    if (refit_topology_hint(t, c->cfg, gpu, 0, &hint, &nh))
        printf("    topology: %s\n", refit_error_message());
    const char *pin = "off";
    refit_config_str(c->cfg, "topology.nic_pin", &pin);
    printf("  %s: nic_pin %s ->", name, pin);
    for (size_t i = 0; i < nh; i++)
        printf("%s%s", i ? "," : " ", hint[i]);
    printf("%s\n", nh ? "" : " (transport's own choice)");
    struct refit_transport_open o = {sizeof(o), name, "doctor", -1, (const char *const *)hint, nh};
    refit_transport_t *tp = NULL;
    int rc = refit_transport_init(c->loader, c->cfg, &o, &tp);
    if (rc) {
        printf("    would fail: %s\n", refit_error_message());
        free(hint);
        return;
    }
    const struct refit_transport_ops *ops = refit_transport_plugin(tp)->ops;
    char d[1024] = "";
    if (ops->size >= offsetof(struct refit_transport_ops, describe) + sizeof(ops->describe) &&
        ops->describe && ops->describe(refit_transport_raw(tp), d, sizeof(d)) == 0)
        printf("    uses: %s\n", d);
    const struct refit_tp_caps *caps = refit_transport_caps(tp);
    int host = !!(caps->memtypes & REFIT_MEMTYPE_BIT(REFIT_MEM_HOST));
    int cuda = !!(caps->memtypes & REFIT_MEMTYPE_BIT(REFIT_MEM_CUDA));
    printf("    reaches: %s%s%s; notifications %s\n", host ? "host" : "cuda only",
           host && cuda ? ", cuda" : "", host && !cuda ? " (cuda staged)" : "",
           caps->notify ? "yes" : "no");
    refit_transport_fini(tp);
    free(hint);
}

/* Colocated trainers and engines (cuda_ipc, one GPU): without the CUDA MPS
 * daemon their processes hold two contexts and the GPU time-slices between
 * them, ~0.1 ms per pull (docs/benchmarks.md).  The daemon is seen by its
 * control socket in the pipe directory both sides must share. */
static void print_mps(const refit_topology_t *t)
{
    const struct refit_topo_gpu *gpus;
    if (refit_topology_gpus(t, &gpus) == 0)
        return;
    const char *dir = getenv("CUDA_MPS_PIPE_DIRECTORY");
    if (!dir || !*dir)
        dir = "/tmp/nvidia-mps";
    char path[4096];
    struct stat st;
    int n = snprintf(path, sizeof(path), "%s/control", dir);
    if (n > 0 && (size_t)n < sizeof(path) && stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        printf("cuda mps: a daemon's control socket at %s (colocated processes share one GPU context)\n", path);
    else
        printf("cuda mps: no daemon at %s (CUDA_MPS_PIPE_DIRECTORY): colocated trainers and engines\n"
               "    time-slice the GPU, ~0.1 ms per pull; start `nvidia-cuda-mps-control -d` (docs/cuda.md)\n",
               dir);
}

struct doctor_opts {
    const char *config, *sysfs, *gpu;
    struct cli_list set;
};

static const struct cli_opt doctor_table[] = {
    CLI_COMMON(struct doctor_opts, config, set),
    {"--sysfs", NULL, CLI_STR, "DIR", 0, 0, NULL, NULL, CLI_AT(struct doctor_opts, sysfs),
     "read another sysfs tree (REFIT_SYSFS_ROOT too)"},
    {"--gpu", NULL, CLI_STR, "PCI_BUS_ID", 0, 0, NULL, NULL, CLI_AT(struct doctor_opts, gpu),
     "ask each transport for the NIC of that GPU"},
};

static const struct cli_spec doctor_spec = {
    .cmd = "doctor",
    .about = "Prints the host's topology (NUMA nodes, NICs, GPUs), the fabrics UCX and\n"
             "libfabric see, whether a CUDA MPS daemon runs (for colocated GPUs), the plugins\n"
             "found, and what each transport plugin would pick with this configuration\n"
             "(transport.plugin first).\n",
    .opts = doctor_table,
    .n_opts = CLI_N(doctor_table),
};

int cmd_doctor(int argc, char **argv)
{
    const char *sets[64];
    struct doctor_opts o = {.set = {.v = sets, .max = 64}};
    int rc = cli_opts_parse(&doctor_spec, argc, argv, &o, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    if (rc)
        return cli_fail("doctor", rc);
    const char *sysfs = o.sysfs, *gpu = o.gpu;
    struct cli_common c;
    rc = cli_config_from(&c, o.config, &o.set);
    if (rc) {
        cli_common_close(&c);
        return cli_fail("doctor", rc);
    }
    refit_topology_t *t = NULL;
    rc = refit_topology_create(sysfs, &t);
    if (rc) {
        cli_common_close(&c);
        return cli_fail("doctor", rc);
    }
    print_topology(t);
    print_fabrics(t);
    print_mps(t);
    printf("plugins:\n");
    refit_loader_scan(c.loader, print_plugin, NULL);
    const char *configured = "tcp";
    refit_config_str(c.cfg, "transport.plugin", &configured);
    printf("transports with this configuration%s%s:\n", c.config_path ? " from " : "",
           c.config_path ? c.config_path : "");
    try_transport(&c, t, configured, gpu);
    static const char *const others[] = {"ucx", "ofi", "cuda_ipc", "tcp"};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        const struct refit_plugin *p;
        if (strcmp(others[i], configured) &&
            refit_loader_load_optional(c.loader, REFIT_PLUGIN_TRANSPORT, others[i], &p) == 0)
            try_transport(&c, t, others[i], gpu);
    }
    refit_topology_destroy(t);
    cli_common_close(&c);
    return 0;
}
