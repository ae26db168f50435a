// Multi-pass path for transforms larger than shared memory: the M-point complex transform (M = N/2, real-input
// saving as in the fused path) is split four-step style as M = N1 * N2 (outer x inner), n = N2*n1 + n2,
// k = k1 + N1*k2, with an fp32 complex workspace (rows, N1, N2) in device memory:
//   pass 1 (outer_fwd): read u (and pregate) once through the causal padding, N1-point DFTs down each column n2,
//                       twiddle exp(-2 pi i n2 k1 / M), write row k1 of the workspace;
//   pass 2 (inner):     one block holds rows k1 and N1 - k1 (they hold each other's mirror bins M - k), does the
//                       N2-point DFTs, the real-input pointwise product with the spectrum, the inverse DFTs and the
//                       conjugate twiddle, and writes both rows back in place;
//   pass 3 (outer_inv): inverse N1-point DFTs down each column, write y (with postgate) once.
// Three passes over the workspace: 8 B/element written, 16 B read+written, 8 B read (see NOTES.md).
#include "params.h"
#include "fft_common.cuh"

namespace genoconv {

constexpr int kOuterThreads = 256;
constexpr int kInnerThreads = 512;
// Launch bounds below cap every kernel at 64 registers (2 inner / 4 outer blocks per SM): 27% faster on the H200
// than the 80-92 register builds at the cost of 16-32 B of spills (NOTES.md v5).


// What an outer-pass block works on: its row (blockIdx.x within this launch's rows: channel h, batch b), the
// complex size M = 2^log_m, the 2^log_n1 outer points and the tile of `tile` columns starting at c0 (blockIdx.y).
struct OuterBlock {
  int64_t h, b;
  int log_m, n1s, tile, c0;
};
__device__ __forceinline__ OuterBlock outer_block(const ConvParams& p, int log_tile) {
  const int64_t row = p.row0 + blockIdx.x;
  const int64_t h = row / p.batch;
  return {h, row - h * p.batch, p.log_n - 1, 1 << p.log_n1, 1 << log_tile, static_cast<int>(blockIdx.y) << log_tile};
}

template <typename T, bool kPre>
__global__ void __launch_bounds__(kOuterThreads, 4) outer_fwd_kernel(const ConvParams p, const int log_tile) {
  extern __shared__ float2 smem[];
  const auto [h, b, log_m, n1s, tile, c0] = outer_block(p, log_tile);
  const int64_t len = p.seq_len;
  const T* u = static_cast<const T*>(p.u) + b * p.u_sb + h * p.u_sh;
  const T* pre = kPre ? static_cast<const T*>(p.pregate) + b * p.pre_sb + h * p.pre_sh : nullptr;

  const int count = n1s << log_tile;
  const bool vec = aligned4(u) && (!kPre || aligned4(pre));
  for (int idx = threadIdx.x; idx < count; idx += blockDim.x) {
    const int f = idx & (tile - 1), n1 = idx >> log_tile;
    smem[sw(idx)] = load_gated_pair<kPre>(u, pre, 2 * (((int64_t)n1 << p.log_n2) + c0 + f), len, vec);
  }
  const SmemFFT g{smem, p.log_n1, log_tile, 0, log_tile};
  fft_forward(g, p.twiddle, p.log_n);

  float2* w = p.work + (int64_t)blockIdx.x * ((int64_t)1 << log_m);
  for (int idx = threadIdx.x; idx < count; idx += blockDim.x) {
    const int f = idx & (tile - 1), pos = idx >> log_tile;
    const int k1 = bitrev(pos, p.log_n1);
    const int n2 = c0 + f;
    const float2 v = cmul(smem[sw(idx)], twiddle_m(p.twiddle, (int64_t)n2 * k1, log_m));
    w[((int64_t)k1 << p.log_n2) + n2] = v;
  }
}

__global__ void __launch_bounds__(kInnerThreads, 2) inner_kernel(const ConvParams p) {
  extern __shared__ float2 smem[];
  const int64_t row = p.row0 + blockIdx.x;
  const int64_t h = row / p.batch;
  const int log_m = p.log_n - 1;
  const int m = 1 << log_m;
  const int n1s = 1 << p.log_n1, n2s = 1 << p.log_n2;
  const int j = blockIdx.y;  // 0 .. N1/2
  const int row_a = j, row_b = (n1s - j) & (n1s - 1);
  const bool two = row_a != row_b;
  float2* w = p.work + (int64_t)blockIdx.x * (int64_t)m;

  const int count = two ? 2 * n2s : n2s;
  for (int idx = threadIdx.x; idx < count; idx += blockDim.x) {
    const int k1 = (idx >> p.log_n2) ? row_b : row_a;
    smem[sw(idx)] = w[((int64_t)k1 << p.log_n2) + (idx & (n2s - 1))];
  }
  const SmemFFT g{smem, p.log_n2, two ? 1 : 0, p.log_n2, 0};
  fft_forward(g, p.twiddle, p.log_n);

  // Bin k = j + N1*k2 (row a) pairs with M - k: row N1 - j at N2 - 1 - k2, or for j = 0 row 0 at (N2 - k2) mod N2.
  const float4* spec = p.spectrum + h * p.pairs + (int64_t)j * n2s;
  // Walk row a by smem position (consecutive threads, consecutive banks), not by bin: position q holds k2 = bitrev(q).
  // Row 0 keeps k2 <= N2/2 (even positions, plus position 1 for k2 = N2/2); row N1/2 keeps k2 < N2/2.
  const int npairs = (j == 0) ? n2s / 2 + 1 : (two ? n2s : n2s / 2);
  const int off_b = two ? n2s : 0;
  for (int q = threadIdx.x; q < npairs; q += blockDim.x) {
    const int pa = two ? q : (q < n2s / 2 ? 2 * q : 1);
    const int k2 = bitrev(pa, p.log_n2);
    const int k2p = (j == 0) ? ((n2s - k2) & (n2s - 1)) : (n2s - 1 - k2);
    const int pb = off_b + bitrev(k2p, p.log_n2);
    const float4 kk = __ldg(spec + q);
    float2 ok, op;
    real_pair(smem[sw(pa)], smem[sw(pb)], __ldg(p.pair_twiddle + (int64_t)j * n2s + q), make_float2(kk.x, kk.y),
              make_float2(kk.z, kk.w), &ok, &op);
    smem[sw(pa)] = ok;
    if (pb != pa) smem[sw(pb)] = op;
  }
  fft_inverse(g, p.twiddle, p.log_n);

  for (int idx = threadIdx.x; idx < count; idx += blockDim.x) {
    const int k1 = (idx >> p.log_n2) ? row_b : row_a;
    const int n2 = idx & (n2s - 1);
    const float2 v = cmulc(smem[sw(idx)], twiddle_m(p.twiddle, (int64_t)n2 * k1, log_m));
    w[((int64_t)k1 << p.log_n2) + n2] = v;
  }
}

template <typename T, bool kPost>
__global__ void __launch_bounds__(kOuterThreads, 4) outer_inv_kernel(const ConvParams p, const int log_tile) {
  extern __shared__ float2 smem[];
  const auto [h, b, log_m, n1s, tile, c0] = outer_block(p, log_tile);
  const int64_t len = p.seq_len;
  const float2* w = p.work + (int64_t)blockIdx.x * ((int64_t)1 << log_m);

  const int count = n1s << log_tile;
  for (int idx = threadIdx.x; idx < count; idx += blockDim.x) {
    const int f = idx & (tile - 1), k1 = idx >> log_tile;
    smem[sw(f + (bitrev(k1, p.log_n1) << log_tile))] = w[((int64_t)k1 << p.log_n2) + c0 + f];
  }
  const SmemFFT g{smem, p.log_n1, log_tile, 0, log_tile};
  fft_inverse(g, p.twiddle, p.log_n);

  T* y = static_cast<T*>(p.y) + b * p.y_sb + h * p.y_sh;
  const T* post = kPost ? static_cast<const T*>(p.postgate) + b * p.post_sb + h * p.post_sh : nullptr;
  const bool vec_out = aligned4(y) && (!kPost || aligned4(post));
  for (int idx = threadIdx.x; idx < count; idx += blockDim.x) {
    const int f = idx & (tile - 1), n1 = idx >> log_tile;
    const int64_t t = 2 * (((int64_t)n1 << p.log_n2) + c0 + f);
    if (t >= len) continue;
    store_gated_pair<kPost>(y, post, t, len, vec_out, smem[sw(idx)]);
  }
}

template <typename T, bool kPre, bool kPost>
static cudaError_t launch_multipass_t(const ConvParams& p, cudaStream_t stream) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  int optin = 0;
  err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;
  if (p.rows <= 0) return cudaSuccess;
  if (p.rows > 0x7fffffffLL || p.log_n1 < 1 || p.log_n2 < 4 || p.log_n1 + p.log_n2 != p.log_n - 1)
    return cudaErrorInvalidValue;

