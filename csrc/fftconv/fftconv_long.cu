// Long path (real FFT sizes N = 2^16 .. 2^23): the FFT convolution of a real row as a four-step transform N = R N'
// whose inner transforms run on the tensor-core kernel. With n = N' n1 + n2 and k = k1 + R k2:
//   pass 1 (long_fwd):  read the row once (gated), R-point DFTs down each column n2 (two real columns as one complex
//                       one), twiddle W_N^(n2 k1), 1/R; write rows k1 = 0 .. R/2 of the fp16 workspace as two planes
//                       (re, im): a real row's rows R - k1 are the conjugates of rows k1 (times a phase), so they are
//                       neither stored nor transformed;
//   pass 2 (inner):     per row k1, the circular N'-point convolution with the filter whose spectrum is K[k1 + R k2]
//                       (the tensor-core kernel with kCirc, in place on the workspace);
//   pass 3 (long_inv):  conj W_N^(n2 k1), the Hermitian completion k1 -> R - k1, inverse R-point DFTs down each column
//                       (two real columns per complex one), post-gate, written once.
// Between passes the data is fp16 (4 B per complex point, N/2 points per row): 2 + 4 | 4 + 4 | 4 + 2 bytes per two
// samples, against fp32 words and scalar inner transforms in fftconv_multipass.cu (NOTES.md v11, v12).
// Which R (genoconv/ops/cuda.py _long_inner_log): 256 for N = 2^17 .. 2^22 (inner N' = 2^9 .. 2^14) and 512 for 2^23,
// both with the outer DFTs on tensor cores; N = 2^16 takes R = 16 around N' = 2^12 with the scalar outer passes.
#include <type_traits>

#include "params.h"
#include "fft_common.cuh"
#include "monarch_common.cuh"

