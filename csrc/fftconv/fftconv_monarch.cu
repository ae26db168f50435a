// Tensor-core fused path (N = 2^10 ... 2^15, i.e. L <= 16K with a full-length filter): the FFT convolution as
// Monarch matrix products on mma.sync.m16n8k16 (fp16 operands, fp32 accumulation), one thread block per channel and
// *pair* of batch rows, everything in shared memory / registers, u read once and y written once.
//
// Why it is shaped like this (NOTES.md v8):
// - Two batch rows b, b+1 of one channel ride as the real and imaginary parts of one complex signal z: both are
//   convolved with the same real filter, so IDFT(DFT(z) K) = y_b + i y_{b+1} with no untangling step at all (the
//   real-input saving without the pair step of the scalar kernels).
// - N = r * 256 with n = 256 p + q, k = k1 + r k2. The 256-point transform along q is two radix-16 stages that never
//   leave registers: the m16n8k16 accumulator of one stage is the A operand of the next (as P is in FlashAttention),
//   and the forward row transform, the spectrum product and the inverse row transform run back to back per row.
//   The r-point transform along p (the columns) is one radix-16 mma stage plus an s = r/16 point scalar stage.
// - fp16 operands keep rounding at ~5e-4 (bf16 would be ~4e-3): every mma stage uses F/16 so magnitudes never
//   grow, each input row is scaled by a power of two sigma (max |x| -> 2^9), and the spectrum is stored divided
//   by its per-channel maximum (the gain, applied in fp32 at the end).
// - Shared memory holds N fp16 complex values as two planes (re, im) of 32-bit words, each word a pair of samples;
//   every phase works in place on the region it read, so one buffer of 4 N bytes serves the whole transform.
// - Blocks are persistent and stage the next unit's input rows (and gates where they fit) into spare shared memory
//   with cp.async while the current unit is transformed: no phase waits on device memory for its input (NOTES.md v9).
//   The long path's inner pass at N' = 2^14 is the exception (Cfg::kDirect, NOTES.md v28): two blocks per SM there
//   cover each other's loads better than one block with its rows staged.
// - The twiddle between column and row transforms, W_N^(q (f + S e)), is split: W_N^(f (256 a + q)) in the first
//   phase (powers of one sincos), W_N^(q S e) once per column stage and lane (it does not depend on the item). The
//   inverse mirrors it: conj W_N^(q S e) from a per-block shared table at the row stage's store, conj W_N^(f (256 a
//   + q)) by recurrence in the last phase (NOTES.md v9.6). With no column mma stage (r < 16) both twiddles are whole
//   half2 tables, W_N^(q f) for phase 1 and conj W_N^(q rho) for the row stage's store (NOTES.md v24).
#include <cuda_fp16.h>

#include <atomic>
#include <type_traits>

#include "params.h"
#include "fft_common.cuh"
#include "monarch_common.cuh"

