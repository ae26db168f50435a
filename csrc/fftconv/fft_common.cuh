// Device helpers shared by the fused and the multi-pass kernels: complex arithmetic, 16-bit I/O, the shared-memory
// swizzle, and radix-2^R FFT passes over data held in shared memory.
//
// Forward transforms are decimation-in-frequency (natural input -> bit-reversed output) and inverse transforms are
// decimation-in-time with conjugate twiddles run in the reverse stage order (bit-reversed input -> natural output).
// Each inverse stage undoes one forward stage up to a factor 2, so the pair needs no permutation at all: the
// pointwise product simply addresses the spectrum through a bit reversal (see NOTES.md).
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

#include "params.h"

namespace genoconv {

__device__ __forceinline__ float2 cadd(float2 a, float2 b) { return make_float2(a.x + b.x, a.y + b.y); }
__device__ __forceinline__ float2 csub(float2 a, float2 b) { return make_float2(a.x - b.x, a.y - b.y); }
__device__ __forceinline__ float2 cmul(float2 a, float2 b) {
  return make_float2(fmaf(a.x, b.x, -a.y * b.y), fmaf(a.x, b.y, a.y * b.x));
}
// a * conj(b)
__device__ __forceinline__ float2 cmulc(float2 a, float2 b) {
  return make_float2(fmaf(a.x, b.x, a.y * b.y), fmaf(a.y, b.x, -a.x * b.y));
}

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// Two consecutive 16-bit samples (t even) as floats, zero past the end. `vec` says the row start is 4-byte aligned,
// so one 32-bit load serves both (t is always even here).
template <typename T> struct Vec2;
template <> struct Vec2<__nv_bfloat16> {
  using type = __nv_bfloat162;
  static __device__ __forceinline__ float2 to_f2(type v) { return __bfloat1622float2(v); }
  static __device__ __forceinline__ type from_f2(float a, float b) { return __floats2bfloat162_rn(a, b); }
};
template <> struct Vec2<__half> {
  using type = __half2;
  static __device__ __forceinline__ float2 to_f2(type v) { return __half22float2(v); }
  static __device__ __forceinline__ type from_f2(float a, float b) { return __floats2half2_rn(a, b); }
};

template <typename T>
__device__ __forceinline__ float2 load_pair(const T* __restrict__ row, int64_t t, int64_t len, bool vec) {
  if (vec && t + 1 < len) return Vec2<T>::to_f2(*reinterpret_cast<const typename Vec2<T>::type*>(row + t));
  float2 r = make_float2(0.f, 0.f);
  if (t < len) r.x = to_float(row[t]);
  if (t + 1 < len) r.y = to_float(row[t + 1]);
  return r;
}

template <typename T>
__device__ __forceinline__ void store_pair(T* __restrict__ row, int64_t t, int64_t len, bool vec, float a, float b) {
  if (vec && t + 1 < len) {
    *reinterpret_cast<typename Vec2<T>::type*>(row + t) = Vec2<T>::from_f2(a, b);
    return;
  }
  if (t < len) row[t] = from_float<T>(a);
  if (t + 1 < len) row[t + 1] = from_float<T>(b);
}

__device__ __forceinline__ bool aligned4(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 3) == 0; }

// Samples t, t + 1 (t even) of an input row times the pre-gate's pair when kPre, as one complex value; zero past
// the end (the causal padding).
template <bool kPre, typename T>
__device__ __forceinline__ float2 load_gated_pair(const T* __restrict__ u, const T* __restrict__ pre, int64_t t,
                                                  int64_t len, bool vec) {
  float2 x = load_pair(u, t, len, vec);
  if (kPre) {
    const float2 g = load_pair(pre, t, len, vec);
    x.x *= g.x;
    x.y *= g.y;
  }
  return x;
}

// Samples t, t + 1 (t even) of an output row: v, times the post-gate's pair when kPost; bounds-checked.
template <bool kPost, typename T>
__device__ __forceinline__ void store_gated_pair(T* __restrict__ y, const T* __restrict__ post, int64_t t, int64_t len,
                                                 bool vec, float2 v) {
  if (kPost) {
    const float2 g = load_pair(post, t, len, vec);
    v.x *= g.x;
    v.y *= g.y;
  }
  store_pair(y, t, len, vec, v.x, v.y);
}

