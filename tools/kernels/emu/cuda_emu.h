// A CPU emulator for genoconv's CUDA kernels: the csrc/fftconv sources compiled by the host C++ compiler and run
// block by block, every CUDA thread a fiber of one OS thread. Why: the GPU is lent rarely (three sessions in a row
// had none), and kernel logic (index maps, pipelines, barriers, the mma fragment layouts, the persistent loops)
// should be testable in CI without one. What it checks: the arithmetic and data movement of the real source against
// the float64 oracle. What it cannot: speed, the memory model beyond barriers, hardware rounding of the mma unit
// (emulated here as exact fp16 products summed in fp32).
//
// Force-included before each source (tools/kernels/emu/build.py), which first rewrites three constructs g++ cannot
// read: kernel<<<grid, block, smem, stream>>>(args) -> emu::launch(...), `extern __shared__ T name[]` -> a pointer to
// the block's dynamic shared memory, and the PTX asm statements (mma.sync, cp.async) -> the functions below.
#pragma once

#include <cuda_runtime.h>  // types and the runtime API's declarations; emu_runtime.cpp defines the few used
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <vector>

// ---- CUDA keywords -------------------------------------------------------------------------------------------------
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Blocks run one after another, so a function-static array is exactly one block's shared memory.
#define __shared__ static

namespace emu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline Dim3 to_dim3(const dim3& d) { return Dim3{d.x, d.y, d.z}; }
inline Dim3 to_dim3(long long n) { return Dim3{unsigned(n), 1u, 1u}; }

// Emulated device: an H100/H200's shared memory per block; few SMs so the persistent kernels loop over many units.
inline int sm_count() {
  const char* s = std::getenv("GENOCONV_EMU_SMS");
  return s ? std::max(1, std::atoi(s)) : 2;
}
constexpr int kSmemOptin = 232448;
// GENOCONV_EMU_ORDER=reverse runs each block's threads last to first between barriers: a missing barrier (a thread
// reading what another writes before the barrier that should separate them) shows in one order or the other.
inline bool schedule_reversed() {
  const char* s = std::getenv("GENOCONV_EMU_ORDER");
  return s != nullptr && std::strcmp(s, "reverse") == 0;
}

// ---- fibers ----------------------------------------------------------------------------------------------------------
enum class Wait { kNone, kBlock, kWarp, kDone };

struct Fiber {
  ucontext_t ctx;
  Dim3 tid;
  int linear = 0;
  Wait wait = Wait::kNone;
  unsigned long gen = 0;  // the barrier generation it waits to pass
};

struct Warp {
  unsigned long gen = 0;
  int arrived = 0;
  uint64_t slot[32] = {};
  float mma_a[32][8], mma_b[32][4];
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<char> stacks;
  std::vector<unsigned char> smem;
  ucontext_t sched;
  int current = -1;
  int live = 0;
  unsigned long gen = 0;
  int arrived = 0;
  Dim3 idx, dim, grid;  // blockIdx, blockDim, gridDim
};

inline Block& block() {
  static Block b;
  return b;
}
inline Fiber& self() { return block().fibers[block().current]; }
inline int lane() { return self().linear & 31; }
inline Warp& warp() { return block().warps[self().linear >> 5]; }

inline void yield() {
  Block& b = block();
  swapcontext(&b.fibers[b.current].ctx, &b.sched);
}

// __syncthreads: every live thread of the block arrives (threads that have returned count as arrived, as on the GPU).
inline void block_barrier() {
  Block& b = block();
  Fiber& f = self();
  f.wait = Wait::kBlock;
  f.gen = b.gen;
  if (++b.arrived == b.live) {
    b.arrived = 0;
    ++b.gen;
  }
  while (b.gen == f.gen) yield();
  f.wait = Wait::kNone;
}

// __syncwarp / the collective step of a shuffle or mma: all 32 lanes of the warp arrive.
inline void warp_barrier() {
  Warp& w = warp();
  Fiber& f = self();
  f.wait = Wait::kWarp;
  f.gen = w.gen;
  if (++w.arrived == 32) {
    w.arrived = 0;
    ++w.gen;
  }
  while (w.gen == f.gen) yield();
  f.wait = Wait::kNone;
}

