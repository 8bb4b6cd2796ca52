/* delta_portable.c — the delta scan in plain C: RF_DELTA_IMPL_SCALAR, the
 * path every CPU has.  Eight units per bitmap byte with no branch on the
 * data, so that the compiler may vectorize the compare for the baseline
 * target (SSE2, NEON). */
#include "delta_impl.h"

static void scalar_scan(const void *pa, const void *pb, size_t nu, uint8_t *bits, uint8_t *cnt,
                        uint32_t *k, uint32_t *e)
{
    const uint8_t *a = pa, *b = pb;
    memset(bits, 0, (nu + 63) / 64 * 8);
    memset(cnt, 0, (nu + RF_DELTA_BLOCK - 1) / RF_DELTA_BLOCK);
    uint32_t kk = 0, ee = 0;
    for (size_t i0 = 0; i0 < nu; i0 += 8) {
        size_t m = nu - i0 < 8 ? nu - i0 : 8;
        unsigned byte = 0, esc = 0;
        for (size_t j = 0; j < m; j++) {
            uint16_t x = rf_ld16(a + 2 * (i0 + j)), y = rf_ld16(b + 2 * (i0 + j));
            unsigned ne = x != y;
            byte |= ne << j;
            esc += ne & (unsigned)rf_delta_escapes(x, y);
        }
        unsigned c = (unsigned)rf_popcount64(byte);
        bits[i0 / 8] = (uint8_t)byte;
        cnt[i0 / RF_DELTA_BLOCK] = (uint8_t)(cnt[i0 / RF_DELTA_BLOCK] + c);
        kk += c;
        ee += esc;
    }
    *k = kk;
    *e = ee;
}

const struct rf_delta_kernels rf_delta_scalar_kernels = {
    .scan = scalar_scan,
};
