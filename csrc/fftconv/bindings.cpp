// Torch bindings: input checks, workspace, dtype dispatch, and the torch.library registration of
//   genoconv_fftconv::causal_conv          (the scalar fused / three-pass kernels) and
//   genoconv_fftconv::causal_conv_monarch  (the tensor-core Monarch kernel; _into: its partial-convolution form;
//                                           _add: y += conv, the block-Toeplitz sums)
//   genoconv_fftconv::causal_conv_long     (the long path: outer passes around the tensor-core kernel)
//   genoconv_fftconv::block_layer_norm, block_short_conv_gate  (the Hyena block's fused steps, block_ops.cu)
// Each op is one node for torch.compile; their fake (meta) implementations live in genoconv/ops/cuda.py.
#include <algorithm>
#include <cstdlib>

#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "params.h"

// The architectures come from the build flags (genoconv/ops/build.py), where they are listed once, unquoted.
#ifndef GENOCONV_FFTCONV_ARCHS
#error "GENOCONV_FFTCONV_ARCHS is set by the build (genoconv/ops/build.py)"
#endif
#define GENOCONV_STRINGIFY_(...) #__VA_ARGS__
#define GENOCONV_STRINGIFY(...) GENOCONV_STRINGIFY_(__VA_ARGS__)

namespace genoconv {
namespace {

// Integers go into error messages as std::string: streaming a `long` into c10::str's ostringstream crashed inside
// this extension's copy of libstdc++ (seen on the H200 image, torch 2.11, g++ 13; cuda-gdb backtrace in NOTES.md).
std::string num(int64_t v) { return std::to_string(v); }

void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "genoconv fftconv: ", what, " failed: ", cudaGetErrorString(err));
}

// shorter: an output-side signal (y, postgate) of a block-Toeplitz term may be shorter than u along the sequence.
void check_signal(const at::Tensor& t, const at::Tensor& u, const char* name, bool shorter = false) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.device() == u.device(), name, " must be on u's device");
  TORCH_CHECK(t.scalar_type() == u.scalar_type(), name, " must have u's dtype");
  if (shorter) {
    TORCH_CHECK(t.dim() == 3 && t.size(0) == u.size(0) && t.size(1) == u.size(1) && t.size(2) >= 1 &&
                    t.size(2) <= u.size(2),
                name, " must have u's batch and channels and at most its length");
  } else {
    TORCH_CHECK(t.sizes() == u.sizes(), name, " must have u's shape");
  }
}

// Unit stride along the sequence is what the kernels need; batch/channel strides are passed through (64-bit).
at::Tensor unit_inner_stride(const at::Tensor& t) {
  return (t.size(-1) <= 1 || t.stride(-1) == 1) ? t : t.contiguous();
}

// Number of bin pairs the pointwise step visits: fused M/2 + 1; multi-pass (N1/2 + 1) rows of N2 slots.
int64_t pair_slots(int64_t log_n, int64_t log_n1) {
  const int64_t m = int64_t(1) << (log_n - 1);
  if (log_n1 == 0) return m / 2 + 1;
  return ((int64_t(1) << (log_n1 - 1)) + 1) * (m >> log_n1);
}

// Signals (u, gates, a fresh contiguous y) into the parameter block; the caller adds the spectrum and plan.
struct Signals {
  at::Tensor u, pregate, postgate, y;
};