namespace genoconv {
namespace {

constexpr int kLongThreads = 256;

// exp(-2 pi i j / 2^log_n), j reduced and centred so the fast sincos sees |x| <= pi (abs error ~5e-7 << fp16's 5e-4).
__device__ __forceinline__ float2 twiddle_n(int64_t j, int log_n) {
  const int64_t n = int64_t(1) << log_n;
  int64_t m = j & (n - 1);
  if (m > n / 2) m -= n;
  float s, c;
  __sincosf((float)m * (-6.283185307179586f / (float)n), &s, &c);
  return make_float2(c, s);
}

// What an outer block works on: row (b, channel c) (blockIdx.x, channel-major), and the columns [c0, c0 + 2 half)
// (blockIdx.y), column c0 + f paired with c0 + half + f as the real and imaginary parts of one complex column.
struct LongBlock {
  int64_t c, b;
  int half, c0, log_inner, rh;
};
__device__ __forceinline__ LongBlock long_block(const LongParams& p, int log_half) {
  LongBlock k;
  k.c = (int64_t)blockIdx.x / p.batch;
  k.b = (int64_t)blockIdx.x - k.c * p.batch;
  k.half = 1 << log_half;
  k.c0 = (int)blockIdx.y << (log_half + 1);
  k.log_inner = p.log_n - p.log_r;
  k.rh = (1 << (p.log_r - 1)) + 1;
  return k;
}

// Workspace offset of plane 0 of inner row k1 of this block's row.
__device__ __forceinline__ int64_t work_row(const LongParams& p, const LongBlock& k, int k1) {
  return ((k.c * k.rh + k1) * 2 * p.batch + 2 * k.b) << k.log_inner;
}

template <typename T, bool kPre>
__global__ void __launch_bounds__(kLongThreads) long_fwd_kernel(const LongParams p, const int log_half) {
  extern __shared__ float2 smem[];
  const LongBlock k = long_block(p, log_half);
  const T* x = static_cast<const T*>(p.u) + k.b * p.u_sb + k.c * p.u_sh;
  const T* g = kPre ? static_cast<const T*>(p.pregate) + k.b * p.pre_sb + k.c * p.pre_sh : nullptr;
  const float sc = p.in_scale[k.c * p.batch + k.b];  // 0: a row with inf/NaN (pass 3 writes NaN)
  auto load = [&](int64_t n) {
    const int64_t t = p.src_a + n;
    if (sc == 0.f || t >= p.seq_len) return 0.f;
    const float v = to_float(x[t]);
    return (kPre ? v * to_float(g[t]) : v) * sc;
  };
  const int count = 1 << (p.log_r + log_half);
  for (int idx = threadIdx.x; idx < count; idx += blockDim.x) {
    const int f = idx & (k.half - 1), n1 = idx >> log_half;
    const int64_t n = ((int64_t)n1 << k.log_inner) + k.c0 + f;
    smem[sw(idx)] = make_float2(load(n), load(n + k.half));
  }
  const SmemFFT gg{smem, p.log_r, log_half, 0, log_half};
  fft_forward(gg, p.twiddle, p.log_r);

  // Z = DFT(a + i b): A[k1] = (Z[k1] + conj Z[R - k1]) / 2, B[k1] = -i (Z[k1] - conj Z[R - k1]) / 2, k1 <= R/2.
  const int rmask = (1 << p.log_r) - 1;
  const float scale = 0.5f / (float)(1 << p.log_r);
  __half* w = static_cast<__half*>(p.work);
  const int64_t plane = (int64_t)1 << k.log_inner;
  for (int idx = threadIdx.x; idx < (k.rh << log_half); idx += blockDim.x) {
    const int f = idx & (k.half - 1), k1 = idx >> log_half;
    const float2 zk = smem[sw((bitrev(k1, p.log_r) << log_half) + f)];
    const float2 zm = smem[sw((bitrev((1 << p.log_r) - k1 & rmask, p.log_r) << log_half) + f)];
    const float2 a = make_float2(zk.x + zm.x, zk.y - zm.y), d = make_float2(zk.x - zm.x, zk.y + zm.y);
    const float2 bv = make_float2(d.y, -d.x);
    const int n2a = k.c0 + f, n2b = n2a + k.half;
    const float2 va = cmul(a, twiddle_n((int64_t)n2a * k1, p.log_n));
    const float2 vb = cmul(bv, twiddle_n((int64_t)n2b * k1, p.log_n));
    const int64_t o = work_row(p, k, k1);
    w[o + n2a] = __float2half_rn(va.x * scale);
    w[o + plane + n2a] = __float2half_rn(va.y * scale);
    w[o + n2b] = __float2half_rn(vb.x * scale);
    w[o + plane + n2b] = __float2half_rn(vb.y * scale);
  }
}

template <typename T, bool kPost>
__global__ void __launch_bounds__(kLongThreads) long_inv_kernel(const LongParams p, const int log_half) {
  extern __shared__ float2 smem[];
  const LongBlock k = long_block(p, log_half);
  const __half* w = static_cast<const __half*>(p.work);
  const int64_t plane = (int64_t)1 << k.log_inner;
  const int r = 1 << p.log_r;
  for (int idx = threadIdx.x; idx < (k.rh << log_half); idx += blockDim.x) {
    const int f = idx & (k.half - 1), k1 = idx >> log_half;
    const int n2a = k.c0 + f, n2b = n2a + k.half;
    const int64_t o = work_row(p, k, k1);
    const float2 ta = cmulc(make_float2(__half2float(w[o + n2a]), __half2float(w[o + plane + n2a])),
                            twiddle_n((int64_t)n2a * k1, p.log_n));
    const float2 tb = cmulc(make_float2(__half2float(w[o + n2b]), __half2float(w[o + plane + n2b])),
                            twiddle_n((int64_t)n2b * k1, p.log_n));
    // Z = Ta + i Tb at k1, and (both spectra Hermitian) conj Ta + i conj Tb at R - k1.
    smem[sw((bitrev(k1, p.log_r) << log_half) + f)] = make_float2(ta.x - tb.y, ta.y + tb.x);
    if (k1 != 0 && 2 * k1 != r)
      smem[sw((bitrev(r - k1, p.log_r) << log_half) + f)] = make_float2(ta.x + tb.y, tb.x - ta.y);
  }
  const SmemFFT gg{smem, p.log_r, log_half, 0, log_half};
  fft_inverse(gg, p.twiddle, p.log_r);

  T* y = static_cast<T*>(p.y) + k.b * p.y_sb + k.c * p.y_sh;
  const T* post = kPost ? static_cast<const T*>(p.postgate) + k.b * p.post_sb + k.c * p.post_sh : nullptr;
  const float sc = p.in_scale[k.c * p.batch + k.b];
  const float osc = sc != 0.f ? p.out_scale[k.c] / sc : __int_as_float(0x7fc00000);  // inf/NaN row: NaN
  auto store = [&](int64_t n, float v) {
    const int64_t t = p.src_a + n;
    if (t < p.src_o || t >= p.seq_len) return;
    v *= osc;
    if (kPost) v *= to_float(post[t]);
    y[t] = from_float<T>(v);
  };
  const int count = 1 << (p.log_r + log_half);
  for (int idx = threadIdx.x; idx < count; idx += blockDim.x) {
    const int f = idx & (k.half - 1), n1 = idx >> log_half;
    const int64_t n = ((int64_t)n1 << k.log_inner) + k.c0 + f;
    const float2 v = smem[sw(idx)];
    store(n, v.x);
    store(n + k.half, v.y);
  }
}

// ---- R = 256 and 512: the outer DFTs on tensor cores ------------------------------------------------------------
// A block takes 64 columns as 32 complex ones (column 2 p + i column 2 p + 1: adjacent samples, so global memory is
// read and written as 32-bit pairs) and a warp takes one at a time: the 256-point DFT down it is the tensor-core
// kernel's row stage (two radix-16 mma stages with W_256 between them, each stage F/16, so the transform comes out
// divided by 256 = R), NOTES.md v11. Shared memory per complex column: 256 words, as (q, q + 16) sample pairs for
// the mma operands (re and im planes), then in place as bins (half2); rotated by the column so that threads walking
// the columns hit different banks.
// R = 512 (N = 2^23: 4M rows, the DMD gene with a full-length filter) adds one radix-2 step in fp32 around the same
// 256-point units: forward (decimation in frequency) a = (z[m] + z[m + 256]) / 2 and b = (z[m] - z[m + 256]) W_512^m / 2
// go to two units whose DFTs are the even and odd bins; inverse E + W_512^-m O and E - W_512^-m O from the even and
// odd units' inverses. A block then takes 16 complex columns (32 columns) in the same 32 units.
constexpr int kTcPairs = 32, kTcWarps = 8;  // 64 columns per block

__device__ __forceinline__ int tc_unit(int q) { return ((q >> 5) << 4) | (q & 15); }  // word of the pair (q, q + 16)
__device__ __forceinline__ int tc_word(int p, int plane, int w) { return p * 256 + plane * 128 + ((w + p) & 127); }
__device__ __forceinline__ int tc_bin(int p, int k) { return p * 256 + ((k + p) & 255); }

// Twiddles W_N^(n2 k1) of the items a thread visits (k1 = k0, k0 + 8, ...; n2 fixed) by recurrence from two sincos
// (fp32; ~17 steps, error ~1e-6 against fp16's 5e-4).
struct TwiddleWalk {
  float2 w, step;
  __device__ __forceinline__ TwiddleWalk(int64_t n2, int k0, int k_step, int log_n, float scale = 1.f)
      : w(twiddle_n(n2 * k0, log_n)), step(twiddle_n(n2 * k_step, log_n)) {
    w.x *= scale;  // every power carries the scale
    w.y *= scale;
  }
  __device__ __forceinline__ float2 next() {
    const float2 cur = w;
    w = cmul(w, step);
    return cur;
  }
};

// The 256-point DFT down each of the block's 32 complex columns, in place, a warp per column: the tensor-core kernel's
// row stage (forward: D = F/16 X, W_256, D F/16; inverse: U^T = conj(F)/16 Z^T, conj W_256, U^T conj(F)/16), so
// the result is the DFT / 256 (forward) or the unnormalised inverse / 256. In: the column's (q, q + 16) words of both
// planes, B tile j = words 16 t + 8 j + g and + 64 (samples, or bins). Out: value s as half2 (re, im) at tc_bin(p, s),
// s = g + 8 (c >> 1) + 16 (8 j + 2 t + (c & 1)) for accumulator slot (j, c): bin k1 = k1' + 16 d' forward, sample
// n1 = 16 a' + b' inverse.
template <bool kInv>
__device__ __forceinline__ void tc_columns_dft256(uint32_t* sm, const float2* s_w16) {
  using namespace monarch;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  DftFrags fr;
  make_frags(fr, s_w16, g, t);
  uint32_t twr[4], twi[4], twn[4];
  w256_twiddles(g, t, twr, twi, twn);
  for (int pc = warp; pc < kTcPairs; pc += kTcWarps) {
    uint32_t xr0[2], xr1[2], xi0[2], xi1[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int w0 = 16 * t + 8 * j + g;
      xr0[j] = sm[tc_word(pc, 0, w0)];
      xr1[j] = sm[tc_word(pc, 0, w0 + 64)];
      xi0[j] = sm[tc_word(pc, 1, w0)];
      xi1[j] = sm[tc_word(pc, 1, w0 + 64)];
    }
    __syncwarp();  // the results overwrite the column
    float yr[2][4], yi[2][4];
#pragma unroll
    for (int j = 0; j < 2; ++j) cmma_const_a<kInv>(fr, xr0[j], xr1[j], xi0[j], xi1[j], yr[j], yi[j]);
    uint32_t ar[4], ai[4];
    acc_to_a(yr, yi, ar, ai);
#pragma unroll
    for (int reg = 0; reg < 4; ++reg) {
      if constexpr (kInv) cmulc_h2(ar[reg], ai[reg], twr[reg], twi[reg], twn[reg]);
      else cmul_h2(ar[reg], ai[reg], twr[reg], twi[reg], twn[reg]);
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float zr[4], zi[4];
      cmma_const_b<kInv>(fr, j, ar, ai, zr, zi);
#pragma unroll
      for (int c = 0; c < 4; ++c) sm[tc_bin(pc, g + 8 * (c >> 1) + 16 * (8 * j + 2 * t + (c & 1)))] = pack2(zr[c], zi[c]);
    }
    __syncwarp();
  }
}

// A count of rows n1 clamped to [0, cap] (the bounds of the rows a block reads or writes unchecked).
__device__ __forceinline__ int clamp_rows(int64_t rows, int cap) { return rows <= 0 ? 0 : rows >= cap ? cap : (int)rows; }

// Complex columns per block at R = 2^kLogR (a 512-point column fills two 256-point units), log2 of half the columns.
template <int kLogR> __host__ __device__ constexpr int tc_cols() { return kLogR == 8 ? kTcPairs : kTcPairs / 2; }
template <int kLogR> __host__ __device__ constexpr int tc_log_half() { return kLogR == 8 ? 5 : 4; }

// W_512^m, m < 256, into a shared table (the caller synchronises).
__device__ __forceinline__ void fill_w512(float2* w512, int tid) {
  for (int m = tid; m < 256; m += kTcWarps * 32) {
    float sn, cs;
    sincospif(-(float)m / 256.0f, &sn, &cs);
    w512[m] = make_float2(cs, sn);
  }
}

template <typename T, bool kPre, int kLogR>
__global__ void __launch_bounds__(kTcWarps * 32) long_fwd_tc_kernel(const LongParams p) {
  using namespace monarch;
  constexpr int kCols = tc_cols<kLogR>(), kStep = kTcWarps * 32 / kCols, kR = 1 << kLogR;
  __shared__ __align__(16) uint32_t sm[kTcPairs * 256];  // operands, then (in place, per unit) the bins
  __shared__ float2 s_w16[16];
  __shared__ float2 s_w512[kLogR == 9 ? 256 : 1];
  const int tid = threadIdx.x;
  const LongBlock k = long_block(p, tc_log_half<kLogR>());
  // Row from its first input on (src_a), so sample n of the transform is element n.
  const T* x = static_cast<const T*>(p.u) + k.b * p.u_sb + k.c * p.u_sh + p.src_a;
  const T* gate = kPre ? static_cast<const T*>(p.pregate) + k.b * p.pre_sb + k.c * p.pre_sh + p.src_a : nullptr;
  const int64_t len = p.seq_len - p.src_a;
  const bool vec = aligned4(x) && (!kPre || aligned4(gate));
  const float sc = p.in_scale[k.c * p.batch + k.b];
  fill_w16(s_w16, tid);
  if constexpr (kLogR == 9) {
    fill_w512(s_w512, tid);
    __syncthreads();
  }
  // Operands: words (q, q + 16) of each unit (re, im planes), consecutive threads on consecutive column pairs. A
  // thread keeps its column pair pc; its words w = w0 + kStep it (w0 < kStep, which divides 16) come from rows
  // q(w) = 32 (w >> 4) + (w & 15) = q0(it) + w0, so the row offsets unroll to constants times the row stride.
  // Rows n1 < `full` lie wholly inside the input (unchecked 32-bit loads); rows from `any` on lie wholly past it
  // (the causal padding: zeros, nothing read); the rows between take the bounds-checked loads. Both bounds are the
  // same for the block's threads, and in int32: offsets within a transform are below N <= 2^23.
  constexpr int kIters = 128 / kStep;
  const int pc = tid % kCols, w0 = tid / kCols, stride = 1 << k.log_inner;
  const int col = k.c0 + 2 * pc;
  const int64_t avail = sc != 0.f ? len - k.c0 : 0;  // input samples from the block's first column on
  const int any = clamp_rows((avail + stride - 1) >> k.log_inner, kR);
  const int full = vec && avail >= 2 * kCols ? clamp_rows(((avail - 2 * kCols) >> k.log_inner) + 1, kR) : 0;
  using V2 = typename Vec2<T>::type;
  auto row_pair = [&](int q) {  // samples (col, col + 1) of row q, gated and scaled
    float2 v;
    if (q < full) {
      const int o = q * stride + col;
      v = Vec2<T>::to_f2(*reinterpret_cast<const V2*>(x + o));
      if constexpr (kPre) {
        const float2 g = Vec2<T>::to_f2(*reinterpret_cast<const V2*>(gate + o));
        v.x *= g.x;
        v.y *= g.y;
      }
    } else if (q >= any) {
      return make_float2(0.f, 0.f);
    } else {
      v = load_gated_pair<kPre>(x, gate, (int64_t)q * stride + col, len, vec);
    }
    return make_float2(v.x * sc, v.y * sc);
  };
  // Iteration it covers word w = w0 + kStep it of its units: rows q, q + 16 (and, R = 512, q + 256, q + 272).
  constexpr int kRows = kLogR == 9 ? 4 : 2;
  auto row_of = [&](int it, int r) {
    const int ws = kStep * it;
    return 32 * (ws >> 4) + (ws & 15) + w0 + 16 * (r & 1) + 256 * (r >> 1);
  };
  auto put_words = [&](int it, float2 (&v)[kRows]) {
    const int w = w0 + kStep * it;
    float2 lo = v[0], hi = v[1];
    int unit = pc;
    if constexpr (kLogR == 9) {  // the radix-2 step: a to unit 2 pc (even bins), b to unit 2 pc + 1 (odd bins)
      const int q = row_of(it, 0);
      const float2 b_lo = cmul(make_float2(0.5f * (lo.x - v[2].x), 0.5f * (lo.y - v[2].y)), s_w512[q]);
      const float2 b_hi = cmul(make_float2(0.5f * (hi.x - v[3].x), 0.5f * (hi.y - v[3].y)), s_w512[q + 16]);
      sm[tc_word(2 * pc + 1, 0, w)] = pack2(b_lo.x, b_hi.x);
      sm[tc_word(2 * pc + 1, 1, w)] = pack2(b_lo.y, b_hi.y);
      lo = make_float2(0.5f * (lo.x + v[2].x), 0.5f * (lo.y + v[2].y));
      hi = make_float2(0.5f * (hi.x + v[3].x), 0.5f * (hi.y + v[3].y));
      unit = 2 * pc;
    }
    sm[tc_word(unit, 0, w)] = pack2(lo.x, hi.x);
    sm[tc_word(unit, 1, w)] = pack2(lo.y, hi.y);
  };
  if (full == any) {
    // Every row of the block wholly inside the input or wholly past it (all blocks but the one holding the input's
    // end, on aligned rows): the loads are predicated, not branched, and all of a half's are issued before the first
    // is used, so a thread waits on memory once per half instead of once per row pair (v20: this pass ran at 54% of
    // the issue rate, latency-bound). Two halves of kIters / 2 keep the raw words to 16 (+16 gate) registers.
    constexpr int kHalf = kIters / 2;
    const V2 zero = Vec2<T>::from_f2(0.f, 0.f);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      V2 raw[kHalf][kRows], graw[kPre ? kHalf : 1][kRows];
#pragma unroll
      for (int i = 0; i < kHalf; ++i)
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int q = row_of(h * kHalf + i, r);
          const bool in = q < full;
          raw[i][r] = in ? __ldg(reinterpret_cast<const V2*>(x + q * stride + col)) : zero;
          if constexpr (kPre) graw[i][r] = in ? __ldg(reinterpret_cast<const V2*>(gate + q * stride + col)) : zero;
        }
#pragma unroll
      for (int i = 0; i < kHalf; ++i) {
        float2 v[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          v[r] = Vec2<T>::to_f2(raw[i][r]);
          if constexpr (kPre) {
            const float2 g = Vec2<T>::to_f2(graw[i][r]);
            v[r].x *= g.x;
            v[r].y *= g.y;
          }
          v[r].x *= sc;
          v[r].y *= sc;
        }
        put_words(h * kHalf + i, v);
      }
    }
  } else {
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      float2 v[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) v[r] = row_pair(row_of(it, r));
      put_words(it, v);
    }
  }
  __syncthreads();
  tc_columns_dft256<false>(sm, s_w16);
  __syncthreads();
  // Bin k of a column (DFT / R: the 256-point units give DFT / 256, the radix-2 step its 1/2) as a half2 (re, im).
  auto bin = [&](int pc, int kk) {
    return as_h2(kLogR == 8 ? sm[tc_bin(pc, kk)] : sm[tc_bin(2 * pc + (kk & 1), kk >> 1)]);
  };
  // Bins k1 <= R/2 of both real columns: A = (Z[k1] + conj Z[R - k1]) / 2, B = -i (Z[k1] - conj Z[R - k1]) / 2,
  // times W_N^(n2 k1), to the workspace rows as (A, B) half2 pairs of each plane. The untangle and the twiddle run in
  // half2 on the bins' words, both columns per instruction: X = (A.re, B.re) = (zk + zm) / 2 and Y = (A.im, B.im) =
  // (d.im, -d.re) / 2 with d = zk - zm, the 1/2 carried by the twiddles (6% fewer instructions in this pass, error
  // +0.5%; NOTES.md v28).
  __half* wk = static_cast<__half*>(p.work);
  const int64_t plane = (int64_t)1 << k.log_inner;
  // Thread (pc, k0) writes rows k1 = k0 + kStep j; consecutive rows k1 of the workspace lie `rstep` apart.
  const int k0 = w0, n2a = col;
  const int64_t rstep = (int64_t)kStep * ((2 * p.batch) << k.log_inner);
  __half* dst = wk + work_row(p, k, k0) + n2a;
  TwiddleWalk wa(n2a, k0, kStep, p.log_n, 0.5f), wb(n2a + 1, k0, kStep, p.log_n, 0.5f);
  auto put = [&](int k1) {
    const __half2 zk = bin(pc, k1), zm = bin(pc, (kR - k1) & (kR - 1));
    uint32_t x = as_u32(__hadd2(zk, zm));
    uint32_t y = __byte_perm(as_u32(__hsub2(zk, zm)), 0u, 0x1032) ^ 0x80000000u;  // (d.im, d.re), then -d.re
    const float2 ta = wa.next(), tb = wb.next();
    cmul_h2(x, y, pack2(ta.x, tb.x), pack2(ta.y, tb.y), pack2(-ta.y, -tb.y));
    *reinterpret_cast<uint32_t*>(dst) = x;          // (A.re, B.re) of the product: the re plane's pair
    *reinterpret_cast<uint32_t*>(dst + plane) = y;  // (A.im, B.im)
    dst += rstep;
  };