// Shared-memory swizzle for float2 elements: XOR the low 4 index bits with the next 4. A bank row holds 16 float2,
// so strided access patterns of the small-span FFT passes spread over all banks; contiguous patterns stay contiguous
// (the XOR only permutes inside an aligned group of 16).
__device__ __forceinline__ int sw(int e) { return e ^ ((e >> 4) & 15); }


__device__ __forceinline__ int bitrev(int v, int bits) { return (int)(__brev((unsigned)v) >> (32 - bits)); }

// Twiddle table layout ("multi-level"): tw[2^(p-1) + j] = exp(-2*pi*i*j / 2^p) for j < 2^(p-1), p = 1 .. log2(M);
// M entries in all. A pass whose butterflies span 2h reads level 2h with consecutive j0 (coalesced).

// exp(-2*pi*i*x/M) for any x >= 0 from the top level of the table (p = log2 M), using exp(-i*pi) = -1.
__device__ __forceinline__ float2 twiddle_m(const float2* __restrict__ tw, int64_t x, int log_m) {
  const int half = 1 << (log_m - 1);
  const int r = (int)(x & ((int64_t(1) << log_m) - 1));
  if (r < half) return __ldg(tw + half + r);
  const float2 w = __ldg(tw + r);  // = tw[half + (r - half)]
  return make_float2(-w.x, -w.y);
}

// Geometry of a batch of small FFTs in shared memory: element i of FFT f sits at (f << log_fs) + (i << log_is).
struct SmemFFT {
  float2* s;
  int log_len;   // points per FFT
  int log_nb;    // number of FFTs
  int log_fs;    // log2 stride between FFTs (0 when FFTs are interleaved)
  int log_is;    // log2 stride between points of one FFT
};

__device__ __forceinline__ void group_origin(const SmemFFT& g, int R, int hlog, int grp, int* f, int* base_i) {
  const int slog = hlog - (R - 1);
  const int glog = g.log_len - R;  // groups per FFT
  int gg;
  if (g.log_fs > 0) {  // FFTs stored one after another: keep consecutive threads inside one FFT
    *f = grp >> glog;
    gg = grp & ((1 << glog) - 1);
  } else {  // FFTs interleaved: consecutive threads take consecutive FFTs (contiguous addresses)
    *f = grp & ((1 << g.log_nb) - 1);
    gg = grp >> g.log_nb;
  }
  const int j0 = gg & ((1 << slog) - 1);
  const int blk = gg >> slog;
  *base_i = (blk << (hlog + 1)) + j0;
}

// exp(-2*pi*i*k/16) for k in [0, 8); k is a compile-time constant after unrolling, so this folds to literals.
__device__ __forceinline__ float2 root16(int k) {
  constexpr float c1 = 0.92387953251128674f, s1 = 0.38268343236508978f, h = 0.70710678118654752f;
  switch (k) {
    case 0: return make_float2(1.f, 0.f);
    case 1: return make_float2(c1, -s1);
    case 2: return make_float2(h, -h);
    case 3: return make_float2(s1, -c1);
    case 4: return make_float2(0.f, -1.f);
    case 5: return make_float2(-s1, -c1);
    case 6: return make_float2(-h, -h);
    default: return make_float2(-c1, -s1);
  }
}

// Twiddles of one group for its R stages. Stage r (half-span h_r = 2^(hlog-r)) at point t needs
// exp(-2 pi i j / (2 h_r)) with j = j0 + (t mod 2^(R-1-r)) * s, s = 2^slog: that is w0^(2^r) times the constant
// exp(-2 pi i (t mod 2^(R-1-r)) / 2^(R-r)), with w0 = exp(-2 pi i j0 / (2h)). So one table load per group (and
// R-1 squarings, ~1e-7 relative) replaces one scattered load per butterfly.
template <int R>
__device__ __forceinline__ void group_twiddles(const float2* __restrict__ tw, int j0, int hlog, int log_n, float2* wr) {
  (void)log_n;
  wr[0] = __ldg(tw + (1 << hlog) + j0);  // level 2h of the multi-level table: consecutive j0, consecutive addresses
#pragma unroll
  for (int r = 1; r < R; ++r) wr[r] = cmul(wr[r - 1], wr[r - 1]);
}

