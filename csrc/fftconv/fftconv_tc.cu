// Fused path on tensor cores (issue 5): the same single-kernel causal convolution as fftconv_fused.cu (same shared-
// memory layout, same real-input packing, same pair step and kernel-ordered spectrum), but every radix-16 pass of the
// transforms is a complex 16 x 16 DFT done as real mma.sync.m16n8k16 products (fp16 operands, fp32 accumulate).
//
// Forward pass at half-span exponent hlog (s = 2^(hlog-3)): 16-point groups x[base + k s], k < 16, with
// base = blk 2^(hlog+1) + j0, j0 < s. Four radix-2 DIF stages equal one radix-16 DIF step whose outputs leave
// bit-reversed inside the group: position base + bitrev4(m) s receives (F x)[m] * W_{16s}^(j0 m)
// (F[m][k] = exp(-2 pi i m k / 16)). The inverse pass undoes it (conjugate twiddles, then conj(F)). So the data end
// in exactly the order of the scalar kernel's DIF transform and the pair step / spectrum tables are shared.
// Remainder stages (log2 M not a multiple of 4) run the scalar dif_pass / dit_pass of fft_common.cuh.
//
// One warp does 8 groups (128 points) per step: B = 16 points x 8 groups (K x N), A = F / 4 (M x K), complex as
//   Yr = Fr Xr + (-Fi) Xi,   Yi = Fi Xr + Fr Xi     (4 real MMAs),
// with A fragments held in registers for the whole kernel. Range: fp16 operands, so each row is scaled by a power of
// two (block max of |x| before the forward, of the pair-step output before the inverse) and each pass by 1/4; the
// exact power-of-two factors are undone when y is written. Twiddles: W_{16s}^(j0 g), g < 8, from a per-pass table in
// the lanes' order (p.tc_twiddle; contiguous 16-byte loads), times W_{16s}^(8 j0) = W_{2s}^(j0) from level 2s of
// the multi-level table for g + 8.
// kSplit: the data operand is split into fp16 hi + lo parts (8 MMAs), leaving only the fp16 DFT-matrix rounding.
//
// Status (NOTES.md v7): correct (bf16 error 1.6-1.7e-3, the scalar kernel's) but 1.35-1.55x slower than
// fftconv_fused.cu on the H200, so it is NOT built into the extension or dispatched; CI only compiles it.
// `patch -p1 < csrc/fftconv/tc_enable.patch` adds it to the build with a per-call opt-in (GENOCONV_FFTCONV_TC).
#include <cstdlib>

#include "params.h"
#include "fft_common.cuh"

namespace genoconv {

constexpr int kTcThreads = 1024;

__device__ __forceinline__ uint32_t pack_h2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);  // lo -> low 16 bits (lower matrix index)
  return *reinterpret_cast<uint32_t*>(&h);
}

// Residual of the fp16 rounding of (lo, hi), packed the same way.
__device__ __forceinline__ uint32_t pack_h2_res(float lo, float hi, uint32_t packed) {
  __half2 h = *reinterpret_cast<__half2*>(&packed);
  const float2 f = __half22float2(h);
  return pack_h2(lo - f.x, hi - f.y);
}

__device__ __forceinline__ void mma16816(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ int bitrev4(int v) { return ((v & 1) << 3) | ((v & 2) << 1) | ((v & 4) >> 1) | ((v & 8) >> 3); }

// A fragments of F/4: real part, imaginary part, and minus the imaginary part. Fragment register j of lane
// (g = lane/4, t = lane%4) holds rows g + 8 (j & 1), columns 2t + 8 (j >> 1) + {0, 1}.
struct DftFrags {
  uint32_t re[4], im[4], nim[4];
};

// cos(2 pi x / 16), x < 16 (sin(2 pi x / 16) = cos(2 pi (x - 4) / 16)).
__constant__ float kCos16[16] = {1.f, 0.92387953251128674f, 0.70710678118654752f, 0.38268343236508978f, 0.f,
                                 -0.38268343236508978f, -0.70710678118654752f, -0.92387953251128674f, -1.f,
                                 -0.92387953251128674f, -0.70710678118654752f, -0.38268343236508978f, 0.f,
                                 0.38268343236508978f, 0.70710678118654752f, 0.92387953251128674f};

__device__ __forceinline__ void make_frags(DftFrags* f) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int row = g + 8 * (j & 1);
    const int col = 2 * t + 8 * (j >> 1);
    float c[2], s[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int x = (row * (col + e)) & 15;
      c[e] = kCos16[x];             // exp(-2 pi i x / 16) = c - i s
      s[e] = kCos16[(x - 4) & 15];
    }
    f->re[j] = pack_h2(0.25f * c[0], 0.25f * c[1]);
    f->im[j] = pack_h2(-0.25f * s[0], -0.25f * s[1]);
    f->nim[j] = pack_h2(0.25f * s[0], 0.25f * s[1]);
  }
}