namespace genoconv {
namespace monarch {

// x * exp(-2 pi i m / 8) for a compile-time m (after unrolling): no multiplications by 0 or 1.
__device__ __forceinline__ float2 mul_w8(float2 x, int m) {
  constexpr float c = 0.70710678118654752f;
  switch (m & 7) {
    case 0: return x;
    case 1: return make_float2(c * (x.x + x.y), c * (x.y - x.x));
    case 2: return make_float2(x.y, -x.x);
    case 3: return make_float2(c * (x.y - x.x), -c * (x.x + x.y));
    case 4: return make_float2(-x.x, -x.y);
    case 5: return make_float2(-c * (x.x + x.y), c * (x.x - x.y));
    case 6: return make_float2(-x.y, x.x);
    default: return make_float2(c * (x.x - x.y), c * (x.x + x.y));
  }
}

// S-point DFT (S <= 8, power of two) by radix-2 decimation in time, sign -1 (forward) or +1 (inverse), of inputs
// x[0..kIn) with the rest zero (the causal half). Constant twiddles fold away after unrolling; outputs a caller does
// not use are dead code.
template <int S, int kIn, bool kInv>
struct SmallDft {
  static __device__ __forceinline__ void run(const float2* x, int stride, float2* y) {
    if constexpr (S == 1) {
      y[0] = x[0];
    } else if constexpr (kIn == 1) {
#pragma unroll
      for (int f = 0; f < S; ++f) y[f] = x[0];
    } else {
      float2 e[S / 2], o[S / 2];
      SmallDft<S / 2, (kIn + 1) / 2, kInv>::run(x, 2 * stride, e);
      SmallDft<S / 2, kIn / 2, kInv>::run(x + stride, 2 * stride, o);
#pragma unroll
      for (int f = 0; f < S / 2; ++f) {
        const int m = f * (8 / S);
        const float2 w = mul_w8(o[f], kInv ? (8 - m) & 7 : m);
        y[f] = cadd(e[f], w);
        y[f + S / 2] = csub(e[f], w);
      }
    }
  }
};

template <int S, int kIn, int kOut, bool kInv>
__device__ __forceinline__ void small_dft(const float2 (&x)[kIn], float2 (&y)[kOut]) {
  float2 xs[S], ys[S];
#pragma unroll
  for (int c = 0; c < S; ++c) xs[c] = c < kIn ? x[c < kIn ? c : 0] : make_float2(0.f, 0.f);
  SmallDft<S, kIn, kInv>::run(xs, 1, ys);
#pragma unroll
  for (int f = 0; f < kOut; ++f) y[f] = ys[f];
}

// ---- shared-memory layout ---------------------------------------------------------------------------------------
// Slot row rho (0..r-1) and q (0..255). Samples q and q + 16 (q % 32 < 16) form a pair unit qp = (q / 32) 16 + q % 16,
// rows 2 rho2 and 2 rho2 + 1 form a row pair; a unit of a row pair is two 32-bit words per plane, in one of two forms:
//   col form: word j holds rows (2 rho2, 2 rho2 + 1) at q + 16 j        (k = row index for the next mma)
//   row form: word j holds row 2 rho2 + j at (q, q + 16)               (k = q / 16 for the next mma)
// Word j of unit (rho2, qp) sits in sub-plane j; the XOR swizzle keeps the mma fragment loads conflict-free.
__device__ __forceinline__ int unit_qp(int q) { return ((q >> 5) << 4) | (q & 15); }
__device__ __forceinline__ int unit_j(int q) { return (q >> 4) & 1; }
template <int kQuarter>
__device__ __forceinline__ int widx(int j, int rho2, int qp) {
  const int x = qp ^ (((qp >> 5) & 1) << 3) ^ ((rho2 & 3) << 3) ^ (j << 4);
  return j * kQuarter + rho2 * 128 + x;
}

template <int kLogR, bool kGated, bool kCirc = false>
struct Cfg {
  static constexpr int kR = 1 << kLogR;
  static constexpr int kN = 256 * kR;
  static constexpr int kLogN = 8 + kLogR;
  static constexpr bool kColMma = kR >= 16;            // radix-16 mma stage along the columns
  static constexpr int kS = kColMma ? kR / 16 : kR;     // scalar stage along the columns
  // 128 registers per thread: blocks of <= 8 warps run two per SM (their phases overlap: one loads while the other
  // computes); where shared memory allows one block per SM (r = 128; r = 64 with staged gates: 160 KiB) it takes 16.
  // The long path's inner pass at its largest N' = 2^14 (N = 2^22, 2^23: the 2M-4M rows, the DMD gene, a chromosome's
  // streamed chunks) reads its rows from device memory instead of staging them: 64 KiB of staging rows would leave
  // one 16-warp block per SM (144 KiB), whose barriers nothing covers; without them two 8-warp blocks (80 KiB each)
  // fit, and each block's phase-1 loads (the next item's requested before this item's arithmetic) overlap the other
  // block's work: 10% faster there (H100, NOTES.md v28).
  static constexpr bool kDirect = kCirc && kR == 64;
  static constexpr bool kOneBlock = !kDirect && (kR >= 128 || ((kGated || kCirc) && kR >= 64));
  // r = 16 (one column item per warp at 8 warps) runs 4-warp blocks, four per SM. Below, one warp per row pair of the
  // row stage (r / 2 warps, at most 8): r = 2 (the long path's N' = 512) has a single row pair, so a second warp would
  // idle through that stage (NOTES.md v13); it runs 1-warp blocks, sixteen per SM.
  static constexpr int kWarps = kOneBlock ? 16 : kR == 16 ? 4 : (kR < 4 ? 1 : (kR / 2 > 8 ? 8 : kR / 2));
  static constexpr int kThreads = 32 * kWarps;
  // Resident blocks per SM the registers are capped for: 128 per thread. Plain r = 16 (40 KiB of shared memory) could
  // hold five blocks at 96 registers; with its column stages' per-unit set-up halved (NOTES.md v27) four blocks at 126
  // registers run 1.8% faster than five (H100, interleaved): ptxas spends the registers on fewer instructions.
  static constexpr int kMinBlocks = 65536 / (kThreads * 128);
  static constexpr int kPlane = kN / 2;                 // 32-bit words per plane
  static constexpr int kQuarter = kN / 4;               // words per sub-plane
  // Staging rows (N / 2 16-bit samples each, the causal half): the next unit's u0, u1 always; its pre-gate rows and
  // this unit's post-gate rows too up to N = 2^14 (10 N bytes in all; N = 2^15 has room for u only). The
  // transform's own buffer is 4 N bytes.
  // kCirc (the inner pass of the long path, fftconv_long.cu): circular, every sample of the row is loaded and stored.
  static constexpr int kStageWords = kDirect ? 0 : kCirc ? kN / 2 : kN / 4;
  // r >= 16: the row stage's output twiddle conj W_N^(q S e) = conj W_4096^(q e) (the same for every N) as a table in
  // the lanes' order: for each row-pair class rho2 % 8 (rows e = 2 (rho2 % 8), + 1) and lane, 16 words (re, im) of
  // the accumulator slots (j, c), as 4 uint4 with the lanes contiguous (conflict-free 16-byte loads): 16 KiB.
  // r < 16: the whole twiddles of the two scalar-column stages as half2 tables instead of one __sincosf and an fp32
  // complex product per point: W_N^(q f) of phase 1 for each (f, unit qp) as a uint2 (re, im words of q, q + 16), and
  // IR2's conj W_N^(q rho) for each (slot row rho, tile j, lane) as a uint4 (re, im of slots c = 0 and 2, each the
  // pair q, q + 16 of the row form): 4 N + 4 N bytes.
  static constexpr int kP1TableWords = kColMma ? 0 : 2 * 128 * kR;
  static constexpr int kIr2TableWords = kColMma ? 8 * 4 * 32 * 4 : 4 * 2 * 32 * kR + kP1TableWords;
  __host__ __device__ static constexpr bool stage_gate(bool gate) { return gate && kN <= 16384; }
  // Mirrored by genoconv/ops/cuda.py monarch_smem_bytes, which sends sizes a device cannot hold (an A100's 163 KiB
  // per block: N = 2^15, N = 2^14 gated) to the scalar kernels.
  __host__ __device__ static constexpr size_t smem(bool pre, bool post) {
    return (size_t)kN * 4 + (size_t)kStageWords * 8 * (1 + stage_gate(pre) + stage_gate(post)) +
           4 * (size_t)kIr2TableWords;
  }
};

// Raw bits of samples n, n + 1 (n even) as one word (low half = n), zero past the end.
template <typename T>
__device__ __forceinline__ uint32_t load_bits2(const T* __restrict__ row, int64_t n, int64_t len, bool vec) {
  const uint16_t* r = reinterpret_cast<const uint16_t*>(row);
  if (vec && n + 1 < len) return *reinterpret_cast<const uint32_t*>(r + n);
  return (n < len ? (uint32_t)r[n] : 0u) | (n + 1 < len ? (uint32_t)r[n + 1] << 16 : 0u);
}
template <typename T> __device__ __forceinline__ float bits_to_float(uint32_t b);
template <> __device__ __forceinline__ float bits_to_float<__nv_bfloat16>(uint32_t b) { return __uint_as_float(b << 16); }
template <> __device__ __forceinline__ float bits_to_float<__half>(uint32_t b) {
  return __half2float(__ushort_as_half((unsigned short)b));
}

// 16-bit sample pair word (low half = the earlier sample) -> two floats.
template <typename T> __device__ __forceinline__ float2 unpack_samples(uint32_t w);
template <> __device__ __forceinline__ float2 unpack_samples<__nv_bfloat16>(uint32_t w) {
  return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
}
template <> __device__ __forceinline__ float2 unpack_samples<__half>(uint32_t w) { return unpack2(w); }

// cp.async of 16 bytes global -> shared, of which the first src_bytes are read and the rest zero-filled (sm_80+).
__device__ __forceinline__ void cp_async16(uint32_t* dst, const void* src, int src_bytes) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// Copy samples [0, len) of one input row into a staging row of shared memory (pair words); the words past
// 4 ceil(len / 8) are never written here (zeroed once per block). 16-byte aligned rows go by cp.async (the copy
// overlaps the current unit's transform); other rows fall back to plain loads (correct, not overlapped).
template <typename T>
__device__ __forceinline__ void stage_row(uint32_t* dst, const T* src, int64_t len, int tid, int nthreads) {
  const int chunks = static_cast<int>((len + 7) >> 3);
  if ((reinterpret_cast<uintptr_t>(src) & 15) == 0) {
    const uint16_t* s16 = reinterpret_cast<const uint16_t*>(src);
    for (int c = tid; c < chunks; c += nthreads) {
      const int64_t rem = len - 8 * static_cast<int64_t>(c);
      cp_async16(dst + 4 * c, s16 + 8 * c, rem >= 8 ? 16 : static_cast<int>(2 * rem));
    }
  } else {
    const bool vec = aligned4(src);
    for (int w = tid; w < 4 * chunks; w += nthreads) dst[w] = load_bits2(src, 2 * static_cast<int64_t>(w), len, vec);
  }
}

// |x|, with NaN as +inf (fmaxf would drop a NaN; the row must be flagged instead).
__device__ __forceinline__ float abs_or_inf(float x) { return x != x ? INFINITY : fabsf(x); }


// ---- the kernel -------------------------------------------------------------------------------------------------

// kCirc: the row is a full complex signal (re, im) of N samples (both rows of the pair) and the convolution is
// circular: all N samples loaded and stored, unscaled (the spectrum need not be Hermitian, so the two rows mix; pass 1
// scaled them already). Used for the long path's inner pass (fftconv_long.cu), fp16 rows without gates.
// kAcc (the block-Toeplitz terms, N = 2^14, 2^15 only): y += the result, outputs and post-gate rows up to
// ConvParams::out_len; a compile-time choice, so the plain kernels carry no trace of it.
template <typename T, int kLogR, bool kPre, bool kPost, bool kCirc = false, bool kAcc = false>
__global__ void __launch_bounds__(Cfg<kLogR, kPre || kPost, kCirc>::kThreads,
                                  Cfg<kLogR, kPre || kPost, kCirc>::kMinBlocks)
monarch_conv_kernel(const ConvParams p) {
  using C = Cfg<kLogR, kPre || kPost, kCirc>;
  constexpr int R = C::kR, S = C::kS, LOGN = C::kLogN, Q = C::kQuarter, SW = C::kStageWords;
  constexpr bool kDirect = C::kDirect;  // no staging rows: phase 1 reads the rows from device memory
  constexpr bool kStagePre = C::stage_gate(kPre), kStagePost = C::stage_gate(kPost);
  // s = 1 (r = 16) of a causal row: the 16 rows p of a column are the input's 8 and the zero padding's 8, and only
  // outputs p < 8 are kept, so phase 1 writes, the forward column stage reads and the inverse column stage writes
  // only rows 0..7 (the B operand's upper k rows are zero registers; the upper accumulator rows are dropped).
  constexpr bool kZeroHalf = S == 1 && C::kColMma && !kCirc;
  extern __shared__ __align__(16) uint32_t smw[];
  uint32_t* const sre = smw;
  uint32_t* const sim = smw + C::kPlane;
  uint32_t* const stg = smw + C::kN;  // staging rows at stg + i SW: u0, u1 (, pre0, pre1) (, post0, post1)
  uint32_t* const stg_post = stg + (kStagePre ? 4 : 2) * SW;
  __shared__ int s_max[4];
  __shared__ float2 s_w16[16];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  fill_w16(s_w16, tid);
  __syncthreads();
  // Per-lane constants, once per block: the F/16 fragments and W_256^(b' k1') for accumulator slot (tile j, c) with
  // b' = 8 j + 2 t + (c & 1), k1' = g + 8 (c >> 1), packed like the A operand (word reg = tile reg / 2, slots c, c + 1
  // with c = 2 (reg % 2)) as re, im, -im half2 words.
  DftFrags fr;
  make_frags(fr, s_w16, g, t);
  uint32_t twr[4], twi[4], twn[4];
  w256_twiddles(g, t, twr, twi, twn);

  // Persistent blocks: one resident wave loops over the (channel, batch pair) units, channel-major, so the per-block
  // set-up above is paid once per SM slot and concurrently running blocks share a channel's spectrum in L2.
  const int64_t pairs_b = (p.batch + 1) / 2;
  const int64_t units = pairs_b * p.channels;
  const int64_t len = p.seq_len;
  constexpr int kStaged = 2 + 2 * kStagePre + 2 * kStagePost;
  // The row stage's e part of conj W_N^(q k1) (k1 = S e + f; see Cfg::kIr2TableWords); its f part commutes with the
  // inverse column mma over e and is applied in the last phase together with conj W_r^(a f).
  const uint4* const s_ir2 = reinterpret_cast<const uint4*>(stg + kStaged * SW);
  // r < 16: phase 1's table after IR2's (see Cfg::kP1TableWords).
  const uint2* const s_p1 = reinterpret_cast<const uint2*>(stg + kStaged * SW + (C::kIr2TableWords - C::kP1TableWords));
  if constexpr (!C::kColMma) {
    uint32_t* const tbl = stg + kStaged * SW;
    for (int i = tid; i < R * 2 * 32; i += C::kThreads) {  // IR2: (rho, j, lane) -> uint4
      const int ln = i & 31, j = (i >> 5) & 1, rho = i >> 6;
#pragma unroll
      for (int c = 0; c < 4; c += 2) {
        const int q = 16 * (8 * j + 2 * (ln & 3)) + (ln >> 2) + 8 * (c >> 1);
        const float2 w0 = twid(q * rho, LOGN), w1 = twid((q + 16) * rho, LOGN);
        tbl[4 * i + c] = pack2(w0.x, w1.x);
        tbl[4 * i + c + 1] = pack2(w0.y, w1.y);
      }
    }
    uint32_t* const p1 = tbl + (C::kIr2TableWords - C::kP1TableWords);
    for (int i = tid; i < S * 128; i += C::kThreads) {  // phase 1: (f, qp) -> uint2
      const int qp = i & 127, f = i >> 7, q = ((qp >> 4) << 5) | (qp & 15);
      const float2 w0 = twid(q * f, LOGN), w1 = twid((q + 16) * f, LOGN);
      p1[2 * i] = pack2(w0.x, w1.x);
      p1[2 * i + 1] = pack2(w0.y, w1.y);
    }
  }
  if constexpr (C::kColMma) {
    uint32_t* const tbl = stg + kStaged * SW;
    for (int i = tid; i < 8 * 32 * 8; i += C::kThreads) {
      const int jc = i & 7, ln = (i >> 3) & 31, c8 = i >> 8;
      const int j = jc >> 2, c = jc & 3;
      const int q = 16 * (8 * j + 2 * (ln & 3) + (c & 1)) + (ln >> 2) + 8 * (c >> 1);
      const float2 w0 = twid(q * 2 * c8, 12), w1 = twid(q * (2 * c8 + 1), 12);
      const int word = ((c8 * 4 + (jc >> 1)) * 32 + ln) * 4 + 2 * (jc & 1);
      tbl[word] = pack2(w0.x, w1.x);
      tbl[word + 1] = pack2(w0.y, w1.y);
    }
  }
  // Input staging: while unit i is transformed, unit i + gridDim.x's rows are copied (cp.async) into the staging rows,
  // so phases 0 and 1 read shared memory instead of waiting on device memory. Past the row end the rows hold zeros.
  {
    const int first_tail = 4 * static_cast<int>((len + 7) >> 3);
    for (int i = 0; i < kStaged; ++i)
      for (int w = first_tail + tid; w < SW; w += C::kThreads) stg[i * SW + w] = 0u;
  }
  // Unit un: channel h, batch rows b0 and (has1) b0 + 1; row0 is row b0 of a (B, H, L) signal with strides sb, sh.
  struct UnitRows {
    int64_t h, b0;
    bool has1;
  };
  auto unit_rows = [&](int64_t un) {
    const int64_t hn = un / pairs_b, bn = 2 * (un - hn * pairs_b);
    return UnitRows{hn, bn, bn + 1 < p.batch};
  };
  auto row0 = [](const void* base, int64_t sb, int64_t sh, const UnitRows& ur) {
    return static_cast<const T*>(base) + ur.b0 * sb + ur.h * sh;
  };
  // Samples [0, n) of both rows of a signal into staging rows dst, dst + SW.
  // Outputs and post-gate rows [0, out_len): the whole row but for a block-Toeplitz term's shorter output block.
  const int64_t out_len = kAcc && p.out_len > 0 && p.out_len < len ? p.out_len : len;
  auto stage_pair = [&](uint32_t* dst, const T* r, int64_t sb, bool has1n, int64_t n) {
    stage_row(dst, r, n, tid, C::kThreads);
    if (has1n) stage_row(dst + SW, r + sb, n, tid, C::kThreads);
  };
  // The next unit's input (and pre-gate) rows: one commit group, waited for at the top of that unit.
  auto stage_unit = [&](int64_t un) {
    const UnitRows ur = unit_rows(un);
    stage_pair(stg, row0(p.u, p.u_sb, p.u_sh, ur), p.u_sb, ur.has1, len);
    if constexpr (kStagePre) stage_pair(stg + 2 * SW, row0(p.pregate, p.pre_sb, p.pre_sh, ur), p.pre_sb, ur.has1, len);
    cp_async_commit();
  };
  if (!kDirect && blockIdx.x < units) stage_unit(blockIdx.x);
  for (int64_t unit = blockIdx.x; unit < units; unit += gridDim.x) {
  const UnitRows ur = unit_rows(unit);
  const int64_t h = ur.h, b0 = ur.b0;
  const bool has1 = ur.has1;

  const T* g0 = kPre ? row0(p.pregate, p.pre_sb, p.pre_sh, ur) : nullptr;
  const T* g1 = kPre ? (has1 ? g0 + p.pre_sb : g0) : nullptr;
  const T* pg0 = kPost ? row0(p.postgate, p.post_sb, p.post_sh, ur) : nullptr;
  const T* pg1 = kPost && has1 ? pg0 + p.post_sb : nullptr;

  // Phase 0: per row, a power-of-two scale so max |x| lands below 2^9 (x = u * pregate; fp16's relative precision
  // does not depend on the scale, and 2^9 leaves 2^7 of headroom in the fp16 intermediates for peaky outputs, e.g.
  // a filter matched to its input), scaling each row on its own so the pair's rounding cross-talk stays relative to
  // comparable magnitudes. |x| orders like the 15 low bits of a bf16/fp16 sample (inf and NaN on top), so the maxima
  // are SIMD integer maxima over packed pairs, read from the staged rows (16 bytes at a time). Gated rows bound max |u g| by max |u| max |g| (scale sigma_u sigma_g, each factor in
  // float range). A row holding inf/NaN gets scale 0 (its partner stays clean) and is written as NaN, as an FFT
  // convolution of it would be.
  // kCirc (the long path's inner pass) has no phase 0: pass 1 wrote the workspace already scaled (max |x| < 2^9 per
  // row, DFT / R keeps it there) and finite (an inf/NaN row is zeros there and NaN in pass 3), so su = inv = 1 and
  // no row is bad. The rescale only ever scaled rows up: without it, a row whose typical values sit far below its
  // bound brings its smallest intermediates nearer fp16's subnormals (H100, 4M gated: error 2.0-2.1e-3 -> 2.2-2.4e-3;
  // other sizes unchanged), against the scan, its barrier and the per-sample scale and selects (NOTES.md v21).
  cp_async_wait_all();  // this unit's staged rows (issued one unit earlier, or in the prologue)
  if (!kCirc && tid < 4) s_max[tid] = 0;
  __syncthreads();
  // 32-bit loads of gate sample pairs from device memory are safe when the gate rows start 4-byte aligned.
  const bool vec_g = !kPre || (aligned4(g0) && aligned4(g1));
  // Per row: scale factors (sigma_u, sigma_g) and the output factor 1 / (sigma_u sigma_g), or bad.
  float su[2] = {1.f, 1.f}, sg[2] = {1.f, 1.f}, inv[2] = {1.f, 1.f};
  bool badr[2] = {false, false};
  if constexpr (!kCirc) {
  {
    uint32_t b[4] = {0u, 0u, 0u, 0u};  // u0, u1, g0, g1
    auto vmax4 = [](uint32_t m, uint4 v) {
      constexpr uint32_t kAbs = 0x7fff7fffu;
      return __vmaxu2(__vmaxu2(m, v.x & kAbs), __vmaxu2(__vmaxu2(v.y & kAbs, v.z & kAbs), v.w & kAbs));
    };
    const uint4* st4 = reinterpret_cast<const uint4*>(stg);
    for (int w = tid; w < SW / 4; w += C::kThreads) {
      b[0] = vmax4(b[0], st4[w]);
      if (has1) b[1] = vmax4(b[1], st4[SW / 4 + w]);
      if constexpr (kStagePre) {
        b[2] = vmax4(b[2], st4[2 * (SW / 4) + w]);
        if (has1) b[3] = vmax4(b[3], st4[3 * (SW / 4) + w]);
      }
    }
    if constexpr (kPre && !kStagePre) {
      // Unstaged gate rows (N = 2^15) from device memory: 16-byte loads, all of a thread's issued before any is used
      // (one memory latency per unit instead of one per iteration); the partial last chunk and unaligned rows go by
      // sample pairs.
      constexpr int kIt = (SW / 4 + C::kThreads - 1) / C::kThreads;
      const bool v16 = (reinterpret_cast<uintptr_t>(g0) & 15) == 0 && (reinterpret_cast<uintptr_t>(g1) & 15) == 0;
      const int64_t full = v16 ? len >> 3 : 0;  // whole 8-sample chunks read as uint4
      uint4 v[2][kIt];
#pragma unroll
      for (int i = 0; i < kIt; ++i) {
        const int64_t w = tid + i * C::kThreads;
        const bool ok = w < full;
        v[0][i] = ok ? __ldg(reinterpret_cast<const uint4*>(g0) + w) : make_uint4(0u, 0u, 0u, 0u);
        v[1][i] = ok && has1 ? __ldg(reinterpret_cast<const uint4*>(g1) + w) : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
      for (int i = 0; i < kIt; ++i) {
        b[2] = vmax4(b[2], v[0][i]);
        b[3] = vmax4(b[3], v[1][i]);
      }
      for (int64_t n = 8 * full + 2 * tid; n < len; n += 2 * C::kThreads) {
        b[2] = __vmaxu2(b[2], load_bits2(g0, n, len, vec_g) & 0x7fff7fffu);
        if (has1) b[3] = __vmaxu2(b[3], load_bits2(g1, n, len, vec_g) & 0x7fff7fffu);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint32_t m = max(b[i] & 0xffffu, b[i] >> 16);
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
      if (lane == 0 && (i < 2 || kPre)) atomicMax(&s_max[i], (int)m);
    }
  }
  __syncthreads();
  int eus[2], egs[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float mu = abs_or_inf(bits_to_float<T>((uint32_t)s_max[r]));
    const float mg = kPre ? abs_or_inf(bits_to_float<T>((uint32_t)s_max[2 + r])) : 1.f;
    badr[r] = !(mu <= 3.4e38f && mg <= 3.4e38f);
    eus[r] = egs[r] = 0;
    if (mu > 0.f) frexpf(mu, &eus[r]);
    if (kPre && mg > 0.f) frexpf(mg, &egs[r]);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int eu = eus[r], eg = egs[r];
    const int tu = kPre ? 4 : 9;  // gated: 2^4 * 2^5 = 2^9
    su[r] = badr[r] ? 0.f : ldexpf(1.f, tu - eu);
    sg[r] = kPre && !badr[r] ? ldexpf(1.f, 5 - eg) : 1.f;
    inv[r] = ldexpf(1.f, eu - tu) * (kPre ? ldexpf(1.f, eg - 5) : 1.f);
  }
  }  // !kCirc
  const bool bad0 = badr[0], bad1 = badr[1];
  // Rows phase 1 must read as zeros (a bad row; the absent partner of an odd batch's last row, whose staging rows
  // hold an earlier unit's samples): their staged input and pre-gate rows are zeroed here, once per unit and only
  // when it happens, so the per-sample loads take no selects (NOTES.md v25). Unstaged pre-gate rows (N = 2^15) come
  // from device memory and may hold inf/NaN themselves: that configuration keeps the selects (kSelect).
  constexpr bool kSelect = kPre && !kStagePre;
  if constexpr (!kCirc && !kSelect) {
    if (bad0 || bad1 || !has1) {
      const bool zero_row[2] = {bad0, bad1 || !has1};
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (!zero_row[r]) continue;
        for (int w = tid; w < SW; w += C::kThreads) {
          stg[r * SW + w] = 0u;
          if constexpr (kStagePre) stg[(2 + r) * SW + w] = 0u;
        }
      }
      __syncthreads();
    }
  }

  // Samples n, n + 1 (n even, n < N / 2) of z = s_b x_b + i s_{b+1} x_{b+1} (s = sigma_u sigma_g of the row), one
  // 32-bit shared-memory word per staged row (device memory for unstaged gates); bad rows give zeros.
  // gw0, gw1: the pre-gate words of samples n, n + 1 when the pre-gate is not staged (N = 2^15), or kDirect's input
  // words of both rows, loaded by the caller ahead of the item's arithmetic.
  auto load_x2 = [&](int n, float2* z, uint32_t gw0 = 0u, uint32_t gw1 = 0u) {
    float2 a = unpack_samples<T>(kDirect ? gw0 : stg[n >> 1]);
    if constexpr (kCirc) {  // both rows present, already scaled, never bad
      const float2 c = unpack_samples<T>(kDirect ? gw1 : stg[SW + (n >> 1)]);
      z[0] = make_float2(a.x, c.x);
      z[1] = make_float2(a.y, c.y);
      return;
    }
    // Without kSelect, bad and absent rows were zeroed in the staging rows: no test per sample.
    const bool present1 = !kSelect || has1;
    float2 c = present1 ? unpack_samples<T>(stg[SW + (n >> 1)]) : make_float2(0.f, 0.f);
    a.x *= su[0]; a.y *= su[0]; c.x *= su[1]; c.y *= su[1];
    if (kPre) {
      const float2 ga = unpack_samples<T>(kStagePre ? stg[2 * SW + (n >> 1)] : gw0);
      a.x *= ga.x * sg[0]; a.y *= ga.y * sg[0];
      if (present1) {
        const float2 gc = unpack_samples<T>(kStagePre ? stg[3 * SW + (n >> 1)] : gw1);
        c.x *= gc.x * sg[1]; c.y *= gc.y * sg[1];
      }
    }
    z[0] = make_float2(kSelect && bad0 ? 0.f : a.x, kSelect && bad1 ? 0.f : c.x);
    z[1] = make_float2(kSelect && bad0 ? 0.f : a.y, kSelect && bad1 ? 0.f : c.y);
  };
  // Phase 1: the scalar s-point column DFT over the causal (non-zero) half, then the first twiddle.
  constexpr int kIn = kCirc ? S : (S / 2 > 0 ? S / 2 : 1);
  if constexpr (C::kColMma) {
    // p = 16 c + a; item (a pair ap, q pair 2qq, 2qq + 1) -> slots rho = 16 f + a (col form). s = 1 (r = 16): rows
    // p = a >= 8 are the causal zero half, which the column stage does not read (kZeroHalf): not written either.
    constexpr int kItems1 = (kZeroHalf ? 4 : 8) * 128;
    // kDirect: both rows' words from device memory (fp16 rows, 4-byte aligned: launch_monarch_circular checks), the
    // next item's requested before this item's arithmetic (a double buffer, as the last phase's unstaged post-gate).
    uint32_t dw[2][kIn][2] = {};
    const uint32_t* const du0 = kDirect ? reinterpret_cast<const uint32_t*>(row0(p.u, p.u_sb, p.u_sh, ur)) : nullptr;
    const uint32_t* const du1 = kDirect ? du0 + p.u_sb / 2 : nullptr;
    auto fetch_direct = [&](int it) {
      const int q0n = 2 * (it & 127), apn = it >> 7;
#pragma unroll
      for (int ai = 0; ai < 2; ++ai)
#pragma unroll
        for (int c = 0; c < kIn; ++c) {
          const int n = 256 * (16 * c + 2 * apn + ai) + q0n;
          dw[ai][c][0] = __ldg(du0 + (n >> 1));
          dw[ai][c][1] = __ldg(du1 + (n >> 1));
        }
    };
    if constexpr (kDirect) {
      if (tid < kItems1) fetch_direct(tid);
    }
    for (int item = tid; item < kItems1; item += C::kThreads) {
      const int qq = item & 127, ap = item >> 7, q0 = 2 * qq;
      // Unstaged pre-gate (N = 2^15): all of the item's words requested before any is used (one memory latency).
      uint32_t gw[2][kIn][2] = {};
      if constexpr (kDirect) {
#pragma unroll
        for (int ai = 0; ai < 2; ++ai)
#pragma unroll
          for (int c = 0; c < kIn; ++c) gw[ai][c][0] = dw[ai][c][0], gw[ai][c][1] = dw[ai][c][1];
        if (item + C::kThreads < kItems1) fetch_direct(item + C::kThreads);
      }
      if constexpr (kPre && !kStagePre) {
#pragma unroll
        for (int ai = 0; ai < 2; ++ai)
#pragma unroll
          for (int c = 0; c < kIn; ++c) {
            const int n = 256 * (16 * c + 2 * ap + ai) + q0;
            gw[ai][c][0] = load_bits2(g0, n, len, vec_g);
            gw[ai][c][1] = has1 ? load_bits2(g1, n, len, vec_g) : 0u;
          }
      }
      float2 xf[2][2][S];  // [row ai][qi][f]
#pragma unroll
      for (int ai = 0; ai < 2; ++ai) {
        float2 xc[2][kIn];
#pragma unroll
        for (int c = 0; c < kIn; ++c) {
          float2 z[2];
          load_x2(256 * (16 * c + 2 * ap + ai) + q0, z, gw[ai][c][0], gw[ai][c][1]);
          xc[0][c] = z[0];
          xc[1][c] = z[1];
        }
#pragma unroll
        for (int qi = 0; qi < 2; ++qi) small_dft<S, kIn, S, false>(xc[qi], xf[ai][qi]);
      }
      // Twiddle W_N^(f (256 a + q)) = W_r^(a f) W_N^(q f): the f part of W_N^(q k1), k1 = f + S e (the e part,
      // W_N^(q S e), does not depend on the item and is applied after the column mma). Powers of one sincos per
      // (a, q) by recurrence over f (fp32, error ~1e-7 after 7 steps).
      float2 base[2][2], tw[2][2];  // [ai][qi]
#pragma unroll
      for (int ai = 0; ai < 2; ++ai)
#pragma unroll
        for (int qi = 0; qi < 2; ++qi) {
          base[ai][qi] = S > 1 ? twid(256 * (2 * ap + ai) + q0 + qi, LOGN) : make_float2(1.f, 0.f);
          tw[ai][qi] = make_float2(1.f, 0.f);
        }
#pragma unroll
      for (int f = 0; f < S; ++f) {
        if (f > 0) {
#pragma unroll
          for (int ai = 0; ai < 2; ++ai)
#pragma unroll
            for (int qi = 0; qi < 2; ++qi) tw[ai][qi] = f == 1 ? base[ai][qi] : cmul(tw[ai][qi], base[ai][qi]);
        }
        const int rho2 = 8 * f + ap;
#pragma unroll
        for (int qi = 0; qi < 2; ++qi) {
          const float2 v0 = f == 0 ? xf[0][qi][f] : cmul(xf[0][qi][f], tw[0][qi]);
          const float2 v1 = f == 0 ? xf[1][qi][f] : cmul(xf[1][qi][f], tw[1][qi]);
          const int w = widx<Q>(unit_j(q0 + qi), rho2, unit_qp(q0 + qi));
          sre[w] = pack2(v0.x, v1.x);
          sim[w] = pack2(v0.y, v1.y);
        }
      }
    }
  } else {
    // r < 16: p = c; item = pair unit qp (q, q + 16) -> slots rho = f (row form), twiddle W_N^(q f).
    for (int qp = tid; qp < 128; qp += C::kThreads) {
      const int q = ((qp >> 4) << 5) | (qp & 15);
      // Lane pairs (l, l ^ 1): the even lane loads samples (q, q + 1), the odd one (q + 15, q + 16) of its own q; one
      // shuffle leaves each lane its (q, q + 16).
      const bool odd = lane & 1;
      float2 xc[2][kIn], xf[2][S];
#pragma unroll
      for (int c = 0; c < kIn; ++c) {
        float2 z[2];
        load_x2(256 * c + (odd ? q + 15 : q), z);
        const float2 send = odd ? z[0] : z[1];
        const float2 recv = make_float2(__shfl_xor_sync(0xffffffffu, send.x, 1), __shfl_xor_sync(0xffffffffu, send.y, 1));
        xc[0][c] = odd ? recv : z[0];
        xc[1][c] = odd ? z[1] : recv;
      }
#pragma unroll
      for (int qi = 0; qi < 2; ++qi) small_dft<S, kIn, S, false>(xc[qi], xf[qi]);
#pragma unroll
      for (int f = 0; f < S; ++f) {
        uint32_t wr = pack2(xf[0][f].x, xf[1][f].x), wim = pack2(xf[0][f].y, xf[1][f].y);
        if (f > 0) {
          const uint2 tw = s_p1[f * 128 + qp];
          cmul_h2(wr, wim, tw.x, tw.y, as_u32(__hneg2(as_h2(tw.y))));
        }
        const int w = widx<Q>(f & 1, f >> 1, qp);
        sre[w] = wr;
        sim[w] = wim;
      }
    }
  }
  __syncthreads();
  // The staging rows are free again: start copying this unit's post-gate (its own commit group, waited for before
  // phase 5) and the next unit's input; both land during this unit's transform.
  if constexpr (kStagePost) {
    stage_pair(stg_post, pg0, p.post_sb, has1, out_len);
    cp_async_commit();
  }
  if (!kDirect && unit + gridDim.x < units) stage_unit(unit + gridDim.x);

  // Column mma stage (r >= 16): item (f, 32-column tile qt); rows 16 f + (0..15) read in col form, written in row form.
  // Forward: D[e][q] = F/16 X, times W_N^(q S e) (phase 1 applied the f part). Inverse: D[a][q] = conj(F)/16 X (the
  // last phase applies conj W_N^(f (256 a + q))). Every shared-memory offset is f 1024 plus a lane constant of the column tile, and with kWarps a
  // multiple of 8 a warp keeps one tile qt = warp % 8 for all its items: offsets and forward twiddles (packed half2,
  // tiles A and B in one word like the stored values) are then set up once per stage.
  auto col_stage = [&](auto inverse_tag) {
    constexpr bool kInv = decltype(inverse_tag)::value;
    constexpr bool kFixedQt = C::kWarps % 8 == 0;
    int ld_off[2][2], st_off[2][2];        // [hh][tile], [hh][c & 1]
    uint32_t cwr[2][4], cwi[2][4];         // forward: W_N^(q S e) for [hh][c], (tile A, tile B) per word
    auto setup_tile = [&](int qt) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int qpB = unit_qp(32 * qt + 8 * hh + g);
#pragma unroll
        for (int tile = 0; tile < 2; ++tile) ld_off[hh][tile] = widx<Q>(tile, t, qpB);  // f = 0, rows 0..3
#pragma unroll
        for (int cl = 0; cl < 2; ++cl) st_off[hh][cl] = widx<Q>(g & 1, g >> 1, unit_qp(32 * qt + 8 * hh + 2 * t + cl));
        if constexpr (!kInv) {
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int e = g + 8 * (c >> 1), q = 32 * qt + 8 * hh + 2 * t + (c & 1);
            const float2 wa = twid(q * S * e, LOGN), wb = twid((q + 16) * S * e, LOGN);
            cwr[hh][c] = pack2(wa.x, wb.x);
            cwi[hh][c] = pack2(wa.y, wb.y);
          }
        }
      }
    };
    // r = 16 (four warps, s = 1): a warp's two items are the column tiles qt = warp and warp + 4 (f = 0). The second
    // tile's columns are 128 further: its offsets are the first's + 64 words (qp + 64 sets only bit 6, which widx's
    // swizzle leaves alone) and its forward twiddles the first's times W_4096^(128 e) = W_32^e, one half2 product per
    // word instead of two __sincosf and two conversions (NOTES.md v27).
    constexpr bool kTwoTiles = C::kR == 16;
    static_assert(!kTwoTiles || (C::kWarps == 4 && S == 1), "r = 16: two tiles per warp, both at f = 0");
    auto second_tile = [&]() {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          ld_off[hh][k] += 64;
          st_off[hh][k] += 64;
        }
      if constexpr (!kInv) {
        // e = g + 8 (c >> 1), and W_32^(g + 8) = -i W_32^g: (wr, wi) -> (wi, -wr) for c >= 2.
        const float2 w = twid(g, 5);
        const uint32_t pr = pack2(w.x, w.x), pi = pack2(w.y, w.y), nr = pack2(-w.x, -w.x), ni = pack2(-w.y, -w.y);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            if (c < 2) cmul_h2(cwr[hh][c], cwi[hh][c], pr, pi, ni);
            else cmul_h2(cwr[hh][c], cwi[hh][c], pi, nr, pr);
          }
      }
    };
    if constexpr (kFixedQt) setup_tile(warp & 7);
    if constexpr (kTwoTiles) setup_tile(warp);
    for (int item = warp; item < 8 * S; item += C::kWarps) {
      const int f = item >> 3;
      if constexpr (kTwoTiles) {
        if (item != warp) second_tile();
      } else if constexpr (!kFixedQt) {
        setup_tile(item & 7);
      }
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float dr[2][4], di[2][4];
#pragma unroll
        for (int tile = 0; tile < 2; ++tile) {
          const int i0 = ld_off[hh][tile] + 1024 * f, i1 = i0 + 512;  // rows 8 f + t and 8 f + t + 4 of the pairs
          constexpr bool kUpperZero = kZeroHalf && !kInv;  // rows 8..15 are the causal padding: zero registers
          cmma_const_a<kInv>(fr, sre[i0], kUpperZero ? 0u : sre[i1], sim[i0], kUpperZero ? 0u : sim[i1], dr[tile],
                             di[tile]);
        }
        __syncwarp();
        // Accumulator c: row e/a = g + 8 (c >> 1), column q = 32 qt + 8 hh + 2 t + (c & 1) (+16 for tile B); slot
        // rho = 16 f + row.
#pragma unroll
        for (int c = 0; c < (kZeroHalf && kInv ? 2 : 4); ++c) {
          const int w = st_off[hh][c & 1] + 1024 * f + 512 * (c >> 1);
          uint32_t wr = pack2(dr[0][c], dr[1][c]), wim = pack2(di[0][c], di[1][c]);
          if constexpr (!kInv) cmul_h2(wr, wim, cwr[hh][c], cwi[hh][c], as_u32(__hneg2(as_h2(cwi[hh][c]))));
          sre[w] = wr;
          sim[w] = wim;
        }
        __syncwarp();
      }
    }
  };
  if constexpr (C::kColMma) {
    col_stage(std::false_type{});
    __syncthreads();
  }

  // Row stage: per row pair, forward 256-point DFT (two mma stages in registers), spectrum, inverse 256-point DFT,
  // conj W_N^(q k1) (r >= 16: only its e part, at the store); rows are read in row form and written in col form
  // (r >= 16) or row form (r < 16). Slot rho holds logical row k1 = (rho % 16) S + rho / 16 (r >= 16) or rho.
  {
    const uint4* spec_h = p.spectrum_h + (size_t)h * (C::kN / 4);
    for (int rho2 = warp; rho2 < R / 2; rho2 += C::kWarps) {
      float outr[2][2][4], outi[2][2][4];  // [row][tile][c]
      // Both rows' spectrum fragments (fp16 complex words, 4 per lane and tile, coalesced 16-byte loads), issued
      // first so their L2 latency overlaps the forward row DFTs.
      uint4 kw[2][2];
#pragma unroll
      for (int ri = 0; ri < 2; ++ri)
#pragma unroll
        for (int j = 0; j < 2; ++j) kw[ri][j] = __ldg(spec_h + (size_t)(2 * rho2 + ri) * 64 + 32 * j + lane);
#pragma unroll
      for (int ri = 0; ri < 2; ++ri) {
        // R1: Y = F/16 X, X[a'][b'] = row[16 a' + b'].
        float yr[2][4], yi[2][4];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int i0 = widx<Q>(ri, rho2, unit_qp(32 * t + 8 * j + g));
          const int i1 = widx<Q>(ri, rho2, unit_qp(32 * t + 128 + 8 * j + g));
          cmma_const_a<false>(fr, sre[i0], sre[i1], sim[i0], sim[i1], yr[j], yi[j]);
        }
        uint32_t ar[4], ai[4];
        acc_to_a(yr, yi, ar, ai);
#pragma unroll
        for (int reg = 0; reg < 4; ++reg) cmul_h2(ar[reg], ai[reg], twr[reg], twi[reg], twn[reg]);
        // R2: Z = Y F/16 -> frequency k = k1 + r (k1' + 16 d'), d' = 8 j + 2 t + (c & 1); packed as IR1's B operand
        // (slots 2 m, 2 m + 1 per word) and times the spectrum, whose words come in that packing: (re, im) of
        // slots (0, 1), then of (2, 3).
        uint32_t pr[2][2], pi[2][2];  // [j][m]
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          float zr[4], zi[4];
          cmma_const_b<false>(fr, j, ar, ai, zr, zi);
          const uint32_t kw4[4] = {kw[ri][j].x, kw[ri][j].y, kw[ri][j].z, kw[ri][j].w};
#pragma unroll
          for (int m = 0; m < 2; ++m) {
            pr[j][m] = pack2(zr[2 * m], zr[2 * m + 1]);
            pi[j][m] = pack2(zi[2 * m], zi[2 * m + 1]);
            const uint32_t kr = kw4[2 * m], ki = kw4[2 * m + 1];
            cmul_h2(pr[j][m], pi[j][m], kr, ki, as_u32(__hneg2(as_h2(ki))));
          }
        }
        // IR1: U^T = conj(F)/16 P^T; B tile m (k1' = 8 m + ...) = {P tile 0 rows of m, P tile 1 rows of m}.
        float ur[2][4], ui[2][4];
#pragma unroll
        for (int m = 0; m < 2; ++m) cmma_const_a<true>(fr, pr[0][m], pr[1][m], pi[0][m], pi[1][m], ur[m], ui[m]);
        acc_to_a(ur, ui, ar, ai);
#pragma unroll
        for (int reg = 0; reg < 4; ++reg) cmulc_h2(ar[reg], ai[reg], twr[reg], twi[reg], twn[reg]);
        // IR2: y^T = U^T conj(F)/16 -> rows b' = g + 8 (c >> 1), columns a' = 8 j + 2 t + (c & 1), q = 16 a' + b'.
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          float vr[4], vi[4];
          cmma_const_b<true>(fr, j, ar, ai, vr, vi);
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            // Slot (j, c) is sample q = 16 (8 j + 2 t + (c & 1)) + g + 8 (c >> 1); conj W_N^(q k1) is applied in half2
            // at the store below, from a table: r >= 16 its e part (conj W_N^(q f) follows in the last phase), r < 16
            // all of it (k1 = the slot row 2 rho2 + ri).
            outr[ri][j][c] = vr[c];
            outi[ri][j][c] = vi[c];
          }
        }
      }
      __syncwarp();
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int q = 16 * (8 * j + 2 * t + (c & 1)) + g + 8 * (c >> 1);
          if constexpr (C::kColMma) {
            const int w = widx<Q>(unit_j(q), rho2, unit_qp(q));
            const uint4 tw = s_ir2[((rho2 & 7) * 4 + 2 * j + (c >> 1)) * 32 + lane];
            const uint32_t cr = (c & 1) ? tw.z : tw.x, ci = (c & 1) ? tw.w : tw.y;
            uint32_t wr = pack2(outr[0][j][c], outr[1][j][c]), wim = pack2(outi[0][j][c], outi[1][j][c]);
            cmulc_h2(wr, wim, cr, ci, as_u32(__hneg2(as_h2(ci))));
            sre[w] = wr;
            sim[w] = wim;
          } else if ((c & 1) == 0) {  // row form: (q, q + 16) are slots c and c + 1
#pragma unroll
            for (int ri = 0; ri < 2; ++ri) {
              const int w = widx<Q>(ri, rho2, unit_qp(q));
              const uint4 tw = s_ir2[((2 * rho2 + ri) * 2 + j) * 32 + lane];
              const uint32_t cr = c == 0 ? tw.x : tw.z, ci = c == 0 ? tw.y : tw.w;
              uint32_t wr = pack2(outr[ri][j][c], outr[ri][j][c + 1]), wim = pack2(outi[ri][j][c], outi[ri][j][c + 1]);
              cmulc_h2(wr, wim, cr, ci, as_u32(__hneg2(as_h2(ci))));
              sre[w] = wr;
              sim[w] = wim;
            }
          }
        }
      }
      __syncwarp();
    }
  }
  // This unit's post-gate rows (the older commit group; the next unit's input may still be in flight).
  if constexpr (kStagePost) {
    if (unit + gridDim.x < units) asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    else cp_async_wait_all();
  }
  __syncthreads();

  if constexpr (C::kColMma) {
    col_stage(std::true_type{});
    __syncthreads();
  }

  // Phase 5: the scalar s-point inverse column DFT, only for the causal half (p < r/2), scaled by gain / sigma.
  T* y0 = static_cast<T*>(p.y) + b0 * p.y_sb + h * p.y_sh;
  T* y1 = has1 ? y0 + p.y_sb : nullptr;
  const float gain = p.gain[h];
  const float scale0 = bad0 ? __int_as_float(0x7fc00000) : gain * inv[0];
  const float scale1 = bad1 ? __int_as_float(0x7fc00000) : gain * inv[1];
  const bool vec_out = aligned4(y0) && (!has1 || aligned4(y1)) && (!kPost || (aligned4(pg0) && (!has1 || aligned4(pg1))));
  // Lane pairs (l, l ^ 1) hold samples (n, n + 16) and (n + 1, n + 17), n even: one shuffle turns them into the pairs
  // (n, n + 1) on the even lane and (n + 16, n + 17) on the odd lane, so every store is 32 bits.
  // pw: this output pair's post-gate words (rows b, b + 1) when the post-gate is not staged, fetched one item ahead.
  // Outputs m < fast_end of a unit whose rows are both present and 4-byte aligned, with every output from 0 on kept,
  // take unchecked 32-bit stores at int offsets (m < N / 2 <= 2^14): the bounds and alignment tests and the 64-bit
  // addresses of store_pair cost as much as the rest of the store (NOTES.md v25). fast_end is a multiple of 256, so
  // whether an item takes them is the same across its warp (its 32 items share their output row).
  using V2 = typename Vec2<T>::type;
  const int fast_end = !kAcc && vec_out && has1 && p.out_from == 0
                           ? static_cast<int>(out_len < C::kN / 2 ? out_len : C::kN / 2) & ~255 : 0;
  auto store = [&](int n, float2 v_lo, float2 v_hi, uint32_t pw0, uint32_t pw1) {
    const bool odd = lane & 1;
    const float2 send = odd ? v_lo : v_hi;
    const float2 recv = make_float2(__shfl_xor_sync(0xffffffffu, send.x, 1), __shfl_xor_sync(0xffffffffu, send.y, 1));
    const float2 e0 = odd ? recv : v_lo, e1 = odd ? v_hi : recv;  // samples m, m + 1
    const int m = odd ? n - 1 + 16 : n;
    float a0 = e0.x * scale0, a1 = e1.x * scale0, c0 = e0.y * scale1, c1 = e1.y * scale1;
    // kCirc: the long path's workspace rows, 16-bit, 4-byte aligned, both rows present, every sample kept (m < N' <=
    // 2^14), no gates: always the unchecked stores.
    if (kCirc || m < fast_end) {
      if (kPost) {
        const float2 pa = unpack_samples<T>(kStagePost ? stg_post[m >> 1] : pw0);
        const float2 pc = unpack_samples<T>(kStagePost ? stg_post[SW + (m >> 1)] : pw1);
        a0 *= pa.x; a1 *= pa.y; c0 *= pc.x; c1 *= pc.y;
      }
      *reinterpret_cast<V2*>(y0 + m) = Vec2<T>::from_f2(a0, a1);
      *reinterpret_cast<V2*>(y1 + m) = Vec2<T>::from_f2(c0, c1);
      return;
    }
    if (m >= out_len || m < p.out_from) return;  // out_from is a multiple of 8, so a pair is never split
    if (kPost) {
      const float2 pa = unpack_samples<T>(kStagePost ? stg_post[m >> 1] : pw0);
      a0 *= pa.x; a1 *= pa.y;
    }
    if constexpr (kAcc) {  // y += result (block-Toeplitz sums): the pair already in y, in fp32
      const float2 o = unpack_samples<T>(load_bits2(y0, m, out_len, vec_out));
      a0 += o.x; a1 += o.y;
    }
    store_pair(y0, m, out_len, vec_out, a0, a1);
    if (has1) {
      if (kPost) {
        const float2 pc = unpack_samples<T>(kStagePost ? stg_post[SW + (m >> 1)] : pw1);
        c0 *= pc.x; c1 *= pc.y;
      }
      if constexpr (kAcc) {
        const float2 o = unpack_samples<T>(load_bits2(y1, m, out_len, vec_out));
        c0 += o.x; c1 += o.y;
      }
      store_pair(y1, m, out_len, vec_out, c0, c1);
    }
  };
  constexpr int kOut = kCirc ? S : (S / 2 > 0 ? S / 2 : 1);
  {
    // item (a, unit qp): slots rho = kStride f + a (row form), outputs p = kStride c + a; with no column mma stage
    // (r < 16) kStride = 1 and a = 0.
    constexpr int kStride = C::kColMma ? 16 : 1;
    constexpr int kRows = C::kColMma ? (S == 1 && !kCirc ? 8 : 16) : 1;  // s = 1: only p = a < 8 is causal
    // Unstaged post-gate (N = 2^15): the words an item multiplies by are requested one item ahead (double buffer),
    // so their latency overlaps the previous item's DFT and stores.
    constexpr bool kFetchPost = kPost && !kStagePost;
    uint32_t pw[kOut][2] = {}, pw_next[kOut][2] = {};
    auto fetch_post = [&](int item) {
      const int qp = item & 127, a = item >> 7;
      const int q = ((qp >> 4) << 5) | (qp & 15);
#pragma unroll
      for (int c = 0; c < kOut; ++c) {
        const int64_t n = 256 * (int64_t)(kStride * c + a) + q, m = (lane & 1) ? n + 15 : n;
        pw_next[c][0] = load_bits2(pg0, m, out_len, vec_out);
        pw_next[c][1] = has1 ? load_bits2(pg1, m, out_len, vec_out) : 0u;
      }
    };
    if constexpr (kFetchPost) {
      if (tid < kRows * 128) fetch_post(tid);
    }
    for (int item = tid; item < kRows * 128; item += C::kThreads) {
      const int qp = item & 127, a = item >> 7;
      const int q = ((qp >> 4) << 5) | (qp & 15);
      if constexpr (kFetchPost) {
#pragma unroll
        for (int c = 0; c < kOut; ++c) pw[c][0] = pw_next[c][0], pw[c][1] = pw_next[c][1];
        if (item + C::kThreads < kRows * 128) fetch_post(item + C::kThreads);
      }
      float2 x[2][S];
#pragma unroll
      for (int f = 0; f < S; ++f) {
        const int rho = kStride * f + a;
        const int w = widx<Q>(rho & 1, rho >> 1, qp);
        const float2 re = unpack2(sre[w]), im = unpack2(sim[w]);
        x[0][f] = make_float2(re.x, im.x);
        x[1][f] = make_float2(re.y, im.y);
      }
      if constexpr (C::kColMma && S > 1) {
        // conj W_N^(f (256 a + q)) = conj W_r^(a f) conj W_N^(q f) (the f part of the row stage's conj W_N^(q k1)):
        // powers of one sincos per (a, q) by recurrence over f (fp32).
#pragma unroll
        for (int qi = 0; qi < 2; ++qi) {
          const float2 base = twid(256 * a + q + 16 * qi, LOGN);
          float2 tw = base;
#pragma unroll
          for (int f = 1; f < S; ++f) {
            if (f > 1) tw = cmul(tw, base);
            x[qi][f] = cmulc(x[qi][f], tw);
          }
        }
      }
      float2 o[2][kOut];
#pragma unroll
      for (int qi = 0; qi < 2; ++qi) small_dft<S, S, kOut, true>(x[qi], o[qi]);
#pragma unroll
      for (int c = 0; c < kOut; ++c) store(256 * (kStride * c + a) + q, o[0][c], o[1][c], pw[c][0], pw[c][1]);
    }
  }
  __syncthreads();  // the next unit overwrites shared memory and s_max
  }
}