template <int R>
__device__ __forceinline__ float2 stage_twiddle(const float2* wr, int r, int t) {
  const int tlo = t & ((1 << (R - 1 - r)) - 1);
  return tlo == 0 ? wr[r] : cmul(wr[r], root16(tlo << (r + 4 - R)));
}

// One pass of R radix-2 stages over every group of 2^R points (half-spans 2^hlog ... 2^(hlog-R+1)): each thread loads
// a group into registers, `stages(v, wr)` transforms it with the group's twiddle roots wr, and it is stored back in
// place. dif_pass and dit_pass differ only in their stages.
template <int R, typename Stages>
__device__ __forceinline__ void group_pass(const SmemFFT& g, int hlog, const float2* __restrict__ tw, int log_n,
                                           Stages stages) {
  constexpr int P = 1 << R;
  const int slog = hlog - (R - 1);
  const int ngroups = 1 << (g.log_len - R + g.log_nb);
  for (int grp = threadIdx.x; grp < ngroups; grp += blockDim.x) {
    int f, base_i;
    group_origin(g, R, hlog, grp, &f, &base_i);
    const int fo = f << g.log_fs;
    float2 wr[R];
    group_twiddles<R>(tw, base_i & ((1 << slog) - 1), hlog, log_n, wr);
    float2 v[P];
#pragma unroll
    for (int t = 0; t < P; ++t) v[t] = g.s[sw(fo + ((base_i + (t << slog)) << g.log_is))];
    stages(v, wr);
#pragma unroll
    for (int t = 0; t < P; ++t) g.s[sw(fo + ((base_i + (t << slog)) << g.log_is))] = v[t];
  }
}

// R decimation-in-frequency radix-2 stages with half-spans 2^hlog, ..., 2^(hlog-R+1), each thread keeping the
// 2^R points of one group in registers. Twiddle of a stage with half-span h at offset j: exp(-2*pi*i*j/(2h)).
template <int R>
__device__ __forceinline__ void dif_pass(const SmemFFT& g, int hlog, const float2* __restrict__ tw, int log_n) {
  group_pass<R>(g, hlog, tw, log_n, [](float2 (&v)[1 << R], const float2 (&wr)[R]) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int tspan = 1 << (R - 1 - r);
#pragma unroll
      for (int t = 0; t < (1 << R); ++t) {
        if (t & tspan) continue;
        const float2 w = stage_twiddle<R>(wr, r, t);
        const float2 a = v[t], c = v[t + tspan];
        v[t] = cadd(a, c);
        v[t + tspan] = cmul(csub(a, c), w);
      }
    }
  });
}

// The inverse of dif_pass<R> (same groups, stages in increasing half-span, conjugate twiddles), times 2^R.
template <int R>
__device__ __forceinline__ void dit_pass(const SmemFFT& g, int hlog, const float2* __restrict__ tw, int log_n) {
  group_pass<R>(g, hlog, tw, log_n, [](float2 (&v)[1 << R], const float2 (&wr)[R]) {
#pragma unroll
    for (int r = R - 1; r >= 0; --r) {
      const int tspan = 1 << (R - 1 - r);
#pragma unroll
      for (int t = 0; t < (1 << R); ++t) {
        if (t & tspan) continue;
        const float2 w = stage_twiddle<R>(wr, r, t);
        const float2 a = v[t], c = cmulc(v[t + tspan], w);
        v[t] = cadd(a, c);
        v[t + tspan] = csub(a, c);
      }
    }
  });
}

constexpr int kMaxRadixLog = 4;  // 16 points per thread per pass

// Forward DIF transform of every FFT in g (natural order in, bit-reversed order out). Ends with a barrier.
__device__ __forceinline__ void fft_forward(const SmemFFT& g, const float2* __restrict__ tw, int log_n) {
  int hlog = g.log_len - 1;
  while (hlog >= 0) {
    const int r = min(kMaxRadixLog, hlog + 1);
    __syncthreads();
    switch (r) {
      case 4: dif_pass<4>(g, hlog, tw, log_n); break;
      case 3: dif_pass<3>(g, hlog, tw, log_n); break;
      case 2: dif_pass<2>(g, hlog, tw, log_n); break;
      default: dif_pass<1>(g, hlog, tw, log_n); break;
    }
    hlog -= r;
  }
  __syncthreads();
}

