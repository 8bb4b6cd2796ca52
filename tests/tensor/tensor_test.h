/* tensor_test.h — helpers the tensor tests share: fixture lookup, scratch
 * directories, a small deterministic PRNG. */
#ifndef REFIT_TENSOR_TEST_H
#define REFIT_TENSOR_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* $REFIT_SOURCE_ROOT/../shared/fixtures/<rel>, or NULL when that does not
 * exist (a user's clone has no ../shared): the caller exits 77. */
static inline char *tt_fixture(const char *rel)
{
    const char *root = getenv("REFIT_SOURCE_ROOT");
    char *p = NULL;
    struct stat st;
    if (!root || asprintf(&p, "%s/../shared/fixtures/%s", root, rel) < 0)
        return NULL;
    if (stat(p, &st) < 0) {
        free(p);
        return NULL;
    }
    return p;
}

/* A fresh directory under $TMPDIR (or /tmp); the caller removes it. */
static inline char *tt_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    char *p = NULL;
    if (asprintf(&p, "%s/refit-tensor-XXXXXX", t && *t ? t : "/tmp") < 0 || !mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

static inline void tt_rmdir(char *dir)
{
    char *cmd = NULL;
    if (dir && asprintf(&cmd, "rm -rf '%s'", dir) >= 0)
        (void)!system(cmd);
    free(cmd);
    free(dir);
}

/* xorshift64*: deterministic, so a failure reproduces. */
static inline uint64_t tt_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static inline double tt_unif(uint64_t *s)
{
    return (double)(tt_rand(s) >> 11) / 9007199254740992.0;
}

static inline char *tt_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    *len = 0;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

#endif
