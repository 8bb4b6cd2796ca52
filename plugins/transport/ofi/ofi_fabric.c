/* ofi_fabric.c — the ofi plugin's choice of provider and domain (hints,
 * the NIC pinned by the caller, shm leftovers swept) and the libfabric
 * objects it opens on it: fabric, domain, endpoint, CQ, AV. */
#include "ofi_int.h"

static struct fi_info *make_hints(const char *provider, int hmem, int delivery)
{
    struct fi_info *h = fi_allocinfo();
    if (!h)
        return NULL;
    h->ep_attr->type = FI_EP_RDM;
    h->caps = FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE | FI_MSG | FI_SEND |
              FI_RECV | (hmem ? FI_HMEM : 0);
    h->mode = FI_CONTEXT | FI_CONTEXT2;
    /* Every registration mode we know how to honour; the provider answers
     * with the subset it requires. */
    h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY |
                              FI_MR_ENDPOINT | (hmem ? FI_MR_HMEM : 0);
    h->domain_attr->threading = FI_THREAD_DOMAIN;
    h->tx_attr->op_flags = delivery ? FI_DELIVERY_COMPLETE : 0;
    h->fabric_attr->prov_name = strdup(provider);
    return h;
}

static int domain_matches(const char *dom, const struct refit_tp_init_args *a, const char *pinned)
{
    if (pinned)
        return !strcmp(dom, pinned);
    if (!a->nic_hint || !a->n_nic_hint)
        return 1;
    for (size_t i = 0; i < a->n_nic_hint; i++) {
        const char *h = a->nic_hint[i];
        size_t n = strcspn(h, ":"); /* "mlx5_0:1" names the device and port */
        /* EFA domains are "<ibdev>-rdm"; tcp/verbs domains the device. */
        if (!strncmp(dom, h, n) && (dom[n] == 0 || dom[n] == '-'))
            return 1;
    }
    return 0;
}

/* Regions our shm endpoints left behind when their process was killed
 * ("refit-<pid>-..." in /dev/shm with <pid> gone): unlinked, since nobody
 * can attach to a dead process's endpoint. */
static void shm_sweep(void)
{
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "refit-", 6))
            continue;
        long pid = strtol(e->d_name + 6, &end, 10);
        if (*end != '-' || pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH)) {
            if (*end == '-' && pid > 0 && unlinkat(dirfd(d), e->d_name, 0) == 0)
                H->log(0, OFIP, "removed /dev/shm/%s of a process that is gone", e->d_name);
        }
    }
    if (d)
        closedir(d);
}

int ofip_choose_info(refit_tp_t *tp, const struct refit_tp_init_args *a, const struct ofip_opts *o)
{
    /* auto: only a rank that has a GPU asks for FI_HMEM, which can send
     * some providers down slower paths or make them load the CUDA runtime. */
    int want_hmem = !strcmp(o->hmem, "on") || (!strcmp(o->hmem, "auto") && a->cuda_device >= 0);
    struct fi_info *list = NULL;
    int ret = -FI_ENODATA, hmem = 0, delivery = 0;
    /* Most wanted first: HMEM and delivery-complete writes, then without. */
    for (int attempt = 0; attempt < 4 && ret; attempt++) {
        hmem = want_hmem && attempt < 2;
        delivery = !(attempt & 1);
        if (!want_hmem && attempt < 2)
            continue;
        struct fi_info *h = make_hints(o->provider, hmem, delivery);
        if (!h)
            return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
        ret = fi_getinfo(OFIP_API, NULL, NULL, 0, h, &list);
        fi_freeinfo(h);
        if (ret && ret != -FI_ENODATA)
            return H->error_set(REFIT_ENOENT, "%s: fi_getinfo(provider %s): %s (fi errno %d)", OFIP,
                                o->provider, fi_strerror(-ret), -ret);
    }
    if (ret)
        return H->error_set(REFIT_ENOENT, "%s: provider '%s' offers no FI_EP_RDM endpoint with "
                            "FI_RMA and FI_MSG here (see `fi_info -p %s`)", OFIP, o->provider,
                            o->provider);
    if (!strcmp(o->hmem, "on") && !hmem) {
        fi_freeinfo(list);
        return H->error_set(REFIT_ENOTSUP, "%s: hmem: on, but provider '%s' offers no FI_HMEM",
                            OFIP, o->provider);
    }
    struct fi_info *pick = NULL;
    for (struct fi_info *i = list; i && !pick; i = i->next)
        if (domain_matches(i->domain_attr->name, a, o->domain))
            pick = i;
    if (!pick && o->domain) {
        fi_freeinfo(list);
        return H->error_set(REFIT_ENOENT, "%s: provider '%s' has no domain '%s' (transport.ofi.domain)",
                            OFIP, o->provider, o->domain);
    }
    if (!pick) {
        /* A NIC chosen by topology that this provider does not expose
         * (shm has one domain, "shm"): the provider's own choice stands. */
        H->log(1, OFIP, "no %s domain matches the NUMA-local devices; using %s", o->provider,
               list->domain_attr->name);
        pick = list;
    }
    tp->info = fi_dupinfo(pick);
    fi_freeinfo(list);
    if (!tp->info)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    if (!strncmp(ofip_prov_of(tp), "shm", 3) && tp->info->addr_format == FI_ADDR_STR) {
        shm_sweep();
        /* shm names its region after the pid unless told otherwise; a
         * killed process leaves its region behind, and with pids reused
         * the next process of that pid cannot enable its endpoint (EBUSY).
         * A name with the time in it does not collide. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        char name[96];
        int n = snprintf(name, sizeof(name), "refit-%ld-%lx%09lx", (long)getpid(), (long)ts.tv_sec,
                         (long)ts.tv_nsec);
        free(tp->info->src_addr); /* fi_freeinfo frees it with free() */
        tp->info->src_addr = strdup(name);
        tp->info->src_addrlen = tp->info->src_addr ? (size_t)n + 1 : 0;
    }
    tp->hmem = hmem;
    tp->write_flags = delivery ? FI_DELIVERY_COMPLETE : 0;
    tp->mr_mode = tp->info->domain_attr->mr_mode;
    tp->max_msg = tp->info->ep_attr->max_msg_size ? tp->info->ep_attr->max_msg_size : (1ull << 30);
    /* Chunks complete one by one, which is how wait() tells a slow
     * transfer from a stalled one. */
    if (tp->max_msg > tp->max_chunk)
        tp->max_msg = tp->max_chunk;
    H->log(1, OFIP, "%s: provider %s, domain %s, mr_mode %#" PRIx64 "%s%s",
           a->name ? a->name : "rank", ofip_prov_of(tp), tp->info->domain_attr->name, tp->mr_mode,
           hmem ? ", FI_HMEM" : "", delivery ? ", delivery-complete writes" : "");
    return 0;
}

