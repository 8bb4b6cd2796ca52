/* th_delta.h — a torn delta for the engine's delta tests (delta-engine, push-delta, delta-devrcv).
 * Include after harness.h and the engine's delta_eng.h (its include path differs per test directory). */
#ifndef REFIT_TESTS_TH_DELTA_H
#define REFIT_TESTS_TH_DELTA_H

/* Rewrites source `src`'s delta record of v with the lengths of pairs of changed chunks of one
 * tensor swapped (the last, maybe short, chunk left out): still well-formed, but every moved
 * delta is aimed at a chunk it was not made for, so a receiver must refuse it and pull whole. */
static inline void th_delta_tear(refit_context_t *ctx, uint64_t v, const char *src)
{
    refit_loader_t *ld;
    refit_store_t *st;
    ck_assert_int_eq(refit_loader_create((refit_config_t *)refit_context_config(ctx), &ld), 0);
    ck_assert_int_eq(refit_store_open((refit_config_t *)refit_context_config(ctx), ld, NULL, &st), 0);
    char key[REFIT_STORE_MAX_KEY + 1];
    ck_assert_int_eq(rf_key_delta(key, v, src), 0);
    void *blob = NULL;
    size_t len = 0;
    ck_assert_int_eq(refit_store_get(st, key, &blob, &len), 0);
    struct refit_source_record *rec = NULL;
    ck_assert_int_eq(refit_record_fetch(st, src, &rec), 0);
    refit_catalog_t *cat = NULL;
    ck_assert_int_eq(refit_catalog_fetch(st, &rec->catalog, &cat), 0);
    struct rf_delta_rec *d = NULL;
    ck_assert_msg(rf_delta_rec_decode(blob, len, key, cat, &d) == 0, "%s", refit_error_message());
    size_t moved = 0;
    for (size_t t = 0; t < cat->n_tensors; t++) {
        size_t end = t + 1 < cat->n_tensors ? d->first[t + 1] : d->n_index;
        for (size_t k = d->first[t]; k + 2 < end; k += 2)
            if (d->len[k] && d->len[k + 1] && d->len[k] != RF_DELTA_ABSENT && d->len[k + 1] != RF_DELTA_ABSENT &&
                d->len[k] != d->len[k + 1]) {
                uint32_t x = d->len[k];
                d->len[k] = d->len[k + 1];
                d->len[k + 1] = x;
                moved++;
            }
    }
    ck_assert_uint_gt(moved, 0);
    void *out = NULL;
    size_t olen = 0;
    ck_assert_int_eq(rf_delta_rec_encode(d, d->len, d->n_index, &out, &olen), 0);
    ck_assert_int_eq(refit_store_put(st, key, out, olen), 0);
    free(out);
    rf_delta_rec_free(d);
    refit_catalog_destroy(cat);
    free(rec);
    free(blob);
    refit_store_close(st);
    refit_loader_destroy(ld);
}

#endif
