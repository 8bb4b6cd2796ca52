/* tfix.h — the fixture the model tests share: a plugin loader and a fresh
 * temporary directory per test (t_setup / t_teardown, registered as a Check
 * checked fixture), and a checkpoint directory opened three ways (struct
 * ck): as a model, as its HF view, and as the plain safetensors checkpoint
 * the expectations are built from.  Header-only, like tutil.h: each test
 * program is one translation unit. */
#ifndef REFIT_TEST_MODEL_TFIX_H
#define REFIT_TEST_MODEL_TFIX_H

#include "tutil.h"

static refit_loader_t *loader;
static char *tmp;

static inline void t_setup(void)
{
    ck_assert_int_eq(refit_loader_create(NULL, &loader), 0);
    tmp = t_mkdtemp();
}

static inline void t_teardown(void)
{
    t_rmtree(tmp);
    free(tmp);
    refit_loader_destroy(loader);
}

struct ck {
    char dir[4096];
    refit_model_t *m;
    refit_hf_view_t *v;
    refit_st_checkpoint_t *st;
};

/* Opens the checkpoint the caller wrote into k->dir; o: the HF view's
 * options (NULL: its defaults).  ck_close releases what this opened. */
static inline void ck_open_dir(struct ck *k, const struct refit_convert_opts *o)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/config.json", k->dir);
    ck_assert_msg(refit_model_open(loader, NULL, p, &k->m) == 0, "%s", refit_error_message());
    ck_assert_msg(refit_hf_view_open(k->m, k->dir, o, &k->v) == 0, "%s", refit_error_message());
    ck_assert_int_eq(refit_st_checkpoint_open(k->dir, &k->st), 0);
}

static inline void ck_close(struct ck *k)
{
    refit_st_checkpoint_close(k->st);
    refit_hf_view_close(k->v);
    refit_model_close(k->m);
}

#endif