// `y_out`, when given, receives the result instead (u's shape, dtype and device, unit stride along the sequence).
Signals bind_signals(ConvParams& p, const at::Tensor& u_in, const c10::optional<at::Tensor>& pregate_in,
                     const c10::optional<at::Tensor>& postgate_in, const at::Tensor* y_out = nullptr,
                     bool shorter_out = false) {
  Signals s;
  s.u = unit_inner_stride(u_in);
  if (pregate_in.has_value()) {
    check_signal(*pregate_in, s.u, "pregate");
    s.pregate = unit_inner_stride(*pregate_in);
  }
  if (postgate_in.has_value()) {
    check_signal(*postgate_in, s.u, "postgate", shorter_out);
    s.postgate = unit_inner_stride(*postgate_in);
  }
  if (y_out != nullptr) {
    check_signal(*y_out, s.u, "y", shorter_out);
    TORCH_CHECK(!postgate_in.has_value() || postgate_in->size(-1) == y_out->size(-1), "postgate must have y's length");
    TORCH_CHECK(y_out->size(-1) <= 1 || y_out->stride(-1) == 1, "y must have unit stride along the sequence");
    s.y = *y_out;
  } else {
    s.y = at::empty(s.u.sizes(), s.u.options().memory_format(at::MemoryFormat::Contiguous));
  }
  p.u = s.u.data_ptr();
  p.u_sb = s.u.stride(0);
  p.u_sh = s.u.stride(1);
  if (s.pregate.defined()) {
    p.pregate = s.pregate.data_ptr();
    p.pre_sb = s.pregate.stride(0);
    p.pre_sh = s.pregate.stride(1);
  }
  if (s.postgate.defined()) {
    p.postgate = s.postgate.data_ptr();
    p.post_sb = s.postgate.stride(0);
    p.post_sh = s.postgate.stride(1);
  }
  p.y = s.y.data_ptr();
  p.y_sb = s.y.stride(0);
  p.y_sh = s.y.stride(1);
  p.batch = s.u.size(0);
  p.channels = s.u.size(1);
  p.seq_len = s.u.size(2);
  p.out_len = s.y.size(2);
  return s;
}

void check_u(const at::Tensor& u_in) {
  TORCH_CHECK(u_in.is_cuda(), "u must be a CUDA tensor");
  TORCH_CHECK(u_in.dim() == 3, "u must be (batch, channels, seq_len)");
  TORCH_CHECK(u_in.scalar_type() == at::kBFloat16 || u_in.scalar_type() == at::kHalf,
              "u must be bfloat16 or float16, got ", u_in.scalar_type());
}

DType dtype_of(const at::Tensor& u) { return u.scalar_type() == at::kBFloat16 ? DType::kBFloat16 : DType::kFloat16; }

