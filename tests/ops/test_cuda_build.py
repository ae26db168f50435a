"""CPU-side checks of the CUDA kernels that run in CI (no GPU there).

- The kernel .cu files are free of torch headers, so nvcc alone compiles them for sm_80 and sm_90 (real machine
  code, not PTX only); ptxas may report only a few spilled words (no local arrays). Skipped where nvcc is absent.
- ``genoconv.ops.cuda`` imports and reports not-built on a machine without CUDA, and dispatch uses the reference.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch

from genoconv.ops import build

CSRC = Path(__file__).resolve().parents[2] / "csrc" / "fftconv"
KERNELS = [s for s in build.SOURCES if s.endswith(".cu")]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
@pytest.mark.parametrize("source", KERNELS)
def test_kernels_compile_for_sm80_and_sm90(source, tmp_path):
    obj = tmp_path / (source + ".o")
    # The architectures of the real build (genoconv/ops/build.py), machine code only (PTX has no ptxas report).
    native = [f for f in build.ARCH_FLAGS if "code=sm_" in f]
    cmd = ["nvcc", "-std=c++17", "-O3", "-c", str(CSRC / source), "-o", str(obj), "-Xptxas", "-v", *native]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stderr
    assert "for 'sm_80'" in log and "for 'sm_90'" in log, log[-2000:]
    spills = [int(s) for s in re.findall(r"(\d+) bytes spill stores", log)]
    frames = [int(s) for s in re.findall(r"(\d+) bytes stack frame", log)]
    # The kernels are capped at 64 registers (launch bounds) for occupancy; that spills a few loop-invariant words
    # (16-32 B per thread) and measured 9-27% faster on the H200 than the 84-92 register spill-free build
    # (csrc/fftconv/NOTES.md v5). Anything larger means an array went to local memory: fail.
    assert spills and max(spills) <= 64, f"register spills up to {max(spills)} B in kernels"
    assert max(frames) <= 64, f"local-memory stack frames up to {max(frames)} B in kernels"
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump:
        listing = subprocess.run([cuobjdump, "--list-elf", str(obj)], capture_output=True, text=True).stdout
        assert "sm_80" in listing and "sm_90" in listing, listing


def test_kernel_sources_have_no_torch_includes():
    for src in KERNELS + list(build.HEADERS):
        text = (CSRC / src).read_text()
        assert "torch/" not in text and "ATen/" not in text, src


def test_cuda_module_imports_and_reports_on_cpu():
    from genoconv.ops import LongFilter, backend_for, causal_conv, causal_conv_ref
    from genoconv.ops import cuda

    st = cuda.status()
    assert set(st) >= {"built", "archs", "reason"}
    assert isinstance(st["reason"], str) and st["reason"]
    u = torch.randn(2, 3, 50)
    filt = LongFilter(torch.randn(3, 50))
    assert not cuda.supports(u, filt) and cuda.why_not(u, filt)
    assert backend_for(u, filt) == "reference"
    if not torch.cuda.is_available():
        assert st["built"] is False
        assert torch.equal(causal_conv(u, filt), causal_conv_ref(u, filt))


def test_fft_plan_sizes():
    from genoconv.ops.cuda import MAX_SEQ_LEN, fft_plan

    assert fft_plan(1, 1) == 3
    assert fft_plan(16384, 16384) == 15  # fused on Hopper/A100 (M = 16K complex points, 128 KiB)
    assert fft_plan(16385, 16385) == 16
    assert fft_plan(MAX_SEQ_LEN, MAX_SEQ_LEN) == 23
    assert fft_plan(1000, 10) == 10
    for seq_len in (1, 2, 3, 17, 1000, 4097, 100_003, 2_220_382):
        for k in (1, 7, seq_len, 2 * seq_len):
            n = 1 << fft_plan(seq_len, k)
            assert n >= seq_len + min(k, seq_len) - 1 and n >= 8


@pytest.mark.parametrize("log_n", [10, 11, 12, 13, 14, 15])
def test_monarch_spectrum_order_is_a_permutation(log_n):
    # Every frequency bin is consumed exactly once by the tensor-core kernel's row stage.
    from genoconv.ops.cuda import _monarch_order

    order = _monarch_order(log_n, "cpu")
    assert torch.equal(order.sort().values, torch.arange(1 << log_n))


def test_monarch_length_range(monkeypatch):
    from genoconv.ops.cuda import monarch_log_n

    assert monarch_log_n(256) is None and monarch_log_n(257) == 10 and monarch_log_n(16384) == 15
    assert monarch_log_n(16385) is None
    assert monarch_log_n(2048) == 12  # every size in range by default (measured faster, plain and gated)
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "monarch")
    assert monarch_log_n(2048) == 12 and monarch_log_n(16385) is None
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "scalar")
    assert monarch_log_n(512) is None


def test_monarch_takes_only_sizes_the_device_shared_memory_holds():
    from genoconv.ops.cuda import monarch_log_n, monarch_smem_bytes

    # Cfg::smem: 2^15 plain = 128 KiB transform + 64 KiB staged u + 16 KiB twiddle table; gates staged up to 2^14.
    assert monarch_smem_bytes(15) == 208 << 10 and monarch_smem_bytes(15, True, True) == 208 << 10
    assert monarch_smem_bytes(14, True, True) == 176 << 10 and monarch_smem_bytes(11) == 28 << 10
    h100, a100 = 227 << 10, 163 << 10  # cudaDevAttrMaxSharedMemoryPerBlockOptin
    for seq_len in (300, 2048, 8192, 16384):
        for pre, post in ((False, False), (True, True), (False, True)):
            assert monarch_log_n(seq_len, pre=pre, post=post, smem_per_block=h100) is not None
    assert monarch_log_n(16384, smem_per_block=a100) is None  # 208 KiB: the scalar kernels take it
    assert monarch_log_n(8192, smem_per_block=a100) == 14  # plain 112 KiB fits
    assert monarch_log_n(8192, pre=True, post=True, smem_per_block=a100) is None  # gated 176 KiB does not
    assert monarch_log_n(4096, pre=True, post=True, smem_per_block=a100) == 13


def test_long_path_fits_a_99_kib_block():
    """The long path's largest block at every N: the circular tensor-core kernel at N' = 2^14 stages no rows
    (Cfg::kDirect: 64 KiB transform + 16 KiB table), so 80 KiB (+ static) at most, and devices with 99 KiB per block
    (sm_86 / sm_89, which run the sm_80 code) take whole rows up to N = 2^23 on it, as an H100 does."""
    from genoconv.ops.cuda import LONG_LOG_N, _long_smem_bytes, long_plan

    sizes = {n: _long_smem_bytes(n) for n in range(LONG_LOG_N[0], LONG_LOG_N[1] + 1)}
    assert max(sizes.values()) == sizes[22] == sizes[23] == (80 << 10) + 144
    assert sizes[20] == (48 << 10) + 144  # N' = 2^12 stages its rows: 16 + 16 + 16 KiB
    small = 99 << 10
    assert long_plan(2_000_000, 2_000_000, smem_per_block=small)[:2] == (22, 8)
    assert long_plan(4_000_000, 4_000_000, smem_per_block=small)[:2] == (23, 9)
    assert long_plan(2_000_000, 2_000_000, smem_per_block=(80 << 10)) is None  # the static part does not fit


def test_partial_plan_takes_short_filters_on_long_rows(monkeypatch):
    from genoconv.ops.cuda import partial_plan

    h100, a100 = 227 << 10, 163 << 10
    assert partial_plan(16384, 1000, smem_per_block=h100) is None  # one transform holds it
    assert partial_plan(2_000_000, 1026, smem_per_block=h100) == (15, 1032)  # lead = K - 1 rounded up to 8
    assert partial_plan(2_000_000, 1026, pre=True, post=True, smem_per_block=h100) == (15, 1032)
    assert partial_plan(2_000_000, 1026, smem_per_block=a100) == (14, 1032)  # 2^15 does not fit an A100 block
    assert partial_plan(2_000_000, 12_288, smem_per_block=h100) == (15, 12_288)  # keeps 1/4 of each block
    assert partial_plan(2_000_000, 12_290, smem_per_block=h100) is None  # keeps less: the three passes take it
    assert partial_plan(2_000_000, 16_386, smem_per_block=h100) is None
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "scalar")
    assert partial_plan(2_000_000, 1026, smem_per_block=h100) is None


def test_streamed_chunks_are_planned_as_circular_transforms():
    # Overlap-save: behind K - 1 carried inputs only the chunk's outputs are kept, so N >= history + chunk suffices.
    from genoconv.ops.cuda import _linear_taps, _planned_taps, fft_plan

    k, history, chunk = 1_000_002, 1_000_001, 3_194_303
    assert _planned_taps(history + chunk, k, history) == 1
    assert fft_plan(history + chunk, 1) == 22  # linear would need 2^23
    assert fft_plan(history + chunk, _planned_taps(history + chunk, k, 0)) == 23
    assert _planned_taps(history + chunk, k, history - 1) == k  # fewer carried inputs than K - 1: stay linear
    # Linear plans share one spectrum for every length in (N/4, N/2]: taps past N/2 only meet the zero padding.
    assert _linear_taps(16_386, 3000, 1 << 13) == 4096 and _linear_taps(16_386, 4000, 1 << 13) == 4096
    assert _linear_taps(300, 5000, 1 << 13) == 300


@pytest.mark.parametrize("seq_len,filter_len,batch,gated", [
    (16_385, 1000, 1, False), (40_001, 1026, 3, True), (16_384 + 15_352 * 3, 1026, 2, False),
    (100_003, 8193, 1, True), (30_000, 12_288, 2, True)])
def test_partial_blocks_cover_every_output_once(seq_len, filter_len, batch, gated):
    """The block split of the partial-convolution path, with a float64 stand-in for the kernel that writes only
    outputs t >= out_from of each (strided, overlapping) block row: equal to the direct causal convolution."""
    from genoconv.ops.cuda import _conv_blocks, partial_plan

    gen = torch.Generator().manual_seed(seq_len)
    h = 3
    taps = torch.randn(h, filter_len, generator=gen, dtype=torch.float64)
    bias = torch.randn(h, generator=gen, dtype=torch.float64)
    u = torch.randn(batch, h, seq_len, generator=gen, dtype=torch.float64)
    pre = torch.randn(batch, h, seq_len, generator=gen, dtype=torch.float64) if gated else None
    post = torch.randn(batch, h, seq_len, generator=gen, dtype=torch.float64) if gated else None
    log_n, lead = partial_plan(seq_len, filter_len, pre=gated, post=gated, smem_per_block=227 << 10)
    writes = {}  # per storage element of y (its rows may be padded: ops.layout), created at the first call

    def conv(x):  # (rows, H, len) float64 causal convolution with the skip term
        n = 1 << (x.shape[-1] + filter_len).bit_length()
        y = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(taps, n=n), n=n)[..., : x.shape[-1]]
        return y + x * bias[:, None]

    def stand_in(uv, spec, gain, prev, postv, yv, log_n_, out_from):
        assert uv.shape[-1] <= 1 << (log_n_ - 1) and out_from % 8 == 0 and uv.stride(-1) == 1
        x = uv if prev is None else uv * prev
        y = conv(x)
        y = y if postv is None else y * postv
        yv[..., out_from:] = y[..., out_from:]
        base = yv.storage_offset()
        count = writes.setdefault("n", torch.zeros(yv.untyped_storage().nbytes() // yv.element_size(),
                                                   dtype=torch.int64))
        for r in range(yv.shape[0]):  # count the writes through the view's addresses
            for c in range(h):
                start = base + r * yv.stride(0) + c * yv.stride(1) + out_from
                count[torch.arange(start, start + yv.shape[-1] - out_from)] += 1

    y = _conv_blocks(u, pre, post, log_n, lead, None, None, op=stand_in)
    outputs = torch.zeros_like(writes["n"])
    outputs[y.storage_offset() + torch.as_strided(torch.arange(outputs.numel()), y.shape, y.stride())] = 1
    assert torch.equal(writes["n"], outputs), "every output written exactly once, and nothing else"
    want = conv(u if pre is None else u * pre)
    want = want if post is None else want * post
    assert torch.allclose(y, want, rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(shutil.which("g++") is None or not Path("/usr/local/cuda/include/cuda_runtime.h").exists(),
                    reason="g++ or the CUDA headers not found")
def test_bindings_compile_with_the_build_defines(tmp_path):
    """bindings.cpp against torch's headers with exactly the C++ flags setup.py and the build on first use pass (a
    CPU torch lacks one generated CUDA header; an empty stand-in is enough for a syntax check)."""
    from torch.utils import cpp_extension

    stub = tmp_path / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    includes = [f"-I{tmp_path}", *(f"-I{p}" for p in cpp_extension.include_paths()), "-I/usr/local/cuda/include",
                f"-I{CSRC}", f"-I{sysconfig.get_paths()['include']}"]
    cmd = ["g++", "-std=c++17", "-fsyntax-only", *includes, *build.cxx_flags(), "-DTORCH_EXTENSION_NAME=_probe",
           str(CSRC / "bindings.cpp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not any("," in flag and flag.startswith("-D") for flag in build.nvcc_flags())  # nvcc splits -D lists


def test_cuda_dispatch_and_spectrum_keys_without_a_gpu(monkeypatch):
    """causal_conv_cuda's choice of path and cached spectrum, with the device and the ops faked: the tensor-core
    kernel for a row it holds, its blocks for a short filter on a longer row, and the long path (or with
    GENOCONV_FFTCONV_PATH=scalar the three-pass kernel) sized linearly, or circularly behind K - 1 carried inputs,
    as overlap-save blocks for K << L, or split by filter taps where L + K - 1 lies just past a power of two."""
    from types import SimpleNamespace

    from genoconv.ops import LongFilter, cuda

    ran = []
    ops = SimpleNamespace(
        causal_conv_monarch_into=lambda u, spec, gain, pre, post, y, log_n, out_from:
            ran.append(("monarch", log_n, spec)),
        causal_conv=lambda u, spec, ptw, tw, pre, post, log_n, log_n1: ran.append(("3-pass", log_n, spec)))
    monkeypatch.setattr(cuda, "torch", SimpleNamespace(ops=SimpleNamespace(genoconv_fftconv=ops)))
    monkeypatch.setattr(cuda, "why_not", lambda u, f: "")
    monkeypatch.setattr(cuda, "_smem_per_block", lambda device: 227 << 10)
    monkeypatch.setattr(cuda, "_monarch_spectrum", lambda f, log_n, taps, dev: ((log_n, taps), None))
    monkeypatch.setattr(cuda, "_spectrum", lambda f, log_n, bins, taps, dev: (log_n, taps))
    monkeypatch.setattr(cuda, "_cached_tables", lambda log_n, log_n1, dev: (None, None, None))
    monkeypatch.setattr(cuda, "plan", lambda seq_len, filter_len, dev: (cuda.fft_plan(seq_len, filter_len), 9))
    monkeypatch.setattr(cuda, "_conv_blocks", lambda u, pre, post, log_n, lead, spec, gain:
                        ran.append(("blocks", log_n, spec, lead)))
    monkeypatch.setattr(cuda, "_long_conv", lambda u, f, pre, post, plan: ran.append(("long", plan)))
    monkeypatch.setattr(cuda, "_long_blocks", lambda u, f, pre, post, log_n, lead, first:
                        ran.append(("long_blocks", log_n, lead, first)))
    monkeypatch.setattr(cuda, "_long_split", lambda u, f, pre, post, split, head, rest:
                        ran.append(("long_split", split, head[0], rest[0])))

    def call(seq_len, k, valid_from=0, keep=1.0):
        u = torch.empty(1, 2, seq_len)
        cuda.causal_conv_cuda(u, LongFilter(torch.zeros(2, k), freq_keep=keep), valid_from=valid_from)
        return ran[-1]

    assert call(3000, 16_386) == ("monarch", 13, (13, 4096))  # the taps below N/2: one spectrum per N
    # Rows below the tensor-core kernel's sizes (reads): the scalar fused kernel at N <= 2^9, not the long path's 2^16
    assert call(150, 16_386) == ("3-pass", 9, (9, 256))
    assert call(1, 1) == ("3-pass", 3, (3, 1))
    # A 20K row with a 12.5K filter: past the blocks' limit, N = 2^15 on the fused kernel rather than the long path's 2^16
    assert call(20_000, 12_500) == ("3-pass", 15, (15, 12_500))
    # Frequency-sparse: the reference's taps min(K, L) (a cut spectrum spreads taps past L into every lag)
    assert call(3000, 16_386, keep=0.5) == ("monarch", 13, (13, 3000))
    assert call(40_001, 1026) == ("blocks", 15, (15, 1026), 1032)
    # K = 12K keeps a quarter of each tensor-core block: the long path's overlap-save blocks cost less (cost model)
    assert call(600_001, 12_000) == ("long_blocks", 18, 12_000, 0)
    # The long path: (log2 N, log2 R, first input, first output, taps)
    assert call(100_000, 50_000) == ("long", (18, 8, 0, 0, 50_000))  # linear: N >= L + K - 1; R = 256 around 2^10
    assert call(100_000, 50_000, valid_from=49_999) == ("long", (17, 8, 0, 49_999, 50_000))  # circular: N >= L
    assert call(100_000, 50_000, valid_from=49_998) == ("long", (18, 8, 0, 0, 50_000))  # too few carried inputs
    assert call(2_220_382, 1_000_000) == ("long", (22, 8, 0, 0, 1_000_000))  # R = 256 around N' = 2^14
    assert call(2_220_382, 2_220_382, keep=0.5) == ("long", (23, 9, 0, 0, 2_220_382))  # R = 512 around N' = 2^14
    # L + K - 1 just past 2^22: split by taps, 2^22 for taps [0, P) and 2^19 for the rest; not for a cut spectrum
    assert call(2_220_382, 2_220_382) == ("long_split", (1 << 22) - 2_220_382 + 1, "long", "long")
    assert call(5_000_000, 5_000_000)[0] == "3-pass"  # past the long path's 2^23
    # K << L: overlap-save blocks of 2^20 (2 + a 2^16 tail) instead of one 2^22 transform; not for a cut spectrum
    assert call(2_097_152, 16_384) == ("long_blocks", 20, 16_384, 0)
    assert call(2_097_152, 16_384, keep=0.5) == ("long", (22, 8, 0, 0, 16_384))
    assert call(3_190_000, 16_384, valid_from=16_383) == ("long_blocks", 20, 16_383, 16_383)  # lead <= carried
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "scalar")  # the scalar kernels only
    assert call(100_000, 50_000) == ("3-pass", 18, (18, 50_000))
    assert call(100_000, 150_000) == ("3-pass", 18, (18, 131_072))
    assert call(100_000, 150_000, keep=0.25) == ("3-pass", 18, (18, 100_000))
    assert call(100_000, 50_000, valid_from=49_999) == ("3-pass", 17, (17, 50_000))
    assert call(100_000, 50_000, valid_from=49_998) == ("3-pass", 18, (18, 50_000))
