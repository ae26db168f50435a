// The Hyena block's two memory-bound steps around its GEMMs and long convolution, compiled with the rest of the
// library at install time (genoconv/ops/fused.py dispatches to them; its Triton kernels remain the fallback where
// this library is not built). Triton compiled its versions at a process's first use: 4.1 s of the first embed on a
// machine with an empty kernel cache and 0.4 s with a filled one (tools/cold_start.py, H100), and it needs a C
// compiler on the node that runs the model; these need neither.
//   layer_norm:      out = LayerNorm(x) in the compute dtype, x fp32 (rows, d); with y: x += y first, in place.
//   short_conv_gate: HyenaDNA's causal depthwise short conv over in_proj's output p (B, 3d, L) (three channel groups
//                    x0, x1, v), writing x0 and x1 * v; fp32 sums, one rounding per output.
// The arithmetic is the Triton kernels' (fp32, the same operation order per output); reductions differ in order.
#include <cstring>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "params.h"

namespace genoconv {
namespace {

template <typename T> __device__ __forceinline__ float load_f(const T* p);
template <> __device__ __forceinline__ float load_f<float>(const float* p) { return *p; }
template <> __device__ __forceinline__ float load_f<__nv_bfloat16>(const __nv_bfloat16* p) { return __bfloat162float(*p); }
template <> __device__ __forceinline__ float load_f<__half>(const __half* p) { return __half2float(*p); }

template <typename T> __device__ __forceinline__ T round_to(float v);
template <> __device__ __forceinline__ float round_to<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 round_to<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half round_to<__half>(float v) { return __float2half_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One warp per row. Rows of d <= 32 kPer (HyenaDNA's 128 and 256) are held in registers, kPer values per lane, so the
// residual stream is read once (and, with y, written once); wider rows (kPer = 0) re-read theirs from the caches for
// the centred sum of squares and the output. Mean first, then the centred sum of squares (two passes, as Triton's).
constexpr int kLnWarps = 8;

template <typename T, int kPer>
__global__ void __launch_bounds__(kLnWarps * 32) layer_norm_kernel(BlockLayerNormParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kLnWarps + (threadIdx.x >> 5);
  if (row >= p.rows) return;
  float* x = p.x + row * p.d;
  const T* y = p.y != nullptr ? static_cast<const T*>(p.y) + row * p.d : nullptr;
  T* out = static_cast<T*>(p.out) + row * p.d;
  const float inv_d = 1.f / float(p.d);
  if constexpr (kPer > 0) {
    // Every load before any store (the compiler cannot know x, y, out and the parameters apart, so a store between
    // two loads would order them): the row, then y, then the sums; x written back; weights, then the outputs.
    float v[kPer];
#pragma unroll
    for (int k = 0; k < kPer; ++k) v[k] = lane + 32 * k < p.d ? x[lane + 32 * k] : 0.f;
    if (y != nullptr) {
      float add[kPer];
#pragma unroll
      for (int k = 0; k < kPer; ++k) add[k] = lane + 32 * k < p.d ? load_f(y + lane + 32 * k) : 0.f;
#pragma unroll
      for (int k = 0; k < kPer; ++k) v[k] += add[k];
    }
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < kPer; ++k) sum += v[k];
    const float mean = warp_sum(sum) * inv_d;
    float sq = 0.f;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const float c = lane + 32 * k < p.d ? v[k] - mean : 0.f;
      sq = fmaf(c, c, sq);
    }
    const float rstd = 1.f / sqrtf(warp_sum(sq) * inv_d + p.eps);
    float w[kPer], b[kPer];
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = lane + 32 * k;
      w[k] = i < p.d ? p.weight[i] : 0.f;
      b[k] = i < p.d ? p.bias[i] : 0.f;
    }
    if (y != nullptr) {
#pragma unroll
      for (int k = 0; k < kPer; ++k)
        if (lane + 32 * k < p.d) x[lane + 32 * k] = v[k];
    }
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = lane + 32 * k;
      if (i < p.d) out[i] = round_to<T>(fmaf((v[k] - mean) * rstd, w[k], b[k]));
    }
  } else {
    float sum = 0.f;
    for (int i = lane; i < p.d; i += 32) {
      float v = x[i];
      if (y != nullptr) {
        v += load_f(y + i);
        x[i] = v;
      }
      sum += v;
    }
    const float mean = warp_sum(sum) * inv_d;
    float sq = 0.f;
    for (int i = lane; i < p.d; i += 32) {
      const float c = x[i] - mean;
      sq = fmaf(c, c, sq);
    }
    const float rstd = 1.f / sqrtf(warp_sum(sq) * inv_d + p.eps);
    for (int i = lane; i < p.d; i += 32) out[i] = round_to<T>(fmaf((x[i] - mean) * rstd, p.weight[i], p.bias[i]));
  }
}

