/* delta_mb.cu — the CUDA delta encoder (core/src/cuda/delta.cu, included
 * here for its kernels) on one 512 MiB batch of eight tensors: its time
 * through rf_delta_cuda_encode beside a device copy and a pass reading
 * both versions, where the time goes (the same launches as the encoder,
 * with events between them), the pool's use, and its bytes and chunk
 * lengths against the host codec's (that batch, and a batch of ~30000
 * segments whose offsets' look-back spans many windows of tiles).
 * Build (a CUDA build in build/), from the project root:
 *   nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Icore/src/delta -Icore/src/include \
 *       -Icore/include -o mb tools/dev/gpu/delta_mb.cu build/core/librf_delta.a.p/*.o \
 *       build/core/librf_delta_avx2.a.p/*.o build/core/librf_delta_avx512.a.p/*.o -Lbuild/core -lrefit
 * Run on the GPU machine: ./mb (prints FAIL on any difference, exits 1). */
#include "../../../core/src/cuda/delta.cu"

#include <stdio.h>

#include <algorithm>
#include <vector>

static void ck(cudaError_t e, const char *w)
{
    if (e != cudaSuccess) {
        printf("CUDA %s: %s\n", w, cudaGetErrorString(e));
        exit(1);
    }
}

__device__ __forceinline__ uint64_t hmix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* bf16-like units; a fraction p changed by +-1 ulp, one in 16 of those
 * by a large jump (an escape). */
__global__ void fill(uint16_t *a, uint16_t *b, size_t n, double p, uint64_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t h = hmix(i * 2654435761ull + seed);
        uint16_t v = (uint16_t)(0x3c00 + (h & 0x7ff)) ^ (uint16_t)(h >> 60 << 15);
        a[i] = v;
        double u = (double)(h >> 11 & 0xfffff) / 1048576.0;
        uint16_t w = v;
        if (u < p)
            w = (h >> 40 & 15) == 0 ? (uint16_t)(v ^ 0x4321) : (uint16_t)(v + ((h >> 50) & 1 ? 1 : 0xffff));
        b[i] = w;
    }
}

__global__ void readall(const uint4 *a, const uint4 *b, size_t n, uint32_t *sink)
{
    uint32_t acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint4 x = __ldcs(a + i), y = __ldcs(b + i);
        acc ^= x.x ^ y.y ^ x.z ^ y.w ^ x.y ^ y.x ^ x.w ^ y.z;
    }
    if (acc == 0x12345678)
        sink[0] = acc;
}

/* rf_delta_cuda_encode's launches (after its table and buffers exist),
 * with an event before each and after the last. */
static void enc_parts(rf_delta_cuda *c, void *out, uint32_t *lens, cudaEvent_t *ev)
{
    const seg_table *tb = &c->tab[1];
    const unsigned ns = (unsigned)tb->nseg;
    const enc_out o = {c->meta, c->changed + 4, c->changed + 2, c->spill, c->slot_off,
                       (unsigned long long *)c->changed, (unsigned long long)(c->slots_cap / 16)};
    const size_t tiles_at = tile_words_at(tb->nchunk), nt_off = off_tiles(ns);
    unsigned long long *tiles = (unsigned long long *)(c->changed + tiles_at);
    cudaEventRecord(ev[0], c->stream);
    cudaMemsetAsync(c->changed, 0, (tiles_at + 2 * nt_off) * sizeof(uint32_t), c->stream);
    cudaEventRecord(ev[1], c->stream);
    encode_kernel<kBatch, 4><<<ns, kThreads, 0, c->stream>>>(tb->d_segs, c->slots, o);
    cudaEventRecord(ev[2], c->stream);
    offsets_kernel<<<(unsigned)nt_off, kOffThreads, 0, c->stream>>>(tb->d_segs, c->meta, o.chunk_changed,
                                                                   c->changed + 3, tiles, c->sizes, c->offs, ns,
                                                                   c->d_total);
    cudaEventRecord(ev[3], c->stream);
    pack_kernel<<<blocks_for(ns, kThreads / 32), kThreads, 0, c->stream>>>(tb->d_segs, c->slots, c->meta, c->slot_off,
                                                                           c->sizes, c->offs, (uint8_t *)out, lens, ns);
    cudaEventRecord(ev[4], c->stream);
    spill_kernel<<<ns < kSpillCtas ? ns : kSpillCtas, kThreads, 0, c->stream>>>(tb->d_segs, o.spill_n, c->spill,
                                                                                c->offs, (uint8_t *)out);
    cudaEventRecord(ev[5], c->stream);
    cudaMemcpyAsync(c->h_out, c->d_total, 8, cudaMemcpyDeviceToHost, c->stream);
    cudaEventRecord(ev[6], c->stream);
    ck(cudaGetLastError(), "launch");
}

static int fails;

/* The device's bytes and lengths for spans sp (device a, b) against the
 * host codec's on host copies ha, hb at the same offsets. */