template <class Kernel, class... Args>
struct Entry {
  static Kernel kernel;
  static std::tuple<Args...>* args;
  static void run() {
    std::apply(kernel, *args);
    Block& b = block();
    Fiber& f = self();
    f.wait = Wait::kDone;
    // A returned thread no longer holds back a block barrier.
    if (--b.live > 0 && b.arrived == b.live && b.arrived > 0) {
      b.arrived = 0;
      ++b.gen;
    }
    swapcontext(&f.ctx, &b.sched);
  }
};
template <class Kernel, class... Args>
Kernel Entry<Kernel, Args...>::kernel;
template <class Kernel, class... Args>
std::tuple<Args...>* Entry<Kernel, Args...>::args;

constexpr size_t kStack = 256 * 1024;

// Runs the grid one block at a time; the block's threads as fibers scheduled round robin until all have returned.
// Dynamic shared memory is filled with 0xff (NaN in fp16/fp32) per block, so a read of a word nobody wrote shows.
template <class G, class T, class... Params, class... Args>
void launch(void (*kernel)(Params...), const G& grid_in, const T& threads_in, size_t smem, Args&&... args) {
  const Dim3 grid = to_dim3(grid_in), threads = to_dim3(threads_in);
  using E = Entry<void (*)(Params...), std::decay_t<Params>...>;
  std::tuple<std::decay_t<Params>...> tuple(std::forward<Args>(args)...);
  E::kernel = kernel;
  E::args = &tuple;
  Block& b = block();
  const int n = int(threads.x * threads.y * threads.z);
  if (n <= 0 || n > 1024 || n % 32 != 0) throw std::runtime_error("emu: block size must be a multiple of 32 <= 1024");
  if (smem > size_t(kSmemOptin)) throw std::runtime_error("emu: dynamic shared memory above the device's opt-in limit");
  b.stacks.resize(size_t(n) * kStack);
  std::vector<unsigned char>(smem).swap(b.smem);  // exactly smem bytes: under AddressSanitizer a read past them shows
  const bool reverse = schedule_reversed();
  b.grid = grid;
  b.dim = threads;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        b.idx = Dim3{bx, by, bz};
        b.fibers.assign(size_t(n), Fiber{});
        b.warps.assign(size_t(n / 32), Warp{});
        std::fill(b.smem.begin(), b.smem.end(), static_cast<unsigned char>(0xff));
        b.live = n;
        b.arrived = 0;
        b.gen = 0;
        for (int i = 0; i < n; ++i) {
          Fiber& f = b.fibers[size_t(i)];
          f.linear = i;
          f.tid = Dim3{unsigned(i) % threads.x, (unsigned(i) / threads.x) % threads.y, unsigned(i) / (threads.x * threads.y)};
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = b.stacks.data() + size_t(i) * kStack;
          f.ctx.uc_stack.ss_size = kStack;
          f.ctx.uc_link = nullptr;
          makecontext(&f.ctx, &E::run, 0);
        }
        int done = 0;
        while (done < n) {
          bool progressed = false;
          for (int j = 0; j < n; ++j) {
            const int i = reverse ? n - 1 - j : j;
            Fiber& f = b.fibers[size_t(i)];
            if (f.wait == Wait::kDone) continue;
            const bool blocked = (f.wait == Wait::kBlock && b.gen == f.gen) ||
                                 (f.wait == Wait::kWarp && b.warps[size_t(i >> 5)].gen == f.gen);
            if (blocked) continue;
            b.current = i;
            swapcontext(&b.sched, &f.ctx);
            progressed = true;
            if (f.wait == Wait::kDone) ++done;
          }
          if (!progressed && done < n)
            throw std::runtime_error("emu: deadlock (a barrier some threads of the block never reach)");
        }
        b.current = -1;
      }
}

inline unsigned char* dynamic_smem() { return block().smem.data(); }

// ---- warp collectives --------------------------------------------------------------------------------------------
template <class T>
T shfl_xor(T v, int offset) {
  static_assert(sizeof(T) <= 8, "shuffle of a word up to 8 bytes");
  Warp& w = warp();
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  w.slot[lane()] = bits;
  warp_barrier();
  const uint64_t got = w.slot[(lane() ^ offset) & 31];
  warp_barrier();
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}

inline float half_lo(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w & 0xffffu))); }
inline float half_hi(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w >> 16))); }

// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32, D = A B + D, in the PTX ISA's fragment layouts: lane = 4 g + t;
// A (16x16) a0,a1: (g, 2t..2t+1), a2,a3: (g+8, 2t..), a4,a5: (g, 2t+8..), a6,a7: (g+8, 2t+8..); B (16x8) b0,b1:
// (2t..2t+1, g), b2,b3: (2t+8.., g); C/D (16x8) c0,c1: (g, 2t..2t+1), c2,c3: (g+8, 2t..2t+1).
inline void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  Warp& w = warp();
  const int l = lane();
  for (int i = 0; i < 4; ++i) {
    w.mma_a[l][2 * i] = half_lo(a[i]);
    w.mma_a[l][2 * i + 1] = half_hi(a[i]);
  }
  w.mma_b[l][0] = half_lo(b0);
  w.mma_b[l][1] = half_hi(b0);
  w.mma_b[l][2] = half_lo(b1);
  w.mma_b[l][3] = half_hi(b1);
  warp_barrier();
  auto A = [&](int row, int col) {  // the lane and register holding A[row][col]
    const int g = row & 7, t = (col & 7) >> 1;
    const int reg = (row >> 3) + 2 * (col >> 3);
    return w.mma_a[4 * g + t][2 * reg + (col & 1)];
  };
  auto B = [&](int k, int n) {
    const int t = (k & 7) >> 1;
    return w.mma_b[4 * n + t][2 * (k >> 3) + (k & 1)];
  };
  const int g = l >> 2, t = l & 3;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);  // fp16 x fp16 is exact in fp32
    d[i] = acc;
  }
  warp_barrier();
}

// cp.async of 16 bytes: the first src_bytes copied, the rest zero-filled; done at once (a stricter schedule than the
// GPU's, which completes it at a later wait).
inline void cp_async16(void* dst, const void* src, int src_bytes) {
  unsigned char tmp[16] = {};
  if (src_bytes > 0) std::memcpy(tmp, src, size_t(std::min(src_bytes, 16)));
  std::memcpy(dst, tmp, 16);
}

}  // namespace emu

// ---- built-in variables and intrinsics ---------------------------------------------------------------------------
#define threadIdx (::emu::self().tid)
#define blockIdx (::emu::block().idx)
#define blockDim (::emu::block().dim)
#define gridDim (::emu::block().grid)

inline void __syncthreads() { emu::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier(); }
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int offset, int = 32) {
  return emu::shfl_xor(v, offset);
}
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
template <class T>
inline T __ldcs(const T* p) {
  return *p;
}
template <class To, class From>
inline To emu_bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "same size");
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}
inline float __int_as_float(int v) { return emu_bit_cast<float>(v); }
inline float __uint_as_float(unsigned v) { return emu_bit_cast<float>(v); }
inline unsigned __float_as_uint(float v) { return emu_bit_cast<unsigned>(v); }
inline unsigned __vmaxu2(unsigned a, unsigned b) {
  const unsigned lo = std::max(a & 0xffffu, b & 0xffffu), hi = std::max(a >> 16, b >> 16);
  return lo | (hi << 16);
}
// prmt: bytes of (y:x) picked by the selector's nibbles (the sign-replicating mode, bit 3, is not emulated).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const unsigned long long v = (static_cast<unsigned long long>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xffu) << (8 * i);
  return r;
}
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline void __sincosf(float x, float* s, float* c) {
  *s = std::sin(x);
  *c = std::cos(x);
}
inline size_t __cvta_generic_to_shared(const void* p) { return reinterpret_cast<size_t>(p); }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  const float2 x = __half22float2(a), y = __half22float2(b), z = __half22float2(c);
  return __floats2half2_rn(std::fma(x.x, y.x, z.x), std::fma(x.y, y.y, z.y));
}
inline void sincospif(float x, float* s, float* c) {
  const double a = 3.14159265358979323846 * double(x);
  *s = float(std::sin(a));
  *c = float(std::cos(a));
}
// Fibers of one OS thread never interleave inside a call: a plain read-modify-write is atomic.
template <class T>
inline T atomicMax(T* p, T v) {
  const T old = *p;
  *p = std::max(old, v);
  return old;
}
// The runtime's C++ overloads for kernel pointers (cuda_runtime.h has them for nvcc only).
template <class... P>
inline cudaError_t cudaFuncSetAttribute(void (*f)(P...), cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(f), attr, value);
}
template <class... P>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, void (*f)(P...), int threads,
                                                                 size_t smem) {
  return ::cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, reinterpret_cast<const void*>(f), threads, smem);
}
using std::max;
using std::min;
