"""Thin Python face of the csrc/fftconv kernels (FFT causal convolution: the tensor-core kernel for rows up to 16K and
its blocks for short filters, the long path around it up to N = 2^23, the scalar fused and three-pass kernels).

Contract with :mod:`genoconv.ops.fftconv`: ``supports(u, filt)`` says whether the kernel can run these inputs,
``why_not(u, filt)`` says why not in one line, and ``causal_conv_cuda(u, filt, pregate, postgate)`` has the exact
semantics of ``causal_conv_ref``. ``status()`` is what ``genoconv doctor`` prints.

The extension is found in this order: the ahead-of-time build ``genoconv._fftconv_C`` (``pip install
--no-build-isolation .`` on a machine with nvcc and a CUDA torch), else a build on first use with
``torch.utils.cpp_extension.load`` from the kernel sources (shipped inside the package; see
:mod:`genoconv.ops.build`), cached by torch under ``TORCH_EXTENSIONS_DIR``. ``GENOCONV_NO_JIT=1`` disables the build on first use. Nothing is touched until a CUDA
tensor asks for the kernel, so CPU-only runs never import or compile anything.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
from pathlib import Path

import torch

from . import build
from .layout import padded_rows

__all__ = ["status", "supports", "why_not", "causal_conv_cuda", "fft_plan", "plan", "partial_plan", "long_plan",
           "long_blocks_plan", "long_split_plan", "path_plan", "MAX_SEQ_LEN"]

MAX_SEQ_LEN = 4_194_304
_MIN_LOG_N = 3  # N >= 8, so M = N/2 >= 4 (the kernels' bit reversals need at least 2 bits)

# FFT sizes the tensor-core Monarch kernel takes (params.h: N = 2^10 ... 2^15, i.e. 256 < L <= 16,384): all of them
# by default, plain and gated, since it measured faster than the scalar fused kernel at every one on the H200
# (BENCHMARKS.md, tools/kernels/NOTES.md v9). GENOCONV_FFTCONV_PATH=scalar forces the scalar kernels (=monarch and
# the default agree).
MONARCH_LOG_N = build.monarch_log_n_range() if build.source_dir() is not None else (0, -1)  # no sources: never
# The long path (fftconv_long.cu): real FFT sizes 2^LONG_LOG_N[0] .. 2^LONG_LOG_N[1] as outer passes around inner
# tensor-core transforms of 2^LONG_LOG_N[2] .. 2^LONG_LOG_N[3] points.
LONG_LOG_N = build.long_log_n_range() if build.source_dir() is not None else (0, -1, 9, 14)

# Lazy-load result: (module or None, reason). Filled once per process on first CUDA use; it is a cache of the
# build, not state that changes results.
_loaded: tuple[object | None, str] | None = None


def _nvcc() -> str | None:
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME
    if home and Path(home, "bin", "nvcc").is_file():
        return str(Path(home, "bin", "nvcc"))
    return shutil.which("nvcc")


def _load() -> tuple[object | None, str]:
    global _loaded
    if _loaded is not None:
        return _loaded
    try:
        mod = importlib.import_module(build.EXTENSION)
        _register_fake()
        _loaded = (mod, "ahead-of-time build")
        return _loaded
    except ImportError:
        pass
    if torch.version.cuda is None:
        _loaded = (None, f"torch {torch.__version__} has no CUDA support")
        return _loaded
    if os.environ.get("GENOCONV_NO_JIT", "") not in ("", "0"):
        _loaded = (None, "no ahead-of-time build and GENOCONV_NO_JIT is set")
        return _loaded
    src = build.source_dir()
    if src is None:
        _loaded = (None, "no ahead-of-time build and no kernel sources in this installation (reinstall genoconv)")
        return _loaded
    if _nvcc() is None:
        _loaded = (None, "no ahead-of-time build and no nvcc to build on first use")
        return _loaded
    try:
        from torch.utils import cpp_extension

        mod = cpp_extension.load(
            name="genoconv_fftconv_jit",
            sources=[str(src / s) for s in build.SOURCES],
            extra_cflags=build.cxx_flags(),
            extra_cuda_cflags=build.nvcc_flags(),
            verbose=os.environ.get("GENOCONV_BUILD_VERBOSE", "") not in ("", "0"),
        )
        _register_fake()
        _loaded = (mod, "built on first use (torch.utils.cpp_extension.load)")
    except Exception as exc:  # noqa: BLE001 - reported through status()/why_not(), raised by causal_conv_cuda
        _loaded = (None, f"build on first use failed: {type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}")
    return _loaded


def _register_fake() -> None:
    # torch.compile / meta tensors: the op returns a contiguous tensor of u's shape and dtype.
    try:
        @torch.library.register_fake("genoconv_fftconv::causal_conv")
        def _fake(u, spectrum, pair_twiddle, twiddle, pregate, postgate, log_n, log_n1):  # noqa: ARG001
            return u.new_empty(u.shape)
    except RuntimeError:  # already registered in this process
        pass
    try:
        @torch.library.register_fake("genoconv_fftconv::causal_conv_monarch")
        def _fake_monarch(u, spectrum, gain, pregate, postgate, log_n):  # noqa: ARG001
            return u.new_empty(u.shape)
    except RuntimeError:
        pass
    try:
        @torch.library.register_fake("genoconv_fftconv::causal_conv_long")
        def _fake_long(u, spectrum, gain, out_scale, in_scale, twiddle, pregate, postgate, y, log_n, log_r, a, o):  # noqa: ARG001
            return None
    except RuntimeError:
        pass
    try:
        @torch.library.register_fake("genoconv_fftconv::causal_conv_monarch_into")
        def _fake_monarch_into(u, spectrum, gain, pregate, postgate, y, log_n, out_from):  # noqa: ARG001
            return None
    except RuntimeError:
        pass
    try:
        @torch.library.register_fake("genoconv_fftconv::causal_conv_monarch_add")
        def _fake_monarch_add(u, spectrum, gain, pregate, postgate, y, log_n):  # noqa: ARG001
            return None
    except RuntimeError:
        pass
    try:
        @torch.library.register_fake("genoconv_fftconv::long_row_scales")
        def _fake_row_scales(u, pregate):  # noqa: ARG001
            return u.new_empty((u.shape[1], u.shape[0]), dtype=torch.float32)
    except RuntimeError:
        pass
    try:
        @torch.library.register_fake("genoconv_fftconv::block_layer_norm")
        def _fake_layer_norm(x, y, weight, bias, eps, dtype):  # noqa: ARG001
            return x.new_empty(x.shape, dtype=dtype)

        @torch.library.register_fake("genoconv_fftconv::block_short_conv_gate")
        def _fake_short_conv(p, weight, bias, past, in_bias, x0, gated):  # noqa: ARG001
            return None
    except RuntimeError:
        pass


def status() -> dict:
    """What ``genoconv doctor`` reports about the kernels. Never builds anything."""
    cuda_ok = torch.cuda.is_available()
    src = build.source_dir()
    info: dict = {"built": False, "archs": [], "reason": "", "cuda_available": cuda_ok, "torch_cuda": torch.version.cuda,
                  "sources": str(src) if src is not None else None}
    if _loaded is None:
        try:
            importlib.import_module(build.EXTENSION)
            info.update(built=True, archs=list(build.ARCHS), reason="ahead-of-time build present")
        except ImportError:
            if not cuda_ok:
                info["reason"] = "no CUDA device: the fp32 PyTorch reference is used"
            elif src is None or _nvcc() is None:
                info["reason"] = "no ahead-of-time build, and no sources/nvcc to build on first use"
            else:
                info["reason"] = "not built yet: compiled on first CUDA use (torch.utils.cpp_extension.load)"
        return info
    mod, why = _loaded
    if mod is not None:
        try:
            archs = str(mod.built_archs()).split(",")
        except Exception:  # noqa: BLE001
            archs = list(build.ARCHS)
        info.update(built=True, archs=archs, reason=why)
    else:
        info["reason"] = why
    return info


def fft_plan(seq_len: int, filter_len: int) -> int:
    """log2 of the real FFT size N: the smallest power of two >= seq_len + min(filter_len, seq_len) - 1 (>= 8)."""
    need = max(1, seq_len + min(filter_len, seq_len) - 1)
    return max(_MIN_LOG_N, (need - 1).bit_length())


def why_not_for(device: torch.device, dtype: torch.dtype) -> str:
    """Empty string when the kernels can run calls on this device in this dtype; otherwise one line saying why not.
    What :func:`why_not` checks before the shapes: the planner asks it without a tensor."""
    if torch.device(device).type != "cuda":
        return "not a CUDA device"
    if dtype not in (torch.bfloat16, torch.float16):
        return f"dtype {dtype} (the kernel takes bfloat16 or float16)"
    major = _device_props(_index(device))[0]
    if major < 8:
        return f"compute capability {major}.x (the kernels are built for sm_80 and sm_90)"
    mod, why = _load()
    return "" if mod is not None else why


def _index(device: torch.device) -> int:
    index = torch.device(device).index
    return index if index is not None else torch.cuda.current_device()


@functools.cache
def _device_props(index: int) -> tuple[int, int]:
    """(compute capability major, shared memory a block may opt in to) of CUDA device ``index``, asked once per
    process: each call of torch's get_device_properties cost ~10 us, and a short convolution call asked three times
    (tools/kernels/short_host.py: 70-80 us of host per call, the GPU idle through it in a synchronised call)."""
    props = torch.cuda.get_device_properties(index)
    return props.major, int(getattr(props, "shared_memory_per_block_optin", props.shared_memory_per_block))


def why_not(u: torch.Tensor, filt) -> str:
    """Empty string when the kernel can run (u, filt); otherwise one line saying why not."""
    if not isinstance(u, torch.Tensor) or not u.is_cuda:
        return "u is not a CUDA tensor"
    if u.dim() != 3:
        return "u must be (batch, channels, seq_len)"
    seq_len = u.shape[-1]
    if not 1 <= seq_len <= MAX_SEQ_LEN:
        return f"seq_len {seq_len} outside [1, {MAX_SEQ_LEN}]"
    if u.shape[0] * u.shape[1] >= 2**31:
        return "batch * channels must be < 2^31"
    return why_not_for(u.device, u.dtype)


# Each multi-pass launch processes rows in chunks whose fp32 complex workspace is at most this (bindings.cpp).
MULTIPASS_WORKSPACE_BYTES = 1 << 30


def conv_bytes(batch: int, channels: int, seq_len: int, filter_len: int, device: torch.device,
               valid_from: int = 0) -> tuple[int, int]:
    """(transform points N of the filter's spectra, bytes the kernels allocate besides the output) for one call, for
    memory planning (``valid_from`` as in :func:`causal_conv_cuda`). N is the FFT size, or for a row split by filter
    taps (:func:`long_split_plan`) the sum of its parts' sizes (each part caches a spectrum of its own)."""
    return _plan_bytes(batch, channels, seq_len, *path_plan(seq_len, filter_len, device, valid_from))


def _plan_bytes(batch: int, channels: int, seq_len: int, path: str, how) -> tuple[int, int]:
    if path == "monarch":
        return 1 << how, 0
    if path == "blocks":
        return 1 << how[0], 0
    if path == "toeplitz":  # one spectrum per filter block pair; views, no workspace
        log_n, blocks = how
        return len({i for i, _ in _toeplitz_pairs(seq_len, blocks, log_n)}) << log_n, 0
    if path == "long_split":  # the parts run one after the other; a later part's output is a temporary
        split, head, rest = how
        n_head, work_head = _plan_bytes(batch, channels, seq_len, *head)
        n_rest, work_rest = _plan_bytes(batch, channels, seq_len - split, *rest)
        return n_head + n_rest, max(work_head, work_rest + 2 * batch * channels * (seq_len - split))
    if path in ("long", "long_blocks"):  # the fp16 workspace (channels in blocks of <= 1 GiB) and the input scales
        log_n = how[0]
        log_r = log_n - _long_inner_log(log_n)
        rows = batch  # blocks: one launch per batch row holds all its middle blocks
        if path == "long_blocks":
            rows = max(batch, -(-seq_len // ((1 << log_n) - how[1])))
        per_channel = ((1 << (log_r - 1)) + 1) * rows * (4 << (log_n - log_r))
        work = max(per_channel, min(channels * per_channel, MULTIPASS_WORKSPACE_BYTES))
        return 1 << log_n, work + 8 * rows * channels
    log_n, log_n1, _ = how
    row = (1 << (log_n - 1)) * 8
    return 1 << log_n, 0 if log_n1 == 0 else max(row, min(batch * channels * row, MULTIPASS_WORKSPACE_BYTES))


def path_plan(seq_len: int, filter_len: int, device: torch.device, valid_from: int = 0, *, pre: bool = False,
              post: bool = False, exact: bool = True) -> tuple[str, object]:
    """Which kernel a call takes on ``device``, and its plan: ("monarch", log_n) the tensor-core kernel for the whole
    row; ("blocks", (log_n, lead)) its partial-convolution blocks; ("toeplitz", (log_n, m)) the row as m blocks of N/2
    on it (:func:`toeplitz_plan`); ("long", :func:`long_plan`) the long path for the
    whole row, or ("long_blocks", (log_n, lead, first output)) for overlap-save blocks of it
    (:func:`long_blocks_plan`), or ("long_split", (P, head, rest)) for a row split by filter taps
    (:func:`long_split_plan`; head and rest are (path, plan) pairs themselves); ("3-pass", (log_n, log_n1, planned
    taps)) the scalar kernels. The one decision :func:`causal_conv_cuda`, :func:`conv_bytes` and the benchmarks share
    (``valid_from`` as in :func:`causal_conv_cuda`; pre/post: gated, which needs more shared memory; exact=False: a
    frequency-sparse filter, whose cut depends on N, so its row stays one transform)."""
    return _path_plan(seq_len, filter_len, _smem_per_block(device), valid_from, pre, post, exact, device=device)


def _path_plan(seq_len: int, filter_len: int, smem: int | None, valid_from: int = 0, pre: bool = False,
               post: bool = False, exact: bool = True, split: bool = True,
               device: torch.device | None = None) -> tuple[str, object]:
    """:func:`path_plan` for a device whose blocks may use ``smem`` bytes of shared memory; split=False: no
    :func:`long_split_plan` (its head part); without a ``device`` the three-pass plan is ("3-pass", None)."""
    log_n = monarch_log_n(seq_len, pre=pre, post=post, smem_per_block=smem)
    if log_n is not None:
        return "monarch", log_n
    blocks = partial_plan(seq_len, filter_len, pre=pre, post=post, smem_per_block=smem)
    # Rows whose transform fits the scalar fused kernel (N <= 2^15; L <= 256: reads) do not go to the long path, whose
    # smallest transform is 2^16 (_SHORT_ROW_LOG_N).
    short = fft_plan(seq_len, filter_len) < _SHORT_ROW_LOG_N
    long = None if short else long_plan(seq_len, filter_len, valid_from, smem_per_block=smem)
    if long is not None:
        over = long_blocks_plan(seq_len, filter_len, valid_from, smem_per_block=smem) if exact else None
        best = ("long_blocks", over) if over else ("long", long)
        # The tensor-core kernel's blocks re-read N/2 inputs per N/2 - lead outputs: cheaper than the long path for
        # short filters (K = 1K at 2M: 1.0 against 2.8 ms), dearer from K ~ 6K at 2M (a quarter kept at 12K).
        if blocks is not None and _plan_cost(seq_len, filter_len, "blocks", blocks) <= _plan_cost(seq_len, filter_len,
                                                                                                   *best):
            best = ("blocks", blocks)
        toeplitz = toeplitz_plan(seq_len, pre=pre, post=post, smem_per_block=smem) if exact and not long[3] else None
        if toeplitz is not None and (_plan_cost(seq_len, filter_len, "toeplitz", toeplitz)
                                     <= (1.0 - _LONG_BLOCKS_MIN_SAVING) * _plan_cost(seq_len, filter_len, *best)):
            best = ("toeplitz", toeplitz)
        if split and exact and long[3] == 0:
            parts = long_split_plan(seq_len, filter_len, smem_per_block=smem, pre=pre, post=post, unsplit=best)
            if parts is not None:
                return "long_split", parts
        return best
    if blocks is not None:
        return "blocks", blocks
    if device is None:
        return "3-pass", None
    planned = _planned_taps(seq_len, filter_len, valid_from)
    return "3-pass", (*plan(seq_len, planned, device), planned)


def supports(u: torch.Tensor, filt) -> bool:
    return why_not(u, filt) == ""


def kernel_facts(device: torch.device) -> dict | None:
    """What decides which kernel (and so which rounding) each length gets on ``device``: the path policy, the
    shared memory a block may use (which sizes take the tensor-core kernel) and the largest fused FFT. None when
    the kernels cannot run there (the reference runs instead)."""
    major = _device_props(_index(device))[0]
    mod, _ = _load()
    if major < 8 or mod is None:
        return None
    return {"kernel_path": os.environ.get("GENOCONV_FFTCONV_PATH", "auto"),
            "smem_per_block": _smem_per_block(device), "max_fused_points": int(mod.max_fused_points(_index(device)))}


def _circular_from(seq_len: int, filter_len: int, valid_from: int) -> int:
    """The first output of an overlap-save (circular) transform: ``valid_from`` when the caller keeps only outputs
    t >= valid_from >= K - 1, whose circular and linear values agree; 0 when the row needs a linear convolution."""
    return valid_from if 0 < valid_from and min(filter_len, seq_len) - 1 <= valid_from else 0


def _planned_taps(seq_len: int, filter_len: int, valid_from: int) -> int:
    """The filter length the FFT size is planned for: 1 (N >= L, a circular convolution) for an overlap-save row
    (:func:`_circular_from`); else K."""
    return 1 if _circular_from(seq_len, filter_len, valid_from) else filter_len


def plan(seq_len: int, filter_len: int, device: torch.device) -> tuple[int, int]:
    """(log_n, log_n1): the real FFT size N = 2^log_n and the path. log_n1 = 0 runs the fused single kernel
    (M = N/2 complex points fit shared memory); otherwise M = 2^log_n1 (outer) x 2^log_n2 (inner) in three passes,
    with two inner rows of 2^log_n2 points per block."""
    mod, why = _load()
    if mod is None:
        raise RuntimeError(why)
    return scalar_plan(seq_len, filter_len, int(mod.max_fused_points(_index(device))))


def scalar_plan(seq_len: int, filter_len: int, max_fused: int) -> tuple[int, int]:
    """:func:`plan` for a device whose fused kernel holds ``max_fused`` complex points."""
    log_n = fft_plan(seq_len, filter_len)
    log_m = log_n - 1
    if (1 << log_m) <= max_fused:
        return log_n, 0
    # Inner rows of max_fused/4 points (two per block: 64 KiB on Hopper/A100, 3 blocks per SM) rather than
    # max_fused/2 (128 KiB, 1 block per SM): the inner pass is latency-bound, occupancy pays more than a shorter
    # outer transform (NOTES.md v4).
    log_n2 = max(4, (max_fused // 4).bit_length() - 1)
    return log_n, log_m - log_n2


def _bitrev(x: torch.Tensor, bits: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    for b in range(bits):
        out |= ((x >> b) & 1) << (bits - 1 - b)
    return out


def _pair_bins(log_n: int, log_n1: int, device) -> torch.Tensor:
    """Bin k of every pair slot in the order the kernels' pointwise step visits them (int64, (P,)).

    The kernels walk shared-memory positions, and position pa holds bin bitrev(pa) after the forward DIF transform.
    Fused: slot q <= M/2 is position 2q (bins k < M/2), slot M/2 is position 1 (bin M/2). Multi-pass: row j of
    N1/2 + 1 rows, N2 slots each; the inner bin bitrev(pa) of row j is k = j + N1 * bitrev(pa); rows 0 and N1/2 pair
    with themselves and use the fused rule (row N1/2 without its last slot); unused slots hold k = 0.
    """
    log_m = log_n - 1
    m = 1 << log_m
    if log_n1 == 0:
        q = torch.arange(m // 2 + 1, device=device)
        return _bitrev(torch.where(q < m // 2, 2 * q, torch.ones_like(q)), log_m)
    log_n2 = log_m - log_n1
    n1, n2 = 1 << log_n1, 1 << log_n2
    j = torch.arange(n1 // 2 + 1, device=device)[:, None]
    q = torch.arange(n2, device=device)[None, :]
    two = (j != 0) & (j != n1 // 2)
    pa = torch.where(two, q, torch.where(q < n2 // 2, 2 * q, torch.ones_like(q)))
    k = j + (_bitrev(pa, log_n2) << log_n1)
    npairs = torch.where(j == 0, n2 // 2 + 1, torch.where(two, n2, n2 // 2))
    return torch.where(q < npairs, k, torch.zeros_like(k)).reshape(-1)


def _tables(log_n: int, log_n1: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bins k (P,), pair twiddles exp(-2 pi i k / N) (P, 2), multi-level twiddle table (M, 2)), float64 -> fp32."""
    n, m = 1 << log_n, 1 << (log_n - 1)
    k = _pair_bins(log_n, log_n1, device)
    ang = k.double() * (-2.0 * torch.pi / n)
    pair_tw = torch.stack((torch.cos(ang), torch.sin(ang)), dim=-1).float().contiguous()
    return k, pair_tw, _multilevel_twiddle(log_n - 1, device)


def _multilevel_twiddle(log_m: int, device) -> torch.Tensor:
    """(M, 2) fp32: tw[2^(p-1) + j] = exp(-2 pi i j / 2^p) for p = 1 .. log_m, the table of fft_common.cuh's passes
    (level by level, integer bounds: no floating log2/pow rounding)."""
    tw = torch.zeros(1 << log_m, 2, dtype=torch.float64, device=device)
    tw[0, 0] = 1.0
    for p in range(1, log_m + 1):
        j = torch.arange(1 << (p - 1), device=device, dtype=torch.float64)
        ang_t = j * (-2.0 * torch.pi / (1 << p))
        tw[1 << (p - 1): 1 << p] = torch.stack((torch.cos(ang_t), torch.sin(ang_t)), dim=-1)
    return tw.float().contiguous()


_table_cache: dict[tuple, tuple] = {}


def _cached_table(key: tuple, make):
    """``make()`` computed once per key: the kernels' index and twiddle tables depend only on the plan and device."""
    if key not in _table_cache:
        _table_cache[key] = make()
    return _table_cache[key]


def _cached_tables(log_n: int, log_n1: int, device: torch.device):
    return _cached_table((log_n, log_n1, str(device)), lambda: _tables(log_n, log_n1, device))


def _rfft_with_skip(filt, n: int, n_taps: int, device: torch.device, dtype=torch.float64,
                    channels: slice = slice(None)) -> torch.Tensor:
    """(H, n/2 + 1) complex: rfft(taps[:, :n_taps], n) + bias for the given channels. The skip term bias * x is a
    convolution with bias * delta, so both kernels carry it in their cached spectrum.

    A frequency-sparse filter (freq_keep < 1) keeps the taps' lowest ``filt.kept_bins(n)`` bins at this transform
    size and zeroes the rest, exactly what the reference does at its own size; the skip term stays unfiltered, as
    there. Which bins survive depends on n, so each path's output is the reference's evaluated at that path's N."""
    taps = filt.taps[channels, :n_taps].to(device=device, dtype=dtype)
    half = torch.fft.rfft(taps, n=n)
    keep = filt.kept_bins(n)
    if keep < half.shape[-1]:
        half[:, keep:] = 0
    return half + filt.bias[channels].to(device=device, dtype=dtype)[:, None]


# Temporaries of one channel block while a spectrum is built (bytes): the spectrum of a 1M-tap filter at N = 2^22 is
# 4 GB per layer in the kernel's format, and building all channels at once in float64 took ~5x that (the 87 GB peaks
# of the first end-to-end runs). fp32 is ample: the kernels' own rounding (bf16/fp16) is ~1e-3, cuFFT fp32 ~1e-7.
# 1 GiB: at N = 2^22 a block is 10 channels (256 MiB made it 2: 128 rounds of small FFTs per layer).
SPECTRUM_BLOCK_BYTES = 1 << 30


_BUILD_BYTES_PER_POINT = 24  # per channel and FFT point while a block is built: taps, rfft, scaled, the pair gather


def _block_channels(channels: int, n: int) -> int:
    return max(1, min(channels, SPECTRUM_BLOCK_BYTES // max(1, n * _BUILD_BYTES_PER_POINT)))


def _channel_blocks(channels: int, n: int):
    step = _block_channels(channels, n)
    return (slice(c, min(channels, c + step)) for c in range(0, channels, step))


def spectrum_build_bytes(channels: int, n: int) -> int:
    """Temporaries while a kernel spectrum is built (bytes; for the memory plan). Measured 0.66-0.76 of the
    24 B per channel and point counted per block, so planned at 16."""
    return _block_channels(channels, n) * n * 16


def _spectrum(filt, log_n: int, bins: torch.Tensor, n_taps: int, device: torch.device) -> torch.Tensor:
    """(H, P, 4) fp32 pairs {K[k], K[M-k]} in the kernel's order, K = (rfft(taps[:, :n_taps], N) + bias) / M.

    The skip term bias * x is a convolution with bias * delta, so it rides in the spectrum; 1/M is the inverse
    transform's normalisation. Computed once per filter and plan, in fp32 channel blocks of bounded size.
    """
    n, m = 1 << log_n, 1 << (log_n - 1)
    out = torch.empty(filt.channels, bins.numel(), 4, dtype=torch.float32, device=device)
    for block in _channel_blocks(filt.channels, n):
        k_f = _rfft_with_skip(filt, n, n_taps, device, torch.float32, block) / m
        pairs = torch.stack((k_f[:, bins], k_f[:, m - bins]), dim=-1)  # (h, P, 2) complex64
        out[block] = torch.view_as_real(pairs).reshape(pairs.shape[0], -1, 4)
    return out


def monarch_smem_bytes(log_n: int, pre: bool = False, post: bool = False) -> int:
    """Dynamic shared memory of the tensor-core kernel at N = 2^log_n (``Cfg::smem`` in fftconv_monarch.cu, which
    this mirrors): the 4 N-byte transform buffer, 2 N bytes per staged signal pair (u always, gates up to N = 2^14),
    and the twiddle tables: 16 KiB from N = 2^12 on, 8 N bytes below."""
    n = 1 << log_n
    staged = 2 + 2 * (pre and n <= 16384) + 2 * (post and n <= 16384)
    return 4 * n + n * staged + (16384 if n >= 4096 else 8 * n)


# Static shared memory of the tensor-core kernel (s_max, s_w16), on top of the dynamic part.
_MONARCH_STATIC_SMEM = 144


def monarch_log_n(seq_len: int, *, pre: bool = False, post: bool = False,
                  smem_per_block: int | None = None) -> int | None:
    """log2 N of the tensor-core Monarch kernel for this length (N = 2^ceil(log2(2L)): the kernel skips the causal zero
    half of its input and output), or None when the scalar kernels take it: outside MONARCH_LOG_N, GENOCONV_FFTCONV_PATH=scalar,
    or more shared memory than the device gives one block (``smem_per_block``; an A100's 163 KiB does not hold
    N = 2^15, nor N = 2^14 with gates, which an H100/H200's 227 KiB does)."""
    if os.environ.get("GENOCONV_FFTCONV_PATH", "auto") == "scalar":
        return None
    log_n = max(1, 2 * seq_len - 1).bit_length()
    if not MONARCH_LOG_N[0] <= log_n <= MONARCH_LOG_N[1]:
        return None
    return log_n if _monarch_held(log_n, pre, post, smem_per_block) else None


def _monarch_held(log_n: int, pre: bool, post: bool, smem_per_block: int | None) -> bool:
    """Whether one block of the tensor-core kernel at N = 2^log_n fits the device's shared memory (None: assume so)."""
    return smem_per_block is None or monarch_smem_bytes(log_n, pre, post) + _MONARCH_STATIC_SMEM <= smem_per_block


def _largest_monarch_log_n(pre: bool, post: bool, smem_per_block: int | None, lowest: int) -> int | None:
    """log2 of the largest tensor-core transform (>= 2^lowest) the device holds: the size of the paths that run a
    long row as blocks through it (partial convolutions, block-Toeplitz rows); None if none is, or if
    GENOCONV_FFTCONV_PATH=scalar."""
    if os.environ.get("GENOCONV_FFTCONV_PATH", "auto") == "scalar":
        return None
    return next((n for n in range(MONARCH_LOG_N[1], lowest - 1, -1) if _monarch_held(n, pre, post, smem_per_block)),
                None)


# The partial-convolution path runs a long row as overlapping blocks of N/2 inputs through the tensor-core kernel,
# each keeping its last N/2 - lead outputs (lead = K - 1 rounded up to 8). It pays while the kept share is at least
# 1/4: the tensor-core kernel measured ~5x the three-pass kernel per element at N = 2^15 (BENCHMARKS.md).
PARTIAL_MIN_KEPT = 0.25


def partial_plan(seq_len: int, filter_len: int, *, pre: bool = False, post: bool = False,
                 smem_per_block: int | None = None) -> tuple[int, int] | None:
    """(log2 N, lead) of the partial-convolution path for a row of ``seq_len`` and a K-tap filter, or None when it
    does not apply: the row fits one tensor-core transform, the filter is too long for the largest block the device
    holds, or GENOCONV_FFTCONV_PATH=scalar. A block of N/2 inputs yields N/2 - lead outputs."""
    log_n = _largest_monarch_log_n(pre, post, smem_per_block, MONARCH_LOG_N[0])
    if log_n is None:
        return None
    lead = -(-(min(filter_len, seq_len) - 1) // 8) * 8
    half = 1 << (log_n - 1)
    if seq_len <= half or (half - lead) < PARTIAL_MIN_KEPT * half:
        return None
    return log_n, lead


def _smem_per_block(device: torch.device) -> int:
    """Shared memory one block may opt in to on this device (bytes): 227 KiB on H100/H200, 163 KiB on A100, 99 KiB on
    sm_86/89 (the default 48 KiB where torch does not report it)."""
    return _device_props(_index(device))[1]


def _monarch_order(log_n: int, device) -> torch.Tensor:
    """Frequency bin k consumed by (row slot rho, lane, value v) of the tensor-core kernel (int64, (N,)).

    N = r * 256, k = k1 + r k2; the row stage of slot rho transforms logical row k1 (k1 = (rho % 16) s + rho // 16
    with s = r / 16 when the columns have an mma stage, else k1 = rho), and lane (g, t) holds, for value v = 4 j + c,
    k2 = k1' + 16 d' with k1' = g + 8 (c >> 1), d' = 8 j + 2 t + (c & 1) (the m16n8k16 accumulator layout).
    """
    n = 1 << log_n
    r = n // 256
    rho = torch.arange(r, device=device)[:, None, None]
    lane = torch.arange(32, device=device)[None, :, None]
    v = torch.arange(8, device=device)[None, None, :]
    g, t, j, c = lane >> 2, lane & 3, v >> 2, v & 3
    k2 = (g + 8 * (c >> 1)) + 16 * (8 * j + 2 * t + (c & 1))
    k1 = (rho % 16) * (r // 16) + rho // 16 if r >= 16 else rho
    # Stored as 16-byte words j = v // 4 of all 32 lanes together ([rho][j][lane][v % 4], each value an fp16 complex):
    # each load instruction is coalesced.
    return (k1 + r * k2).reshape(r, 32, 2, 4).permute(0, 2, 1, 3).reshape(-1)


def _monarch_spectrum(filt, log_n: int, n_taps: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """((H, N, 2) fp16 words, (H,) fp32): the full complex spectrum (DFT_N(taps) + bias) * 16^(2 n16) / N in the kernel's
    order, divided by its per-channel maximum (the gain) so the kernel's fp16 operands never overflow; n16 is the
    number of radix-16 mma stages per transform (3 when r >= 16, else 2), whose 1/16 factors this undoes. fp16 halves
    what every block reads per row (the table is re-read from L2 for each pair of batch rows) at +~5% error before
    the output rounding (tools/kernels/monarch_model.py: 5.6e-4 -> 5.9e-4 at 16K)."""
    n = 1 << log_n
    half = _rfft_with_skip(filt, n, n_taps, device)  # bias is real, so the Hermitian extension carries it too
    return _monarch_pack(_hermitian(half, n), log_n)


def _hermitian(half: torch.Tensor, n: int) -> torch.Tensor:
    """(rows, n) complex: the full DFT of a real signal from its rfft half, K[n - k] = conj K[k]."""
    return torch.cat((half, half[:, 1 : n // 2].flip(-1).conj()), dim=-1)


def _monarch_pack(full: torch.Tensor, log_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, N) complex spectra (natural order) -> the tensor-core kernel's ((rows, N, 2) fp16 words, (rows,) gain)."""
    return _monarch_words(full[:, _monarch_order(log_n, full.device)], log_n)


def _monarch_words(ordered: torch.Tensor, log_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, N) complex spectra already in the lanes' order (:func:`_monarch_order`) -> ((rows, N, 2) fp16 words,
    (rows,) gain): times 16^(2 n16) / N (n16 radix-16 mma stages per transform, 3 when r >= 16, else 2, whose 1/16
    factors this undoes; 1/N the inverse's normalisation), divided by each row's maximum (the gain, applied in fp32
    by the kernel), so the fp16 operands never overflow."""
    n = 1 << log_n
    n16 = 3 if n >= 16 * 256 else 2
    gain = ordered.abs().amax(dim=-1)
    gain = torch.where(gain > 0, gain, torch.ones_like(gain))
    spec = torch.view_as_real((ordered / gain[:, None]).to(torch.complex64)).to(torch.float16)  # (rows, N, [re, im])
    # The kernel multiplies two values per half2 word: per (rho, j, lane) its four words hold (re of values 0, 1),
    # (im of 0, 1), (re of 2, 3), (im of 2, 3).
    spec = spec.reshape(ordered.shape[0], n // 4, 2, 2, 2).permute(0, 1, 2, 4, 3).reshape(ordered.shape[0], n, 2)
    return spec.contiguous(), (gain * (16.0 ** (2 * n16) / n)).float().contiguous()


def _spectrum_taps(filt, seq_len: int, n: int, circular: bool = False) -> int:
    """Taps a path's spectrum is built from. Exact filters: :func:`_linear_taps` (one spectrum per N), or all K that
    reach a circular (overlap-save) row. A frequency-sparse filter takes exactly the reference's min(K, L): once its
    spectrum is cut, taps past L no longer wrap onto zeros but spread into every lag."""
    if circular or filt.freq_keep < 1.0:
        return min(filt.filter_len, seq_len)
    return _linear_taps(filt.filter_len, seq_len, n)


def _linear_taps(filter_len: int, seq_len: int, n: int) -> int:
    """Taps that reach outputs [0, L) of a linear convolution at FFT size n >= L + min(K, L) - 1: all taps below n/2
    (a tap j <= n - L wraps onto zero padding), so every length in (n/4, n/2] shares one spectrum per filter instead
    of one per distinct length (472 spectrum builds for the demo's 201 records before)."""
    return min(filter_len, max(seq_len, n // 2))


def _unit_stride(*signals):
    """The signals with unit stride along the sequence (a copy only where it is not): what every kernel needs; batch
    and channel strides pass through, so strided block views of a row cost nothing."""
    return [t if t is None or t.stride(-1) == 1 else t.contiguous() for t in signals]


def _conv_blocks(u, pregate, postgate, log_n: int, lead: int, spec, gain, op=None) -> torch.Tensor:
    """Partial convolution: the row as overlapping blocks of N/2 inputs through the tensor-core kernel, no copies.

    The head block is a plain causal convolution of [0, N/2); block j >= 1 reads inputs from N/2 + (j-1) C - lead
    (C = N/2 - lead) and writes only its last C outputs (the first ``lead`` hold the filter's warm-up); the tail block
    is shorter. The blocks are strided views of u and y (batch stride C), so each call reads every input about
    N/2 / C times and writes every output once. A non-finite input poisons the blocks that read it, not the row."""
    batch, channels, seq_len = u.shape
    half = 1 << (log_n - 1)
    step = half - lead
    y = padded_rows((batch, channels, seq_len), u)  # aligned rows: the out_proj GEMM's fast kernel (ops.layout)
    sig = _unit_stride(u, pregate, postgate)
    op = op or torch.ops.genoconv_fftconv.causal_conv_monarch_into  # (tests pass a float64 stand-in on the CPU)

    def cut(t, start, stop=None):
        return None if t is None else t[..., start:stop]

    op(cut(sig[0], 0, half), spec, gain, cut(sig[1], 0, half), cut(sig[2], 0, half), y[..., :half], log_n, 0)
    mids = (seq_len - half) // step
    if mids > 0:
        for b in range(batch):
            def blocks(t):
                if t is None:
                    return None
                row = t[b]
                return row.as_strided((mids, channels, half), (step, row.stride(0), 1),
                                      row.storage_offset() + half - lead)
            op(blocks(sig[0]), spec, gain, blocks(sig[1]), blocks(sig[2]), blocks(y), log_n, lead)
    start = half + mids * step
    if start < seq_len:
        op(cut(sig[0], start - lead), spec, gain, cut(sig[1], start - lead), cut(sig[2], start - lead),
           y[..., start - lead:], log_n, lead)
    return y


# ---- block-Toeplitz rows on the tensor-core kernel -----------------------------------------------------------------

# Rows a little longer than the tensor-core kernel's largest transform holds (N/2 < L <= m N/2) with a long filter: m
# blocks of N/2, y_j = sum_i conv(u_(j-i), [h_i | h_(i-1)]) (h_i: filter block i, N/2 taps), each term one call of the
# kernel, the terms after the first added into y by the kernel itself. m (m + 1) / 2 transforms of N against the long
# path's one of 2^ceil(log2(L + K - 1)) at ~3x the tensor-core kernel's cost per point: m = 2 (L = 16K-32K, the
# median human gene) predicted ~2.1x, m = 3 ~1.8x, m = 4 no gain; measured (H100, BENCHMARKS.md issue 13) 2.0-2.16x at
# m = 2 and 1.23x at m = 3 (the long path reads only the row's part of its 2^17 there). Each added term rounds y once
# more (2.0-2.5e-3 in bf16): m <= 3.
TOEPLITZ_MAX_BLOCKS = 3
# The kernel's accumulating form is built for the two largest sizes only (params.h kMonarchMinAccLogN): on a device
# that holds neither (an A100 with gates), these rows stay on the long path.
TOEPLITZ_MIN_LOG_N = build.monarch_accumulate_min_log_n() if build.source_dir() is not None else MONARCH_LOG_N[1] + 1
# Per output of an adding call, in long-path points: it reads y's 2 B once more.
_TOEPLITZ_ADD_COST = 0.1


def toeplitz_plan(seq_len: int, *, pre: bool = False, post: bool = False,
                  smem_per_block: int | None = None) -> tuple[int, int] | None:
    """(log2 N, m) of the block-Toeplitz path for a row of ``seq_len``: the largest tensor-core transform the device
    holds and the number m of its N/2-sample blocks the row needs, or None when the row fits one transform, needs more
    than TOEPLITZ_MAX_BLOCKS, or GENOCONV_FFTCONV_PATH=scalar. Whether it pays is :func:`_path_plan`'s call."""
    log_n = _largest_monarch_log_n(pre, post, smem_per_block, TOEPLITZ_MIN_LOG_N)
    if log_n is None:
        return None
    blocks = -(-seq_len // (1 << (log_n - 1)))
    return (log_n, blocks) if 2 <= blocks <= TOEPLITZ_MAX_BLOCKS else None


def _toeplitz_pairs(seq_len: int, blocks: int, log_n: int, filter_len: int | None = None) -> list[tuple[int, int]]:
    """The calls of :func:`_conv_toeplitz` as (filter block pair i, output block j), in order: every i = 0 term first
    (it writes y), then the added ones; pairs [h_i | h_(i-1)] that hold no tap (i - 1 past the filter) are skipped."""
    half = 1 << (log_n - 1)
    k = seq_len if filter_len is None else max(1, min(filter_len, seq_len))
    filter_blocks = -(-k // half)
    return [(i, j) for i in range(min(blocks, filter_blocks + 1)) for j in range(i, blocks)]


class _FilterPart:
    """A filter derived from a LongFilter (a block pair, a tap window) that every path and spectrum builder takes as a
    filter: its derived forms are cached in the whole filter's cache under the part's ``key`` (so the model's
    filter-cache budget sees them)."""

    whole = None
    key: tuple = ()

    @property
    def channels(self) -> int:
        return self.whole.channels

    def cached(self, key: tuple, make):
        return self.whole.cached((*self.key, *key), make)


class _BlockPair(_FilterPart):
    """Filter blocks i and i - 1 (N/2 taps each, zero past K) as one N-tap filter [h_i | h_(i-1)] without the skip term
    (:func:`_conv_toeplitz`): convolved circularly at N with a zero-padded input block x, its first N/2 outputs are
    conv(x, h_i) plus the tail of conv(x, h_(i-1)) that spills into the next output block."""

    def __init__(self, filt, i: int, half: int):
        self.whole, self.i, self.half = filt, i, half
        self.key = ("toeplitz", i, half)
        self.bias = torch.zeros_like(filt.bias)
        self.freq_keep = 1.0  # toeplitz plans are for exact filters only

    @property
    def taps(self) -> torch.Tensor:
        taps, half = self.whole.taps, self.half

        def block(b):
            part = taps[:, b * half:(b + 1) * half]
            return torch.nn.functional.pad(part, (0, half - part.shape[-1]))

        return torch.cat((block(self.i), block(self.i - 1)), dim=-1)

    @property
    def filter_len(self) -> int:
        return 2 * self.half

    def kept_bins(self, n_fft: int) -> int:
        return n_fft // 2 + 1


def _conv_toeplitz(u, filt, pregate, postgate, log_n: int, blocks: int, op=None, op_add=None) -> torch.Tensor:
    """A row of m = ``blocks`` blocks of N/2 on the tensor-core kernel (:func:`toeplitz_plan`).

    Block j holds samples [j N/2, (j + 1) N/2) (the last one may be shorter; every block starts 16-byte aligned where
    the row does). With h_i the filter's block i (taps [i N/2, (i + 1) N/2), the skip term in h_0), output block j is
        y_j = conv(u_j, h_0) + sum_(i = 1..j) cconv_N(u_(j-i), [h_i | h_(i-1)])[:N/2]
    where cconv_N is the kernel's own circular convolution of a zero-padded N/2 block: h_i convolves it linearly, and
    h_(i-1), placed at taps N/2.., brings the part of conv(u_(j-i), h_(i-1)) that lies past the block's end. The first
    term is a plain call (it writes y_j), the others add into y_j in the kernel (one more rounding each); a term for
    the shorter last block writes only its outputs. Views, no copies. A non-finite input poisons the output blocks
    that read it, as on the partial-convolution blocks."""
    batch, channels, seq_len = u.shape
    half = 1 << (log_n - 1)
    u, pregate, postgate = _unit_stride(u, pregate, postgate)
    y = padded_rows((batch, channels, seq_len), u)  # aligned rows: the out_proj GEMM's fast kernel (ops.layout)
    op = op or torch.ops.genoconv_fftconv.causal_conv_monarch_into  # (tests pass float64 stand-ins on the CPU)
    op_add = op_add or torch.ops.genoconv_fftconv.causal_conv_monarch_add
    dev = u.device

    def cut(t, j):
        return None if t is None else t[..., j * half:(j + 1) * half]

    taps0 = _spectrum_taps(filt, half, 1 << log_n)  # taps [0, N/2): the spectrum a row of N/2 takes on its own
    spec0 = filt.cached(("cuda_monarch", log_n, taps0, str(dev)), lambda: _monarch_spectrum(filt, log_n, taps0, dev))
    for i, j in _toeplitz_pairs(seq_len, blocks, log_n, filt.filter_len):
        if i == 0:
            op(cut(u, j), *spec0, cut(pregate, j), cut(postgate, j), cut(y, j), log_n, 0)
            continue
        pair = _BlockPair(filt, i, half)
        spec = pair.cached(("cuda_monarch", log_n, 2 * half, str(dev)),
                           lambda pair=pair: _monarch_spectrum(pair, log_n, 2 * half, dev))
        op_add(cut(u, j - i), *spec, cut(pregate, j - i), cut(postgate, j), cut(y, j), log_n)
    return y


# ---- the long path (fftconv_long.cu) ------------------------------------------------------------------------------

# Below N = 2^17, N / 256 is smaller than the circular tensor-core kernel's smallest size (2^9): N = 2^16 keeps
# N' = 2^12 and the scalar outer passes (R = 16), the split measured before the tensor-core outer passes existed.
_LONG_SCALAR_INNER_LOG = 12


# Rows whose linear transform fits 2^15 and that neither the tensor-core kernel nor its blocks take go to the scalar
# fused kernel, not to the long path, whose smallest transform is 2^16: rows of L <= 256 (reads, padded to the longest
# of their batch: 2^7-2^13 times their points there), rows of (16K, 32K] with K between the blocks' limit and 32K - L,
# and 8K-16K rows where the device's shared memory does not hold the tensor-core kernel's 2^15 (an A100). Per point the
# fused kernel measured 7.4 ps at 2^15 against ~13 ps for the long path at 2^16 (H200, BENCHMARKS.md issue 13).
_SHORT_ROW_LOG_N = LONG_LOG_N[0]


def _long_inner_log(log_n: int) -> int:
    """log2 N' of the long path's inner transform: R = N / N' = 256 outer points (tensor-core outer passes) where N'
    fits the tensor-core kernel's circular form (2^9 .. 2^14); above, N' = 2^14 (R = 512 at N = 2^23, also on tensor
    cores); below, N' = 2^12 with scalar outer passes."""
    if log_n - 8 < LONG_LOG_N[2]:
        return _LONG_SCALAR_INNER_LOG
    return min(LONG_LOG_N[3], log_n - 8)


def _long_smem_bytes(log_n: int) -> int:
    """Shared memory of the long path's largest block at N = 2^log_n: the outer passes' R x half fp32 complex values
    (32 KiB at most; at R = 256 and 512 the tensor-core passes' 32 KiB of operands and their tables), or the circular
    tensor-core kernel's 8 N' + 16 KiB (4 N' + 16 KiB at N' = 2^14, which stages no rows: ``Cfg::kDirect``)."""
    inner_log = _long_inner_log(log_n)
    log_r = log_n - inner_log
    log_half = min(inner_log - 1, max(3, 12 - log_r))
    if log_r in (8, 9):  # fftconv_long.cu: sm, s_w16 and (R = 512) the W_512 table
        outer = 4 * 32 * 256 + 8 * 16 + (8 * 256 if log_r == 9 else 8)
    else:
        outer = 8 << (log_r + log_half)
    inner = (4 if inner_log == 14 else 8) * (1 << inner_log)
    return max(outer, inner + 16384 + _MONARCH_STATIC_SMEM)


def long_plan(seq_len: int, filter_len: int, valid_from: int = 0, *,
              smem_per_block: int | None = None) -> tuple[int, int, int, int, int] | None:
    """(log2 N, log2 R, a, o, taps) of the long path, or None when it does not apply (N outside LONG_LOG_N, too little
    shared memory, GENOCONV_FFTCONV_PATH=scalar).

    A row reads inputs [a, L) and gives outputs [o, L): a = o = 0 is the linear convolution (N >= L + K - 1); with
    ``valid_from`` >= K - 1 (a streamed chunk behind its carried inputs) o = valid_from, a <= o - (K - 1) (rounded
    down to a multiple of 8 where N still holds [a, L)) and the transform is circular (overlap-save, N >= L - a); the
    outputs before o are not written."""
    if os.environ.get("GENOCONV_FFTCONV_PATH", "auto") == "scalar" or LONG_LOG_N[1] < LONG_LOG_N[0]:
        return None
    k = max(1, min(filter_len, seq_len))
    first = _circular_from(seq_len, filter_len, valid_from)
    start = first - (k - 1) if first else 0
    size = max(seq_len - start, seq_len - first + k - 1)
    log_n = max(LONG_LOG_N[0], (size - 1).bit_length())
    if log_n > LONG_LOG_N[1]:
        return None
    if smem_per_block is not None and _long_smem_bytes(log_n) > smem_per_block:
        return None
    if first:
        # Any start in [L - N, o - (K - 1)] reads every input the kept outputs need and fits the transform: take one
        # on a multiple of 8 where there is one, so rows that start 16-byte aligned stay aligned from the first input
        # on. A streamed chunk of large-1m has o - (K - 1) = 7 (carried_inputs rounds K - 1 up to 8) and L = N: from
        # 7, every row of both outer passes took the checked element-wise loads and stores (NOTES.md v25).
        aligned = start & ~7
        if aligned >= seq_len - (1 << log_n):
            start = aligned
    # Taps: a linear convolution may use every tap below N - L (they wrap onto zeros), so lengths share one spectrum
    # per N as on the other paths; overlap-save uses exactly the K that reach.
    taps = k if first else _linear_taps(filter_len, seq_len, 1 << log_n)
    return log_n, log_n - _long_inner_log(log_n), start, first, taps


# Per-point cost of the long path by log2 N relative to N >= 2^18 (H100, 2026-12-05, B*H*L = 2^27, BENCHMARKS.md issue
# 13: 256K-4M at 2^19-2^23 2.57-2.98 ms per 2^28 transform points; 64K at N = 2^17 2.71 ms since the r = 2 inner kernel
# runs in 1-warp blocks (3.10 on the H200 before); 32K at N = 2^16, scalar outer passes, 3.27 ms). What the block split
# below weighs its options by.
_LONG_POINT_COST = {16: 1.2, 17: 1.0}
# A split must save this share of the whole-row transform's cost: each block launch adds three kernels and its
# inputs' overlap (lead samples) is read twice.
_LONG_BLOCKS_MIN_SAVING = 0.15


def _long_cost(log_n: int) -> float:
    return (1 << log_n) * _LONG_POINT_COST.get(log_n, 1.0)


def long_blocks_plan(seq_len: int, filter_len: int, valid_from: int = 0, *,
                     smem_per_block: int | None = None) -> tuple[int, int, int] | None:
    """(log2 N, lead, first output) when the long path should run a row as overlap-save blocks of N inputs instead of
    one transform, else None (the first output is :func:`long_plan`'s o: 0, or ``valid_from`` for a streamed row).

    A linear transform of the whole row needs N >= L + K - 1 (up to 2 L after rounding to a power of two); blocks of N
    inputs each keep N - lead >= N / 4 new outputs (lead = K - 1 rounded up to 8), so for K << L they transform
    ~L (1 + K / N) points: the issue's partial convolution, whose cost scales with L, not with the next power of two
    above L + K. Chosen by the per-point cost model above; None when no split saves ``_LONG_BLOCKS_MIN_SAVING``."""
    whole = long_plan(seq_len, filter_len, valid_from, smem_per_block=smem_per_block)
    if whole is None:
        return None
    k = max(1, min(filter_len, seq_len))
    first = whole[3]
    lead = -(-(k - 1) // 8) * 8
    if first:
        lead = min(lead, first)  # >= K - 1: a streamed row carries at least that many inputs
    best, best_cost = None, (1.0 - _LONG_BLOCKS_MIN_SAVING) * _long_cost(whole[0])
    for log_n in range(LONG_LOG_N[0], whole[0]):
        if (1 << log_n) - lead < (1 << log_n) // 4:
            continue
        if smem_per_block is not None and _long_smem_bytes(log_n) > smem_per_block:
            continue
        cost = _long_blocks_cost(seq_len, k, log_n, lead, first, smem_per_block)
        if cost is not None and cost < best_cost:
            best, best_cost = (log_n, lead, first), cost
    return best


def _long_blocks_cost(seq_len: int, k: int, log_n: int, lead: int, first: int,
                      smem_per_block: int | None = None) -> float | None:
    """Weighted transform points of :func:`_long_blocks` (full blocks of 2^log_n and the tail's own transform), or
    None when no full block fits or the tail has no long plan."""
    full, rest = divmod(seq_len - first, (1 << log_n) - lead)
    if full < 1:
        return None
    cost = full * _long_cost(log_n)
    if rest:
        tail = long_plan(rest + lead, k, lead, smem_per_block=smem_per_block)
        if tail is None:
            return None
        cost += _long_cost(tail[0])
    return cost


# Per-point cost of the tensor-core kernel (whole rows and its blocks, N <= 2^15) and of the three-pass kernel, in the
# long path's units (H100, 2026-12-05, BENCHMARKS.md issue 13: 0.76-0.85 ms per 2^28 points, its blocks at K = 1K 0.99
# ms per 2^27 outputs, against 2.57-2.98 on the long path; the three-pass kernel 4.5-5.6 ms, 4.95 ms at K = 1K and
# N = 2^22). What the filter split below weighs a short part by.
_MONARCH_POINT_COST = 0.33
_THREE_PASS_POINT_COST = 1.8
# Adding a split part's outputs into the row, per output, in long-path points: a 16-bit add reads and writes ~6 B per
# output where the long path's three passes move ~24 B per input sample (two transform points).
_SPLIT_ADD_COST = 0.3


def _plan_cost(seq_len: int, filter_len: int, path: str, how) -> float:
    """Transform points of a :func:`path_plan` result weighted by its path's per-point cost (the long path's 2^18+
    points = 1): the one scale on which the split plans compare their options."""
    if path == "monarch":
        return (1 << how) * _MONARCH_POINT_COST
    if path == "blocks":
        log_n, lead = how
        half = 1 << (log_n - 1)
        count = 1 + -(-(seq_len - half) // (half - lead))  # _conv_blocks: the head, then blocks of half - lead outputs
        return count * (1 << log_n) * _MONARCH_POINT_COST
    if path == "toeplitz":
        log_n, blocks = how
        pairs = _toeplitz_pairs(seq_len, blocks, log_n, filter_len)
        adds = sum(i > 0 for i, _ in pairs)
        return (len(pairs) * (1 << log_n) * _MONARCH_POINT_COST
                + adds * _TOEPLITZ_ADD_COST * (1 << (log_n - 1)))
    if path == "long":
        return _long_cost(how[0])
    if path == "long_blocks":
        return _long_blocks_cost(seq_len, max(1, min(filter_len, seq_len)), *how)
    if path == "long_split":
        split, head, rest = how
        k = min(filter_len, seq_len)
        return (_plan_cost(seq_len, split, *head) + _plan_cost(seq_len - split, k - split, *rest)
                + _SPLIT_ADD_COST * (seq_len - split))
    return (1 << how[0]) * _THREE_PASS_POINT_COST


def long_split_plan(seq_len: int, filter_len: int, *, smem_per_block: int | None = None, pre: bool = False,
                    post: bool = False, unsplit: tuple | None = None) -> tuple[int, tuple, tuple] | None:
    """(P, head, rest) when a linear long row should be split by filter taps, else None.

    y = h * x = h[:P] * x + shift_P(h[P:] * x[:L - P]): the head part convolves the whole row with taps [0, P) (and
    the skip term), the rest convolves inputs [0, L - P) with taps [P, K) and is added to outputs [P, L). A row
    whose L + K - 1 lies just above a power of two then needs no transform of twice that power: P = N_1 - L + 1 fills
    a smaller N_1 for the head, and the rest is a shorter row with a shorter filter (planned the same way, so it may
    split again). The DMD gene with a 2.2M-tap filter: 2^22 + 2^19 points instead of 2^23; a 1.2 Mbp gene with
    HyenaDNA-large-1m's 1M taps: 2^21 + 2^19 instead of 2^22. The Toeplitz-block form of the issue; it needs no
    kernel change (each part is an ordinary call on strided views). head and rest are (path, plan) pairs of
    :func:`path_plan`; chosen by :func:`_plan_cost` and taken only when it saves ``_LONG_BLOCKS_MIN_SAVING``
    against the best unsplit plan (``unsplit``: the caller's, when it has it)."""
    k = max(1, min(filter_len, seq_len))
    whole = long_plan(seq_len, k, smem_per_block=smem_per_block)
    if whole is None or whole[3]:
        return None
    unsplit = unsplit or _path_plan(seq_len, k, smem_per_block, 0, pre, post, split=False)
    best, best_cost = None, (1.0 - _LONG_BLOCKS_MIN_SAVING) * _plan_cost(seq_len, k, *unsplit)
    for log_n in range(seq_len.bit_length(), whole[0]):
        split = (1 << log_n) - seq_len + 1  # the most taps a linear transform of 2^log_n takes for this row
        if not 0 < split < k:
            continue
        head = _path_plan(seq_len, split, smem_per_block, 0, pre, post, split=False)
        rest = _path_plan(seq_len - split, k - split, smem_per_block, 0, pre, post)
        if head[1] is None or rest[1] is None:  # no plan without a device (the three-pass kernel)
            continue
        cost = _plan_cost(seq_len, k, "long_split", (split, head, rest))
        if cost < best_cost:
            best, best_cost = (split, head, rest), cost
    return best


def _long_spectrum(filt, log_n: int, log_r: int, n_taps: int, device: torch.device):
    """((H (R/2 + 1), N', 2) fp16, (H (R/2 + 1),) gain, (H,) out_scale): row (h, k1), k1 = 0 .. R/2, is the inner filter
    whose spectrum is K[k1 + R k2], K = DFT_N(taps[:, :n_taps]) + bias, in the tensor-core kernel's format. Its output
    is at most 2^9 ||taps||_1 (inputs scaled to 2^9 in pass 1; for a frequency-sparse filter, the cut filter's bound
    below); the gain is divided by out_scale = 2^ceil(log2 of that bound) so the fp16 workspace never overflows, and
    pass 3 multiplies it back."""
    n = 1 << log_n
    inner_log = log_n - log_r
    inner, r = 1 << inner_log, 1 << log_r
    rh = r // 2 + 1
    channels = filt.channels
    spec = torch.empty(channels * rh, inner, 2, dtype=torch.float16, device=device)
    gain = torch.empty(channels * rh, dtype=torch.float32, device=device)
    src, mirror = _long_bins(log_n, log_r, device)
    l1 = filt.taps[:, :n_taps].double().abs().sum(-1)
    keep = filt.kept_bins(n)
    if keep < n // 2 + 1:
        # A cut spectrum is the taps circularly convolved with the cut's Dirichlet kernel D, larger than the taps
        # (Gibbs: a cut delta has 4.8-6.4x its l1 norm at N = 2^17 .. 2^22); ||taps * D||_1 <= ||taps||_1 ||D||_1.
        cut = torch.zeros(n // 2 + 1, dtype=torch.complex128, device=device)
        cut[:keep] = 1
        l1 = l1 * torch.fft.irfft(cut, n=n).abs().sum().item()
    l1 = l1 + filt.bias.double().abs()
    for block in _channel_blocks(channels, n):
        half = _rfft_with_skip(filt, n, n_taps, device, torch.float32, block)
        rows = half[:, src]  # K[k] for k <= N/2, conj K[N - k] above: read straight from the rfft half
        rows = torch.where(mirror, rows.conj(), rows).view(-1, inner)
        inner_rows = slice(block.start * rh, block.stop * rh)
        spec[inner_rows], gain[inner_rows] = _monarch_words(rows, inner_log)
    out_scale = torch.exp2(torch.ceil(torch.log2(l1.clamp(min=1.0)))).float().to(device)
    gain /= out_scale.repeat_interleave(rh)
    return spec, gain, out_scale.contiguous()


def _long_bins(log_n: int, log_r: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the long path's inner spectra come from: for rows k1 = 0 .. R/2 in the tensor-core kernel's lane order,
    bin k = k1 + R k2 of the N-point DFT as (index into the rfft half, min(k, N - k); whether to conjugate, k > N/2).
    Cached per plan."""
    def make():
        n, r = 1 << log_n, 1 << log_r
        k2 = _monarch_order(log_n - log_r, device)  # lane order of one inner row
        k = (torch.arange(r // 2 + 1, device=device)[:, None] + r * k2[None, :]).reshape(-1)
        return torch.minimum(k, n - k), k > n // 2

    return _cached_table(("long_bins", log_n, log_r, str(device)), make)


def _in_scale(u: torch.Tensor, pregate: torch.Tensor | None) -> torch.Tensor:
    """(H, B) fp32: per row a power of two that brings max |u pregate| to [2^8, 2^9) for the fp16 workspace; 0 for a
    row holding inf/NaN (written as NaN); an all-zero row gets 2^8. One read of u (and the gate) besides the passes."""
    def peak(x):  # max |x| per row without a temporary of x's size; an extremum is a sample, exact in x's dtype
        lo, hi = torch.aminmax(x, dim=-1)
        return torch.maximum(-lo.float(), hi.float())

    m = peak(u) if pregate is None else peak(u) * peak(pregate)
    finite = torch.isfinite(m)
    _, e = torch.frexp(torch.where(finite & (m > 0), m, torch.ones_like(m)))
    scale = torch.where(finite, torch.exp2((9 - e).float()), torch.zeros_like(m))
    return scale.t().contiguous()


def _row_scales(u: torch.Tensor, pregate: torch.Tensor | None) -> torch.Tensor:
    """:func:`_in_scale` of whole rows for launches that share it (overlap-save blocks): the kernel library's two
    passes on 16-bit rows (the GPU's, or the emulator's on the CPU), where the PyTorch form takes ~15 small ops whose
    host time runs before the first block's launch; the PyTorch form for the float64 stand-ins of the CPU tests."""
    if u.dtype in (torch.bfloat16, torch.float16):
        return torch.ops.genoconv_fftconv.long_row_scales(u, pregate)
    return _in_scale(u, pregate)


def _long_op(filt, u, pregate, postgate, y, in_scale, log_n: int, a: int, o: int, taps: int, op=None) -> None:
    """One causal_conv_long call on (possibly strided) rows: the filter's inner spectra at N = 2^log_n built from
    ``taps`` taps (cached in the filter) and the outer twiddles (cached per R); inputs from a, outputs from o into y.
    ``op``: a float64 stand-in for the kernel in the CPU tests."""
    dev = u.device
    log_r = log_n - _long_inner_log(log_n)
    spec, gain, out_scale = filt.cached(("cuda_long", log_n, log_r, taps, str(dev)),
                                        lambda: _long_spectrum(filt, log_n, log_r, taps, dev))
    twiddle = _cached_table(("long_twiddle", log_r, str(dev)), lambda: _multilevel_twiddle(log_r, dev))
    op = op or torch.ops.genoconv_fftconv.causal_conv_long
    op(u, spec, gain, out_scale, in_scale, twiddle, pregate, postgate, y, log_n, log_r, a, o)


def _long_conv(u, filt, pregate, postgate, plan_) -> torch.Tensor:
    log_n, _, start, first, _ = plan_
    taps = _spectrum_taps(filt, u.shape[-1], 1 << log_n, circular=first > 0)  # the plan's taps, or a cut filter's
    y = padded_rows(u.shape, u)  # aligned rows (ops.layout)
    sig = _unit_stride(u, pregate, postgate)
    # in_scale None: the op computes the rows' scales itself (a peak pass per channel block before its pass 1), where
    # _in_scale took ~8 PyTorch ops and temporaries per call: 8-15% of the op's time at 64K-4M (NOTES.md v18)
    _long_op(filt, sig[0], sig[1], sig[2], y, None, log_n, start, first, taps)
    return y


def _long_blocks(u, filt, pregate, postgate, log_n: int, lead: int, first: int, op=None) -> torch.Tensor:
    """A row as overlap-save blocks through the long path (:func:`long_blocks_plan`), no copies.

    Outputs [first, L) come in steps of C = N - lead (first = 0, or the carried inputs of a streamed row). Block j
    reads the N inputs from first + j C - lead and writes its outputs from lead on; with first = 0 the first block is
    instead a linear transform of inputs [0, C). The last block is shorter and planned for its own length. Blocks are
    strided views of u and y (batch stride C), so y is written once; all blocks of a row share the row's input scale,
    so a row holding inf/NaN is NaN throughout, as on the whole-row path."""
    batch, channels, seq_len = u.shape
    k = max(1, min(filt.filter_len, seq_len))  # every block, linear or circular, uses all K taps
    step = (1 << log_n) - lead
    sig = _unit_stride(u, pregate, postgate)
    y = padded_rows(u.shape, u)  # aligned rows (ops.layout)
    scale = _row_scales(sig[0], sig[1])  # (H, B), from the whole row

    def run(views, log_n_, a, o, in_scale):
        _long_op(filt, *views, in_scale, log_n_, a, o, k, op)

    def cut(start, stop=None):
        return [None if t is None else t[..., start:stop] for t in (*sig, y)]

    full = (seq_len - first) // step
    head = first == 0  # block 0 is a linear transform of inputs [0, C)
    if head:
        run(cut(0, step), log_n, 0, 0, scale)
    mids = full - head
    if mids > 0:
        begin = first + head * step - lead
        for b in range(batch):
            def blocks(t, b=b):
                if t is None:
                    return None
                row = t[b]
                return row.as_strided((mids, channels, 1 << log_n), (step, row.stride(0), 1),
                                      row.storage_offset() + begin)
            run([blocks(t) for t in (*sig, y)], log_n, 0, lead, scale[:, b:b + 1].expand(channels, mids).contiguous())
    start = first + full * step
    if start < seq_len:
        tail = long_plan(seq_len - start + lead, k, lead)
        run(cut(start - lead), tail[0], tail[2], tail[3], scale)
    return y


class _TapWindow(_FilterPart):
    """Taps [lo, hi) of a LongFilter as a filter of their own, for the parts of a split row (:func:`_long_split`):
    the skip term only in the part that starts at tap 0."""

    def __init__(self, filt, lo: int, hi: int):
        if isinstance(filt, _TapWindow):  # a part of a part: one window on the whole filter
            filt, lo, hi = filt.whole, filt.lo + lo, filt.lo + hi
        self.whole, self.lo, self.hi = filt, lo, hi
        self.key = ("taps", lo, hi)
        self.taps = filt.taps[:, lo:hi]
        self.bias = filt.bias if lo == 0 else torch.zeros_like(filt.bias)
        self.freq_keep = filt.freq_keep  # 1: split plans are for exact filters only

    @property
    def filter_len(self) -> int:
        return self.hi - self.lo

    def kept_bins(self, n_fft: int) -> int:
        return self.whole.kept_bins(n_fft)


def _long_split(u, filt, pregate, postgate, split: int, head: tuple, rest: tuple) -> torch.Tensor:
    """A row split by filter taps (:func:`long_split_plan`): the head part writes y from taps [0, P) over the whole
    row, the rest (taps [P, K) over inputs [0, L - P), post-gated by gates [P, L)) is added to y[P:]. Views, no
    copies of the inputs; the rest's output is a temporary of L - P samples. Its sum is rounded once more than the
    head's outputs (one 16-bit add). A non-finite input makes the head's row NaN throughout, as on the other paths."""
    seq_len = u.shape[-1]
    k = min(filt.filter_len, seq_len)
    y = _run_path(u, _TapWindow(filt, 0, split), pregate, postgate, *head)
    n = seq_len - split
    part = _run_path(u[..., :n], _TapWindow(filt, split, k), None if pregate is None else pregate[..., :n],
                     None if postgate is None else postgate[..., split:], *rest)
    y[..., split:] += part
    return y


def _run_path(u, filt, pregate, postgate, path: str, how) -> torch.Tensor:
    """One call on the path :func:`path_plan` chose."""
    seq_len = u.shape[-1]
    dev = u.device
    if path in ("monarch", "blocks"):  # the tensor-core kernel: the whole row, or its blocks
        log_n = how if path == "monarch" else how[0]
        taps = _spectrum_taps(filt, seq_len, 1 << log_n)
        spec, gain = filt.cached(("cuda_monarch", log_n, taps, str(dev)),
                                 lambda: _monarch_spectrum(filt, log_n, taps, dev))
        if path == "monarch":
            # Into rows that start 16-byte aligned whatever L is: the out_proj GEMM's fast kernel without the copy of
            # v the model made for every record of L % 8 != 0 (ops.layout).
            y = padded_rows(u.shape, u)
            sig = _unit_stride(u, pregate, postgate)
            torch.ops.genoconv_fftconv.causal_conv_monarch_into(sig[0], spec, gain, sig[1], sig[2], y, log_n, 0)
            return y
        return _conv_blocks(u, pregate, postgate, log_n, how[1], spec, gain)
    if path == "toeplitz":
        return _conv_toeplitz(u, filt, pregate, postgate, *how)
    if path == "long":
        return _long_conv(u, filt, pregate, postgate, how)
    if path == "long_blocks":
        return _long_blocks(u, filt, pregate, postgate, *how)
    if path == "long_split":
        return _long_split(u, filt, pregate, postgate, *how)
    log_n, log_n1, planned = how
    taps = _spectrum_taps(filt, seq_len, 1 << log_n, circular=planned == 1)
    bins, pair_tw, tw = _cached_tables(log_n, log_n1, dev)
    spec = filt.cached(("cuda_spectrum", log_n, log_n1, taps, str(dev)),
                       lambda: _spectrum(filt, log_n, bins, taps, dev))
    return torch.ops.genoconv_fftconv.causal_conv(u, spec, pair_tw, tw, pregate, postgate, log_n, log_n1)


def causal_conv_cuda(u, filt, pregate=None, postgate=None, valid_from: int = 0, *, checked: bool = False):
    """CUDA kernel with exactly :func:`genoconv.ops.fftconv.causal_conv_ref`'s semantics (bf16/fp16 in and out).

    ``valid_from``: the caller keeps only outputs t >= valid_from (a streamed chunk behind its K - 1 carried inputs).
    When valid_from >= K - 1 the FFT is sized for a circular convolution of the row (N >= L, not L + K - 1; the
    overlap-save method): the outputs before valid_from then hold wrapped-around values. ``checked``: the caller has
    had :func:`why_not` say yes for u already (the dispatcher has; asking twice was ~20 us of a short call's host)."""
    reason = "" if checked else why_not(u, filt)
    if reason:
        raise RuntimeError(f"genoconv CUDA fftconv cannot run: {reason}")
    for name, g in (("pregate", pregate), ("postgate", postgate)):
        if g is not None and (g.dtype != u.dtype or g.device != u.device):
            raise ValueError(f"{name} must have u's dtype and device ({u.dtype}, {u.device})")
    path, how = path_plan(u.shape[-1], filt.filter_len, u.device, valid_from, pre=pregate is not None,
                          post=postgate is not None, exact=filt.freq_keep >= 1.0)
    return _run_path(u, filt, pregate, postgate, path, how)