at::Tensor causal_conv_cuda(const at::Tensor& u_in, const at::Tensor& spectrum, const at::Tensor& pair_twiddle,
                            const at::Tensor& twiddle, const c10::optional<at::Tensor>& pregate_in,
                            const c10::optional<at::Tensor>& postgate_in, int64_t log_n, int64_t log_n1) {
  check_u(u_in);
  const int64_t batch = u_in.size(0), channels = u_in.size(1), seq_len = u_in.size(2);
  TORCH_CHECK(log_n >= 3 && log_n <= 23, "log_n must be in [3, 23], got ", num(log_n));
  TORCH_CHECK(seq_len <= (int64_t(1) << (log_n - 1)) * 2, "FFT size 2^", num(log_n), " shorter than seq_len ", num(seq_len));
  const int64_t m = int64_t(1) << (log_n - 1);
  TORCH_CHECK(log_n1 >= 0 && log_n1 < log_n - 1, "log_n1 out of range: ", num(log_n1));
  const int64_t pairs = pair_slots(log_n, log_n1);
  TORCH_CHECK(spectrum.is_cuda() && spectrum.device() == u_in.device(), "spectrum must be on u's device");
  TORCH_CHECK(spectrum.scalar_type() == at::kFloat && spectrum.is_contiguous() && spectrum.dim() == 3 &&
                  spectrum.size(0) == channels && spectrum.size(1) == pairs && spectrum.size(2) == 4,
              "spectrum must be contiguous float32 (channels, ", num(pairs), ", 4) in the kernel's pair order");
  TORCH_CHECK(pair_twiddle.is_cuda() && pair_twiddle.device() == u_in.device(), "pair_twiddle must be on u's device");
  TORCH_CHECK(pair_twiddle.scalar_type() == at::kFloat && pair_twiddle.is_contiguous() && pair_twiddle.dim() == 2 &&
                  pair_twiddle.size(0) == pairs && pair_twiddle.size(1) == 2,
              "pair_twiddle must be contiguous float32 (", num(pairs), ", 2)");
  TORCH_CHECK(twiddle.is_cuda() && twiddle.device() == u_in.device(), "twiddle must be on u's device");
  TORCH_CHECK(twiddle.scalar_type() == at::kFloat && twiddle.is_contiguous() && twiddle.dim() == 2 &&
                  twiddle.size(0) == m && twiddle.size(1) == 2,
              "twiddle must be the contiguous float32 (N/2, 2) multi-level table");

  ConvParams p;
  const Signals sig = bind_signals(p, u_in, pregate_in, postgate_in);
  const at::Tensor& y = sig.y;
  if (y.numel() == 0) return y;

  const c10::cuda::CUDAGuard guard(u_in.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();

  p.log_n = static_cast<int>(log_n);
  p.spectrum = reinterpret_cast<const float4*>(spectrum.data_ptr<float>());
  p.pair_twiddle = reinterpret_cast<const float2*>(pair_twiddle.data_ptr<float>());
  p.pairs = pairs;
  p.twiddle = reinterpret_cast<const float2*>(twiddle.data_ptr<float>());
  const DType dtype = dtype_of(u_in);

  cudaError_t err = cudaSuccess;
  const int max_fused = max_fused_points(u_in.get_device(), &err);
  check_cuda(err, "cudaDeviceGetAttribute");
  const int64_t rows = batch * channels;
  if (log_n1 == 0) {
    TORCH_CHECK(m <= max_fused, "FFT of ", num(m), " complex points exceeds the fused path's shared memory (", num(max_fused),
                "): pass log_n1 > 0");
    TORCH_CHECK(rows <= 0x7fffffffLL, "batch * channels must be < 2^31");
    p.rows = rows;
    check_cuda(launch_fused(p, dtype, stream), "fused kernel launch");
    return y;
  }

  // Multi-pass: inner transforms of N2 = M / N1 points (a block holds two mirrored rows), outer N1 points.
  const int log_m = p.log_n - 1;
  p.log_n1 = static_cast<int>(log_n1);
  p.log_n2 = log_m - p.log_n1;
  TORCH_CHECK(p.log_n2 >= 4 && (int64_t(2) << p.log_n2) <= max_fused,
              "inner size 2^", num(p.log_n2), " does not fit shared memory (two rows of at most ", num(max_fused / 2), ")");
  // Workspace of at most ~1 GiB (at least one row): rows are processed in chunks.
  const int64_t row_bytes = m * static_cast<int64_t>(sizeof(float2));
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(rows, (int64_t(1) << 30) / row_bytes));
  at::Tensor work = at::empty({chunk, m, 2}, u_in.options().dtype(at::kFloat));
  p.work = reinterpret_cast<float2*>(work.data_ptr<float>());
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    p.row0 = r0;
    p.rows = std::min(chunk, rows - r0);
    check_cuda(launch_multipass(p, dtype, stream), "multi-pass kernel launch");
  }
  return y;
}


