// Fused path: one thread block per (channel, batch) row does the whole causal convolution in shared memory.
// u (and pregate) are read once, through the causal zero padding (never materialised), y is written once with the
// postgate applied. The real length-N transform runs as one complex transform of M = N/2 points (real-input
// saving); the skip term and 1/M are folded into the cached spectrum.
#include "params.h"
#include "fft_common.cuh"

namespace genoconv {

// Up to 1024 threads (one radix-16 group each at M = 16K) under a 64-register cap: at M = 16K shared memory
// (128 KiB) allows one block per SM, so the block itself must carry the occupancy (NOTES.md v6).
constexpr int kFusedThreads = 1024;

template <typename T, bool kPre, bool kPost>
__global__ void __launch_bounds__(kFusedThreads, 1) fused_conv_kernel(const ConvParams p) {
  extern __shared__ float2 smem[];
  const int log_m = p.log_n - 1;
  const int m = 1 << log_m;
  const int64_t row = blockIdx.x;
  const int64_t h = row / p.batch, b = row - h * p.batch;
  const int64_t len = p.seq_len;

  const T* u = static_cast<const T*>(p.u) + b * p.u_sb + h * p.u_sh;
  const T* pre = kPre ? static_cast<const T*>(p.pregate) + b * p.pre_sb + h * p.pre_sh : nullptr;

  // Load x[2n] + i x[2n+1] (x = u * pregate), zero past the end: the causal padding.
  const bool vec = aligned4(u) && (!kPre || aligned4(pre));
  for (int n = threadIdx.x; n < m; n += blockDim.x) {
    smem[sw(n)] = load_gated_pair<kPre>(u, pre, 2 * (int64_t)n, len, vec);
  }

  const SmemFFT g{smem, log_m, 0, 0, 0};
  fft_forward(g, p.twiddle, p.log_n);

  // Pointwise product on bin pairs (k, M-k); the transform left bin k at position bitrev(k).
  const float4* spec = p.spectrum + h * p.pairs;
  // Walk by smem position (consecutive threads hit consecutive banks): even positions hold the bins k < M/2,
  // position 1 holds k = M/2.
  for (int q = threadIdx.x; q <= m / 2; q += blockDim.x) {
    const int pa = q < m / 2 ? 2 * q : 1;
    const int k = bitrev(pa, log_m);
    const int kp = m - k;
    const int pb = bitrev(kp & (m - 1), log_m);
    const float4 kk = __ldg(spec + q);
    float2 ok, op;
    real_pair(smem[sw(pa)], smem[sw(pb)], __ldg(p.pair_twiddle + q), make_float2(kk.x, kk.y), make_float2(kk.z, kk.w),
              &ok, &op);
    smem[sw(pa)] = ok;
    if (pb != pa) smem[sw(pb)] = op;
  }

  fft_inverse(g, p.twiddle, p.log_n);

  T* y = static_cast<T*>(p.y) + b * p.y_sb + h * p.y_sh;
  const T* post = kPost ? static_cast<const T*>(p.postgate) + b * p.post_sb + h * p.post_sh : nullptr;
  const bool vec_out = aligned4(y) && (!kPost || aligned4(post));
  for (int n = threadIdx.x; n < m; n += blockDim.x) {
    const int64_t t = 2 * (int64_t)n;
    if (t >= len) break;
    store_gated_pair<kPost>(y, post, t, len, vec_out, smem[sw(n)]);
  }
}

int max_fused_points(int device, cudaError_t* err) {
  int optin = 0;
  *err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (*err != cudaSuccess) return 0;
  int pts = 1 << 20;
  while (pts > 16 && (int64_t)pts * (int64_t)sizeof(float2) > optin) pts >>= 1;
  return pts;
}

template <typename T, bool kPre, bool kPost>
static cudaError_t launch_fused_t(const ConvParams& p, cudaStream_t stream) {
  const int m = 1 << (p.log_n - 1);
  const size_t smem = (size_t)m * sizeof(float2);
  int threads = m / 16;  // one radix-16 group per thread
  threads = threads < 32 ? 32 : (threads > kFusedThreads ? kFusedThreads : threads);
  auto kernel = fused_conv_kernel<T, kPre, kPost>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (err != cudaSuccess) return err;
  const int64_t rows = p.batch * p.channels;
  if (rows > 0x7fffffffLL) return cudaErrorInvalidValue;
  kernel<<<dim3((unsigned)rows), dim3(threads), smem, stream>>>(p);
  return cudaGetLastError();
}

struct LaunchFused {
  template <typename T, bool kPre, bool kPost>
  static cudaError_t run(const ConvParams& p, cudaStream_t stream) { return launch_fused_t<T, kPre, kPost>(p, stream); }
};

cudaError_t launch_fused(const ConvParams& p, DType dtype, cudaStream_t stream) {
  return dispatch_gates<LaunchFused>(p, dtype, stream);
}

}  // namespace genoconv
