/* arena.c — chunks of anonymous memory, bump-allocated (arena.h says why). */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "arena.h"

#define HUGE_SZ ((size_t)2 << 20)
#define CHUNK_SZ ((size_t)16 << 20)

struct chunk {
    struct chunk *next;
    void *map;      /* what mmap returned, map_len bytes */
    size_t map_len;
    char *base;     /* 2 MiB aligned inside the mapping */
    size_t size, used;
};

struct rf_arena {
    struct chunk *head, *cur; /* chunks in mapping order; the one allocating */
};

struct rf_arena *rf_arena_create(void)
{
    return calloc(1, sizeof(struct rf_arena));
}

void rf_arena_destroy(struct rf_arena *a)
{
    if (!a)
        return;
    for (struct chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        munmap(c->map, c->map_len);
        free(c);
    }
    free(a);
}

/* A chunk of at least n bytes, mapped with a 2 MiB margin so its base can
 * be aligned (huge pages need aligned 2 MiB extents). */
static struct chunk *chunk_map(size_t n)
{
    size_t size = n <= CHUNK_SZ ? CHUNK_SZ : (n + HUGE_SZ - 1) / HUGE_SZ * HUGE_SZ;
    if (size < n || size > SIZE_MAX - HUGE_SZ)
        return NULL;
    struct chunk *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->map_len = size + HUGE_SZ;
    c->map = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c->map == MAP_FAILED) {
        free(c);
        return NULL;
    }
    c->base = (char *)(((uintptr_t)c->map + HUGE_SZ - 1) & ~(uintptr_t)(HUGE_SZ - 1));
    c->size = size;
#ifdef MADV_HUGEPAGE
    (void)madvise(c->base, size, MADV_HUGEPAGE); /* advice only: plain pages where refused */
#endif
    return c;
}

void *rf_arena_alloc(struct rf_arena *a, size_t n)
{
    n = n ? (n + 15) & ~(size_t)15 : 16;
    if (!n)
        return NULL;
    /* the current chunk, else the next kept one that fits (after a reset),
     * else a new one at the end */
    struct chunk *c = a->cur;
    while (c && c->size - c->used < n)
        c = c->next;
    if (!c) {
        if (!(c = chunk_map(n)))
            return NULL;
        struct chunk **tail = &a->head;
        while (*tail)
            tail = &(*tail)->next;
        *tail = c;
    }
    a->cur = c;
    void *p = c->base + c->used;
    c->used += n;
    return p;
}

void rf_arena_reset(struct rf_arena *a)
{
    if (!a)
        return;
    for (struct chunk *c = a->head; c; c = c->next)
        c->used = 0;
    a->cur = a->head;
}

size_t rf_arena_used(const struct rf_arena *a)
{
    size_t n = 0;
    for (const struct chunk *c = a ? a->head : NULL; c; c = c->next)
        n += c->used;
    return n;
}
