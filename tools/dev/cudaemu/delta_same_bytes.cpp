/* delta_same_bytes.cpp — test_same_bytes of tests/delta/test_delta_cuda.c
 * (the same batch, densities and change pattern) against delta.cu's
 * kernels run by emu.h: device bytes and chunk lengths == the host
 * codec's, nothing past the bound, apply gives the next version; prints
 * the record pool's use and the spilled segments.  Argument: the density
 * indices to run (e.g. 25), default all. */
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include "delta_emu.cpp"
static uint64_t rnd(uint64_t *s) { *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27; return *s * 0x2545f4914f6cdd1dull; }
#define NT 9
static const uint64_t t_bytes[NT] = {2, 4097, 64 * 1024, 1000 * 1536 + 512, 3 * 65536 + 10, 300000, 2048 * 1024, 131, 65536 * 2};
static const uint64_t t_chunk[NT] = {2, 1024, 65536, 32 * 1536, 3 * 65536 + 10, 150000, 65536, 64, 65536 * 2};
static const uint64_t t_skew[NT] = {0, 2, 0, 6, 0, 1, 0, 0, 0};
static int fails = 0;
#define CHECK(c, ...) do { if (!(c)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); fails++; } } while (0)
int main(int argc, char **argv)
{
    const double dens[] = {0, 1e-4, 0.01, 0.05, 0.2, 0.7, 1.0};
    for (int di = 0; di < 7; di++) {
        if (argc > 1 && !strchr(argv[1], '0' + di))
            continue;
        uint64_t s = 0xc0da + (uint64_t)di;
        uint64_t off[NT], o = 0, bound = 0, nchunks = 0;
        for (int i = 0; i < NT; i++) {
            o = (o + 255) / 256 * 256 + t_skew[i];
            off[i] = o; o += t_bytes[i];
            bound += rf_delta_tensor_bound(t_bytes[i], t_chunk[i]);
            nchunks += rf_delta_tensor_chunks(t_bytes[i], t_chunk[i]);
        }
        uint64_t total = o;
        uint8_t *a = (uint8_t *)aligned_alloc(256, (total + 255) / 256 * 256), *b = (uint8_t *)aligned_alloc(256, (total + 255) / 256 * 256);
        for (uint64_t i = 0; i < total; i++) a[i] = (uint8_t)rnd(&s);
        memcpy(b, a, total);
        for (uint64_t i = 0; i + 1 < total; i += 2)
            if ((double)(rnd(&s) % 1000000) < dens[di] * 1e6) {
                uint64_t r = rnd(&s);
                unsigned v = a[i] | a[i + 1] << 8;
                v = r % 16 ? v + (r & 32 ? 1 : 0xffff) : (unsigned)(r >> 40);
                b[i] = (uint8_t)v;
                b[i + 1] = (uint8_t)((v >> 8) ^ (v == (unsigned)(a[i] | a[i + 1] << 8)));
            }
        b[total - 1] ^= 0x10;
        uint8_t *da = (uint8_t *)aligned_alloc(256, (total + 255) / 256 * 256);
        memcpy(da, a, total);
        rf_delta_span sp[NT];
        for (int i = 0; i < NT; i++) sp[i] = rf_delta_span{"t", da + off[i], b + off[i], t_bytes[i], t_chunk[i]};
        uint8_t *want = (uint8_t *)malloc(bound), *got = (uint8_t *)malloc(bound + 4096);
        uint32_t *wl = (uint32_t *)malloc(nchunks * 4), *gl = (uint32_t *)malloc(nchunks * 4);
        size_t woff = 0, ch = 0;
        for (int i = 0; i < NT; i++) {
            size_t len;
            int rc = rf_delta_encode_tensor(a + off[i], b + off[i], t_bytes[i], t_chunk[i], want + woff, bound - woff, wl + ch, &len, RF_DELTA_IMPL_AUTO, NULL);
            CHECK(rc == 0, "host encode");
            woff += len; ch += rf_delta_tensor_chunks(t_bytes[i], t_chunk[i]);
        }
        rf_delta_cuda *c;
        CHECK(rf_delta_cuda_create(NULL, &c) == 0, "create");
        for (int rep = 0; rep < 2; rep++) {
            uint64_t glen = 0;
            memset(got, 0xa5, bound + 4096);
            memset(gl, 0x5a, nchunks * 4);
            CHECK(rf_delta_cuda_encode(c, sp, NT, got, bound, gl, &glen) == 0, "encode");
            CHECK(rf_delta_cuda_sync(c) == 0, "sync");
            CHECK(glen == woff, "dens %g: len %llu want %zu", dens[di], (unsigned long long)glen, woff);
            CHECK(!memcmp(gl, wl, nchunks * 4), "dens %g: lens differ", dens[di]);
            size_t first = 0;
            while (first < woff && got[first] == want[first]) first++;
            CHECK(!memcmp(got, want, woff), "dens %g: bytes differ at %zu", dens[di], first);
            int guard = 1;
            for (size_t i = bound; i < bound + 4096; i++) guard &= got[i] == 0xa5;
            CHECK(guard, "dens %g: past the bound", dens[di]);
        }
        uint32_t cnt[4];
        memcpy(cnt, c->changed, 16);
        printf("dens %g: %zu delta bytes (%.3f of %llu), pool used %llu of %zu, spilled %u\n", dens[di], woff, (double)woff / total,
               (unsigned long long)total, (unsigned long long)((uint64_t)cnt[1] << 32 | cnt[0]) * 16, c->slots_cap, cnt[2]);
        CHECK(rf_delta_cuda_apply(c, sp, NT, got, woff, gl) == 0, "apply");
        CHECK(rf_delta_cuda_sync(c) == 0, "apply sync");
        for (int i = 0; i < NT; i++) CHECK(!memcmp(da + off[i], b + off[i], t_bytes[i]), "apply tensor %d", i);
        rf_delta_cuda_destroy(c);
        free(a); free(b); free(da); free(want); free(got); free(wl); free(gl);
    }
    printf("%s (%d failures)\n", fails ? "FAILED" : "PASSED", fails);
    return fails != 0;
}