// Tensor-core Monarch path (fftconv_monarch.cu): spectrum (channels, N, 2) fp16 in the kernel's lane order, gain
// (channels,) fp32; N = 2^log_n in [2^10, 2^15] with N >= seq_len + filter_len - 1 (the caller's plan).
at::Tensor monarch_run(const at::Tensor& u_in, const at::Tensor& spectrum, const at::Tensor& gain,
                       const c10::optional<at::Tensor>& pregate_in, const c10::optional<at::Tensor>& postgate_in,
                       int64_t log_n, const at::Tensor* y_out, int64_t out_from, bool accumulate = false) {
  check_u(u_in);
  const int64_t channels = u_in.size(1), seq_len = u_in.size(2);
  TORCH_CHECK(log_n >= kMonarchMinLogN && log_n <= kMonarchMaxLogN, "log_n must be in [", num(kMonarchMinLogN), ", ",
              num(kMonarchMaxLogN), "], got ", num(log_n));
  const int64_t n = int64_t(1) << log_n;
  TORCH_CHECK(2 * seq_len <= n, "FFT size 2^", num(log_n), " shorter than twice seq_len ", num(seq_len));
  TORCH_CHECK(spectrum.is_cuda() && spectrum.device() == u_in.device(), "spectrum must be on u's device");
  TORCH_CHECK(spectrum.scalar_type() == at::kHalf && spectrum.is_contiguous() && spectrum.dim() == 3 &&
                  spectrum.size(0) == channels && spectrum.size(1) == n && spectrum.size(2) == 2,
              "spectrum must be contiguous float16 (channels, ", num(n), ", 2) in the kernel's lane order");
  TORCH_CHECK(gain.is_cuda() && gain.device() == u_in.device() && gain.scalar_type() == at::kFloat &&
                  gain.is_contiguous() && gain.dim() == 1 && gain.size(0) == channels,
              "gain must be contiguous float32 (channels,) on u's device");
  TORCH_CHECK(out_from >= 0 && out_from % 8 == 0 && 2 * out_from < n,
              "out_from must be a multiple of 8 below N/2, got ", num(out_from));
  ConvParams p;
  const Signals sig = bind_signals(p, u_in, pregate_in, postgate_in, y_out, accumulate);
  if (sig.y.numel() == 0) return sig.y;
  p.out_from = out_from;
  p.accumulate = accumulate;
  TORCH_CHECK(!accumulate || log_n >= kMonarchMinAccLogN, "the accumulating kernel is built for N >= 2^",
              num(kMonarchMinAccLogN), ", got 2^", num(log_n));
  TORCH_CHECK(((p.batch + 1) / 2) * p.channels <= 0x7fffffffLL, "ceil(batch / 2) * channels must be < 2^31");
  const c10::cuda::CUDAGuard guard(u_in.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  p.log_n = static_cast<int>(log_n);
  p.spectrum_h = reinterpret_cast<const uint4*>(spectrum.data_ptr<at::Half>());
  p.gain = gain.data_ptr<float>();
  check_cuda(launch_monarch(p, dtype_of(u_in), stream), "tensor-core kernel launch");
  return sig.y;
}

at::Tensor causal_conv_monarch(const at::Tensor& u_in, const at::Tensor& spectrum, const at::Tensor& gain,
                               const c10::optional<at::Tensor>& pregate_in,
                               const c10::optional<at::Tensor>& postgate_in, int64_t log_n) {
  return monarch_run(u_in, spectrum, gain, pregate_in, postgate_in, log_n, nullptr, 0);
}

// The same kernel writing into y (a view, possibly one of overlapping blocks), outputs t >= out_from of each row
// only: the partial-convolution path (genoconv/ops/cuda.py, _conv_blocks).
void causal_conv_monarch_into(const at::Tensor& u_in, const at::Tensor& spectrum, const at::Tensor& gain,
                              const c10::optional<at::Tensor>& pregate_in,
                              const c10::optional<at::Tensor>& postgate_in, const at::Tensor& y, int64_t log_n,
                              int64_t out_from) {
  TORCH_CHECK(u_in.size(-1) <= 1 || u_in.stride(-1) == 1, "u must have unit stride along the sequence");
  monarch_run(u_in, spectrum, gain, pregate_in, postgate_in, log_n, &y, out_from);
}

// The same kernel adding its result to y (y += conv): the block-Toeplitz path (genoconv/ops/cuda.py, _conv_toeplitz)
// sums one call per filter block into each output block. y and the post-gate may be shorter than u (outputs
// [0, y's length) of a whole input block).
void causal_conv_monarch_add(const at::Tensor& u_in, const at::Tensor& spectrum, const at::Tensor& gain,
                             const c10::optional<at::Tensor>& pregate_in,
                             const c10::optional<at::Tensor>& postgate_in, const at::Tensor& y, int64_t log_n) {
  TORCH_CHECK(u_in.size(-1) <= 1 || u_in.stride(-1) == 1, "u must have unit stride along the sequence");
  monarch_run(u_in, spectrum, gain, pregate_in, postgate_in, log_n, &y, 0, true);
}

// Bytes of fp16 workspace one long-path launch may use (GENOCONV_LONG_WORK_BYTES, for tests; default 1 GiB): the
// channels are launched in blocks whose workspace fits it. Blocks sized to L2 (6-48 MiB on an H100) were measured
// slower, 1.1-2.7x (NOTES.md v18): each block's five launches drain and refill the GPU, which costs more than the
// DRAM round trips of the workspace that they save.
int64_t long_work_bytes() {
  const char* env = std::getenv("GENOCONV_LONG_WORK_BYTES");
  const long long v = env ? std::atoll(env) : 0;
  return v > 0 ? int64_t(v) : int64_t(1) << 30;
}

// Long path (fftconv_long.cu): real FFT size N = 2^log_n = R N' (R = 2^log_r); spectrum (channels * (R/2 + 1), N', 2)
// fp16 and gain (channels * (R/2 + 1),) for the inner rows, out_scale (channels,), in_scale (channels, batch) or
// absent (then computed by the launches, LongParams::peak), twiddle (R, 2) the outer DFTs' multi-level table; inputs
// from src_a, outputs from src_o (LongParams). The fp16 workspace (about 2 N bytes per row) is bounded by processing
// channels in blocks (long_work_bytes).
// It writes into y (u's shape and dtype, unit stride along the sequence; outputs before src_o are left as they are).
void causal_conv_long(const at::Tensor& u_in, const at::Tensor& spectrum, const at::Tensor& gain,
                      const at::Tensor& out_scale, const c10::optional<at::Tensor>& in_scale_in,
                      const at::Tensor& twiddle,
                      const c10::optional<at::Tensor>& pregate_in, const c10::optional<at::Tensor>& postgate_in,
                      const at::Tensor& y, int64_t log_n, int64_t log_r, int64_t src_a, int64_t src_o) {
  check_u(u_in);
  const int64_t batch = u_in.size(0), channels = u_in.size(1), seq_len = u_in.size(2);
  TORCH_CHECK(log_n >= kLongMinLogN && log_n <= kLongMaxLogN, "log_n must be in [", num(kLongMinLogN), ", ",
              num(kLongMaxLogN), "], got ", num(log_n));
  const int64_t log_inner = log_n - log_r;
  TORCH_CHECK(log_r >= 2 && log_inner >= kLongMinInnerLogN && log_inner <= kLongMaxInnerLogN,
              "inner size 2^", num(log_inner), " outside [2^", num(kLongMinInnerLogN), ", 2^", num(kLongMaxInnerLogN), "]");
  TORCH_CHECK(src_a >= 0 && src_o >= src_a && seq_len - src_a <= (int64_t(1) << log_n),
              "the row's inputs [src_a, L) do not fit the transform");
  const int64_t rh = (int64_t(1) << (log_r - 1)) + 1, inner = int64_t(1) << log_inner;
  auto check_f32 = [&](const at::Tensor& t, const char* name, std::vector<int64_t> shape) {
    TORCH_CHECK(t.is_cuda() && t.device() == u_in.device() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                    t.sizes() == at::IntArrayRef(shape),
                name, " must be a contiguous float32 tensor of the documented shape on u's device");
  };
  TORCH_CHECK(spectrum.is_cuda() && spectrum.device() == u_in.device() && spectrum.scalar_type() == at::kHalf &&
                  spectrum.is_contiguous() && spectrum.dim() == 3 && spectrum.size(0) == channels * rh &&
                  spectrum.size(1) == inner && spectrum.size(2) == 2,
              "spectrum must be contiguous float16 (channels * (R/2 + 1), N', 2) in the kernel's lane order");
  check_f32(gain, "gain", {channels * rh});
  check_f32(out_scale, "out_scale", {channels});
  // No in_scale: the launches compute it (a peak pass per channel block, beside the passes that read u again).
  const bool own_scale = !in_scale_in.has_value();
  const at::Tensor in_scale = own_scale ? at::empty({channels, batch}, u_in.options().dtype(at::kFloat)) : *in_scale_in;
  check_f32(in_scale, "in_scale", {channels, batch});
  at::Tensor peak;  // each launch clears its block's words before its peak pass
  if (own_scale) peak = at::empty({channels, batch, 2}, u_in.options().dtype(at::kInt));
  check_f32(twiddle, "twiddle", {int64_t(1) << log_r, 2});

  ConvParams cp;  // the shared signal checks and bindings (its SignalParams part)
  const Signals sig = bind_signals(cp, u_in, pregate_in, postgate_in, &y);
  if (sig.y.numel() == 0) return;
  LongParams p;
  static_cast<SignalParams&>(p) = cp;
  p.log_n = static_cast<int>(log_n);
  p.log_r = static_cast<int>(log_r);
  p.src_a = src_a;
  p.src_o = src_o;
  p.twiddle = reinterpret_cast<const float2*>(twiddle.data_ptr<float>());

  const c10::cuda::CUDAGuard guard(u_in.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t per_channel = rh * 2 * batch * inner;  // fp16 words
  const int64_t step = std::max<int64_t>(1, std::min<int64_t>(channels, long_work_bytes() / 2 / per_channel));
  at::Tensor work = at::empty({step * per_channel}, u_in.options().dtype(at::kHalf));
  p.work = work.data_ptr<at::Half>();
  const auto* spec = reinterpret_cast<const uint4*>(spectrum.data_ptr<at::Half>());
  const int64_t elt = u_in.element_size();
  for (int64_t c0 = 0; c0 < channels; c0 += step) {
    LongParams q = p;
    q.channels = std::min(step, channels - c0);
    q.u = static_cast<const char*>(p.u) + c0 * p.u_sh * elt;
    if (p.pregate) q.pregate = static_cast<const char*>(p.pregate) + c0 * p.pre_sh * elt;
    if (p.postgate) q.postgate = static_cast<const char*>(p.postgate) + c0 * p.post_sh * elt;
    q.y = static_cast<char*>(p.y) + c0 * p.y_sh * elt;
    q.spectrum_h = spec + c0 * rh * (inner / 4);
    q.gain = gain.data_ptr<float>() + c0 * rh;
    q.out_scale = out_scale.data_ptr<float>() + c0;
    q.in_scale = in_scale.data_ptr<float>() + c0 * batch;
    if (own_scale) q.peak = reinterpret_cast<unsigned*>(peak.data_ptr<int>()) + c0 * batch * 2;
    check_cuda(launch_long(q, dtype_of(u_in), stream), "long-path kernel launch");
  }
}

// The long path's input scales of whole rows, (channels, batch) float32: 2^(9 - e) for max |u pregate| = f 2^e, 0 for
// a row holding inf/NaN; what causal_conv_long computes itself when it gets no in_scale, for the calls that share
// one scale per row across several launches on views of it (overlap-save blocks): two kernels, where the same
// reduction in PyTorch took ~15 small ops and their host time before the first launch.
at::Tensor long_row_scales(const at::Tensor& u_in, const c10::optional<at::Tensor>& pregate_in) {
  check_u(u_in);
  TORCH_CHECK(u_in.size(2) >= 1, "u must hold at least one sample per row");
  LongParams p;
  const at::Tensor u = unit_inner_stride(u_in);
  at::Tensor pregate;
  if (pregate_in.has_value()) {
    check_signal(*pregate_in, u, "pregate");
    pregate = unit_inner_stride(*pregate_in);
    p.pregate = pregate.data_ptr();
    p.pre_sb = pregate.stride(0);
    p.pre_sh = pregate.stride(1);
  }
  p.u = u.data_ptr();
  p.u_sb = u.stride(0);
  p.u_sh = u.stride(1);
  p.batch = u.size(0);
  p.channels = u.size(1);
  p.seq_len = u.size(2);
  at::Tensor in_scale = at::empty({p.channels, p.batch}, u.options().dtype(at::kFloat));
  if (in_scale.numel() == 0) return in_scale;
  at::Tensor peak = at::empty({p.channels, p.batch, 2}, u.options().dtype(at::kInt));
  p.in_scale = in_scale.data_ptr<float>();
  p.peak = reinterpret_cast<unsigned*>(peak.data_ptr<int>());
  const c10::cuda::CUDAGuard guard(u_in.device());
  check_cuda(launch_long_row_scales(p, dtype_of(u_in), c10::cuda::getCurrentCUDAStream().stream()),
             "row-scale kernel launch");
  return in_scale;
}

// The block ops' dtype (check_block_dtype has passed): dtype_of's two 16-bit types, or fp32.
DType block_dtype(const at::Tensor& t) { return t.scalar_type() == at::kFloat ? DType::kFloat32 : dtype_of(t); }

void check_block_dtype(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf || t.scalar_type() == at::kFloat, name,
              " must be bfloat16, float16 or float32");
}

void check_params(const at::Tensor& t, const at::Tensor& like, int64_t n, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == like.device() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                  t.numel() == n,
              name, " must be a contiguous float32 tensor of ", num(n), " elements on the input's device");
}