static void check_host(const char *what, const rf_delta_span *sp, size_t nt, const uint8_t *a0, const uint8_t *b0,
                       const std::vector<uint8_t> &ha, const std::vector<uint8_t> &hb, const uint8_t *dout,
                       uint64_t dlen, const uint32_t *dlens)
{
    uint64_t bound = 0, nch = 0;
    for (size_t i = 0; i < nt; i++) {
        bound += rf_delta_tensor_bound(sp[i].nbytes, sp[i].chunk_bytes);
        nch += rf_delta_tensor_chunks(sp[i].nbytes, sp[i].chunk_bytes);
    }
    std::vector<uint8_t> want(bound), got(dlen);
    std::vector<uint32_t> wl(nch), gl(nch);
    size_t woff = 0, ch = 0;
    for (size_t i = 0; i < nt; i++) {
        const size_t at = (const uint8_t *)sp[i].base - a0;
        size_t len = 0;
        if (rf_delta_encode_tensor(ha.data() + at, hb.data() + ((const uint8_t *)sp[i].next - b0), sp[i].nbytes,
                                   sp[i].chunk_bytes, want.data() + woff, bound - woff, wl.data() + ch, &len,
                                   RF_DELTA_IMPL_AUTO, NULL)) {
            printf("FAIL %s: host encode of span %zu\n", what, i);
            fails++;
            return;
        }
        woff += len;
        ch += rf_delta_tensor_chunks(sp[i].nbytes, sp[i].chunk_bytes);
    }
    ck(cudaMemcpy(got.data(), dout, dlen, cudaMemcpyDeviceToHost), "d2h out");
    ck(cudaMemcpy(gl.data(), dlens, nch * 4, cudaMemcpyDeviceToHost), "d2h lens");
    const bool same = dlen == woff && !memcmp(got.data(), want.data(), woff) && gl == wl;
    printf("  %s: %llu delta bytes, %llu chunks: %s the host codec's\n", what, (unsigned long long)dlen,
           (unsigned long long)nch, same ? "SAME as" : "FAIL: differs from");
    fails += !same;
}