// A block per (b, c) and tile of 1,024 outputs, all three groups. Where every row of p and of the outputs is 16-byte
// aligned at multiples of 8 (16-bit dtypes; the model's rows are, ops.layout), a thread takes 8 consecutive outputs:
// a window of the W - 1 inputs before them and 8 from one 16-byte load per group, one 16-byte store per output row.
// Otherwise consecutive threads take consecutive outputs (coalesced 2-byte accesses, the taps' re-reads from L1):
// 8 outputs per thread with 16-byte stride measured 2.3x slower than that at L = 2,220,382 (H100).
constexpr int kScOut = 8, kScThreads = 128, kScMaxWidth = 4;

// An input of p plus in_proj's bias, rounded to T as the unfused GEMM's output would be.
template <typename T>
__device__ __forceinline__ float biased_input(float v, float in_bias) {
  const T bias = round_to<T>(in_bias);
  const T biased = round_to<T>(v + load_f(&bias));
  return load_f(&biased);
}

template <typename T, int W>
__device__ __forceinline__ float conv_input(const BlockShortConvParams& p, const T* row, const T* past_row, float in_bias,
                                            int64_t src) {
  if (src >= 0) return p.in_bias == nullptr ? load_f(row + src) : biased_input<T>(load_f(row + src), in_bias);
  return past_row != nullptr ? load_f(past_row + src + W - 1) : 0.f;  // carried inputs hold biased values
}

template <typename T, int W>
__device__ __forceinline__ void load_window(const BlockShortConvParams& p, const T* row, const T* past_row,
                                            float in_bias, int64_t t0, bool whole, float (&win)[W - 1 + kScOut]) {
  constexpr int halo = W - 1;
#pragma unroll
  for (int k = 0; k < halo; ++k) win[k] = conv_input<T, W>(p, row, past_row, in_bias, t0 - halo + k);
  if constexpr (sizeof(T) == 2) {
    if (whole) {
      const uint4 raw = *reinterpret_cast<const uint4*>(row + t0);
      T vals[kScOut];  // memcpy, not a cast of &raw: reading a uint4's bytes as T breaks strict aliasing
      memcpy(vals, &raw, sizeof(raw));
#pragma unroll
      for (int i = 0; i < kScOut; ++i)
        win[halo + i] = p.in_bias == nullptr ? load_f(vals + i) : biased_input<T>(load_f(vals + i), in_bias);
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < kScOut; ++i)
    win[halo + i] = t0 + i < p.length ? conv_input<T, W>(p, row, past_row, in_bias, t0 + i) : 0.f;
}


// Channel ch's W taps (w[j]: weight of the input j - W + 1 steps back) into registers; returns its bias.
template <int W>
__device__ __forceinline__ float load_taps(const BlockShortConvParams& p, int64_t ch, float (&w)[W]) {
#pragma unroll
  for (int j = 0; j < W; ++j) w[j] = p.weight[ch * W + j];
  return p.bias[ch];
}

template <typename T, int W, bool kVec>
__global__ void __launch_bounds__(kScThreads) short_conv_gate_kernel(BlockShortConvParams p) {
  const int64_t bc = blockIdx.x;
  const int64_t b = bc / p.d, c = bc % p.d;
  const int64_t tiles = (p.length + kScOut * kScThreads - 1) / (kScOut * kScThreads);
  const T* in = static_cast<const T*>(p.p) + b * p.p_sb;
  const T* past = p.past != nullptr ? static_cast<const T*>(p.past) + b * p.past_sb : nullptr;
  T* x0 = static_cast<T*>(p.x0) + b * p.o_sb + c * p.o_sc;
  T* gated = static_cast<T*>(p.gated) + b * p.o_sb + c * p.o_sc;
  for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
    if constexpr (!kVec) {
      // outputs t = (8 tile + i) 128 + thread: every load of the tile (unrolled, predicated) before its stores
      float acc[3][kScOut];
#pragma unroll
      for (int g = 0; g < 3; ++g) {
        const int64_t ch = g * p.d + c;
        const T* row = in + ch * p.p_sc;
        const T* past_row = past != nullptr ? past + ch * p.past_sc : nullptr;
        const float ib = p.in_bias != nullptr ? p.in_bias[ch] : 0.f;
        float w[W];
        const float bias = load_taps<W>(p, ch, w);
#pragma unroll
        for (int i = 0; i < kScOut; ++i) {
          const int64_t t = (tile * kScOut + i) * kScThreads + threadIdx.x;
          float a = bias;
          if (t < p.length) {
#pragma unroll
            for (int j = 0; j < W; ++j) a = fmaf(conv_input<T, W>(p, row, past_row, ib, t - j), w[W - 1 - j], a);
          }
          acc[g][i] = a;
        }
      }
#pragma unroll
      for (int i = 0; i < kScOut; ++i) {
        const int64_t t = (tile * kScOut + i) * kScThreads + threadIdx.x;
        if (t < p.length) {
          x0[t] = round_to<T>(acc[0][i]);
          gated[t] = round_to<T>(acc[1][i] * acc[2][i]);
        }
      }
      continue;
    }
    const int64_t t0 = (tile * kScThreads + threadIdx.x) * kScOut;
    if (t0 >= p.length) continue;
    const bool whole = t0 + kScOut <= p.length;
    float acc[3][kScOut];
#pragma unroll
    for (int g = 0; g < 3; ++g) {
      const int64_t ch = g * p.d + c;
      float win[W - 1 + kScOut];
      load_window<T, W>(p, in + ch * p.p_sc, past != nullptr ? past + ch * p.past_sc : nullptr,
                        p.in_bias != nullptr ? p.in_bias[ch] : 0.f, t0, whole, win);
      float w[W];
      const float bias = load_taps<W>(p, ch, w);
#pragma unroll
      for (int i = 0; i < kScOut; ++i) {
        float a = bias;
#pragma unroll
        for (int j = 0; j < W; ++j) a = fmaf(win[W - 1 + i - j], w[W - 1 - j], a);  // the tap looking back j steps
        acc[g][i] = a;
      }
    }
    if constexpr (sizeof(T) == 2) {
      if (whole) {
        T a_vals[kScOut], g_vals[kScOut];
#pragma unroll
        for (int i = 0; i < kScOut; ++i) {
          a_vals[i] = round_to<T>(acc[0][i]);
          g_vals[i] = round_to<T>(acc[1][i] * acc[2][i]);
        }
        uint4 a_raw, g_raw;
        memcpy(&a_raw, a_vals, sizeof(a_raw));
        memcpy(&g_raw, g_vals, sizeof(g_raw));
        *reinterpret_cast<uint4*>(x0 + t0) = a_raw;
        *reinterpret_cast<uint4*>(gated + t0) = g_raw;
        continue;
      }
    }
    for (int i = 0; i < kScOut && t0 + i < p.length; ++i) {
      x0[t0 + i] = round_to<T>(acc[0][i]);
      gated[t0 + i] = round_to<T>(acc[1][i] * acc[2][i]);
    }
  }
}