// d_re += A_re x_re + A_im' x_im ... generic complex product helper: (yr, yi) = (P xr + Q xi, R xr + S xi).
template <bool kSplit>
__device__ __forceinline__ void cgemm(const uint32_t* P, const uint32_t* Q, const uint32_t* R, const uint32_t* S,
                                      const float2 (&v)[4], float scale, float* yr, float* yi) {
  const uint32_t r0 = pack_h2(scale * v[0].x, scale * v[1].x), r1 = pack_h2(scale * v[2].x, scale * v[3].x);
  const uint32_t i0 = pack_h2(scale * v[0].y, scale * v[1].y), i1 = pack_h2(scale * v[2].y, scale * v[3].y);
#pragma unroll
  for (int j = 0; j < 4; ++j) yr[j] = yi[j] = 0.f;
  mma16816(yr, P, r0, r1);
  mma16816(yr, Q, i0, i1);
  mma16816(yi, R, r0, r1);
  mma16816(yi, S, i0, i1);
  if (kSplit) {
    const uint32_t lr0 = pack_h2_res(scale * v[0].x, scale * v[1].x, r0);
    const uint32_t lr1 = pack_h2_res(scale * v[2].x, scale * v[3].x, r1);
    const uint32_t li0 = pack_h2_res(scale * v[0].y, scale * v[1].y, i0);
    const uint32_t li1 = pack_h2_res(scale * v[2].y, scale * v[3].y, i1);
    mma16816(yr, P, lr0, lr1);
    mma16816(yr, Q, li0, li1);
    mma16816(yi, R, lr0, lr1);
    mma16816(yi, S, li0, li1);
  }
}

// Group origins: base(set * 8 + n) = U(set) | L(n) with disjoint bits (n < 8), and both disjoint from the point
// offsets k s (bits slog .. slog + 3). sw_fold is linear over XOR, so every shared-memory index of a set is
// sw_fold(U(set)) ^ (a per-lane constant computed once per pass): one XOR per access.
__device__ __forceinline__ int group_lane_part(int n, int slog, int hlog) {
  return ((n >> slog) << (hlog + 1)) | (n & ((1 << slog) - 1));
}
__device__ __forceinline__ int group_set_part(int set, int slog, int hlog) {
  const int s8 = set * 8;
  return ((s8 >> slog) << (hlog + 1)) | (s8 & ((1 << slog) - 1));
}

// Forward radix-16 DIF pass on tensor cores (see the header). m = 2^log_m points, m >= 128. kScale: multiply the
// data by `scale` on the way in (first pass only).
template <bool kSplit, bool kScale>
__device__ __forceinline__ void tc_dif_pass(float2* s_, int log_m, int hlog, const float2* __restrict__ tw,
                                            const float2* __restrict__ tt, const DftFrags& F, float scale) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int slog = hlog - 3, s = 1 << slog;
  const int nsets = 1 << (log_m - 7);
  const int lg = sw_fold(group_lane_part(g, slog, hlog));
  const int k0 = lg ^ sw_fold((2 * t) << slog), k1 = lg ^ sw_fold((2 * t + 1) << slog);
  const int k2 = lg ^ sw_fold((2 * t + 8) << slog), k3 = lg ^ sw_fold((2 * t + 9) << slog);
  const int o_lo = sw_fold(bitrev4(g) << slog), o_hi = sw_fold((bitrev4(g) | 1) << slog);
  const int l0 = sw_fold(group_lane_part(2 * t, slog, hlog)), l1 = sw_fold(group_lane_part(2 * t + 1, slog, hlog));
  const int st[4] = {l0 ^ o_lo, l0 ^ o_hi, l1 ^ o_lo, l1 ^ o_hi};
  const float2* tg = tt + (g << 1);
  for (int set = threadIdx.x >> 5; set < nsets; set += blockDim.x >> 5) {
    const int bu = sw_fold(group_set_part(set, slog, hlog));
    float2 v[4];
    v[0] = s_[bu ^ k0];
    v[1] = s_[bu ^ k1];
    v[2] = s_[bu ^ k2];
    v[3] = s_[bu ^ k3];
    float yr[4], yi[4];
    cgemm<kSplit>(F.re, F.nim, F.im, F.re, v, kScale ? scale : 1.f, yr, yi);
    __syncwarp();
    float2 lo0 = make_float2(yr[0], yi[0]), lo1 = make_float2(yr[1], yi[1]);
    float2 hi0 = make_float2(yr[2], yi[2]), hi1 = make_float2(yr[3], yi[3]);
    if (slog > 0) {
      // Groups 2t, 2t+1 have j0 = j0e, j0e + 1 (s even): {W^(j0e g), W^((j0e+1) g)} from tt ([j0/2][g][j0%2]) and
      // {W^(8 j0e), W^(8 (j0e+1))} = level 2s of the multi-level table; one 16-byte load each.
      const int j0e = ((set * 8) & (s - 1)) | ((2 * t) & (s - 1));
      const float4 a = __ldg(reinterpret_cast<const float4*>(tg + ((j0e >> 1) << 4)));
      const float4 c = __ldg(reinterpret_cast<const float4*>(tw + s + j0e));
      const float2 w00 = make_float2(a.x, a.y), w01 = make_float2(a.z, a.w);
      lo0 = cmul(lo0, w00);
      lo1 = cmul(lo1, w01);
      hi0 = cmul(hi0, cmul(w00, make_float2(c.x, c.y)));
      hi1 = cmul(hi1, cmul(w01, make_float2(c.z, c.w)));
    }
    s_[bu ^ st[0]] = lo0;  // group 2t:   bin g     -> position bitrev4(g)
    s_[bu ^ st[1]] = hi0;  //             bin g + 8 -> position bitrev4(g) + 1
    s_[bu ^ st[2]] = lo1;  // group 2t+1
    s_[bu ^ st[3]] = hi1;
  }
}

