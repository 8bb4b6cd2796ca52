"""float8_e4m3fn and block-FP8 arithmetic in pure Python, as PyTorch computes
it, for the stand-ins' FP8 post-load transforms.

- ``e4m3_decode`` / ``e4m3_encode``: torch's float8_e4m3fn (c10
  Float8_e4m3fn): exponent bias 7, no infinities, 0x7f/0xff NaN; the cast
  from float32 rounds to nearest even, 464 (the tie between 448 and NaN)
  rounds to 448, larger magnitudes become NaN.
- ``per_block_cast_to_fp8``: vllm/utils/deep_gemm.py per_block_cast_to_fp8
  (commit 779d1fc1): zero-pad to the block grid, amax per block clamped to
  1e-4, scale = amax / 448, ceiled to a power of two with ``use_ue8m0``
  (torch.pow(2, ceil(log2(sf)))), q = e4m3(x * (1 / scale)); every step one
  float32 operation.
- ``block_dequant``: w.to(float32) * scale repeated over its block (as
  requant_weight_ue8m0_inplace does before requantizing).
"""

import bisect
import math
import struct


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _dec(c):
    s = -1.0 if c & 0x80 else 1.0
    e, m = (c >> 3) & 0xF, c & 7
    if e == 15 and m == 7:
        return float("nan")
    if e == 0:
        return s * m * 2.0 ** -9
    return s * (1 + m / 8.0) * 2.0 ** (e - 7)


DECODE = [_dec(c) for c in range(256)]
_POS = DECODE[:127]  # 0x00 .. 0x7e, increasing


def e4m3_decode(c):
    return DECODE[c]


def e4m3_encode(v):
    if v != v:
        return 0x7F
    sign = 0x80 if math.copysign(1.0, v) < 0 else 0
    x = abs(v)
    if x > 464.0:
        return sign | 0x7F
    if x >= 448.0:
        return sign | 0x7E
    i = bisect.bisect_left(_POS, x)
    if _POS[i] == x:
        return sign | i
    lo, hi = i - 1, i
    dl, dh = x - _POS[lo], _POS[hi] - x
    if dl < dh or (dl == dh and lo % 2 == 0):
        return sign | lo
    return sign | hi


def _ceil_pow2(sf):
    # torch.pow(2.0, torch.ceil(torch.log2(sf.abs()))) in float32
    return f32(2.0 ** math.ceil(f32(math.log2(abs(sf)))))


def per_block_cast_to_fp8(x, m, n, block=(128, 128), use_ue8m0=False):
    """x: m*n float32 values, row-major.  Returns (codes, scales) with
    scales ceil(m/bm) x ceil(n/bn), row-major."""
    bm, bn = block
    rb, cb = -(-m // bm), -(-n // bn)
    codes = [0] * (m * n)
    scales = [0.0] * (rb * cb)
    for bi in range(rb):
        r0, r1 = bi * bm, min(m, bi * bm + bm)
        for bj in range(cb):
            c0, c1 = bj * bn, min(n, bj * bn + bn)
            amax = 0.0
            for r in range(r0, r1):
                row = x[r * n + c0:r * n + c1]
                amax = max(amax, max(abs(v) for v in row))
            amax = max(amax, f32(1e-4))
            sf = f32(amax / 448.0)
            if use_ue8m0:
                sf = _ceil_pow2(sf)
            inv = f32(1.0 / sf)
            for r in range(r0, r1):
                base = r * n
                for c in range(c0, c1):
                    codes[base + c] = e4m3_encode(f32(x[base + c] * inv))
            scales[bi * cb + bj] = sf
    return codes, scales


def block_dequant(codes, scales, m, n, block=(128, 128)):
    bm, bn = block
    cb = -(-n // bn)
    out = [0.0] * (m * n)
    for r in range(m):
        srow = (r // bm) * cb
        base = r * n
        for c in range(n):
            out[base + c] = f32(DECODE[codes[base + c]] * scales[srow + c // bn])
    return out
