// Plain parameter block shared by the bindings (C++) and the kernels (CUDA). No torch types here, so the
// kernel .cu files compile with nvcc alone (tests/ops/test_cuda_build.py relies on that).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace genoconv {

// The convolutions take the 16-bit types; the Hyena block's fused steps (block_ops.cu) take fp32 as well.
enum class DType : int { kBFloat16 = 0, kFloat16 = 1, kFloat32 = 2 };

// The signals of one causal convolution  y = postgate * (k * (u * pregate)): (B, H, L) with unit stride along L and
// arbitrary (64-bit) batch/channel strides.
struct SignalParams {
  const void* u = nullptr;
  const void* pregate = nullptr;   // may be null
  const void* postgate = nullptr;  // may be null
  void* y = nullptr;
  int64_t u_sb = 0, u_sh = 0;
  int64_t pre_sb = 0, pre_sh = 0;
  int64_t post_sb = 0, post_sh = 0;
  int64_t y_sb = 0, y_sh = 0;
  int64_t batch = 0, channels = 0, seq_len = 0;
};

// One causal convolution with the skip term folded into the spectrum. Rows are visited channel-major (row r ->
// h = r / B, b = r % B) so one channel's spectrum is reused from L2 by the consecutive blocks that serve its batch.
struct ConvParams : SignalParams {

  // Real FFT size N = 2^log_n >= seq_len + filter_len - 1, done as a complex FFT of M = N / 2 points.
  int log_n = 0;
  // Spectrum in the kernel's order: (channels, P) entries {K[k], K[M-k]} (fp32 complex pairs, K = (rfft(k, N) +
  // bias) / M) for the bin pairs in the order the pointwise step visits them (see genoconv/ops/cuda.py _pair_bins),
  // and (P,) pair_twiddle[q] = exp(-2*pi*i*k/N) for the same k. Reads are contiguous and reused across the batch.
  const float4* spectrum = nullptr;
  const float2* pair_twiddle = nullptr;
  int64_t pairs = 0;  // P
  // (M,) multi-level twiddle table, see fft_common.cuh.
  const float2* twiddle = nullptr;

  // Multi-pass path only: (rows_chunk, M) complex fp32 workspace, rows [row0, row0 + rows) of this launch.
  float2* work = nullptr;
  int64_t row0 = 0, rows = 0;
  int log_n1 = 0, log_n2 = 0;  // M = 2^log_n1 * 2^log_n2 (outer x inner); log_n1 = 0 on the fused path

  // Tensor-core Monarch path (fftconv_monarch.cu): `spectrum_h` holds (channels, N / 4) uint4 = N fp16 complex words
  // K[k] * 16^(2 n16) / N / gain[h] in the kernel's lane order (genoconv/ops/cuda.py _monarch_order), and gain[h]
  // is applied in fp32 at the end.
  const uint4* spectrum_h = nullptr;
  const float* gain = nullptr;
  // Outputs t < out_from of every row are not written (a multiple of 8; 0 writes all): the partial-convolution
  // path runs overlapping blocks of a long row through this kernel, and each block's first out_from outputs (its
  // filter's warm-up, wrapped around) belong to the block before it.
  int64_t out_from = 0;
  // Add the result to y instead of overwriting it (y += post-gated result, one rounding to y's dtype): the
  // block-Toeplitz path (genoconv/ops/cuda.py _conv_toeplitz) sums one call per filter block into each output block.
  // With it, outputs t >= out_len of every row are not written and the post-gate rows are read up to it (0: seq_len):
  // a term whose input block is whole and whose output block, the row's last, is shorter.
  bool accumulate = false;
  int64_t out_len = 0;
};

// Largest complex FFT (points) the fused single-kernel path keeps in shared memory on `device`.
int max_fused_points(int device, cudaError_t* err);

// Host launchers (defined in the .cu files). They return the first CUDA error they meet; never print.
cudaError_t launch_fused(const ConvParams& p, DType dtype, cudaStream_t stream);
cudaError_t launch_multipass(const ConvParams& p, DType dtype, cudaStream_t stream);

// Tensor-core Monarch path: N = 2^log_n in [2^10, 2^15], two batch rows per block as one complex signal.
constexpr int kMonarchMinLogN = 10, kMonarchMaxLogN = 15;
// Its accumulating form (ConvParams::accumulate, the block-Toeplitz terms) is built for N = 2^14 and 2^15 only.
constexpr int kMonarchMinAccLogN = 14;
cudaError_t launch_monarch(const ConvParams& p, DType dtype, cudaStream_t stream);