// Inverse of tc_dif_pass: conjugate twiddles, then conj(F)/4, i.e. 1/4 of the scalar dit_pass<4> (which is 16x the
// exact inverse of dif_pass<4>).
template <bool kSplit, bool kScale>
__device__ __forceinline__ void tc_dit_pass(float2* s_, int log_m, int hlog, const float2* __restrict__ tw,
                                            const float2* __restrict__ tt, const DftFrags& F, float scale) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int slog = hlog - 3, s = 1 << slog;
  const int nsets = 1 << (log_m - 7);
  // Bins 2t, 2t+1, 2t+8, 2t+9 sit at positions bitrev4(2t) + {0, 8, 1, 9} (times s).
  const int p0 = bitrev4(2 * t);
  const int lg = sw_fold(group_lane_part(g, slog, hlog));
  const int q0 = lg ^ sw_fold(p0 << slog), q1 = lg ^ sw_fold((p0 + 8) << slog);
  const int q2 = lg ^ sw_fold((p0 + 1) << slog), q3 = lg ^ sw_fold((p0 + 9) << slog);
  const int o_lo = sw_fold(g << slog), o_hi = sw_fold((g + 8) << slog);
  const int l0 = sw_fold(group_lane_part(2 * t, slog, hlog)), l1 = sw_fold(group_lane_part(2 * t + 1, slog, hlog));
  const int st[4] = {l0 ^ o_lo, l0 ^ o_hi, l1 ^ o_lo, l1 ^ o_hi};
  const float2* tk = tt + (2 * t << 1);
  for (int set = threadIdx.x >> 5; set < nsets; set += blockDim.x >> 5) {
    const int bu = sw_fold(group_set_part(set, slog, hlog));
    float2 v[4];
    v[0] = s_[bu ^ q0];
    v[1] = s_[bu ^ q1];
    v[2] = s_[bu ^ q2];
    v[3] = s_[bu ^ q3];
    if (slog > 0) {
      const int j0 = ((set * 8) & (s - 1)) | (g & (s - 1));
      const float2* tj = tk + ((j0 >> 1) << 4) + (j0 & 1);
      const float2 w0 = __ldg(tj);           // W^(j0 2t)
      const float2 w1 = __ldg(tj + 2);       // W^(j0 (2t+1))
      const float2 w8 = __ldg(tw + s + j0);  // W^(8 j0)
      v[0] = cmulc(v[0], w0);
      v[1] = cmulc(v[1], w1);
      v[2] = cmulc(v[2], cmul(w0, w8));
      v[3] = cmulc(v[3], cmul(w1, w8));
    }
    float yr[4], yi[4];
    // conj(F)/4: xr = Fr yr + Fi yi, xi = -Fi yr + Fr yi.
    cgemm<kSplit>(F.re, F.im, F.nim, F.re, v, kScale ? scale : 1.f, yr, yi);
    __syncwarp();
    s_[bu ^ st[0]] = make_float2(yr[0], yi[0]);  // group 2t:   point g, g + 8
    s_[bu ^ st[1]] = make_float2(yr[2], yi[2]);
    s_[bu ^ st[2]] = make_float2(yr[1], yi[1]);  // group 2t+1
    s_[bu ^ st[3]] = make_float2(yr[3], yi[3]);
  }
}