// LayerNorm(x) in `dtype` (x: (..., d) fp32 contiguous); with y (x's shape, dtype, contiguous) x += y first, in place.
at::Tensor block_layer_norm(const at::Tensor& x, const c10::optional<at::Tensor>& y, const at::Tensor& weight,
                            const at::Tensor& bias, double eps, at::ScalarType dtype) {
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() >= 1 && x.size(-1) >= 1,
              "x must be a contiguous float32 CUDA tensor (..., d)");
  const int64_t d = x.size(-1);
  TORCH_CHECK(d <= 0x7fffffff, "d must be < 2^31");
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(dtype));
  check_block_dtype(out, "dtype");
  check_params(weight, x, d, "weight");
  check_params(bias, x, d, "bias");
  BlockLayerNormParams p;
  if (y.has_value()) {
    TORCH_CHECK(y->is_cuda() && y->device() == x.device() && y->sizes() == x.sizes() && y->scalar_type() == dtype &&
                    y->is_contiguous(),
                "y must be a contiguous tensor of x's shape in the output dtype on x's device");
    p.y = y->data_ptr();
  }
  p.x = x.data_ptr<float>();
  p.out = out.data_ptr();
  p.weight = weight.data_ptr<float>();
  p.bias = bias.data_ptr<float>();
  p.rows = x.numel() / d;
  p.d = int(d);
  p.eps = float(eps);
  const c10::cuda::CUDAGuard guard(x.device());
  check_cuda(launch_block_layer_norm(p, block_dtype(out), c10::cuda::getCurrentCUDAStream().stream()),
             "layer-norm kernel launch");
  return out;
}

