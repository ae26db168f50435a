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

// A block per (b, c) and tile of outputs, all three groups; a thread takes the 16 bytes of 8 (fp32: 4) consecutive
// outputs. Where every row of p and of the outputs is 16-byte aligned at multiples of 8 (16-bit dtypes; the model's
// rows are, ops.layout), short_conv_gate_kernel reads its window straight from p: the W - 1 inputs before its outputs
// and one 16-byte load per group. Other rows (any alignment of p and of the outputs, and fp32) take
// short_conv_staged_kernel: the tile's inputs go through shared memory, staged with coalesced element loads, so a
// thread's outputs can sit on the output row's own 16-byte grid whatever p's alignment.
constexpr int kScOut = 8, kScThreads = 128, kScMaxWidth = 4;

// An input of p plus in_proj's bias, rounded to T as the unfused GEMM's output would be.
template <typename T>
__device__ __forceinline__ T biased_value(float v, float in_bias) {
  const T bias = round_to<T>(in_bias);
  return round_to<T>(v + load_f(&bias));
}

template <typename T>
__device__ __forceinline__ float biased_input(float v, float in_bias) {
  const T biased = biased_value<T>(v, in_bias);
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
  if (whole) {
    const uint4 raw = *reinterpret_cast<const uint4*>(row + t0);
    T vals[kScOut];  // memcpy, not a cast of &raw: reading a uint4's bytes as T breaks strict aliasing
    memcpy(vals, &raw, sizeof(raw));
#pragma unroll
    for (int i = 0; i < kScOut; ++i)
      win[halo + i] = p.in_bias == nullptr ? load_f(vals + i) : biased_input<T>(load_f(vals + i), in_bias);
    return;
  }
#pragma unroll
  for (int i = 0; i < kScOut; ++i)
    win[halo + i] = t0 + i < p.length ? conv_input<T, W>(p, row, past_row, in_bias, t0 + i) : 0.f;
}

// v (16 bytes) as uint4 number `word` of `words`, one 16-byte store. Indexed as uint4 because the same store written
// to x0 + t0 inside the tile loop compiled to four 4-byte stores (nvcc 13): 81% of the copy floor against 84% (H100).
template <typename T, int N>
__device__ __forceinline__ void store16(T* words, int64_t word, const T (&v)[N]) {
  static_assert(N * sizeof(T) == 16, "16 bytes");
  uint4 raw;  // memcpy, as in load_window
  memcpy(&raw, v, sizeof(raw));
  reinterpret_cast<uint4*>(words)[word] = raw;
}

// Channel ch's W taps (w[j]: weight of the input j - W + 1 steps back) into registers; returns its bias.
template <int W>
__device__ __forceinline__ float load_taps(const BlockShortConvParams& p, int64_t ch, float (&w)[W]) {
#pragma unroll
  for (int j = 0; j < W; ++j) w[j] = p.weight[ch * W + j];
  return p.bias[ch];
}

// acc[i] = bias + sum_j win[halo + i - j] w[W - 1 - j], j = 0 first (both kernels: the same order per output).
template <int W, int N>
__device__ __forceinline__ void conv_outputs(const BlockShortConvParams& p, int64_t ch, const float (&win)[W - 1 + N],
                                             float (&acc)[N]) {
  float w[W];
  const float bias = load_taps<W>(p, ch, w);
#pragma unroll
  for (int i = 0; i < N; ++i) {
    float a = bias;
#pragma unroll
    for (int j = 0; j < W; ++j) a = fmaf(win[W - 1 + i - j], w[W - 1 - j], a);  // the tap looking back j steps
    acc[i] = a;
  }
}

// The 16-byte path (16-bit dtypes, p.vec): tile of 1,024 outputs, thread's outputs t0 .. t0 + 7 with t0 = 8 k.
template <typename T, int W>
__global__ void __launch_bounds__(kScThreads) short_conv_gate_kernel(BlockShortConvParams p) {
  static_assert(sizeof(T) == 2, "the 16-byte path holds 8 outputs per 16 bytes");
  const int64_t bc = blockIdx.x;
  const int64_t b = bc / p.d, c = bc % p.d;
  const int64_t tiles = (p.length + kScOut * kScThreads - 1) / (kScOut * kScThreads);
  const T* in = static_cast<const T*>(p.p) + b * p.p_sb;
  const T* past = p.past != nullptr ? static_cast<const T*>(p.past) + b * p.past_sb : nullptr;
  T* x0 = static_cast<T*>(p.x0) + b * p.o_sb + c * p.o_sc;
  T* gated = static_cast<T*>(p.gated) + b * p.o_sb + c * p.o_sc;
  for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
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
      conv_outputs<W, kScOut>(p, ch, win, acc[g]);
    }
    if (whole) {
      T a_vals[kScOut], g_vals[kScOut];
#pragma unroll
      for (int i = 0; i < kScOut; ++i) {
        a_vals[i] = round_to<T>(acc[0][i]);
        g_vals[i] = round_to<T>(acc[1][i] * acc[2][i]);
      }
      store16(x0, tile * kScThreads + threadIdx.x, a_vals);  // x0 + t0
      store16(gated, tile * kScThreads + threadIdx.x, g_vals);
      continue;
    }
    for (int i = 0; i < kScOut && t0 + i < p.length; ++i) {
      x0[t0 + i] = round_to<T>(acc[0][i]);
      gated[t0 + i] = round_to<T>(acc[1][i] * acc[2][i]);
    }
  }
}

