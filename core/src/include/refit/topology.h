/* refit/topology.h — which network devices are close to which CPUs and GPUs.
 *
 * A snapshot of the host, read from sysfs (/sys/class/infiniband,
 * /sys/class/net/<dev>/device, /sys/bus/pci/devices/<bdf>/numa_node,
 * /sys/devices/system/node) plus, where built in, libnuma and the libibverbs
 * device list.  It maps every NUMA node, CPU and GPU (by PCI bus id) to the
 * NUMA-local network devices, closest on the PCI tree first, and turns the
 * configuration's topology.nic_pin (off|auto|stripe) into the device hint a
 * transport plugin receives (refit_tp_init_args.nic_hint).
 *
 * The sysfs root is configurable (argument, or REFIT_SYSFS_ROOT) so tests
 * run against a fake tree; with a fake root libnuma and libibverbs are not
 * consulted, since they describe the real machine.
 *
 * Hint strings: an RDMA device is "<ibdev>:<port>" (mlx5_0:1, UCX's
 * UCX_NET_DEVICES syntax; libfabric domains match "<ibdev>" or
 * "<ibdev>-rdm"), a NIC without RDMA its interface name ("eth0"). */
#ifndef REFIT_TOPOLOGY_H
#define REFIT_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>

#include "refit/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct refit_topology refit_topology_t;

struct refit_topo_nic {
    const char *name;       /* hint string: "mlx5_0:1" or "eth0" */
    const char *ibdev;      /* "mlx5_0"; NULL for a NIC without RDMA */
    const char *netdev;     /* "eth2"; NULL when the RDMA device has none (InfiniBand) */
    const char *pci;        /* PCI bus id "0000:17:00.0"; NULL when not on PCI */
    const char *link_layer; /* "InfiniBand", "Ethernet" (RoCE), NULL */
    int port;               /* first active port (RDMA), else 0 */
    bool active;            /* port ACTIVE / interface operstate up (or unknown) */
    int numa;               /* -1: unknown */
};

struct refit_topo_gpu {
    const char *pci; /* "0000:18:00.0" */
    int numa;        /* -1: unknown */
};

/* Read the host.  sysfs_root NULL: $REFIT_SYSFS_ROOT or "/sys".  Free with
 * refit_topology_destroy.  A host without any network device is not an
 * error (the lists are empty). */
int refit_topology_create(const char *sysfs_root, refit_topology_t **out);
void refit_topology_destroy(refit_topology_t *t);

const char *refit_topology_root(const refit_topology_t *t);
/* Where the device list came from: "libibverbs+sysfs" or "sysfs". */
const char *refit_topology_source(const refit_topology_t *t);

/* Arrays owned by t. */
size_t refit_topology_nics(const refit_topology_t *t, const struct refit_topo_nic **out);
size_t refit_topology_gpus(const refit_topology_t *t, const struct refit_topo_gpu **out);

/* NUMA nodes (0 when the host reports none; then everything is "local"). */
int refit_topology_numa_count(const refit_topology_t *t);
/* The node's CPU list as sysfs prints it ("0-23,48-71"); "" when unknown. */
const char *refit_topology_numa_cpus(const refit_topology_t *t, int node);
/* The node of a CPU, of a PCI device (bus id as a string, any case,
 * domain optional: "18:00.0"), -1 when unknown. */
int refit_topology_numa_of_cpu(const refit_topology_t *t, int cpu);
int refit_topology_numa_of_pci(const refit_topology_t *t, const char *bus_id);

enum refit_topo_mode {
    REFIT_TOPO_OFF = 0,
    REFIT_TOPO_AUTO = 1,  /* one NUMA-local device, the closest on the PCI tree */
    REFIT_TOPO_STRIPE = 2 /* up to max_stripe NUMA-local devices */
};

struct refit_topo_query {
    size_t size;            /* sizeof(struct refit_topo_query) */
    enum refit_topo_mode mode;
    const char *gpu_pci;    /* the rank's GPU, or NULL */
    int cpu;                /* the rank's CPU; -1: where this thread runs */
    int local_rank;         /* spreads ranks that tie over equally close devices; -1: 0 */
    size_t max_stripe;      /* STRIPE: at most this many */
    const char *const *allow; /* topology.devices: only these (names, ibdevs or netdevs) */
    size_t n_allow;
    bool rdma_only;         /* skip NICs without RDMA when RDMA ones exist */
};

/* The devices for one rank, best first.  *names is an array of n strings
 * (one allocation; free it with free()).  Mode OFF or no device: n = 0
 * and *names NULL, not an error. */
int refit_topology_pick(const refit_topology_t *t, const struct refit_topo_query *q,
                        char ***names, size_t *n);

/* refit_topology_pick driven by the configuration: topology.nic_pin,
 * topology.devices, topology.max_stripe.  The hint handed to the
 * transport plugin; free *names with free(). */
int refit_topology_hint(const refit_topology_t *t, const refit_config_t *cfg, const char *gpu_pci,
                        int local_rank, char ***names, size_t *n);

#ifdef __cplusplus
}
#endif
#endif