// Power-of-two exponent e with max * 2^e in [0.5, 1) (clamped to keep 2^e and 2^-e normal).
__device__ __forceinline__ int range_exponent(unsigned maxbits) {
  const int E = min((int)(maxbits >> 23), 252);
  return 126 - E;
}
__device__ __forceinline__ float exp2i(int e) { return __int_as_float((e + 127) << 23); }  // e in [-126, 127]

__device__ __forceinline__ void block_max(unsigned* slot, float v) {
  const unsigned r = __reduce_max_sync(0xffffffffu, __float_as_uint(v));
  if ((threadIdx.x & 31) == 0) atomicMax(slot, r);
}

template <typename T, bool kPre, bool kPost, bool kSplit>
__global__ void __launch_bounds__(kTcThreads, 1) fused_tc_kernel(const ConvParams p) {
  extern __shared__ float2 smem[];
  __shared__ unsigned smax[2];
  const int log_m = p.log_n - 1;
  const int m = 1 << log_m;
  const int64_t row = blockIdx.x;
  const int64_t h = row / p.batch, b = row - h * p.batch;
  const int64_t len = p.seq_len;
  if (threadIdx.x < 2) smax[threadIdx.x] = 0u;

  DftFrags F;
  make_frags(&F);

  const T* u = static_cast<const T*>(p.u) + b * p.u_sb + h * p.u_sh;
  const T* pre = kPre ? static_cast<const T*>(p.pregate) + b * p.pre_sb + h * p.pre_sh : nullptr;
  const bool vec = aligned4(u) && (!kPre || aligned4(pre));
  float amax = 0.f;
  for (int n = threadIdx.x; n < m; n += blockDim.x) {
    const int64_t t = 2 * (int64_t)n;
    float2 x = load_pair(u, t, len, vec);
    if (kPre) {
      const float2 g = load_pair(pre, t, len, vec);
      x.x *= g.x;
      x.y *= g.y;
    }
    amax = fmaxf(amax, fmaxf(fabsf(x.x), fabsf(x.y)));
    smem[sw_fold(n)] = x;
  }
  __syncthreads();  // smax initialised
  block_max(&smax[0], amax);
  __syncthreads();
  const int e1 = range_exponent(smax[0]);

  // Forward: radix-16 tensor-core passes from the top, then the scalar remainder (log_m mod 4 stages).
  const SmemFFT sg{smem, log_m, 0, 0, 0};
  int ntc = 0;
  int hlog = log_m - 1;
  float scale = exp2i(e1);
  const float2* tt = p.tc_twiddle;
  for (; hlog >= 3; hlog -= 4, ++ntc) {
    if (ntc == 0) {
      tc_dif_pass<kSplit, true>(smem, log_m, hlog, p.twiddle, tt, F, scale);
    } else {
      tc_dif_pass<kSplit, false>(smem, log_m, hlog, p.twiddle, tt, F, 1.f);
    }
    tt += 8 << (hlog - 3);
    __syncthreads();
  }
  switch (hlog + 1) {
    case 3: dif_pass<3, 1>(sg, hlog, p.twiddle, p.log_n); break;
    case 2: dif_pass<2, 1>(sg, hlog, p.twiddle, p.log_n); break;
    case 1: dif_pass<1, 1>(sg, hlog, p.twiddle, p.log_n); break;
    default: break;
  }
  __syncthreads();

  // Pointwise product on bin pairs (k, M-k), exactly as the scalar kernel.
  const float4* spec = p.spectrum + h * p.pairs;
  amax = 0.f;
  for (int q = threadIdx.x; q <= m / 2; q += blockDim.x) {
    const int pa = q < m / 2 ? 2 * q : 1;
    const int k = bitrev(pa, log_m);
    const int kp = m - k;
    const int pb = bitrev(kp & (m - 1), log_m);
    const float4 kk = __ldg(spec + q);
    float2 ok, op;
    real_pair(smem[sw_fold(pa)], smem[sw_fold(pb)], __ldg(p.pair_twiddle + q), make_float2(kk.x, kk.y), make_float2(kk.z, kk.w),
              &ok, &op);
    amax = fmaxf(amax, fmaxf(fmaxf(fabsf(ok.x), fabsf(ok.y)), fmaxf(fabsf(op.x), fabsf(op.y))));
    smem[sw_fold(pa)] = ok;
    if (pb != pa) smem[sw_fold(pb)] = op;
  }
  block_max(&smax[1], amax);
  __syncthreads();
  const int e2 = range_exponent(smax[1]);

  // Inverse: scalar remainder first (stages 0 .. r-1), then the tensor-core passes upwards. The remainder is fp32;
  // the row scale enters at the first tensor-core pass.
  const int r = log_m & 3;
  switch (r) {
    case 3: dit_pass<3, 1>(sg, 2, p.twiddle, p.log_n); break;
    case 2: dit_pass<2, 1>(sg, 1, p.twiddle, p.log_n); break;
    case 1: dit_pass<1, 1>(sg, 0, p.twiddle, p.log_n); break;
    default: break;
  }
  scale = exp2i(e2);
  for (hlog = r + 3; hlog <= log_m - 1; hlog += 4) {
    __syncthreads();
    int off = 0;  // this pass's part of tc_twiddle: after the passes of larger span
    for (int h2 = log_m - 1; h2 > hlog; h2 -= 4) off += 8 << (h2 - 3);
    if (hlog == r + 3) {
      tc_dit_pass<kSplit, true>(smem, log_m, hlog, p.twiddle, p.tc_twiddle + off, F, scale);
    } else {
      tc_dit_pass<kSplit, false>(smem, log_m, hlog, p.twiddle, p.tc_twiddle + off, F, 1.f);
    }
  }
  __syncthreads();

  // Undo 2^e1, 2^e2 and the 1/4 of each of the 2 ntc tensor-core passes (the scalar path's transforms are
  // unnormalised; 1/M is in the spectrum). Total exponent in about [-252, 280]: three factors, each normal.
  const int etot = 4 * ntc - e1 - e2;
  const int ea = etot / 3, eb = (etot - ea) / 2, ec = etot - ea - eb;
  const float fa = exp2i(ea), fb = exp2i(eb), fc = exp2i(ec);

  T* y = static_cast<T*>(p.y) + b * p.y_sb + h * p.y_sh;
  const T* post = kPost ? static_cast<const T*>(p.postgate) + b * p.post_sb + h * p.post_sh : nullptr;
  const bool vec_out = aligned4(y) && (!kPost || aligned4(post));
  for (int n = threadIdx.x; n < m; n += blockDim.x) {
    const int64_t t = 2 * (int64_t)n;
    if (t >= len) break;
    float2 v = smem[sw_fold(n)];
    v.x = v.x * fa * fb * fc;
    v.y = v.y * fa * fb * fc;
    if (kPost) {
      const float2 g = load_pair(post, t, len, vec_out);
      v.x *= g.x;
      v.y *= g.y;
    }
    store_pair(y, t, len, vec_out, v.x, v.y);
  }
}

