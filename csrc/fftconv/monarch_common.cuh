// Tensor-core building blocks shared by the Monarch kernel (fftconv_monarch.cu) and the long path's outer passes
// (fftconv_long.cu): fp16 packing, half2 complex products, the m16n8k16 mma, twiddles, and the 16-point DFT as
// constant mma fragments (a 256-point DFT is two such stages with W_256 between them, NOTES.md v8).
#pragma once

#include <cuda_fp16.h>
#include <cstdint>

namespace genoconv {
namespace monarch {

// ---- small helpers ---------------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ float2 unpack2(uint32_t w) {
  return __half22float2(*reinterpret_cast<const __half2*>(&w));
}
__device__ __forceinline__ __half2 as_h2(uint32_t w) { return *reinterpret_cast<const __half2*>(&w); }
__device__ __forceinline__ uint32_t as_u32(__half2 h) { return *reinterpret_cast<const uint32_t*>(&h); }

// Complex products of two packed points at once, (a + i b) * (wr + i wi) and * (wr - i wi), in half2 arithmetic
// (4 instructions for 2 points instead of 8 in fp32; the values are fp16 operands of the next mma anyway). wn = -wi.
__device__ __forceinline__ void cmul_h2(uint32_t& a, uint32_t& b, uint32_t wr, uint32_t wi, uint32_t wn) {
  const __half2 x = as_h2(a), y = as_h2(b);
  a = as_u32(__hfma2(y, as_h2(wn), __hmul2(x, as_h2(wr))));
  b = as_u32(__hfma2(x, as_h2(wi), __hmul2(y, as_h2(wr))));
}
__device__ __forceinline__ void cmulc_h2(uint32_t& a, uint32_t& b, uint32_t wr, uint32_t wi, uint32_t wn) {
  const __half2 x = as_h2(a), y = as_h2(b);
  a = as_u32(__hfma2(y, as_h2(wi), __hmul2(x, as_h2(wr))));
  b = as_u32(__hfma2(x, as_h2(wn), __hmul2(y, as_h2(wr))));
}

// D += A (16x16, row) * B (16x8, col); fp16 operands, fp32 accumulators.
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// exp(-2 pi i j / 2^log_den) for any integer j >= 0: one period, |x| < 2 pi, straight into __sincosf (absolute error
// ~1e-6 there, far below the fp16 operands' 5e-4; centring to |x| <= pi cost three integer ops per twiddle).
__device__ __forceinline__ float2 twid(int j, int log_den) {
  const int m = j & ((1 << log_den) - 1);
  float s, co;
  __sincosf((float)m * (-6.283185307179586f / (float)(1 << log_den)), &s, &co);
  return make_float2(co, s);
}

// Constant fragments of F/16 (F[a][b] = exp(-2 pi i a b / 16)), in fp16. As A operand (16x16) and as the two B
// operand tiles (16x8, columns 8j..8j+7); conjugation swaps the roles of Fi and -Fi.
struct DftFrags {
  uint32_t ar[4], ai[4], an[4];        // A: re, im, -im
  uint32_t br[2][2], bi[2][2], bn[2][2];  // B tile j: {b0, b1}
};

// w16[m] = exp(-2 pi i m / 16) / 16, a 16-entry shared table (filled once per block; lanes with different m hit
// different banks, equal m broadcast).
__device__ __forceinline__ void make_frags(DftFrags& fr, const float2* w16, int g, int t) {
  auto f16entry = [w16](int a, int b) { return w16[(a * b) & 15]; };
#pragma unroll
  for (int reg = 0; reg < 4; ++reg) {
    const int row = g + 8 * (reg & 1), col = 2 * t + 8 * (reg >> 1);
    const float2 e0 = f16entry(row, col), e1 = f16entry(row, col + 1);
    fr.ar[reg] = pack2(e0.x, e1.x);
    fr.ai[reg] = pack2(e0.y, e1.y);
    fr.an[reg] = pack2(-e0.y, -e1.y);
  }
#pragma unroll
  for (int j = 0; j < 2; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int k = 2 * t + 8 * h, col = 8 * j + g;
      const float2 e0 = f16entry(k, col), e1 = f16entry(k + 1, col);
      fr.br[j][h] = pack2(e0.x, e1.x);
      fr.bi[j][h] = pack2(e0.y, e1.y);
      fr.bn[j][h] = pack2(-e0.y, -e1.y);
    }
  }
}