#pragma unroll 4
  for (int j = 0; j < kR / 2 / kStep; ++j) put(k0 + kStep * j);
  if (k0 == 0) put(kR / 2);  // row R/2 (k0 + kStep j reaches it only from k0 = 0)
}

template <typename T, bool kPost, int kLogR>
__global__ void __launch_bounds__(kTcWarps * 32) long_inv_tc_kernel(const LongParams p) {
  using namespace monarch;
  constexpr int kCols = tc_cols<kLogR>(), kStep = kTcWarps * 32 / kCols, kR = 1 << kLogR;
  __shared__ __align__(16) uint32_t sm[kTcPairs * 256];  // (re, im) planes of bins (k, k + 16), then the outputs
  __shared__ float2 s_w16[16];
  __shared__ float2 s_w512[kLogR == 9 ? 256 : 1];
  const int tid = threadIdx.x;
  const LongBlock k = long_block(p, tc_log_half<kLogR>());
  fill_w16(s_w16, tid);
  if constexpr (kLogR == 9) fill_w512(s_w512, tid);  // read after the next __syncthreads
  const __half* wk = static_cast<const __half*>(p.work);
  const int64_t plane = (int64_t)1 << k.log_inner;
  unsigned short* const sh = reinterpret_cast<unsigned short*>(sm);
  auto put = [&](int pc, int kk, float2 v) {  // bin kk of column pc: one fp16 half of the words of its unit
    const int unit = kLogR == 8 ? pc : 2 * pc + (kk & 1), b = kLogR == 8 ? kk : kk >> 1;
    const int w = tc_unit(b & ~16), half = (b >> 4) & 1;
    sh[2 * tc_word(unit, 0, w) + half] = __half_as_ushort(__float2half_rn(v.x));
    sh[2 * tc_word(unit, 1, w) + half] = __half_as_ushort(__float2half_rn(v.y));
  };
  // Thread (pc, k0) reads rows k1 = k0 + kStep j of the workspace (`rstep` apart), as pass 1 wrote them.
  const int pc = tid % kCols, w0 = tid / kCols, col = k.c0 + 2 * pc, stride = 1 << k.log_inner;
  {
    const int k0 = w0;
    const int64_t rstep = (int64_t)kStep * ((2 * p.batch) << k.log_inner);
    const __half* src = wk + work_row(p, k, k0) + col;
    TwiddleWalk wa(col, k0, kStep, p.log_n), wb(col + 1, k0, kStep, p.log_n);
    // Row k1's words (wre, wim) = (Ta.re, Tb.re), (Ta.im, Tb.im): the twiddle, then bins k1 and R - k1 of the column.
    auto take = [&](int k1, uint32_t wre, uint32_t wim) {
      const float2 re = unpack2(wre), im = unpack2(wim);
      const float2 ta = cmulc(make_float2(re.x, im.x), wa.next());
      const float2 tb = cmulc(make_float2(re.y, im.y), wb.next());
      put(pc, k1, make_float2(ta.x - tb.y, ta.y + tb.x));                                   // Ta + i Tb
      if (k1 != 0 && k1 != kR / 2) put(pc, kR - k1, make_float2(ta.x + tb.y, tb.x - ta.y));  // conj Ta + i conj Tb
    };
    // All of a half's row words are requested before any is used, as pass 1's loads: a thread waits on memory once
    // per half instead of once per row (the pass ran at ~66% of the issue rate, latency-bound; H100 at 2M: -1% plain,
    // -7% with the post-gate, whose store loop waits on memory too; NOTES.md v29).
    constexpr int kTakes = kR / 2 / kStep, kHalf = kTakes / 2;
    auto word = [&](int row, int64_t off) {  // the 32-bit word of the thread's row `row` (in rstep) at plane offset off
      return __ldg(reinterpret_cast<const unsigned int*>(src + row * rstep + off));
    };
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      uint32_t raw[kHalf][2];
#pragma unroll
      for (int i = 0; i < kHalf; ++i) {
        raw[i][0] = word(h * kHalf + i, 0);
        raw[i][1] = word(h * kHalf + i, plane);
      }
#pragma unroll
      for (int i = 0; i < kHalf; ++i) take(k0 + kStep * (h * kHalf + i), raw[i][0], raw[i][1]);
    }
    // Row R/2: k0 + kStep j reaches it from k0 = 0 only.
    if (k0 == 0) take(kR / 2, word(kTakes, 0), word(kTakes, plane));
  }
  __syncthreads();
  tc_columns_dft256<true>(sm, s_w16);
  __syncthreads();
  T* y = static_cast<T*>(p.y) + k.b * p.y_sb + k.c * p.y_sh + p.src_a;
  const T* post = kPost ? static_cast<const T*>(p.postgate) + k.b * p.post_sb + k.c * p.post_sh + p.src_a : nullptr;
  const int64_t len = p.seq_len - p.src_a, first = p.src_o - p.src_a;
  const bool vec = aligned4(y) && (!kPost || aligned4(post));
  const float sc = p.in_scale[k.c * p.batch + k.b];
  // The two mma stages divided by 256: the inverse transform is the unnormalised sum (pass 1 took the 1/R).
  const float osc = sc != 0.f ? 256.f * p.out_scale[k.c] / sc : __int_as_float(0x7fc00000);
  auto emit = [&](int pc, int n1, float2 v) {  // sample n1 of complex column pc: outputs (n, n + 1)
    const int64_t n = ((int64_t)n1 << k.log_inner) + k.c0 + 2 * pc;
    if (n + 1 < first || n >= len) return;
    const float2 r = make_float2(v.x * osc, v.y * osc);
    if (n >= first) {
      store_gated_pair<kPost>(y, post, n, len, vec, r);
    } else if (n + 1 < len) {  // the pair straddles the first kept output
      y[n + 1] = from_float<T>(kPost ? r.y * to_float(post[n + 1]) : r.y);
    }
  };
  // Thread (pc, w0) writes rows n1 = w0 + kStep j of its column pair. Rows [lo, full) lie wholly inside the kept
  // outputs [first, len) (unchecked 32-bit stores); rows from `any` on wholly past them (the causal padding: skipped);
  // the rest take emit's checks. The same for the block's threads (as pass 1's bounds).
  const int64_t avail = len - k.c0, skip = first - k.c0;
  const int any = clamp_rows((avail + stride - 1) >> k.log_inner, kR);
  const int full = vec && avail >= 2 * kCols ? clamp_rows(((avail - 2 * kCols) >> k.log_inner) + 1, kR) : 0;
  const int lo = clamp_rows((skip + stride - 1) >> k.log_inner, kR);
  using V2 = typename Vec2<T>::type;
  auto out = [&](int n1, float2 v) {
    if (n1 >= lo && n1 < full) {
      const int o = n1 * stride + col;
      float2 r = make_float2(v.x * osc, v.y * osc);
      if constexpr (kPost) {
        const float2 g = Vec2<T>::to_f2(*reinterpret_cast<const V2*>(post + o));
        r.x *= g.x;
        r.y *= g.y;
      }
      *reinterpret_cast<V2*>(y + o) = Vec2<T>::from_f2(r.x, r.y);
    } else if (n1 < any) {
      emit(pc, n1, v);
    }
  };
  const int mend = any < 256 ? any : 256;