// Input t of a row as staged: p (plus in_proj's bias), the carried inputs before 0, and zeros before those (they
// reach only outputs t < 0) and at t >= L (no output written reads them).
template <typename T, int W>
__device__ __forceinline__ T staged_input(const BlockShortConvParams& p, const T* row, const T* past_row,
                                          float in_bias, int64_t t) {
  if (t >= 0 && t < p.length) return p.in_bias == nullptr ? row[t] : biased_value<T>(load_f(row + t), in_bias);
  if (t < 0 && t >= -(W - 1) && past_row != nullptr) return past_row[t + W - 1];  // carried inputs hold biased values
  return round_to<T>(0.f);
}

// A tile's inputs of the three groups into registers: thread k's v[g][i] is staged element e = i kScThreads + k, input
// first + e (in the last round the threads past the span load its last element again). kInside: every input lies in
// p, and the loads run with no branch between them (kBias: in_proj's bias added); with staged_input's per-element
// choice between them this kernel measured 23% of the copy floor, 79% without (L = 2,220,382, H100).
template <typename T, int W, int kLoads, bool kInside, bool kBias>
__device__ __forceinline__ void stage_loads(const BlockShortConvParams& p, const T* in, const T* past, int64_t c,
                                            int64_t first, T (&v)[3][kLoads]) {
  constexpr int kStaged = kScThreads * int(16 / sizeof(T)) + W - 1;
#pragma unroll
  for (int g = 0; g < 3; ++g) {
    const int64_t ch = g * p.d + c;
    const T* row = in + ch * p.p_sc;
    const float ib = (kInside ? kBias : p.in_bias != nullptr) ? p.in_bias[ch] : 0.f;
    const T* past_row = past != nullptr ? past + ch * p.past_sc : nullptr;
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int e = i * kScThreads + int(threadIdx.x);
      const int64_t t = first + (e < kStaged ? e : kStaged - 1);
      if constexpr (!kInside)
        v[g][i] = staged_input<T, W>(p, row, past_row, ib, t);
      else if constexpr (kBias)
        v[g][i] = biased_value<T>(load_f(row + t), ib);
      else
        v[g][i] = row[t];
    }
  }
}

