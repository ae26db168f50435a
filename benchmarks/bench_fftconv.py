"""Causal FFT convolution: the csrc/fftconv kernel against the PyTorch reference, in one run (../shared/BENCHMARKS.md).

For each L in the sweep (B*H*L = 2^27, H = 256 where possible; 512 .. 4M) plus the DMD gene case (B=1, H=256,
L=2,220,382), with a filter as long as the row:
  - copy bandwidth (1 GiB device-to-device copy, bytes read + written), measured once at the start;
  - PyTorch reference: fp32 rfft/irfft at FFT size 2L, filter spectrum precomputed, + D*u, cast back to bf16;
  - this kernel, plain and gated (pregate/postgate fused), and the scalar kernels it replaced
    (GENOCONV_FFTCONV_PATH=scalar: the fused one up to 16K, the three-pass one above), plain and gated;
each as a median time in ms, the ratio to PyTorch, the share of the memory floor (4 B/elem plain, 8 B/elem gated,
over the measured copy bandwidth), and the relative L2 error against a float64 FFT convolution on a few channels.
Two timings of the kernel: the median of synchronised single calls (each charged with the host's start, 0.05-0.14 ms
of Python and binding checks on these hosts: NOTES.md v22; the targets' figure since) and back to back (20 calls
between two events, the GPU kept fed: what a model's forward sees, and the GPU time the method's `do_bench` measures).
With --flashfftconv (or whenever `import flashfftconv` works), FlashFFTConv from its own repository
(tools/anchors/flashfftconv.sh builds it) runs in the same process on the same inputs, fp16 and bf16, plain and gated,
wherever its API takes the size (FFT 2L a power of two up to 4M: L <= 2M).

A second table (issue 13) at L = 2M (B=1, H=64): partial convolutions (K = 1K, 12K, 16K, 262K taps; K = 1K also on
the three-pass path it replaced, K = 12K also on the tensor-core blocks the cost model now passes over, and where the
long path splits the row into overlap-save blocks, also as one whole-row transform), rows split by filter taps (B = 1, H = 256: the DMD shape with a full-length filter and a 1.2 Mbp row
with the large-1m filter, each also as one transform), reads (L = 152, B = 64, H = 256: the scalar fused kernel, and
the long path at 2^16 they took before), a streamed chunk behind 1M carried inputs (linear [1M | 2.19M] as before,
circular [1M | 3.19M] now: same FFT size, 1.46x the new outputs), and frequency-sparse filters (F = 1, 0.5, 0.25 at
L = 64K and 1M through the dispatch point; F < 1 runs in the kernels, the spectrum cut at the path's N, its error taken
against that definition). Each row names the path the dispatch took.

    python benchmarks/bench_fftconv.py                       # full sweep, prints a markdown table
    python benchmarks/bench_fftconv.py --update BENCHMARKS.md   # also rewrite its section of that file (issue 13's;
                                                                # the issue-5 section above it is kept as history)
    python benchmarks/bench_fftconv.py --merge section.md --update BENCHMARKS.md  # splice a saved section (no GPU)
    python benchmarks/bench_fftconv.py --long-only            # the second table alone, printed
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import math
import os
import re
import statistics
import sys
from pathlib import Path

import torch

SECTION = "## FFT convolution kernel: lengths to 4M, partial, streamed and frequency-sparse (issue 13)"
SWEEP = [512, 2048, 8192, 16384, 32768, 65536, 262144, 1048576, 2097152, 4194304]  # 32K: small-32k at its length (N = 2^16)
GENE_LEN = 2_220_382
TOTAL = 1 << 27


def shapes(quick: bool = False, sizes: list[int] | None = None, gene: bool = False):
    out = []
    for seq_len in sizes or SWEEP:
        channels = 256 if TOTAL // seq_len >= 256 else TOTAL // seq_len
        batch = max(1, TOTAL // (channels * seq_len))
        out.append((f"{seq_len // 1024}K" if seq_len >= 1024 else str(seq_len), batch, channels, seq_len))
    if sizes and not gene:
        return out
    out.append(("DMD 2.22M", 1, 256, GENE_LEN))
    return out[:3] if quick else out


def time_ms(fn, reps: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def back_to_back(fn, calls: int = 20) -> float:
    """ms per call of ``calls`` calls between two events, not synchronised between them: what a pipeline that keeps
    the GPU fed sees, against :func:`time_ms`'s one synchronised call (which counts the host's start of each)."""
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(calls):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / calls


@contextlib.contextmanager
def scalar_path():
    """Force the scalar kernels (the path before the tensor-core kernel) for an A/B timing in the same run."""
    old = os.environ.get("GENOCONV_FFTCONV_PATH")
    os.environ["GENOCONV_FFTCONV_PATH"] = "scalar"
    try:
        yield
    finally:
        if old is None:
            del os.environ["GENOCONV_FFTCONV_PATH"]
        else:
            os.environ["GENOCONV_FFTCONV_PATH"] = old


def copy_bandwidth() -> float:
    """Bytes/s of a 1 GiB device-to-device copy, counting bytes read plus bytes written."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    src.random_(0, 255)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), reps=20)
    del src, dst
    return 2 * (1 << 30) / (ms * 1e-3)