#pragma unroll 4
  for (int m = w0; m < mend; m += kStep) {
    if constexpr (kLogR == 8) {
      out(m, unpack2(sm[tc_bin(pc, m)]));
    } else {  // samples m and m + 256 from the even and odd bins' inverses
      const float2 e = unpack2(sm[tc_bin(2 * pc, m)]);
      const float2 o = cmulc(unpack2(sm[tc_bin(2 * pc + 1, m)]), s_w512[m]);
      out(m, make_float2(e.x + o.x, e.y + o.y));
      out(m + 256, make_float2(e.x - o.x, e.y - o.y));
    }
  }
}

// Complex columns per outer block: R * half fp32 complex values in shared memory, 32 KiB (at least 8: 16 columns,
// 32-byte segments of each workspace row).
int long_log_half(int log_r, int log_inner) {
  int lh = 12 - log_r;
  if (lh < 3) lh = 3;
  if (lh > log_inner - 1) lh = log_inner - 1;
  return lh;
}

// ---- the rows' input scales, computed beside the passes (LongParams::peak) --------------------------------------
// max |x| of a 16-bit float row as an integer: with the sign bit cleared, bf16 and fp16 bit patterns order as their
// magnitudes, and inf/NaN lie above every finite value, so a SIMD integer max over 32-bit words (two samples) is the
// exact peak. One block per (row, chunk of kPeakChunk samples); the chunks meet in an atomicMax per row.
constexpr int kPeakThreads = 256;
constexpr int64_t kPeakChunk = int64_t(kPeakThreads) * 8 * 16;  // 16 uint4 loads per thread