bool aligned16(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(0) % 8 == 0 && t.stride(1) % 8 == 0;
}

// (x0, x1 * v) of HyenaDNA's causal short conv over p (B, 3d, L), written into x0 and gated (B, d, L; one set of
// strides, unit stride along L). weight (3d, W), bias (3d,), in_bias (3d,): float32; past (B, 3d, W - 1) in p's dtype.
void block_short_conv_gate(const at::Tensor& p_in, const at::Tensor& weight, const at::Tensor& bias,
                           const c10::optional<at::Tensor>& past, const c10::optional<at::Tensor>& in_bias,
                           const at::Tensor& x0, const at::Tensor& gated) {
  TORCH_CHECK(p_in.is_cuda() && p_in.dim() == 3 && p_in.size(1) % 3 == 0 && (p_in.size(2) <= 1 || p_in.stride(2) == 1),
              "p must be a CUDA tensor (batch, 3 d, length) with unit stride along the sequence");
  check_block_dtype(p_in, "p");
  const int64_t batch = p_in.size(0), d = p_in.size(1) / 3, length = p_in.size(2);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == 3 * d, "weight must be (3 d, W)");
  const int64_t width = weight.size(1);
  check_params(weight, p_in, 3 * d * width, "weight");
  check_params(bias, p_in, 3 * d, "bias");
  for (const at::Tensor* t : {&x0, &gated}) {
    TORCH_CHECK(t->is_cuda() && t->device() == p_in.device() && t->scalar_type() == p_in.scalar_type() &&
                    t->dim() == 3 && t->size(0) == batch && t->size(1) == d && t->size(2) == length &&
                    (length <= 1 || t->stride(2) == 1),
                "x0 and gated must be (batch, d, length) in p's dtype with unit stride along the sequence");
  }
  TORCH_CHECK(x0.stride(0) == gated.stride(0) && x0.stride(1) == gated.stride(1), "x0 and gated must share strides");
  BlockShortConvParams p;
  if (past.has_value()) {
    TORCH_CHECK(past->is_cuda() && past->device() == p_in.device() && past->scalar_type() == p_in.scalar_type() &&
                    past->dim() == 3 && past->size(0) == batch && past->size(1) == 3 * d &&
                    past->size(2) == width - 1 && (width <= 2 || past->stride(2) == 1),
                "past must be (batch, 3 d, W - 1) in p's dtype with unit stride along the sequence");
    p.past = past->data_ptr();
    p.past_sb = past->stride(0);
    p.past_sc = past->stride(1);
  }
  if (in_bias.has_value()) {
    check_params(*in_bias, p_in, 3 * d, "in_bias");
    p.in_bias = in_bias->data_ptr<float>();
  }
  p.p = p_in.data_ptr();
  p.p_sb = p_in.stride(0);
  p.p_sc = p_in.stride(1);
  p.weight = weight.data_ptr<float>();
  p.bias = bias.data_ptr<float>();
  p.x0 = x0.data_ptr();
  p.gated = gated.data_ptr();
  p.o_sb = x0.stride(0);
  p.o_sc = x0.stride(1);
  p.batch = batch;
  p.d = d;
  p.length = length;
  p.width = int(width);
  p.vec = aligned16(p_in) && aligned16(x0) && aligned16(gated);
  const c10::cuda::CUDAGuard guard(p_in.device());
  check_cuda(launch_block_short_conv_gate(p, block_dtype(p_in), c10::cuda::getCurrentCUDAStream().stream()),
             "short-conv kernel launch");
}

}  // namespace
}  // namespace genoconv