template <typename T, int kLogR, bool kPre, bool kPost, bool kCirc = false, bool kAcc = false>
cudaError_t launch_t(const ConvParams& p, cudaStream_t stream) {
  using C = Cfg<kLogR, kPre || kPost, kCirc>;
  auto kernel = monarch_conv_kernel<T, kLogR, kPre, kPost, kCirc, kAcc>;
  constexpr size_t kSmem = C::smem(kPre, kPost);
  // The shared-memory attribute and the wave (SMs x resident blocks) are fixed per device and kernel: set and queried
  // once per device, not on every launch (three of the four runtime calls each launch of the long path's inner pass
  // and of the blocks' calls made on the host before it; NOTES.md v22).
  constexpr int kMaxDevices = 64;
  static std::atomic<int64_t> waves[kMaxDevices];
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  int64_t wave = device < kMaxDevices ? waves[device].load(std::memory_order_relaxed) : 0;
  if (wave == 0) {
    if ((err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kSmem))) return err;
    int sms = 0, per_sm = 0;
    if ((err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess) return err;
    if ((err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, C::kThreads, kSmem)) != cudaSuccess)
      return err;
    wave = (int64_t)sms * (per_sm > 0 ? per_sm : 1);
    if (device < kMaxDevices) waves[device].store(wave, std::memory_order_relaxed);
  }
  const int64_t units = ((p.batch + 1) / 2) * p.channels;
  const int64_t blocks = units < wave ? units : wave;
  kernel<<<dim3((unsigned)blocks), dim3(C::kThreads), kSmem, stream>>>(p);
  return cudaGetLastError();
}