__device__ __forceinline__ unsigned peak_bits(const void* row, int64_t len, int64_t lo) {
  const auto* h = static_cast<const unsigned short*>(row);
  const int64_t hi = lo + kPeakChunk < len ? lo + kPeakChunk : len;
  unsigned m = 0, one = 0;  // m: two 16-bit maxima (high and low half); one: samples taken one at a time
  if ((reinterpret_cast<uintptr_t>(h) & 15) == 0) {
    const uint4* v = reinterpret_cast<const uint4*>(h + lo);  // lo is a multiple of 8
    const int64_t whole = (hi - lo) / 8;
    for (int64_t i = threadIdx.x; i < whole; i += blockDim.x) {
      const uint4 w = __ldcs(v + i);  // read once here (pass 1 reads it again, from L2 when the block fits)
      m = __vmaxu2(m, __vmaxu2(__vmaxu2(w.x & 0x7fff7fffu, w.y & 0x7fff7fffu),
                               __vmaxu2(w.z & 0x7fff7fffu, w.w & 0x7fff7fffu)));
    }
    // The row's last L % 8 samples: kept apart, since a 32-bit max with the packed pair above would drop a sample
    // larger than the low half whenever the high half is non-zero (the peak in a row's tail was missed).
    for (int64_t t = lo + whole * 8 + threadIdx.x; t < hi; t += blockDim.x) one = max(one, h[t] & 0x7fffu);
  } else {
    for (int64_t t = lo + threadIdx.x; t < hi; t += blockDim.x) one = max(one, h[t] & 0x7fffu);
  }
  m = max(max(m >> 16, m & 0xffffu), one);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  return m;
}