TORCH_LIBRARY(genoconv_fftconv, m) {
  m.def(
      "causal_conv(Tensor u, Tensor spectrum, Tensor pair_twiddle, Tensor twiddle, Tensor? pregate, "
      "Tensor? postgate, int log_n, int log_n1) -> Tensor");
  m.def("causal_conv_monarch(Tensor u, Tensor spectrum, Tensor gain, Tensor? pregate, Tensor? postgate, int log_n) -> Tensor");
  m.def(
      "causal_conv_monarch_into(Tensor u, Tensor spectrum, Tensor gain, Tensor? pregate, Tensor? postgate, "
      "Tensor(a!) y, int log_n, int out_from) -> ()");
  m.def(
      "causal_conv_monarch_add(Tensor u, Tensor spectrum, Tensor gain, Tensor? pregate, Tensor? postgate, "
      "Tensor(a!) y, int log_n) -> ()");
  m.def(
      "causal_conv_long(Tensor u, Tensor spectrum, Tensor gain, Tensor out_scale, Tensor? in_scale, Tensor twiddle, "
      "Tensor? pregate, Tensor? postgate, Tensor(a!) y, int log_n, int log_r, int src_a, int src_o) -> ()");
  m.def("long_row_scales(Tensor u, Tensor? pregate) -> Tensor");
  m.def("block_layer_norm(Tensor(a!) x, Tensor? y, Tensor weight, Tensor bias, float eps, ScalarType dtype) -> Tensor");
  m.def(
      "block_short_conv_gate(Tensor p, Tensor weight, Tensor bias, Tensor? past, Tensor? in_bias, Tensor(a!) x0, "
      "Tensor(b!) gated) -> ()");
}