  int log_tile = 12 - p.log_n1;  // ~32 KiB of columns per block: several blocks per SM
  if (log_tile < 3) log_tile = 3;
  if (log_tile > p.log_n2) log_tile = p.log_n2;
  while (log_tile > 0 && ((size_t)sizeof(float2) << (p.log_n1 + log_tile)) > (size_t)optin) --log_tile;
  const size_t outer_smem = (size_t)sizeof(float2) << (p.log_n1 + log_tile);
  const size_t inner_smem = (size_t)sizeof(float2) << (p.log_n2 + 1);
  if (outer_smem > (size_t)optin || inner_smem > (size_t)optin) return cudaErrorInvalidConfiguration;

  auto k1 = outer_fwd_kernel<T, kPre>;
  auto k2 = inner_kernel;
  auto k3 = outer_inv_kernel<T, kPost>;
  if ((err = cudaFuncSetAttribute(k1, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)outer_smem))) return err;
  if ((err = cudaFuncSetAttribute(k2, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)inner_smem))) return err;
  if ((err = cudaFuncSetAttribute(k3, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)outer_smem))) return err;

  const dim3 outer_grid((unsigned)p.rows, 1u << (p.log_n2 - log_tile));
  const dim3 inner_grid((unsigned)p.rows, (1u << (p.log_n1 - 1)) + 1);
  k1<<<outer_grid, kOuterThreads, outer_smem, stream>>>(p, log_tile);
  if ((err = cudaGetLastError())) return err;
  k2<<<inner_grid, kInnerThreads, inner_smem, stream>>>(p);
  if ((err = cudaGetLastError())) return err;
  k3<<<outer_grid, kOuterThreads, outer_smem, stream>>>(p, log_tile);
  return cudaGetLastError();
}

struct LaunchMultipass {
  template <typename T, bool kPre, bool kPost>
  static cudaError_t run(const ConvParams& p, cudaStream_t stream) {
    return launch_multipass_t<T, kPre, kPost>(p, stream);
  }
};

cudaError_t launch_multipass(const ConvParams& p, DType dtype, cudaStream_t stream) {
  return dispatch_gates<LaunchMultipass>(p, dtype, stream);
}

}  // namespace genoconv