template <bool kPre>
__global__ void __launch_bounds__(kPeakThreads) long_peak_kernel(const LongParams p, unsigned* peak, int elt) {
  const int64_t row = blockIdx.x, c = row / p.batch, b = row - c * p.batch;
  const int64_t lo = (int64_t)blockIdx.y * kPeakChunk;
  const char* u = static_cast<const char*>(p.u) + (b * p.u_sb + c * p.u_sh) * elt;
  const unsigned mu = peak_bits(u, p.seq_len, lo);
  unsigned mg = 0;
  if (kPre) mg = peak_bits(static_cast<const char*>(p.pregate) + (b * p.pre_sb + c * p.pre_sh) * elt, p.seq_len, lo);
  if ((threadIdx.x & 31) == 0) {
    atomicMax(peak + 2 * row, mu);
    if (kPre) atomicMax(peak + 2 * row + 1, mg);
  }
}

// in_scale[row] from the peaks, as genoconv/ops/cuda.py _in_scale computes it: m = max |u| (x max |pregate|) in fp32;
// 0 for inf/NaN, else 2^(9 - e) with m = f 2^e, f in [0.5, 1) (an all-zero row: m taken as 1).
template <typename T>
__device__ __forceinline__ float peak_value(unsigned bits) {
  if constexpr (std::is_same<T, __half>::value) return __half2float(__ushort_as_half((unsigned short)bits));
  else return __uint_as_float(bits << 16);
}
template <typename T, bool kPre>
__global__ void long_scale_kernel(const LongParams p, const unsigned* peak, float* in_scale) {
  const int64_t row = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= p.channels * p.batch) return;
  float m = peak_value<T>(peak[2 * row]);
  if (kPre) m *= peak_value<T>(peak[2 * row + 1]);
  const bool finite = (__float_as_uint(m) & 0x7fffffffu) < 0x7f800000u;  // a finite product, not inf/NaN
  int e = 0;
  frexpf(finite && m > 0.f ? m : 1.f, &e);
  in_scale[row] = finite ? exp2f((float)(9 - e)) : 0.f;
}