// D = (F/16 or conj) * X with X the complex B operand {xr, xi}: Dr = Fr Xr - Fi Xi (conj: + Fi Xi) ...
template <bool kConj>
__device__ __forceinline__ void cmma_const_a(const DftFrags& fr, uint32_t xr0, uint32_t xr1, uint32_t xi0,
                                             uint32_t xi1, float (&dr)[4], float (&di)[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) dr[i] = di[i] = 0.f;
  mma(dr, fr.ar, xr0, xr1);
  mma(dr, kConj ? fr.ai : fr.an, xi0, xi1);
  mma(di, kConj ? fr.an : fr.ai, xr0, xr1);
  mma(di, fr.ar, xi0, xi1);
}

// D = Y * (F/16 or conj), tile j of the output columns, with Y the complex A operand {yr, yi}.
template <bool kConj>
__device__ __forceinline__ void cmma_const_b(const DftFrags& fr, int j, const uint32_t (&yr)[4],
                                             const uint32_t (&yi)[4], float (&dr)[4], float (&di)[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) dr[i] = di[i] = 0.f;
  mma(dr, yr, fr.br[j][0], fr.br[j][1]);
  mma(dr, yi, kConj ? fr.bi[j][0] : fr.bn[j][0], kConj ? fr.bi[j][1] : fr.bn[j][1]);
  mma(di, yr, kConj ? fr.bn[j][0] : fr.bi[j][0], kConj ? fr.bn[j][1] : fr.bi[j][1]);
  mma(di, yi, fr.br[j][0], fr.br[j][1]);
}

// Accumulator tiles (two 16x8 tiles, re/im) -> the A operand of the next stage (fp16).
__device__ __forceinline__ void acc_to_a(const float (&r)[2][4], const float (&i)[2][4], uint32_t (&ar)[4],
                                         uint32_t (&ai)[4]) {
#pragma unroll
  for (int reg = 0; reg < 4; ++reg) {
    const int tile = reg >> 1, hi = (reg & 1) * 2;
    ar[reg] = pack2(r[tile][hi], r[tile][hi + 1]);
    ai[reg] = pack2(i[tile][hi], i[tile][hi + 1]);
  }
}

// Per-lane W_256^(b' k1') for the accumulator slots of a 256-point stage pair (tile j, c): b' = 8 j + 2 t + (c & 1),
// k1' = g + 8 (c >> 1), packed like the A operand (word reg = tile reg / 2, slots c, c + 1 with c = 2 (reg % 2)) as
// re, im, -im half2 words. Applied between the two radix-16 stages (forward: cmul_h2, inverse: cmulc_h2).
__device__ __forceinline__ void w256_twiddles(int g, int t, uint32_t (&twr)[4], uint32_t (&twi)[4], uint32_t (&twn)[4]) {
#pragma unroll
  for (int reg = 0; reg < 4; ++reg) {
    const int j = reg >> 1, c = 2 * (reg & 1);
    const float2 w0 = twid((8 * j + 2 * t) * (g + 8 * (c >> 1)), 8), w1 = twid((8 * j + 2 * t + 1) * (g + 8 * (c >> 1)), 8);
    twr[reg] = pack2(w0.x, w1.x);
    twi[reg] = pack2(w0.y, w1.y);
    twn[reg] = pack2(-w0.y, -w1.y);
  }
}

// w16[m] = exp(-2 pi i m / 16) / 16 into a 16-entry shared table (threads 0..15; the caller synchronises).
__device__ __forceinline__ void fill_w16(float2* w16, int tid) {
  if (tid < 16) {
    float sn, cs;
    sincospif((float)tid / 8.0f, &sn, &cs);
    w16[tid] = make_float2(cs * 0.0625f, -sn * 0.0625f);
  }
}

}  // namespace monarch
}  // namespace genoconv