TORCH_LIBRARY_IMPL(genoconv_fftconv, CUDA, m) {
  m.impl("causal_conv", &genoconv::causal_conv_cuda);
  m.impl("causal_conv_monarch", &genoconv::causal_conv_monarch);
  m.impl("causal_conv_monarch_into", &genoconv::causal_conv_monarch_into);
  m.impl("causal_conv_monarch_add", &genoconv::causal_conv_monarch_add);
  m.impl("causal_conv_long", &genoconv::causal_conv_long);
  m.impl("long_row_scales", &genoconv::long_row_scales);
  m.impl("block_layer_norm", &genoconv::block_layer_norm);
  m.impl("block_short_conv_gate", &genoconv::block_short_conv_gate);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "genoconv FFT convolution kernels (ops registered as torch.ops.genoconv_fftconv)";
  m.def("built_archs", []() { return std::string(GENOCONV_STRINGIFY(GENOCONV_FFTCONV_ARCHS)); });
  m.def(
      "max_fused_points",
      [](int device) {
        cudaError_t err = cudaSuccess;
        const int pts = genoconv::max_fused_points(device, &err);
        genoconv::check_cuda(err, "cudaDeviceGetAttribute");
        return pts;
      },
      "Largest complex FFT (points) the fused single-kernel path holds in shared memory on this device.");
}