// Long path (fftconv_long.cu): the real FFT convolution of one row at N = R * N' points (N' = 2^log_inner inner,
// R = 2^log_r outer) in three passes with an fp16 workspace: outer R-point DFTs + twiddle, the inner N'-point
// circular convolutions of rows k1 = 0 .. R/2 on the tensor-core kernel (kCirc; rows R/2 < k1 < R are their
// conjugates), inverse twiddle + outer inverse DFTs. The inner sizes are the tensor-core kernel's, r = 2 .. 64.
constexpr int kLongMinLogN = 16, kLongMaxLogN = 23, kLongMinInnerLogN = 9, kLongMaxInnerLogN = 14;

// Row (b, h) holds inputs x[src_a + n] for n in [0, N) that lie in [src_a, seq_len) and gives outputs t in
// [src_o, seq_len) (t = src_a + n); the caller sizes N so they equal the linear convolution's: N >= L - a and
// N >= L - o + K - 1 (src_a = src_o = 0: a linear convolution; src_o >= K - 1: overlap-save).
struct LongParams : SignalParams {
  int log_n = 0, log_r = 0;  // N = 2^log_n real points, R = 2^log_r outer, N' = N / R inner
  int64_t src_a = 0, src_o = 0;
  // (channels, R/2 + 1, 2 batch, N') fp16: row (c, k1, 2 b + plane) holds plane (re, im) of row b's inner row k1.
  void* work = nullptr;
  // (R, 2) multi-level twiddle table of the outer DFTs (fft_common.cuh).
  const float2* twiddle = nullptr;
  // (channels, batch): x is multiplied by this power of two in pass 1 (0 marks a row with inf/NaN: written as NaN).
  const float* in_scale = nullptr;
  // When set ((channels, batch, 2) scratch words), the launch first computes in_scale (written through the pointer
  // above) from the rows' peaks |u| and |pregate|, as genoconv/ops/cuda.py _in_scale does: one peak pass per channel
  // block instead of the host's reduction ops before the call.
  unsigned* peak = nullptr;
  // (channels,): the inner pass's gain was divided by this power of two (fp16 range); pass 3 multiplies it back.
  const float* out_scale = nullptr;
  // Inner pass: (channels * (R/2 + 1), N' / 4) uint4 spectra in the tensor-core kernel's order, and their gains.
  const uint4* spectrum_h = nullptr;
  const float* gain = nullptr;
};
cudaError_t launch_long(const LongParams& p, DType dtype, cudaStream_t stream);
// in_scale alone (LongParams::peak's two kernels over whole rows u, pregate; p.in_scale and p.peak set): the scales a
// row's overlap-save blocks share, each launch of them then reading a view of the row (genoconv/ops/cuda.py).
cudaError_t launch_long_row_scales(const LongParams& p, DType dtype, cudaStream_t stream);
// The tensor-core kernel in its circular form (fp16 rows, no gates, N = 2^9 .. 2^14): the long path's inner pass.
cudaError_t launch_monarch_circular(const ConvParams& p, cudaStream_t stream);

// The Hyena block's fused steps (block_ops.cu), in the model's compute dtype: bf16, fp16 or fp32.
// out = LayerNorm(x) (rows, d) in the compute dtype; x fp32 contiguous, and when y (rows, d, compute dtype,
// contiguous) is set, x += y in place first. weight, bias: (d,) fp32.
struct BlockLayerNormParams {
  float* x = nullptr;
  const void* y = nullptr;
  void* out = nullptr;
  const float* weight = nullptr;
  const float* bias = nullptr;
  int64_t rows = 0;
  int d = 0;
  float eps = 1e-5f;
};
cudaError_t launch_block_layer_norm(const BlockLayerNormParams& p, DType dtype, cudaStream_t stream);

// x0 = conv(p)[group 0], gated = conv(p)[group 1] * conv(p)[group 2]: the causal depthwise conv of width W over
// p (B, 3d, L) (unit stride along L), tap j looking back j steps with weight[ch, W - 1 - j], plus bias[ch]; past
// (B, 3d, W - 1) holds the inputs before p (zeros when null); in_bias (3d,) a bias p lacks, added to every input
// inside the row. Outputs x0, gated: (B, d, L) sharing strides o_sb, o_sc, unit stride along L. vec: the rows of p
// and of both outputs are 16-byte aligned at every multiple of 8 (the 16-byte path, 16-bit dtypes only).
struct BlockShortConvParams {
  const void* p = nullptr;
  const void* past = nullptr;
  const float* weight = nullptr;  // (3d, W)
  const float* bias = nullptr;    // (3d,)
  const float* in_bias = nullptr;  // (3d,) or null
  void* x0 = nullptr;
  void* gated = nullptr;
  int64_t p_sb = 0, p_sc = 0, past_sb = 0, past_sc = 0, o_sb = 0, o_sc = 0;
  int64_t batch = 0, d = 0, length = 0;
  int width = 0;
  bool vec = false;
};
cudaError_t launch_block_short_conv_gate(const BlockShortConvParams& p, DType dtype, cudaStream_t stream);

}  // namespace genoconv