// Inverse DIT transform with conjugate twiddles (bit-reversed order in, natural order out), unnormalised: the result
// is 2^log_len times the inverse DFT. Ends with a barrier.
__device__ __forceinline__ void fft_inverse(const SmemFFT& g, const float2* __restrict__ tw, int log_n) {
  int slog = 0;
  while (slog < g.log_len) {
    const int top = min(slog + kMaxRadixLog - 1, g.log_len - 1);
    const int r = top - slog + 1;
    __syncthreads();
    switch (r) {
      case 4: dit_pass<4>(g, top, tw, log_n); break;
      case 3: dit_pass<3>(g, top, tw, log_n); break;
      case 2: dit_pass<2>(g, top, tw, log_n); break;
      default: dit_pass<1>(g, top, tw, log_n); break;
    }
    slog = top + 1;
  }
  __syncthreads();
}

// Pointwise step of the real-input convolution for one pair of bins (k, M - k) of the packed complex transform
// Z = FFT_M(x[2n] + i x[2n+1]):
//   E = (Z[k] + conj Z[M-k]) / 2, O = -i (Z[k] - conj Z[M-k]) / 2   (spectra of the even and odd samples)
//   X[k] = E + w^k O, X[M-k] = conj(E - w^k O)                          (w = exp(-2 pi i / N))
//   Y = X * K  (K holds the skip term and 1/M already)
//   Z'[k] = Ey + i Oy, Z'[M-k] = conj(Ey) + i conj(Oy), with Ey = (Y[k] + conj Y[M-k]) / 2,
//   Oy = (Y[k] - conj Y[M-k]) conj(w^k) / 2.
// For k = 0 the partner is bin M of Y (X[M] = E - O) and only Z'[0] is kept; k = M/2 pairs with itself.
__device__ __forceinline__ void real_pair(float2 zk, float2 zp, float2 wk, float2 kk, float2 kp, float2* ok,
                                          float2* op) {
  const float2 e = make_float2(0.5f * (zk.x + zp.x), 0.5f * (zk.y - zp.y));
  const float2 d = make_float2(0.5f * (zk.x - zp.x), 0.5f * (zk.y + zp.y));
  const float2 o = make_float2(d.y, -d.x);
  const float2 wo = cmul(wk, o);
  const float2 xk = cadd(e, wo);
  const float2 xm = csub(e, wo);
  const float2 xp = make_float2(xm.x, -xm.y);
  const float2 yk = cmul(xk, kk);
  const float2 yp = cmul(xp, kp);
  const float2 ey = make_float2(0.5f * (yk.x + yp.x), 0.5f * (yk.y - yp.y));
  const float2 dy = make_float2(0.5f * (yk.x - yp.x), 0.5f * (yk.y + yp.y));
  const float2 oy = cmulc(dy, wk);
  *ok = make_float2(ey.x - oy.y, ey.y + oy.x);
  *op = make_float2(ey.x + oy.y, oy.x - ey.y);
}

}  // namespace genoconv

namespace genoconv {

// dtype x (pregate?, postgate?) dispatch onto Launcher::run<T, kPre, kPost> (ConvParams or LongParams).
template <typename Launcher, typename T, typename Params>
inline cudaError_t dispatch_gates_t(const Params& p, cudaStream_t stream) {
  const bool pre = p.pregate != nullptr, post = p.postgate != nullptr;
  if (pre && post) return Launcher::template run<T, true, true>(p, stream);
  if (pre) return Launcher::template run<T, true, false>(p, stream);
  if (post) return Launcher::template run<T, false, true>(p, stream);
  return Launcher::template run<T, false, false>(p, stream);
}

template <typename Launcher, typename Params>
inline cudaError_t dispatch_gates(const Params& p, DType dtype, cudaStream_t stream) {
  if (dtype == DType::kBFloat16) return dispatch_gates_t<Launcher, __nv_bfloat16>(p, stream);
  if (dtype == DType::kFloat16) return dispatch_gates_t<Launcher, __half>(p, stream);
  return cudaErrorInvalidValue;
}

}  // namespace genoconv