template <typename T, int kPer>
cudaError_t launch_layer_norm_k(const BlockLayerNormParams& p, cudaStream_t stream) {
  const int64_t blocks = (p.rows + kLnWarps - 1) / kLnWarps;
  layer_norm_kernel<T, kPer><<<dim3(unsigned(blocks)), kLnWarps * 32, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_layer_norm_t(const BlockLayerNormParams& p, cudaStream_t stream) {
  if (p.d <= 32) return launch_layer_norm_k<T, 1>(p, stream);
  if (p.d <= 64) return launch_layer_norm_k<T, 2>(p, stream);
  if (p.d <= 128) return launch_layer_norm_k<T, 4>(p, stream);
  if (p.d <= 256) return launch_layer_norm_k<T, 8>(p, stream);
  return launch_layer_norm_k<T, 0>(p, stream);
}

template <typename T, int W>
cudaError_t launch_short_conv_gate_w(const BlockShortConvParams& p, cudaStream_t stream) {
  const int64_t tiles = (p.length + kScOut * kScThreads - 1) / kScOut / kScThreads;
  const dim3 grid(unsigned(p.batch * p.d), unsigned(tiles < 65535 ? tiles : 65535));
  if (sizeof(T) == 2 && p.vec)
    short_conv_gate_kernel<T, W, true><<<grid, kScThreads, 0, stream>>>(p);
  else
    short_conv_gate_kernel<T, W, false><<<grid, kScThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

// The width is a template argument so that the input window stays in registers (HyenaDNA's short filter has 3 taps).
template <typename T>
cudaError_t launch_short_conv_gate_t(const BlockShortConvParams& p, cudaStream_t stream) {
  switch (p.width) {
    case 1: return launch_short_conv_gate_w<T, 1>(p, stream);
    case 2: return launch_short_conv_gate_w<T, 2>(p, stream);
    case 3: return launch_short_conv_gate_w<T, 3>(p, stream);
    default: return launch_short_conv_gate_w<T, 4>(p, stream);
  }
}

}  // namespace

cudaError_t launch_block_layer_norm(const BlockLayerNormParams& p, int dtype, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.d <= 0 || (p.rows + kLnWarps - 1) / kLnWarps > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (dtype == kBlockFloat32) return launch_layer_norm_t<float>(p, stream);
  if (dtype == kBlockBFloat16) return launch_layer_norm_t<__nv_bfloat16>(p, stream);
  return launch_layer_norm_t<__half>(p, stream);
}

cudaError_t launch_block_short_conv_gate(const BlockShortConvParams& p, int dtype, cudaStream_t stream) {
  if (p.batch * p.d == 0 || p.length <= 0) return cudaSuccess;
  if (p.width < 1 || p.width > kScMaxWidth || p.batch * p.d > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (dtype == kBlockFloat32) return launch_short_conv_gate_t<float>(p, stream);
  if (dtype == kBlockBFloat16) return launch_short_conv_gate_t<__nv_bfloat16>(p, stream);
  return launch_short_conv_gate_t<__half>(p, stream);
}

}  // namespace genoconv