// The staged path (any alignment; fp32). Thread k's outputs are t0 .. t0 + kPer - 1, t0 = start + kPer k with
// start = kSpan tile - lead (lead: t = 0's place in x0's first 16-byte word), so a whole group of them is one 16-byte
// word of x0 (and of gated, where its row is congruent to x0's mod 16; the rows share strides): the row's first and
// last partial words are written element by element. Shared slot s (kPer inputs, 16 bytes) of a group holds inputs
// start + kPer (s - 1) ..., slot 0 the W - 1 before the tile, staged by consecutive threads (coalesced at any
// alignment of p); a thread reads slots k and k + 1. 6 blocks of 128 threads per SM (<= 80 registers): 84% of the
// copy floor against 79% at the 95 registers the compiler chose (L = 2,220,382, H100).
template <typename T, int W>
__global__ void __launch_bounds__(kScThreads, 6) short_conv_staged_kernel(BlockShortConvParams p) {
  constexpr int kPer = 16 / sizeof(T), kSpan = kScThreads * kPer, kHalo = W - 1;
  constexpr int kStaged = kSpan + kHalo, kLoads = (kStaged + kScThreads - 1) / kScThreads;
  __shared__ __align__(16) T s_in[3][(kScThreads + 1) * kPer];
  const int64_t bc = blockIdx.x;
  const int64_t b = bc / p.d, c = bc % p.d;
  const T* in = static_cast<const T*>(p.p) + b * p.p_sb;
  const T* past = p.past != nullptr ? static_cast<const T*>(p.past) + b * p.past_sb : nullptr;
  T* x0 = static_cast<T*>(p.x0) + b * p.o_sb + c * p.o_sc;
  T* gated = static_cast<T*>(p.gated) + b * p.o_sb + c * p.o_sc;
  const int lead = int(reinterpret_cast<uintptr_t>(x0) % 16 / sizeof(T));
  const bool gated_words = (reinterpret_cast<uintptr_t>(x0) - reinterpret_cast<uintptr_t>(gated)) % 16 == 0;
  const int64_t tiles = (p.length + lead + kSpan - 1) / kSpan;
  for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
    const int64_t start = tile * kSpan - lead;
    // Every load of the tile into registers before the shared stores (a generic pointer could be shared memory, so
    // the compiler would not move a load above a store).
    T v[3][kLoads];
    const int64_t first = start - kHalo;
    if (first >= 0 && start + kSpan <= p.length) {
      if (p.in_bias == nullptr)
        stage_loads<T, W, kLoads, true, false>(p, in, past, c, first, v);
      else
        stage_loads<T, W, kLoads, true, true>(p, in, past, c, first, v);
    } else {
      stage_loads<T, W, kLoads, false, false>(p, in, past, c, first, v);
    }
#pragma unroll
    for (int g = 0; g < 3; ++g) {
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        const int e = i * kScThreads + threadIdx.x;
        if (i < kLoads - 1 || e < kStaged) s_in[g][kPer - kHalo + e] = v[g][i];
      }
    }
    __syncthreads();
    const int64_t t0 = start + kPer * int64_t(threadIdx.x);
    if (t0 < p.length && t0 + kPer > 0) {
      float acc[3][kPer];
#pragma unroll
      for (int g = 0; g < 3; ++g) {
        T lo[kPer], hi[kPer];  // slots k and k + 1: 16-byte shared loads
        memcpy(lo, &s_in[g][kPer * threadIdx.x], sizeof(lo));
        memcpy(hi, &s_in[g][kPer * (threadIdx.x + 1)], sizeof(hi));
        float win[kHalo + kPer];
#pragma unroll
        for (int k = 0; k < kHalo; ++k) win[k] = load_f(lo + kPer - kHalo + k);
#pragma unroll
        for (int i = 0; i < kPer; ++i) win[kHalo + i] = load_f(hi + i);
        conv_outputs<W, kPer>(p, g * p.d + c, win, acc[g]);
      }
      T a_vals[kPer], g_vals[kPer];
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        a_vals[i] = round_to<T>(acc[0][i]);
        g_vals[i] = round_to<T>(acc[1][i] * acc[2][i]);
      }
      const bool whole = t0 >= 0 && t0 + kPer <= p.length;
      const int64_t word = tile * kScThreads + threadIdx.x;  // x0 + t0 = x0 - lead + kPer word
      if (whole) store16(x0 - lead, word, a_vals);
      if (whole && gated_words) store16(gated - lead, word, g_vals);
      if (!whole || !gated_words) {
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          const int64_t t = t0 + i;
          if (t < 0 || t >= p.length) continue;
          if (!whole) x0[t] = a_vals[i];
          gated[t] = g_vals[i];
        }
      }
    }
    if (tile + gridDim.y < tiles) __syncthreads();  // the next tile's staging overwrites these slots
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
  if constexpr (sizeof(T) == 2) {
    if (p.vec) {
      const int64_t tiles = (p.length + kScOut * kScThreads - 1) / (kScOut * kScThreads);
      const dim3 grid(unsigned(p.batch * p.d), unsigned(tiles < 65535 ? tiles : 65535));
      short_conv_gate_kernel<T, W><<<grid, kScThreads, 0, stream>>>(p);
      return cudaGetLastError();
    }
  }
  // the staged kernel's rows start up to 15 bytes before their 16-byte word: one more tile for some
  constexpr int64_t kPer = 16 / sizeof(T);
  const int64_t tiles = (p.length + kPer - 1 + kPer * kScThreads - 1) / (kPer * kScThreads);
  const dim3 grid(unsigned(p.batch * p.d), unsigned(tiles < 65535 ? tiles : 65535));
  short_conv_staged_kernel<T, W><<<grid, kScThreads, 0, stream>>>(p);
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

cudaError_t launch_block_layer_norm(const BlockLayerNormParams& p, DType dtype, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.d <= 0 || (p.rows + kLnWarps - 1) / kLnWarps > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (dtype == DType::kFloat32) return launch_layer_norm_t<float>(p, stream);
  if (dtype == DType::kBFloat16) return launch_layer_norm_t<__nv_bfloat16>(p, stream);
  return launch_layer_norm_t<__half>(p, stream);
}

cudaError_t launch_block_short_conv_gate(const BlockShortConvParams& p, DType dtype, cudaStream_t stream) {
  if (p.batch * p.d == 0 || p.length <= 0) return cudaSuccess;
  if (p.width < 1 || p.width > kScMaxWidth || p.batch * p.d > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (dtype == DType::kFloat32) return launch_short_conv_gate_t<float>(p, stream);
  if (dtype == DType::kBFloat16) return launch_short_conv_gate_t<__nv_bfloat16>(p, stream);
  return launch_short_conv_gate_t<__half>(p, stream);
}

}  // namespace genoconv