int ofip_open_objects(refit_tp_t *tp, int64_t recv_depth)
{
    int ret = fi_fabric(tp->info->fabric_attr, &tp->fabric, NULL);
    if (ret)
        return ofip_fi_fail(tp, REFIT_EPLUGIN, ret, "fi_fabric", NULL);
    ret = fi_domain(tp->fabric, tp->info, &tp->domain, NULL);
    if (ret)
        return ofip_fi_fail(tp, REFIT_EPLUGIN, ret, "fi_domain", NULL);
    struct fi_cq_attr cqa = {0};
    cqa.format = FI_CQ_FORMAT_DATA;
    cqa.wait_obj = FI_WAIT_NONE;
    cqa.size = 0;
    ret = fi_cq_open(tp->domain, &cqa, &tp->cq, NULL);
    if (ret)
        return ofip_fi_fail(tp, REFIT_EPLUGIN, ret, "fi_cq_open", NULL);
    struct fi_av_attr ava = {0};
    ava.type = FI_AV_TABLE;
    ret = fi_av_open(tp->domain, &ava, &tp->av, NULL);
    if (ret)
        return ofip_fi_fail(tp, REFIT_EPLUGIN, ret, "fi_av_open", NULL);
    ret = fi_endpoint(tp->domain, tp->info, &tp->ep, NULL);
    if (ret)
        return ofip_fi_fail(tp, REFIT_EPLUGIN, ret, "fi_endpoint", NULL);
    ret = fi_ep_bind(tp->ep, &tp->cq->fid, FI_TRANSMIT | FI_RECV);
    if (!ret)
        ret = fi_ep_bind(tp->ep, &tp->av->fid, 0);
    if (ret)
        return ofip_fi_fail(tp, REFIT_EPLUGIN, ret, "fi_ep_bind", NULL);
    ret = fi_enable(tp->ep);
    if (ret)
        return ofip_fi_fail(tp, REFIT_EPLUGIN, ret, "fi_enable", NULL);
    tp->addr_len = sizeof(tp->addr);
    ret = fi_getname(&tp->ep->fid, tp->addr, &tp->addr_len);
    if (ret)
        return ofip_fi_fail(tp, REFIT_EPLUGIN, ret, "fi_getname", NULL);

    tp->n_recv = (size_t)recv_depth;
    tp->recv_ops = H->calloc(tp->n_recv, sizeof(*tp->recv_ops));
    /* A note is the sender's name and its bytes; a hello our address. */
    tp->recv_len = sizeof(struct rtp_ctrl) + (tp->max_notify_len + REFIT_TP_NAME_MAX > OFIP_MAX_ADDR
                                                  ? tp->max_notify_len + REFIT_TP_NAME_MAX
                                                  : OFIP_MAX_ADDR);
    tp->recv_bufs = H->alloc(tp->n_recv * tp->recv_len);
    if (!tp->recv_ops || !tp->recv_bufs)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    for (size_t i = 0; i < tp->n_recv; i++) {
        tp->recv_ops[i].kind = OP_RECV;
        tp->recv_ops[i].buf = tp->recv_bufs + i * tp->recv_len;
        int rc = ofip_post_recv(tp, &tp->recv_ops[i]);
        if (rc)
            return rc;
    }
    return 0;
}