template <bool kSplit>
struct LaunchFusedTc {
  template <typename T, bool kPre, bool kPost>
  static cudaError_t run(const ConvParams& p, cudaStream_t stream) {
    const int m = 1 << (p.log_n - 1);
    const size_t smem = (size_t)m * sizeof(float2);
    // Sets of 128 points per warp and pass (GENOCONV_FFTCONV_TC_SETS, default 4 = best measured of 1 / 2 / 4):
    // fewer threads per block, more blocks per SM to overlap one block's HBM phase with another's transforms.
    int spw = 4;
    if (const char* env = std::getenv("GENOCONV_FFTCONV_TC_SETS")) spw = std::atoi(env) > 0 ? std::atoi(env) : 4;
    int threads = m / (4 * spw);  // at most 1024 threads (M = 16K: at least 4 sets per warp)
    threads = threads < 32 ? 32 : (threads > kTcThreads ? kTcThreads : threads);
    auto kernel = fused_tc_kernel<T, kPre, kPost, kSplit>;
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (err != cudaSuccess) return err;
    const int64_t rows = p.batch * p.channels;
    if (rows > 0x7fffffffLL) return cudaErrorInvalidValue;
    kernel<<<dim3((unsigned)rows), dim3(threads), smem, stream>>>(p);
    return cudaGetLastError();
  }
};

cudaError_t launch_fused_tc(const ConvParams& p, DType dtype, bool split, cudaStream_t stream) {
  if (p.log_n - 1 < kTcMinLogM) return cudaErrorInvalidValue;
  if (split) return dispatch_gates<LaunchFusedTc<true>>(p, dtype, stream);
  return dispatch_gates<LaunchFusedTc<false>>(p, dtype, stream);
}

}  // namespace genoconv