static float median(std::vector<float> &t)
{
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

int main()
{
    const size_t N = (size_t)512 << 20; /* bytes per version */
    const size_t units = N / 2;
    uint16_t *a, *b;
    uint8_t *out, *out2, *cp;
    uint32_t *lens, *lens2, *sink;
    ck(cudaMalloc(&a, N), "a");
    ck(cudaMalloc(&b, N), "b");
    ck(cudaMalloc(&cp, N), "cp");
    const size_t cap = N + N / 65536 * 4 + (1 << 20);
    ck(cudaMalloc(&out, cap), "out");
    ck(cudaMalloc(&out2, cap), "out2");
    ck(cudaMalloc(&lens, N / 2048 * 4), "lens");
    ck(cudaMalloc(&lens2, N / 2048 * 4), "lens2");
    ck(cudaMalloc(&sink, 64), "sink");
    cudaStream_t st;
    ck(cudaStreamCreate(&st), "stream");
    rf_delta_cuda *c;
    if (rf_delta_cuda_create(st, &c)) {
        printf("create failed\n");
        return 1;
    }
    cudaEvent_t e0, e1, ev[7];
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < 7; i++)
        cudaEventCreate(&ev[i]);
    std::vector<uint8_t> ha(N), hb(N);
    const double dens[] = {0.0243, 0.157, 0.11, 0.0};
    const uint64_t chunks[] = {131072, 65536};
    for (int ci = 0; ci < 2; ci++)
        for (int di = 0; di < 4; di++) {
            if (ci == 1 && di > 0)
                continue;
            fill<<<1056, 256, 0, st>>>(a, b, units, dens[di], 77 + di);
            ck(cudaStreamSynchronize(st), "fill");
            const size_t nt = 8;
            rf_delta_span sp[nt];
            for (size_t i = 0; i < nt; i++)
                sp[i] = rf_delta_span{"t", (uint8_t *)a + i * (N / nt), (uint8_t *)b + i * (N / nt), N / nt, chunks[ci]};
            std::vector<float> t;
            float ms;
            for (int r = 0; r < 12; r++) {
                cudaEventRecord(e0, st);
                cudaMemcpyAsync(cp, b, N, cudaMemcpyDeviceToDevice, st);
                cudaEventRecord(e1, st);
                cudaEventSynchronize(e1);
                cudaEventElapsedTime(&ms, e0, e1);
                if (r >= 2)
                    t.push_back(ms);
            }
            float m = median(t);
            printf("chunk %llu dens %.4f: copy %.4f ms = %.0f GB/s", (unsigned long long)chunks[ci], dens[di], m,
                   N / m / 1e6);
            t.clear();
            for (int r = 0; r < 12; r++) {
                cudaEventRecord(e0, st);
                readall<<<132 * 8, 256, 0, st>>>((const uint4 *)a, (const uint4 *)b, N / 16, sink);
                cudaEventRecord(e1, st);
                cudaEventSynchronize(e1);
                cudaEventElapsedTime(&ms, e0, e1);
                if (r >= 2)
                    t.push_back(ms);
            }
            m = median(t);
            printf(", read-both %.4f ms = %.0f GB/s (GB/s of one version)\n", m, N / m / 1e6);
            /* the encoder as the library runs it */
            t.clear();
            uint64_t len = 0;
            for (int r = 0; r < 12; r++) {
                cudaEventRecord(e0, st);
                if (rf_delta_cuda_encode(c, sp, nt, out, cap, lens, &len)) {
                    printf("FAIL encode\n");
                    return 1;
                }
                cudaEventRecord(e1, st);
                if (rf_delta_cuda_sync(c)) {
                    printf("FAIL sync\n");
                    return 1;
                }
                cudaEventElapsedTime(&ms, e0, e1);
                if (r >= 2)
                    t.push_back(ms);
            }
            m = median(t);
            float mn = t[0];
            printf("  encode %.4f ms (min %.4f) = %.0f GB/s, delta %.4f of full\n", m, mn, N / m / 1e6, (double)len / N);
            /* where the time goes */
            std::vector<float> part[6];
            for (int r = 0; r < 12; r++) {
                enc_parts(c, out2, lens2, ev);
                cudaEventSynchronize(ev[6]);
                for (int k = 0; k < 6; k++) {
                    cudaEventElapsedTime(&ms, ev[k], ev[k + 1]);
                    if (r >= 2)
                        part[k].push_back(ms);
                }
            }
            const char *pn[] = {"memset", "encode", "offsets", "pack", "spill", "d2h"};
            printf("  breakdown (median ms):");
            float sum = 0;
            for (int k = 0; k < 6; k++) {
                float pm = median(part[k]);
                sum += pm;
                printf(" %s %.4f", pn[k], pm);
            }
            uint32_t cnt[4] = {0, 0, 0, 0};
            cudaMemcpy(cnt, c->changed, 16, cudaMemcpyDeviceToHost);
            printf(" (sum %.4f = %.0f GB/s); pool used %.1f%% spilled %u\n", sum, N / sum / 1e6,
                   100.0 * ((uint64_t)cnt[1] << 32 | cnt[0]) * 16 / c->slots_cap, cnt[2]);
            ck(cudaMemcpy(ha.data(), a, N, cudaMemcpyDeviceToHost), "d2h a");
            ck(cudaMemcpy(hb.data(), b, N, cudaMemcpyDeviceToHost), "d2h b");
            check_host("512 MiB batch", sp, nt, (const uint8_t *)a, (const uint8_t *)b, ha, hb, out, len, lens);
            {
                std::vector<uint8_t> x(len), y(len);
                ck(cudaMemcpy(x.data(), out, len, cudaMemcpyDeviceToHost), "d2h out");
                ck(cudaMemcpy(y.data(), out2, len, cudaMemcpyDeviceToHost), "d2h out2");
                const bool same = len == c->h_out[0] && x == y;
                printf("  breakdown's launches: %s\n", same ? "the same bytes" : "FAIL: other bytes");
                fails += !same;
            }
        }
    /* ~3400 tensors of up to 150 KB: ~30000 segments, ~130 tiles of the offsets,
     * whose look-back crosses windows of 32 */
    {
        fill<<<1056, 256, 0, st>>>(a, b, units, 0.02, 4242);
        ck(cudaStreamSynchronize(st), "fill");
        std::vector<rf_delta_span> sp;
        uint64_t s = 0x9e3779b97f4a7c15ull, at = 0;
        const uint64_t cbs[] = {1024, 65536, 131072, 3 * 65536 + 10};
        while (at < N / 4) {
            s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
            const uint64_t r = s * 0x2545f4914f6cdd1dull;
            const uint64_t n = 2 + r % 150000, cb = cbs[(r >> 40) % 4];
            sp.push_back(rf_delta_span{"t", (uint8_t *)a + at, (uint8_t *)b + at, n, cb});
            at += n + (r >> 50) % 3; /* some odd starts */
        }
        uint64_t len = 0, bound = 0;
        for (auto &x : sp)
            bound += rf_delta_tensor_bound(x.nbytes, x.chunk_bytes);
        if (bound > cap || rf_delta_cuda_encode(c, sp.data(), sp.size(), out, cap, lens, &len) || rf_delta_cuda_sync(c)) {
            printf("FAIL small-tensor encode (bound %llu)\n", (unsigned long long)bound);
            return 1;
        }
        printf("small tensors: %zu spans, %zu segments, %zu offset tiles\n", sp.size(), c->tab[1].nseg,
               off_tiles(c->tab[1].nseg));
        ck(cudaMemcpy(ha.data(), a, N, cudaMemcpyDeviceToHost), "d2h a");
        ck(cudaMemcpy(hb.data(), b, N, cudaMemcpyDeviceToHost), "d2h b");
        check_host("small tensors", sp.data(), sp.size(), (const uint8_t *)a, (const uint8_t *)b, ha, hb, out, len,
                   lens);
    }
    rf_delta_cuda_destroy(c);
    printf("%s (%d failures)\n", fails ? "FAILED" : "PASSED", fails);
    return fails != 0;
}