template <typename T, bool kPre>
cudaError_t launch_long_scale(const LongParams& p, cudaStream_t stream) {
  const int64_t rows = p.channels * p.batch;
  cudaError_t err = cudaMemsetAsync(p.peak, 0, sizeof(unsigned) * 2 * rows, stream);
  if (err != cudaSuccess) return err;
  const dim3 grid((unsigned)rows, (unsigned)((p.seq_len + kPeakChunk - 1) / kPeakChunk));
  long_peak_kernel<kPre><<<grid, kPeakThreads, 0, stream>>>(p, p.peak, (int)sizeof(T));
  float* scale = const_cast<float*>(p.in_scale);
  long_scale_kernel<T, kPre><<<(unsigned)((rows + 127) / 128), 128, 0, stream>>>(p, p.peak, scale);
  return cudaGetLastError();
}

template <typename T, bool kPre, bool kPost>
cudaError_t launch_long_t(const LongParams& p, cudaStream_t stream) {
  const int log_inner = p.log_n - p.log_r;
  if (log_inner < kLongMinInnerLogN || log_inner > kLongMaxInnerLogN || p.log_n < kLongMinLogN ||
      p.log_n > kLongMaxLogN || p.log_r < 2 || p.batch <= 0 || p.channels * p.batch > 0x7fffffffLL)
    return cudaErrorInvalidValue;
  // R = 256, 512: the outer DFTs on tensor cores; other R: the scalar passes
  const int log_half = p.log_r == 8 ? tc_log_half<8>() : p.log_r == 9 ? tc_log_half<9>() : long_log_half(p.log_r, log_inner);
  const size_t smem = sizeof(float2) << (p.log_r + log_half);
  const dim3 grid((unsigned)(p.channels * p.batch), 1u << (log_inner - log_half - 1));
  // One outer pass (forward or inverse): the kernel for this R, launched with its block shape and shared memory.
  auto outer = [&](void (*tc256)(LongParams), void (*tc512)(LongParams), void (*scalar)(LongParams, int)) {
    if (p.log_r == 8 || p.log_r == 9) {
      (p.log_r == 8 ? tc256 : tc512)<<<grid, kTcWarps * 32, 0, stream>>>(p);
    } else {
      const cudaError_t e = cudaFuncSetAttribute(scalar, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
      if (e != cudaSuccess) return e;
      scalar<<<grid, kLongThreads, smem, stream>>>(p, log_half);
    }
    return cudaGetLastError();
  };
  cudaError_t err;
  if (p.peak && (err = launch_long_scale<T, kPre>(p, stream))) return err;
  if ((err = outer(long_fwd_tc_kernel<T, kPre, 8>, long_fwd_tc_kernel<T, kPre, 9>, long_fwd_kernel<T, kPre>))) return err;

  // Inner pass: "batch" = the rows' two planes, "channels" = (c, k1) rows, in place on the workspace.
  ConvParams q;
  q.u = p.work;
  q.y = p.work;
  q.u_sb = q.y_sb = (int64_t)1 << log_inner;
  q.u_sh = q.y_sh = (2 * p.batch) << log_inner;
  q.batch = 2 * p.batch;
  q.channels = p.channels * ((1 << (p.log_r - 1)) + 1);
  q.seq_len = (int64_t)1 << log_inner;
  q.log_n = log_inner;
  q.spectrum_h = p.spectrum_h;
  q.gain = p.gain;
  if ((err = launch_monarch_circular(q, stream))) return err;

  return outer(long_inv_tc_kernel<T, kPost, 8>, long_inv_tc_kernel<T, kPost, 9>, long_inv_kernel<T, kPost>);
}

struct LaunchLong {
  template <typename T, bool kPre, bool kPost>
  static cudaError_t run(const LongParams& p, cudaStream_t stream) {
    return launch_long_t<T, kPre, kPost>(p, stream);
  }
};

struct LaunchRowScales {
  template <typename T, bool kPre, bool kPost>
  static cudaError_t run(const LongParams& p, cudaStream_t stream) {
    return launch_long_scale<T, kPre>(p, stream);
  }
};

}  // namespace

cudaError_t launch_long(const LongParams& p, DType dtype, cudaStream_t stream) {
  return dispatch_gates<LaunchLong>(p, dtype, stream);
}

cudaError_t launch_long_row_scales(const LongParams& p, DType dtype, cudaStream_t stream) {
  if (p.in_scale == nullptr || p.peak == nullptr || p.batch <= 0 || p.channels * p.batch > 0x7fffffffLL)
    return cudaErrorInvalidValue;
  return dispatch_gates<LaunchRowScales>(p, dtype, stream);
}

}  // namespace genoconv