def long_filter(channels: int, taps: int, device) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(taps)
    t = torch.arange(taps, dtype=torch.float32)
    decay = torch.exp(-t[None] * torch.rand(channels, 1, generator=g) * 3.0 / taps)
    k = torch.randn(channels, taps, generator=g) * decay / taps**0.5 + 0.1 * torch.cos(t[None] * 0.01) / taps**0.5
    return k.to(device)


def torch_reference(u, k_f, bias, pregate=None, postgate=None):
    seq_len = u.shape[-1]
    x = u.float() if pregate is None else u.float() * pregate.float()
    y = torch.fft.irfft(torch.fft.rfft(x, n=2 * seq_len) * k_f, n=2 * seq_len)[..., :seq_len]
    y = y + x * bias[:, None]
    if postgate is not None:
        y = y * postgate.float()
    return y.to(u.dtype)


def oracle_error(y, u, taps, bias, pre=None, post=None, rows: int = 4, keep: float = 1.0) -> float:
    """Relative L2 error of y[0, :rows] against a float64 FFT convolution of the same (16-bit) inputs; ``keep`` < 1:
    against the frequency-sparse definition (lowest ceil(keep (N/2 + 1)) bins of the taps) at the linear N."""
    seq_len = u.shape[-1]
    x = u[0, :rows].double()
    if pre is not None:
        x = x * pre[0, :rows].double()
    n = 1 << (2 * seq_len - 1).bit_length()
    k_f = torch.fft.rfft(taps[:rows, :seq_len].double(), n=n)
    k_f[:, math.ceil(keep * (n // 2 + 1)):] = 0
    ref = torch.fft.irfft(torch.fft.rfft(x, n=n) * k_f, n=n)[..., :seq_len]
    ref = ref + x * bias[:rows, None].double()
    if post is not None:
        ref = ref * post[0, :rows].double()
    return ((y[0, :rows].double() - ref).norm() / ref.norm()).item()


def flashfftconv_class():
    """FlashFFTConv's module class when its build is importable (tools/anchors/flashfftconv.sh), else None."""
    try:
        from flashfftconv import FlashFFTConv
    except ImportError:
        return None
    return FlashFFTConv


def flashfftconv_row(ffc_cls, u, taps, pre, post, reps: int) -> dict:
    """FlashFFTConv on this row's inputs, fp16 and bf16 (its two input types), plain and gated: ms and error against
    the float64 oracle (it has no D*u term, so the oracle is taken without it). Empty where its API refuses the size:
    the FFT size 2L must be a power of two from 256 to 4M (a causal convolution at L > 2M, e.g. the DMD gene, has no
    FlashFFTConv form). Its filter's FFT runs inside every call (cuFFT, fp32), as its forward computes it."""
    if ffc_cls is None:
        return {}
    seq_len = u.shape[-1]
    n = 2 * seq_len
    if n & (n - 1) or not 256 <= n <= 1 << 22:
        return {}
    out = {}
    zero = torch.zeros(u.shape[1], device=u.device)
    k = taps[:, :seq_len].float().contiguous()
    for tag, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        conv = ffc_cls(n, dt).to(u.device)
        x, g0, g1 = (t.to(dt).contiguous() for t in (u, pre, post))
        out[f"ffc_{tag}_ms"] = time_ms(lambda: conv(x, k), reps=reps)
        out[f"ffc_{tag}_gated_ms"] = time_ms(lambda: conv(x, k, g0, g1), reps=reps)
        out[f"ffc_{tag}_b2b_ms"] = back_to_back(lambda: conv(x, k))
        out[f"ffc_{tag}_err"] = oracle_error(conv(x, k), u, taps, zero)
        out[f"ffc_{tag}_gated_err"] = oracle_error(conv(x, k, g0, g1), u, taps, zero, pre, post)
        del conv, x, g0, g1
    return out


def run(quick: bool, dtype: torch.dtype, sizes: list[int] | None = None, gene: bool = False,
        ffc_cls=None) -> tuple[str, list[dict]]:
    from genoconv.ops import LongFilter
    from genoconv.ops import cuda as gcuda

    dev = torch.device("cuda")
    bw = copy_bandwidth()
    rows = []
    for name, batch, channels, seq_len in shapes(quick, sizes, gene):
        torch.cuda.empty_cache()
        elems = batch * channels * seq_len
        taps = long_filter(channels, seq_len, dev)
        bias = torch.randn(channels, device=dev)
        filt = LongFilter(taps, bias)
        u = torch.randn(batch, channels, seq_len, device=dev).to(dtype)
        pre = torch.randn(batch, channels, seq_len, device=dev).to(dtype)
        post = torch.randn(batch, channels, seq_len, device=dev).to(dtype)
        reason = gcuda.why_not(u, filt)
        if reason:
            raise SystemExit(f"kernel unusable: {reason}")
        k_f = torch.fft.rfft(taps, n=2 * seq_len)  # precomputed once, as the reference gets it
        reps = 20 if elems * 4 / bw < 5e-3 else 10
        t_ref = time_ms(lambda: torch_reference(u, k_f, bias), reps=reps)
        t_plain = time_ms(lambda: gcuda.causal_conv_cuda(u, filt), reps=reps)
        t_gated = time_ms(lambda: gcuda.causal_conv_cuda(u, filt, pre, post), reps=reps)
        t_plain_b2b = back_to_back(lambda: gcuda.causal_conv_cuda(u, filt))
        t_gated_b2b = back_to_back(lambda: gcuda.causal_conv_cuda(u, filt, pre, post))
        # Whether the tensor-core kernel takes this size on this device (its shared memory may not fit, e.g. an A100).
        monarch = gcuda.monarch_log_n(seq_len, smem_per_block=gcuda._smem_per_block(dev)) is not None
        # The scalar kernels as the yardstick at every size: the fused one (L <= 16K) or the three-pass one, which
        # the long path (outer passes around the tensor-core kernel) replaced from 64K on.
        with scalar_path():
            t_scalar = time_ms(lambda: gcuda.causal_conv_cuda(u, filt), reps=reps)
            t_scalar_gated = time_ms(lambda: gcuda.causal_conv_cuda(u, filt, pre, post), reps=reps)
        err_plain = oracle_error(gcuda.causal_conv_cuda(u, filt), u, taps, bias)
        err_gated = oracle_error(gcuda.causal_conv_cuda(u, filt, pre, post), u, taps, bias, pre, post)
        err_ref = oracle_error(torch_reference(u, k_f, bias), u, taps, bias)
        floor_plain = 4 * elems / bw * 1e3
        floor_gated = 8 * elems / bw * 1e3
        row = dict(name=name, B=batch, H=channels, L=seq_len, ref_ms=t_ref, plain_ms=t_plain, gated_ms=t_gated,
                   floor_ms=floor_plain, plain_floor=floor_plain / t_plain, gated_floor=floor_gated / t_gated,
                   speedup=t_ref / t_plain, err_plain=err_plain, err_gated=err_gated, err_ref=err_ref,
                   log_n=gcuda.fft_plan(seq_len, seq_len), monarch=monarch, scalar_ms=t_scalar,
                   path=path_label(seq_len, seq_len),
                   scalar_gated_ms=t_scalar_gated, plain_b2b_ms=t_plain_b2b, gated_b2b_ms=t_gated_b2b)
        row.update(flashfftconv_row(ffc_cls, u, taps, pre, post, reps))
        rows.append(row)
        print(f"{name:>10} B={batch:<5} H={channels:<4} ref {t_ref:8.3f} ms  plain {t_plain:8.3f} ms "
              f"({row['plain_floor']:6.1%} floor, {row['speedup']:5.2f}x)  gated {t_gated:8.3f} ms "
              f"({row['gated_floor']:6.1%})  scalar {t_scalar:8.3f} / {t_scalar_gated:8.3f} ms  err {err_plain:.1e}/{err_gated:.1e} (ref {err_ref:.1e})"
              + "".join(f"  FlashFFTConv {t} {row[f'ffc_{t}_ms']:.3f} / {row[f'ffc_{t}_gated_ms']:.3f} ms err "
                        f"{row[f'ffc_{t}_err']:.1e}/{row[f'ffc_{t}_gated_err']:.1e}"
                        for t in ("fp16", "bf16") if f"ffc_{t}_ms" in row), flush=True)
        del u, pre, post, filt, k_f, taps
    return f"{bw / 1e12:.2f}", rows


def run_long(dtype: torch.dtype, bw: float) -> list[dict]:
    """Partial, streamed and frequency-sparse convolutions at L = 2M, B = 1, H = 64 (2^27 elements)."""
    from genoconv.ops import LongFilter, backend_for, causal_conv
    from genoconv.ops import cuda as gcuda

    dev = torch.device("cuda")
    batch, channels, seq_len = 1, 64, 1 << 21
    elems = batch * channels * seq_len
    rows = []

    def add(name, fn, taps, bias, u, pre=None, post=None, outputs=elems, path="", ref=None, gated_fn=None, keep=1.0):
        torch.cuda.empty_cache()
        t = time_ms(fn, reps=10)
        t_gated = time_ms(gated_fn, reps=10) if gated_fn else float("nan")
        y = fn()
        err = oracle_error(y, u, taps, bias, keep=keep) if u is not None else float("nan")
        err_gated = oracle_error(gated_fn(), u, taps, bias, pre, post) if gated_fn else float("nan")
        floor = 4 * outputs / bw * 1e3
        row = dict(name=name, ms=t, gated_ms=t_gated, floor=floor / t, gated_floor=2 * floor / t_gated,
                   err=err, err_gated=err_gated, path=path, ref_ms=ref() if ref else float("nan"),
                   per_moutput_us=t * 1e3 / (outputs / 1e6))
        rows.append(row)
        print(f"{name:>40} {t:8.3f} ms ({row['floor']:6.1%} floor)  gated {t_gated:8.3f} ms "
              f"({row['gated_floor']:6.1%})  err {err:.1e}/{err_gated:.1e}  {path}", flush=True)

    def add_forced(name, plan, filt, taps, bias, u, pre=None, post=None, outputs=elems):
        """A row on a path the dispatch did not choose (the A/B beside a row it did): plain, and gated if given."""
        gated = None if pre is None else (lambda: gcuda._run_path(u, filt, pre, post, *plan))
        add(name, lambda: gcuda._run_path(u, filt, None, None, *plan), taps, bias, u, pre, post, outputs=outputs,
            path=plan_label(*plan), gated_fn=gated)

    u = torch.randn(batch, channels, seq_len, device=dev).to(dtype)
    pre = torch.randn(batch, channels, seq_len, device=dev).to(dtype)
    post = torch.randn(batch, channels, seq_len, device=dev).to(dtype)
    smem = gcuda._smem_per_block(dev)
    for k in (1024, 12288, 16384, 262144):
        taps = long_filter(channels, k, dev)
        bias = torch.randn(channels, device=dev)
        filt = LongFilter(taps, bias)
        blocks = gcuda.partial_plan(seq_len, k, smem_per_block=smem)
        path = path_label(seq_len, k)
        n_ref = 1 << gcuda.fft_plan(seq_len, k)
        k_f = torch.fft.rfft(taps, n=n_ref)

        def ref(u=u, k_f=k_f, n_ref=n_ref, bias=bias):
            x = u.float()
            return time_ms(lambda: (torch.fft.irfft(torch.fft.rfft(x, n=n_ref) * k_f, n=n_ref)[..., :seq_len]
                                    + x * bias[:, None]).to(dtype), reps=5)
        add(f"partial K={k // 1024}K", lambda filt=filt: gcuda.causal_conv_cuda(u, filt), taps, bias, u, pre, post,
            path=path, ref=ref, gated_fn=lambda filt=filt: gcuda.causal_conv_cuda(u, filt, pre, post))
        whole = gcuda.long_plan(seq_len, k, smem_per_block=smem)
        if path.startswith("long blocks") and whole:
            add_forced(f"partial K={k // 1024}K, whole-row long path", ("long", whole), filt, taps, bias, u, pre, post)
        if blocks and not path.startswith("blocks"):  # the cost model chose the long path over the tensor-core blocks
            add_forced(f"partial K={k // 1024}K, tensor-core blocks", ("blocks", blocks), filt, taps, bias, u, pre,
                       post)
        if blocks and path.startswith("blocks"):
            with scalar_path():
                add(f"partial K={k // 1024}K, previous 3-pass path", lambda filt=filt: gcuda.causal_conv_cuda(u, filt),
                    taps, bias, u, pre, post, path=f"3-pass N=2^{gcuda.fft_plan(seq_len, k)}",
                    gated_fn=lambda filt=filt: gcuda.causal_conv_cuda(u, filt, pre, post))
        del filt, k_f
    # Split by filter taps where L + K - 1 lies just past a power of two: the DMD shape with a full-length filter (as in
    # the sweep) and a 1.2 Mbp gene with the large-1m filter, B = 1, H = 256, each beside its one-transform plan.
    for label, seq_len_s, k in (("K = L = 2.22M (DMD, H=256)", 2_220_382, 2_220_382),
                                ("K = 1M at L = 1.2M (H=256)", 1_200_000, 1_000_002)):
        torch.cuda.empty_cache()
        us = torch.randn(1, 256, seq_len_s, device=dev).to(dtype)
        pres, posts = (torch.randn(1, 256, seq_len_s, device=dev).to(dtype) for _ in range(2))
        taps = long_filter(256, k, dev)
        bias = torch.randn(256, device=dev)
        filt = LongFilter(taps, bias)
        add(f"{label}, split by taps", lambda filt=filt, us=us: gcuda.causal_conv_cuda(us, filt), taps, bias, us,
            pres, posts, outputs=us.numel(), path=path_label(seq_len_s, k),
            gated_fn=lambda filt=filt, us=us, pres=pres, posts=posts: gcuda.causal_conv_cuda(us, filt, pres, posts))
        add_forced(f"{label}, one transform", ("long", gcuda.long_plan(seq_len_s, k, smem_per_block=smem)), filt, taps,
                   bias, us, pres, posts, outputs=us.numel())
        del us, pres, posts, filt, taps
    # Rows of 16K-48K (the median human gene) with a full-length filter: block-Toeplitz on the tensor-core kernel
    # (m = 2, 3 blocks of 16K) beside the long path they took before, B*H*L ~ 2^27 (H = 256).
    for seq_len_t in (24_000, 32_768, 49_152):
        torch.cuda.empty_cache()
        batch_t = max(1, (1 << 27) // (256 * seq_len_t))
        ut = torch.randn(batch_t, 256, seq_len_t, device=dev).to(dtype)
        pret, postt = (torch.randn(batch_t, 256, seq_len_t, device=dev).to(dtype) for _ in range(2))
        taps = long_filter(256, seq_len_t, dev)
        bias = torch.randn(256, device=dev)
        filt = LongFilter(taps, bias)
        label = f"K = L = {seq_len_t / 1024:.1f}K (B={batch_t}, H=256)"
        add(label, lambda filt=filt, ut=ut: gcuda.causal_conv_cuda(ut, filt), taps, bias, ut, pret, postt,
            outputs=ut.numel(), path=path_label(seq_len_t, seq_len_t),
            gated_fn=lambda filt=filt, ut=ut, pret=pret, postt=postt: gcuda.causal_conv_cuda(ut, filt, pret, postt))
        whole = ("long", gcuda.long_plan(seq_len_t, seq_len_t, smem_per_block=smem))
        add_forced(f"{label}, long path as before", whole, filt, taps, bias, ut, pret, postt, outputs=ut.numel())
        del ut, pret, postt, filt, taps
    # Reads (51-250 bp, padded to the batch's longest): below the tensor-core kernel's sizes, the scalar fused kernel
    # at N = 2^9; before, the long path at 2^16 per row. B = 64, H = 256 (the long path needs ~1e9 points here).
    ur = torch.randn(64, 256, 152, device=dev).to(dtype)
    taps = long_filter(256, 152, dev)
    bias = torch.randn(256, device=dev)
    filt = LongFilter(taps, bias)
    add("reads L=152 (B=64, H=256)", lambda ur=ur, filt=filt: gcuda.causal_conv_cuda(ur, filt), taps, bias, ur,
        outputs=ur.numel(),
        path=path_label(152, 152))
    add_forced("reads L=152, long path as before", ("long", gcuda.long_plan(152, 152)), filt, taps, bias, ur,
               outputs=ur.numel())
    del ur, filt, taps
    # A streamed chunk behind 1M carried inputs, the large-1m filter: new outputs per call at N = 2^22.
    k = 1_000_002
    taps = long_filter(channels, k, dev)
    bias = torch.randn(channels, device=dev)
    filt = LongFilter(taps, bias)
    for label, chunk in (("linear, as before", (1 << 22) - 2 * (k - 1)), ("circular (overlap-save)", (1 << 22) - (k - 1))):
        x = torch.randn(batch, channels, chunk, device=dev).to(dtype)
        hist = torch.randn(batch, channels, k - 1, device=dev).to(dtype)
        if label.startswith("linear"):
            fn = lambda x=x, hist=hist: gcuda.causal_conv_cuda(torch.cat([hist, x], -1), filt)[..., k - 1:]
        else:
            fn = lambda x=x, hist=hist: causal_conv(x, filt, history=hist)
        add(f"streamed [1M | {chunk / 1e6:.2f}M], {label}", fn, taps, bias, None, outputs=batch * channels * chunk,
            path=path_label(chunk + k - 1, k, 0 if label.startswith("linear") else k - 1))
        del x, hist
    del filt
    # Frequency-sparse filters through the dispatch point: the kernels since this session (the reference before),
    # the spectrum cut at the path's N; the error is against that definition in float64.
    for seq_len_f, batch_f in ((1 << 16, 32), (1 << 20, 2)):
        uf = torch.randn(batch_f, channels, seq_len_f, device=dev).to(dtype)
        taps = long_filter(channels, seq_len_f, dev)
        bias = torch.randn(channels, device=dev)
        for keep in (1.0, 0.5, 0.25):
            filt = LongFilter(taps, bias, freq_keep=keep)
            add(f"freq-sparse F={keep} (L={seq_len_f >> 10}K, B={batch_f})", lambda filt=filt: causal_conv(uf, filt),
                taps, bias, uf, outputs=uf.numel(), keep=keep,
                path=f"{backend_for(uf, filt)}: {path_label(seq_len_f, seq_len_f)}")
            del filt
        del uf
    return rows


def long_table(rows: list[dict]) -> str:
    lines = ["| case | path | plain ms | % of floor | gated ms | % of gated floor | us per M outputs | err plain / gated"
             " | PyTorch fp32 ms |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['path']} | {r['ms']:.3f} | {r['floor']:.1%} | {r['gated_ms']:.3f} | "
                     f"{r['gated_floor']:.1%} | {r['per_moutput_us']:.1f} | {r['err']:.1e} / {r['err_gated']:.1e} | "
                     f"{r['ref_ms']:.3f} |")
    return re.sub(r"\bnan\b%?", "-", "\n".join(lines))


def path_label(seq_len: int, filter_len: int, valid_from: int = 0) -> str:
    """Which kernel ``causal_conv_cuda`` runs for this (plain) call on this device, as its dispatch decides it."""
    from genoconv.ops import cuda as gcuda

    return plan_label(*gcuda.path_plan(seq_len, filter_len, torch.device("cuda"), valid_from))


def plan_label(path: str, how) -> str:
    if path == "monarch":
        return f"tensor-core fused N=2^{how}"
    if path == "blocks":
        return f"blocks N=2^{how[0]}, lead {how[1]}"
    if path == "toeplitz":
        return f"block-Toeplitz {how[1]} x 2^{how[0] - 1} (tensor-core N=2^{how[0]})"
    if path == "long_blocks":
        return f"long blocks N=2^{how[0]}, lead {how[1]}"
    if path == "long_split":
        split, head, rest = how
        return f"split at tap {split}: {plan_label(*head)} + {plan_label(*rest)}"
    if path == "long":
        log_n, log_r = how[:2]
        return f"long N=2^{log_n} = 2^{log_r} x 2^{log_n - log_r} ({'tensor-core' if log_r in (8, 9) else 'scalar'} outer)"
    return f"{'fused scalar' if how[1] == 0 else '3-pass'} N=2^{how[0]}"


def table(rows: list[dict]) -> str:
    head = ["", *[r["name"] for r in rows]]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]

    def add(label, fmt):
        lines.append("| " + " | ".join([label, *[fmt(r) for r in rows]]) + " |")

    add("B x H", lambda r: f"{r['B']}x{r['H']}")
    add("PyTorch fp32 FFT (ms)", lambda r: f"{r['ref_ms']:.3f}")
    add("kernel plain (ms)", lambda r: f"{r['plain_ms']:.3f}")
    add("kernel gated (ms)", lambda r: f"{r['gated_ms']:.3f}")
    add("scalar kernels (fused <= 16K, three-pass above), plain (ms)", lambda r: f"{r['scalar_ms']:.3f}")
    add("scalar kernels, gated (ms)", lambda r: f"{r['scalar_gated_ms']:.3f}" if "scalar_gated_ms" in r else "-")
    add("speed-up plain vs scalar kernels", lambda r: f"{r['scalar_ms'] / r['plain_ms']:.2f}x")
    add("speed-up plain vs PyTorch", lambda r: f"{r['speedup']:.1f}x")
    add("plain, % of floor (4 B/elem)", lambda r: f"{r['plain_floor']:.1%}")
    add("gated, % of gated floor (8 B/elem)", lambda r: f"{r['gated_floor']:.1%}")
    add("kernel plain / gated, back to back (ms)", lambda r: f"{r['plain_b2b_ms']:.3f} / {r['gated_b2b_ms']:.3f}")
    add("plain / gated % of floor, back to back",
        lambda r: f"{r['floor_ms'] / r['plain_b2b_ms']:.1%} / {2 * r['floor_ms'] / r['gated_b2b_ms']:.1%}")
    add("memory floor plain (ms)", lambda r: f"{r['floor_ms']:.3f}")
    add("rel. L2 err plain / gated", lambda r: f"{r['err_plain']:.1e} / {r['err_gated']:.1e}")
    add("rel. L2 err PyTorch ref", lambda r: f"{r['err_ref']:.1e}")
    if any("ffc_fp16_ms" in r for r in rows):
        def ffc(fmt):
            return lambda r: fmt(r) if "ffc_fp16_ms" in r else "-"
        for t in ("fp16", "bf16"):
            add(f"FlashFFTConv {t} plain / gated (ms)", ffc(lambda r, t=t: f"{r[f'ffc_{t}_ms']:.3f} / {r[f'ffc_{t}_gated_ms']:.3f}"))
        add("speed-up plain vs FlashFFTConv fp16 / bf16",
            ffc(lambda r: f"{r['ffc_fp16_ms'] / r['plain_ms']:.2f}x / {r['ffc_bf16_ms'] / r['plain_ms']:.2f}x"))
        add("speed-up gated vs FlashFFTConv fp16 / bf16",
            ffc(lambda r: f"{r['ffc_fp16_gated_ms'] / r['gated_ms']:.2f}x / {r['ffc_bf16_gated_ms'] / r['gated_ms']:.2f}x"))
        add("FlashFFTConv fp16 plain, % of floor", ffc(lambda r: f"{r['floor_ms'] / r['ffc_fp16_ms']:.1%}"))
        add("back to back: FlashFFTConv fp16 / bf16 plain (ms), speed-up of the kernel",
            ffc(lambda r: f"{r['ffc_fp16_b2b_ms']:.3f} / {r['ffc_bf16_b2b_ms']:.3f}, {r['ffc_fp16_b2b_ms'] / r['plain_b2b_ms']:.2f}x"
                          f" / {r['ffc_bf16_b2b_ms'] / r['plain_b2b_ms']:.2f}x"))
        for t in ("fp16", "bf16"):
            add(f"FlashFFTConv {t} rel. L2 err plain / gated",
                ffc(lambda r, t=t: f"{r[f'ffc_{t}_err']:.1e} / {r[f'ffc_{t}_gated_err']:.1e}"))
    add("path", lambda r: r["path"])
    return "\n".join(lines)


def section_text(bw: str, rows: list[dict], dtype: str, device: str, command: str, notes: str = "") -> str:
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        SECTION,
        "",
        f"- Date: {date}; device: {device}; torch {torch.__version__}; inputs {dtype}.",
        f"- Command: `{command}`",
        f"- Copy bandwidth (1 GiB d2d, read + write) measured in the same run: {bw} TB/s.",
        "- Times are medians of CUDA-event timings after warm-up. The reference is fp32 rfft/irfft at FFT size 2L with"
        " the filter spectrum precomputed; the kernel's spectrum is cached in the LongFilter (computed once).",
        "- Errors: relative L2 against a float64 FFT convolution of the same 16-bit inputs, first 4 channels of batch 0.",
        "",
        table(rows),
    ]
    if notes:
        body += ["", notes]
    return "\n".join(body) + "\n"


def flashfftconv_note(ffc_cls) -> str:
    """Where the FlashFFTConv rows come from: its commit (tools/anchors/flashfftconv.sh writes COMMIT beside it)."""
    src = Path(sys.modules[ffc_cls.__module__].__file__).resolve().parents[1]
    commit = (src / "COMMIT").read_text().strip()[:12] if (src / "COMMIT").exists() else "unknown commit"
    return (f"FlashFFTConv rows: HazyResearch/flash-fft-conv at {commit}, built on this machine by"
            " `tools/anchors/flashfftconv.sh build` (native code for this GPU), in the same process on the same inputs"
            " (exact fp16 copies for its fp16 path). Its forward computes the filter's FFT in every call, as its API"
            " does; it has no D*u term (its error is taken against the oracle without it); its gated form is"
            " postgate * conv(u * pregate), as genoconv's.")


def update_section(path: Path, text: str) -> None:
    """Replace (or append) this issue's section of a markdown file, leaving every other section alone."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new.rstrip("\n") + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="first three sizes only")
    ap.add_argument("--sizes", type=str, default="",
                    help="comma-separated L values instead of the sweep (`dmd` adds the gene case)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--update", type=Path, help="markdown file whose issue-13 section is rewritten")
    ap.add_argument("--section-out", type=Path, help="also write the section alone to this file")
    ap.add_argument("--merge", type=Path, help="splice a saved section file into --update (no GPU needed)")
    ap.add_argument("--long-only", action="store_true", help="the issue-13 table at L = 2M only (printed, not saved)")
    ap.add_argument("--flashfftconv", action="store_true",
                    help="require the FlashFFTConv anchor (tools/anchors/flashfftconv.sh); by default it runs when"
                         " `import flashfftconv` works")
    args = ap.parse_args(argv)
    if args.merge:
        if not args.update:
            raise SystemExit("--merge needs --update")
        update_section(args.update, args.merge.read_text().rstrip("\n") + "\n")
        return
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    dtype = getattr(torch, args.dtype)
    if args.long_only:
        bw = copy_bandwidth()
        print(f"copy bandwidth {bw / 1e12:.2f} TB/s\n\n" + long_table(run_long(dtype, bw)))
        return
    tokens = [x for x in args.sizes.split(",") if x]
    sizes = [int(x) for x in tokens if x != "dmd"]
    ffc_cls = flashfftconv_class()
    if args.flashfftconv and ffc_cls is None:
        raise SystemExit("--flashfftconv: `import flashfftconv` failed (build it: tools/anchors/flashfftconv.sh)")
    bw, rows = run(args.quick, dtype, sizes, gene="dmd" in tokens, ffc_cls=ffc_cls)
    notes = ""
    if ffc_cls is not None:
        notes = flashfftconv_note(ffc_cls) + "\n\n"
    if not args.quick and not sizes:
        long_rows = run_long(dtype, float(bw) * 1e12)
        notes += ("Partial, streamed and frequency-sparse convolutions (issue 13), L = 2M, B = 1, H = 64; floors count"
                 " the outputs (4 B per output plain, 8 B gated):\n\n" + long_table(long_rows))
    text = section_text(bw, rows, args.dtype, torch.cuda.get_device_name(), "python " + " ".join(sys.argv), notes)
    print()
    print(text)
    if args.section_out:
        args.section_out.write_text(text)
    if args.update:
        update_section(args.update, text)


if __name__ == "__main__":
    main()