struct Launch {
  template <typename T, bool kPre, bool kPost>
  static cudaError_t run(const ConvParams& p, cudaStream_t stream) {
    if (p.accumulate) {  // the block-Toeplitz terms: the two largest sizes only (genoconv/ops/cuda.py toeplitz_plan)
      static_assert(kMonarchMinAccLogN == 14, "instantiated below: N = 2^14, 2^15");
      switch (p.log_n) {
        case 14: return launch_t<T, 6, kPre, kPost, false, true>(p, stream);
        case 15: return launch_t<T, 7, kPre, kPost, false, true>(p, stream);
        default: return cudaErrorInvalidValue;
      }
    }
    switch (p.log_n) {
      case 10: return launch_t<T, 2, kPre, kPost>(p, stream);
      case 11: return launch_t<T, 3, kPre, kPost>(p, stream);
      case 12: return launch_t<T, 4, kPre, kPost>(p, stream);
      case 13: return launch_t<T, 5, kPre, kPost>(p, stream);
      case 14: return launch_t<T, 6, kPre, kPost>(p, stream);
      case 15: return launch_t<T, 7, kPre, kPost>(p, stream);
      default: return cudaErrorInvalidValue;
    }
  }
};

}  // namespace monarch

cudaError_t launch_monarch(const ConvParams& p, DType dtype, cudaStream_t stream) {
  return dispatch_gates<monarch::Launch>(p, dtype, stream);
}

cudaError_t launch_monarch_circular(const ConvParams& p, cudaStream_t stream) {
  // The kernel's circular form stores unchecked (every sample of 4-byte aligned row pairs): refuse anything else.
  if (p.pregate != nullptr || p.postgate != nullptr || p.batch % 2 != 0 || p.out_from != 0 || p.out_len != 0 ||
      (reinterpret_cast<uintptr_t>(p.y) & 3) != 0 || p.y_sb % 2 != 0 || p.y_sh % 2 != 0)
    return cudaErrorInvalidValue;
  static_assert(kLongMinInnerLogN == 9 && kLongMaxInnerLogN == 14, "instantiated below: r = 2 .. 64");
  switch (p.log_n) {
    case 9: return monarch::launch_t<__half, 1, false, false, true>(p, stream);
    case 10: return monarch::launch_t<__half, 2, false, false, true>(p, stream);
    case 11: return monarch::launch_t<__half, 3, false, false, true>(p, stream);
    case 12: return monarch::launch_t<__half, 4, false, false, true>(p, stream);
    case 13: return monarch::launch_t<__half, 5, false, false, true>(p, stream);
    case 14: return monarch::launch_t<__half, 6, false, false, true>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace genoconv
