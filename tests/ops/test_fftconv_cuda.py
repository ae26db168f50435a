"""The csrc/fftconv CUDA kernel against a float64 oracle (skipped without a CUDA device).

Fresh random inputs per case, realistic long filters (energy over all taps, not fast-decaying only), the output
poisoned with NaN first (the caching allocator hands the poisoned block back to the op: checked by pointer) so
every element is proven written. The float64 oracle is the direct convolution where it is cheap (L <= 4097) and a
float64 FFT convolution beyond (agreeing with the direct one to ~1e-15; cross-checked below).
"""

from __future__ import annotations

import pytest
import torch

from genoconv.ops import LongFilter, causal_conv, causal_conv_direct
from genoconv.ops.layout import aligned_rows

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

BF16_TOL = 6e-3  # issue 5; FlashFFTConv's bf16 path lands at 4-6e-3
FP16_TOL = 2e-3


def _cuda():
    from genoconv.ops import cuda

    return cuda


@pytest.fixture(scope="module", autouse=True)
def _kernel_built():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cuda = _cuda()
    dev = torch.device("cuda")
    u = torch.zeros(1, 1, 8, device=dev, dtype=torch.bfloat16)
    reason = cuda.why_not(u, LongFilter(torch.zeros(1, 8)))
    if reason:
        pytest.fail(f"CUDA device present but the kernel is unusable: {reason}")


def _long_filter(channels: int, taps: int, gen: torch.Generator) -> torch.Tensor:
    # Slowly decaying noise plus an oscillation: the energy is spread over all taps (HyenaDNA-like, not short).
    t = torch.arange(taps, dtype=torch.float64)
    decay = torch.exp(-t[None] * torch.rand(channels, 1, generator=gen, dtype=torch.float64) * 3.0 / taps)
    k = torch.randn(channels, taps, generator=gen, dtype=torch.float64) * decay / taps**0.5
    return (k + 0.1 * torch.cos(t[None] * 0.01) / taps**0.5).float()


def _oracle(u, taps, bias, pre, post) -> torch.Tensor:
    """float64 causal convolution of the kernel's (16-bit) inputs: direct for short L, float64 FFT beyond."""
    seq_len = u.shape[-1]
    if seq_len <= 4097:
        return causal_conv_direct(u.double().cpu(), taps.cpu(), bias.cpu(),
                                  None if pre is None else pre.double().cpu(),
                                  None if post is None else post.double().cpu()).to(u.device)
    return _fft_oracle(u, taps, bias, pre, post, 1 << (seq_len + min(taps.shape[-1], seq_len) - 1).bit_length())


def _fft_oracle(u, taps, bias, pre, post, n: int, keep: float = 1.0) -> torch.Tensor:
    """float64 FFT convolution at size n of taps[:, :L]; ``keep`` < 1: frequency-sparse, the lowest
    ceil(keep (n/2 + 1)) bins of the taps, the skip term unfiltered (the reference's definition, at size n)."""
    seq_len = u.shape[-1]
    x = u.double() if pre is None else u.double() * pre.double()
    k_f = torch.fft.rfft(taps[:, :seq_len].to(u.device, torch.float64), n=n)
    k_f[:, LongFilter(taps[:, :1], freq_keep=keep).kept_bins(n):] = 0
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * k_f, n=n)[..., :seq_len] + x * bias.to(u.device, torch.float64)[:, None]
    return y if post is None else y * post.double()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _run_poisoned(u, filt, pre, post, run=causal_conv) -> torch.Tensor:
    run(u, filt, pre, post)  # builds the cached spectrum/twiddles, so the next call allocates only y
    torch.cuda.synchronize()
    poison = torch.full(u.shape, float("nan"), dtype=u.dtype, device=u.device)
    ptr = poison.data_ptr()
    del poison
    y = run(u, filt, pre, post)
    torch.cuda.synchronize()
    assert y.data_ptr() == ptr, "allocator did not hand the poisoned block back; the poison check would be void"
    assert not torch.isnan(y).any(), "some outputs were never written"
    return y


def _case(seq_len, channels, batch, dtype, gated, filter_len=None, seed=0):
    gen = torch.Generator().manual_seed(seed * 7919 + seq_len)
    dev = torch.device("cuda")
    taps = _long_filter(channels, filter_len or seq_len, gen)
    bias = torch.randn(channels, generator=gen)
    u = torch.randn(batch, channels, seq_len, generator=gen).to(dev, dtype)
    pre = torch.randn(batch, channels, seq_len, generator=gen).to(dev, dtype) if gated else None
    post = torch.randn(batch, channels, seq_len, generator=gen).to(dev, dtype) if gated else None
    return u, LongFilter(taps.to(dev), bias.to(dev)), taps, bias, pre, post


SWEEP = [1, 2, 3, 17, 512, 1000, 2048, 4097, 16383, 16384, 16385, 65536, 100_003, 262_145, 1_000_003]


@pytest.mark.parametrize("seq_len", SWEEP)
@pytest.mark.parametrize("gated", [False, True])
def test_bf16_matches_float64(seq_len, gated):
    channels = 19 if seq_len <= 100_003 else 5  # never a multiple of 16
    u, filt, taps, bias, pre, post = _case(seq_len, channels, 1, torch.bfloat16, gated)
    from genoconv.ops import backend_for

    assert backend_for(u, filt) == "cuda"
    y = _run_poisoned(u, filt, pre, post)
    assert y.dtype == u.dtype and y.shape == u.shape
    err = _rel(y, _oracle(u, taps, bias, pre, post))
    assert err <= BF16_TOL, f"rel L2 {err:.2e} at L={seq_len}"


@pytest.mark.slow
@pytest.mark.parametrize("seq_len", [2_220_382, 4_194_304])
def test_bf16_longest(seq_len):
    u, filt, taps, bias, pre, post = _case(seq_len, 3, 1, torch.bfloat16, True)
    y = _run_poisoned(u, filt, pre, post)
    assert _rel(y, _oracle(u, taps, bias, pre, post)) <= BF16_TOL


@pytest.mark.parametrize("seq_len", [3, 1000, 16384, 70_001])
@pytest.mark.parametrize("gated", [False, True])
def test_fp16_matches_float64(seq_len, gated):
    u, filt, taps, bias, pre, post = _case(seq_len, 7, 3, torch.float16, gated, seed=1)
    y = _run_poisoned(u, filt, pre, post)
    assert _rel(y, _oracle(u, taps, bias, pre, post)) <= FP16_TOL


@pytest.mark.parametrize("seq_len,filter_len", [(5000, 300), (300, 5000), (4096, 1), (40_000, 1234), (70_000, 200_000)])
def test_partial_and_overlong_filters(seq_len, filter_len):
    u, filt, taps, bias, pre, post = _case(seq_len, 5, 2, torch.bfloat16, False, filter_len=filter_len, seed=2)
    y = _run_poisoned(u, filt, pre, post)
    assert _rel(y, _oracle(u, taps, bias, pre, post)) <= BF16_TOL


@pytest.mark.parametrize("seq_len", [777, 50_001])
def test_strided_inputs(seq_len):
    gen = torch.Generator().manual_seed(seq_len)
    dev = torch.device("cuda")
    taps = _long_filter(6, seq_len, gen)
    bias = torch.randn(6, generator=gen)
    wide = torch.randn(3, 12, seq_len, generator=gen).to(dev, torch.bfloat16)
    u = wide[:, ::2]  # channel stride 2*L, batch stride 12*L
    pre = torch.randn(3, 6, 2 * seq_len, generator=gen).to(dev, torch.bfloat16)[..., ::2]  # non-unit seq stride
    post = torch.randn(6, 3, seq_len, generator=gen).to(dev, torch.bfloat16).transpose(0, 1)  # permuted
    filt = LongFilter(taps.to(dev), bias.to(dev))
    y = causal_conv(u, filt, pre, post)
    # unit stride along L; rows padded to 16 bytes for the projections' GEMMs (ops.layout): the tensor-core kernel's
    # (777) and the long path's (50,001)
    assert y.stride(-1) == 1 and aligned_rows(y) and not y.is_contiguous()
    assert _rel(y, _oracle(u, taps, bias, pre, post)) <= BF16_TOL


def test_fft_oracle_agrees_with_direct():
    gen = torch.Generator().manual_seed(11)
    u = torch.randn(2, 3, 3000, generator=gen, dtype=torch.float64)
    taps, bias = _long_filter(3, 3000, gen), torch.randn(3, generator=gen)
    direct = causal_conv_direct(u, taps, bias)
    x = u.cuda()
    k = taps.cuda().double()
    n = 8192
    fft = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :3000] + x * bias.cuda().double()[:, None]
    assert _rel(fft.cpu(), direct) < 1e-12


def test_errors_are_exceptions():
    cuda = _cuda()
    u = torch.randn(1, 2, 100, device="cuda", dtype=torch.bfloat16)
    filt = LongFilter(torch.randn(2, 100, device="cuda"))
    bad_spec = torch.zeros(3, 5, 4, device="cuda")
    ptw = torch.zeros(65, 2, device="cuda")
    tw = torch.zeros(128, 2, device="cuda")
    with pytest.raises(RuntimeError, match="spectrum"):
        torch.ops.genoconv_fftconv.causal_conv(u, bad_spec, ptw, tw, None, None, 8, 0)
    with pytest.raises(RuntimeError, match="inner size"):  # a multi-pass split whose inner rows are too short
        torch.ops.genoconv_fftconv.causal_conv(u, torch.zeros(2, 68, 4, device="cuda"),
                                               torch.zeros(68, 2, device="cuda"), tw, None, None, 8, 5)
    with pytest.raises(ValueError):
        cuda.causal_conv_cuda(u, filt, torch.ones_like(u, dtype=torch.float32), None)


def test_status_reports_built():
    """The build carries native code for every arch it was asked for (sm_80 and sm_90 unless GENOCONV_CUDA_ARCHS
    narrowed it, as the device scripts do to halve the build)."""
    from genoconv.ops import build

    st = _cuda().status()
    assert st["built"] and set(build.ARCHS) <= set(st["archs"]), st


@pytest.mark.parametrize("seq_len,path,scalar", [(3000, "monarch", False), (300_001, "long", False),
                                                 (1_000_003, "long", False), (300_001, "3-pass", True)])
@pytest.mark.parametrize("keep", [0.5, 0.25])
def test_frequency_sparse_runs_in_the_kernels(seq_len, path, scalar, keep, monkeypatch):
    """F < 1 takes the kernels (it ran on the reference before): the spectrum cut at the path's own N, checked
    against the float64 definition at that N; gated, B = 2, H = 3, poisoned outputs."""
    from genoconv.ops import backend_for

    if scalar:
        monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "scalar")
    cuda = _cuda()
    gen = torch.Generator().manual_seed(seq_len % 97 + int(keep * 8))
    taps = _long_filter(3, seq_len, gen)
    bias = torch.randn(3, generator=gen)
    u, pre, post = (torch.randn(2, 3, seq_len, generator=gen).to("cuda", torch.bfloat16) for _ in range(3))
    filt = LongFilter(taps.cuda(), bias.cuda(), freq_keep=keep)
    assert backend_for(u, filt) == "cuda"
    got_path, how = cuda.path_plan(seq_len, seq_len, u.device, pre=True, post=True, exact=False)  # a cut spectrum
    assert got_path == path
    log_n = how if path == "monarch" else how[0]
    y = _run_poisoned(u, filt, pre, post)
    want = _fft_oracle(u, taps, bias, pre, post, 1 << log_n, keep)
    assert _rel(y, want) < BF16_TOL
    exact = _oracle(u, taps, bias, pre, post)
    assert _rel(want, exact) > 10 * BF16_TOL  # the cut is a real change, so the check above is not the exact one


def test_custom_ops_under_torch_compile(monkeypatch):
    u, filt, taps, bias, pre, post = _case(3000, 4, 2, torch.bfloat16, True, seed=5)
    cuda = _cuda()
    checks = ("test_schema", "test_faketensor")

    # Tensor-core op (L = 3000 -> N = 2^13), forced so the test holds whatever the default dispatch.
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "monarch")
    eager = cuda.causal_conv_cuda(u, filt, pre, post)
    log_n = cuda.monarch_log_n(3000)
    spec, gain = filt.cached(("cuda_monarch", log_n, 3000, str(u.device)), lambda: None)
    torch.library.opcheck(torch.ops.genoconv_fftconv.causal_conv_monarch.default, (u, spec, gain, pre, post, log_n),
                          test_utils=checks)

    @torch.compile(fullgraph=True)
    def f_monarch(a, g1, g2):
        return torch.ops.genoconv_fftconv.causal_conv_monarch(a, spec, gain, g1, g2, log_n) * 2

    assert torch.equal(f_monarch(u, pre, post), eager * 2)

    # Scalar op.
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "scalar")
    eager = cuda.causal_conv_cuda(u, filt, pre, post)
    log_n, log_n1 = cuda.plan(3000, 3000, u.device)
    spec = filt.cached(("cuda_spectrum", log_n, log_n1, 3000, str(u.device)), lambda: None)
    _, ptw, tw = cuda._cached_tables(log_n, log_n1, u.device)
    torch.library.opcheck(torch.ops.genoconv_fftconv.causal_conv.default, (u, spec, ptw, tw, pre, post, log_n, log_n1),
                          test_utils=checks)

    @torch.compile(fullgraph=True)
    def f(a, g1, g2):
        return torch.ops.genoconv_fftconv.causal_conv(a, spec, ptw, tw, g1, g2, log_n, log_n1) * 2

    assert torch.equal(f(u, pre, post), eager * 2)


@pytest.mark.parametrize("seq_len", [1000, 40_001])
def test_misaligned_rows(seq_len):
    # Rows starting at odd element offsets (no 32-bit vector access possible) take the scalar path.
    gen = torch.Generator().manual_seed(seq_len + 1)
    dev = torch.device("cuda")
    taps, bias = _long_filter(3, seq_len, gen), torch.randn(3, generator=gen)
    wide = torch.randn(2, 3, seq_len + 1, generator=gen).to(dev, torch.float16)
    u = wide[..., 1:]
    g = torch.randn(2, 3, seq_len + 1, generator=gen).to(dev, torch.float16)[..., 1:]
    filt = LongFilter(taps.to(dev), bias.to(dev))
    y = causal_conv(u, filt, g, g)
    assert _rel(y, _oracle(u, taps, bias, g, g)) <= FP16_TOL


@pytest.mark.parametrize("log_n,log_n1", [(10, 0), (14, 0), (15, 0), (17, 4), (23, 9)])
def test_tables_on_gpu_match_cpu(log_n, log_n1):
    # The kernel-order tables are built on the GPU; integer layout must not depend on GPU float rounding.
    cuda = _cuda()
    k_gpu, ptw_gpu, tw_gpu = cuda._tables(log_n, log_n1, torch.device("cuda"))
    k_cpu, ptw_cpu, tw_cpu = cuda._tables(log_n, log_n1, torch.device("cpu"))
    assert torch.equal(k_gpu.cpu(), k_cpu)
    assert (ptw_gpu.cpu() - ptw_cpu).abs().max() < 1e-6 and (tw_gpu.cpu() - tw_cpu).abs().max() < 1e-6


# ---- tensor-core Monarch path (fftconv_monarch.cu: N = 2^10 ... 2^15, two batch rows per block) ----------------

MONARCH_LENS = [257, 300, 512, 777, 1024, 2047, 2048, 3000, 4096, 6000, 8192, 12345, 16384]


@pytest.mark.parametrize("seq_len", MONARCH_LENS)
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_monarch_path_matches_float64(seq_len, batch, monkeypatch):
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "monarch")  # every size it can take, default-dispatched or not
    cuda = _cuda()
    assert cuda.monarch_log_n(seq_len) is not None, "this length should take the tensor-core path"
    gated = batch != 2
    u, filt, taps, bias, pre, post = _case(seq_len, 7, batch, torch.bfloat16, gated, seed=5)
    y = _run_poisoned(u, filt, pre, post)
    ref = _oracle(u, taps, bias, pre, post)
    # Per batch row: the odd row rides as the imaginary part of a pair, the last row of an odd batch alone.
    for b in range(batch):
        err = _rel(y[b], ref[b])
        assert err <= 3e-3, f"rel L2 {err:.2e} at L={seq_len}, batch row {b} of {batch}"


@pytest.mark.parametrize("seq_len", [512, 4096, 16384])
def test_monarch_fp16_and_scalar_path_agree(seq_len, monkeypatch):
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "monarch")
    u, filt, taps, bias, pre, post = _case(seq_len, 5, 4, torch.float16, True, seed=6)
    ref = _oracle(u, taps, bias, pre, post)
    y_monarch = _run_poisoned(u, filt, pre, post)
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "scalar")
    assert _cuda().monarch_log_n(seq_len) is None
    y_scalar = causal_conv(u, filt, pre, post)
    assert _rel(y_monarch, ref) <= FP16_TOL and _rel(y_scalar, ref) <= FP16_TOL


@pytest.mark.parametrize("scale", [1e-30, 1e-6, 1e4, 1e30])
def test_monarch_input_and_filter_scales(scale, monkeypatch):
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "monarch")
    # The kernel's fp16 operands are scaled per block (input) and per channel (spectrum gain): any bf16 magnitude works.
    u, filt, taps, bias, pre, post = _case(2048, 3, 2, torch.bfloat16, False, seed=7)
    u = (u.double() * scale).to(torch.bfloat16)
    small = LongFilter(filt.taps * 1e-8, filt.bias * 1e-8)
    for f, t, bb in ((filt, taps, bias), (small, taps * 1e-8, bias * 1e-8)):
        y = causal_conv(u, f)
        ref = _oracle(u, t, bb, None, None)
        assert torch.isfinite(y).all()
        assert _rel(y, ref) <= 3e-3, f"scale {scale}"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_monarch_non_finite_row_stays_in_its_row(bad, monkeypatch):
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "monarch")
    # Rows b and b+1 share a block as one complex signal; a non-finite sample must not leak into the partner row.
    u, filt, taps, bias, *_ = _case(1000, 2, 2, torch.bfloat16, False, seed=8)
    u[0, 1, 10] = bad
    y = causal_conv(u, filt)
    assert torch.isnan(y[0, 1]).all()  # as an FFT convolution of that row gives
    clean = _oracle(u[:, :1], taps[:1], bias[:1], None, None)
    assert _rel(y[:, 0], clean[:, 0]) <= 3e-3
    assert torch.isfinite(y[1]).all()


def _chan(x, sel):
    return None if x is None else x[:, sel]


@pytest.mark.parametrize("seq_len", [300, 3001, 16384])
@pytest.mark.parametrize("gated", [False, True])
def test_monarch_several_units_per_block(seq_len, gated, monkeypatch):
    # Persistent blocks copy the next unit's rows into shared memory (cp.async) while transforming the current one:
    # enough channels that every block serves several units, an odd batch (a lone last row), per-row errors.
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "monarch")
    props = torch.cuda.get_device_properties(0)
    channels = max(64, 3 * props.multi_processor_count * (8 if seq_len <= 512 else 1))
    u, filt, taps, bias, pre, post = _case(seq_len, channels, 3, torch.bfloat16, gated, seed=9)
    y = _run_poisoned(u, filt, pre, post)
    sel = torch.arange(0, channels, max(1, channels // 24), device=u.device)  # spread over all blocks' units
    ref = _oracle(_chan(u, sel), taps[sel.cpu()], bias[sel.cpu()], _chan(pre, sel), _chan(post, sel))
    for b in range(3):
        err = _rel(y[b, sel], ref[b])
        assert err <= 3e-3, f"rel L2 {err:.2e} at L={seq_len}, batch row {b}"


@pytest.mark.parametrize("offset", [1, 2, 8])
@pytest.mark.parametrize("gated", [False, True])
def test_monarch_row_alignment(offset, gated, monkeypatch):
    # Rows are copied by cp.async only when 16-byte aligned; others take plain loads. A row stride of L + 3 samples
    # mixes both within one launch; offset 1 leaves no row even 4-byte aligned. L = 1001 is no multiple of 8 (the
    # last 16-byte chunk is partial).
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "monarch")
    seq_len, channels = 1001, 2 * torch.cuda.get_device_properties(0).multi_processor_count * 8
    gen = torch.Generator().manual_seed(offset + 100 * gated)
    dev = torch.device("cuda")
    taps, bias = _long_filter(channels, seq_len, gen), torch.randn(channels, generator=gen)
    def strided():
        return torch.randn(2, channels, seq_len + 3 + offset, generator=gen).to(dev, torch.bfloat16)[..., offset:offset + seq_len]
    u = strided()
    pre, post = (strided(), strided()) if gated else (None, None)
    filt = LongFilter(taps.to(dev), bias.to(dev))
    y = causal_conv(u, filt, pre, post)
    sel = torch.arange(0, channels, 37, device=dev)  # rows of every alignment class (the stride is odd)
    ref = _oracle(_chan(u, sel), taps[sel.cpu()], bias[sel.cpu()], _chan(pre, sel), _chan(post, sel))
    assert _rel(y[:, sel], ref) <= 3e-3


@pytest.mark.parametrize("seq_len", [1000, 16384])
@pytest.mark.parametrize("gated", [False, True])
def test_monarch_matched_filter_peak(seq_len, gated, monkeypatch):
    # An input that is the time-reversed sign pattern of its filter piles all taps onto one output sample (a peak
    # ~sqrt(L) above the rest): the kernel's fp16 intermediates must keep that in range (no inf, same error).
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "monarch")
    u, filt, taps, bias, pre, post = _case(seq_len, 4, 2, torch.bfloat16, gated, seed=11)
    u = torch.sign(taps.flip(-1)).to(u.device, u.dtype).expand(2, -1, -1).contiguous() * 3.0
    if gated:
        pre = torch.ones_like(pre) * 0.5
    y = causal_conv(u, filt, pre, post)
    ref = _oracle(u, taps, bias, pre, post)
    assert torch.isfinite(y).all()
    assert ref.abs().amax() > 5 * ref.abs().mean()  # the case is peaky
    assert _rel(y, ref) <= 3e-3


# Partial convolution (filter much shorter than the row): overlapping blocks through the tensor-core kernel.
PARTIAL_CASES = [
    (16_385, 1000, 1, 19, False, torch.bfloat16),  # head block plus a one-sample tail
    (40_001, 1026, 3, 5, True, torch.bfloat16),  # odd batch: per-row middle calls
    (16_384 + 15_352 * 3, 1026, 2, 7, False, torch.float16),  # ends exactly on a block: no tail
    (100_003, 8193, 1, 19, True, torch.bfloat16),  # half of each block kept
    (300_001, 12_288, 2, 5, False, torch.bfloat16),  # a quarter kept (the limit)
    (2_000_003, 1026, 1, 3, True, torch.bfloat16),  # gene length
]


@pytest.mark.parametrize("seq_len,filter_len,batch,channels,gated,dtype", PARTIAL_CASES)
def test_partial_blocks_match_float64(seq_len, filter_len, batch, channels, gated, dtype):
    cuda = _cuda()
    u, filt, taps, bias, pre, post = _case(seq_len, channels, batch, dtype, gated, filter_len=filter_len, seed=3)
    blocks = cuda.partial_plan(seq_len, filter_len, pre=gated, post=gated, smem_per_block=cuda._smem_per_block(u.device))
    assert blocks is not None
    # The tensor-core blocks themselves (for K past ~6K at these lengths the dispatch prefers the long path's)
    y = _run_poisoned(u, filt, pre, post, run=lambda *a: cuda._run_path(*a, "blocks", blocks))
    err = _rel(y, _oracle(u, taps, bias, pre, post))
    assert err <= (BF16_TOL if dtype == torch.bfloat16 else FP16_TOL), f"rel L2 {err:.2e}"


TOEPLITZ_CASES = [
    (32_768, 32_768, 2, 19, False, torch.bfloat16),  # two whole blocks, full filter
    (20_001, 20_001, 1, 5, True, torch.bfloat16),  # a short last block, gated, a lone row
    (16_385, 16_385, 3, 7, True, torch.float16),  # a one-sample last block, odd batch
    (40_000, 40_000, 2, 3, True, torch.bfloat16),  # three blocks
    (45_001, 17_000, 1, 6, False, torch.bfloat16),  # three blocks, a pair holding only the tail of filter block 1
]


@pytest.mark.parametrize("seq_len,filter_len,batch,channels,gated,dtype", TOEPLITZ_CASES)
def test_block_toeplitz_rows_match_float64(seq_len, filter_len, batch, channels, gated, dtype):
    # Rows of 2-3 blocks of N/2 on the tensor-core kernel: the plain calls write y, the pairs [h_i | h_(i-1)] add into
    # it (causal_conv_monarch_add; a shorter last block takes its outputs only); a poisoned output shows a block no
    # call wrote, and a NaN input poisons the blocks that read it (block 0 feeds every block, the last only itself).
    cuda = _cuda()
    u, filt, taps, bias, pre, post = _case(seq_len, channels, batch, dtype, gated, filter_len=filter_len, seed=17)
    plan = cuda.toeplitz_plan(seq_len, pre=gated, post=gated, smem_per_block=cuda._smem_per_block(u.device))
    assert plan is not None
    y = _run_poisoned(u, filt, pre, post, run=lambda *a: cuda._run_path(*a, "toeplitz", plan))
    err = _rel(y, _oracle(u, taps, bias, pre, post))
    assert err <= (BF16_TOL if dtype == torch.bfloat16 else FP16_TOL), f"rel L2 {err:.2e}"
    half = 1 << (plan[0] - 1)
    bad = u.clone()
    bad[0, 1, 3] = float("nan")
    yb = cuda._run_path(bad, filt, pre, post, "toeplitz", plan)
    reached = half * min(plan[1], -(-min(filter_len, seq_len) // half) + 1)  # blocks 0 .. filter blocks
    assert torch.isnan(yb[0, 1, :reached]).all()
    assert torch.equal(yb[0, 1, reached:], y[0, 1, reached:])
    rest = torch.ones(batch, channels, dtype=torch.bool)
    rest[0, 1] = False  # its batch partner (rows b, b + 1 ride as one complex signal) may round differently
    assert torch.isfinite(yb[rest]).all() and _rel(yb[rest], y[rest]) <= BF16_TOL


def test_block_toeplitz_is_the_dispatch_for_16k_to_48k_rows():
    cuda = _cuda()
    dev = torch.device("cuda")
    if cuda.monarch_log_n(16_384, smem_per_block=cuda._smem_per_block(dev)) != 15:
        pytest.skip("this device's shared memory does not hold the tensor-core kernel's 2^15")
    for seq_len in (16_385, 32_768, 49_152):
        assert cuda.path_plan(seq_len, seq_len, dev)[0] == "toeplitz"
    assert cuda.path_plan(65_536, 65_536, dev)[0] == "long"


@pytest.mark.parametrize("offset,seq_len,k", [(0, 70_001, 2000), (1, 70_001, 2000), (0, 20_001, 20_001),
                                              (1, 20_001, 20_001)])
def test_partial_blocks_strided_and_misaligned(offset, seq_len, k):
    # Channel-strided u, a non-unit-stride pre-gate (copied), a permuted post-gate, rows not 16-byte aligned: the
    # tensor-core kernel's partial-convolution blocks (K = 2000) and its block-Toeplitz rows (K = L = 20,001).
    cuda = _cuda()
    gen = torch.Generator().manual_seed(11 + offset)
    dev = torch.device("cuda")
    channels = 6
    assert cuda.path_plan(seq_len, k, dev, pre=True, post=True)[0] == ("blocks" if k < 12_288 else "toeplitz")
    taps = _long_filter(channels, k, gen)
    bias = torch.randn(channels, generator=gen)
    wide = torch.randn(2, 2 * channels, seq_len + offset, generator=gen).to(dev, torch.bfloat16)
    u = wide[:, ::2, offset:]
    pre = torch.randn(2, channels, 2 * seq_len, generator=gen).to(dev, torch.bfloat16)[..., ::2]
    post = torch.randn(channels, 2, seq_len, generator=gen).to(dev, torch.bfloat16).transpose(0, 1)
    y = causal_conv(u, LongFilter(taps.to(dev), bias.to(dev)), pre, post)
    assert _rel(y, _oracle(u, taps, bias, pre, post)) <= BF16_TOL


@pytest.mark.parametrize("path,seq_len,filter_len,batch", [
    ("long_blocks", 600_001, 12_000, 3), ("long_blocks", 270_000, 16_001, 1), ("long_blocks", 2_097_152, 16_384, 1),
    ("long_split", 70_001, 70_001, 3), ("long_split", 150_000, 150_000, 2), ("long_split", 1_200_000, 1_000_002, 1),
    ("long_split", 2_220_382, 2_220_382, 1)])
def test_long_blocks_and_split_rows_gates_and_views(path, seq_len, filter_len, batch):
    # A row the long path runs in parts, on strided views: overlap-save blocks for K << L (head, middle blocks per
    # batch row, a tail planned for its own length), or split by filter taps where L + K - 1 lies just past a power of
    # two (head: taps [0, P) over the whole row; rest: taps [P, K) over inputs [0, L - P), added to outputs [P, L); the
    # rest on the tensor-core kernel, split again, or on the long path, as in the DMD shape). Poisoned output, gates, a
    # channel-strided view, and NaN rows that must be NaN throughout.
    cuda = _cuda()
    dev = torch.device("cuda")
    assert cuda.path_plan(seq_len, filter_len, dev, pre=True, post=True)[0] == path
    channels = 3 if seq_len < 1_000_000 else 2
    u, filt, taps, bias, pre, post = _case(seq_len, channels, batch, torch.bfloat16, True, filter_len=filter_len,
                                           seed=13)
    y = _run_poisoned(u, filt, pre, post)
    assert _rel(y, _oracle(u, taps, bias, pre, post)) <= BF16_TOL
    plain = causal_conv(u, filt)
    assert _rel(plain, _oracle(u, taps, bias, None, None)) <= BF16_TOL
    wide = torch.stack([u, u], dim=2).flatten(1, 2)[:, ::2]  # u again, with channel stride 2 L
    assert _rel(causal_conv(wide, filt, pre, post), y) <= 1e-6
    for where in (seq_len - 3, 5):  # read by the last block (the head part) only; by the first block (every part)
        bad = u.clone()
        bad[0, 1, where] = float("nan")
        yb = causal_conv(bad, filt, pre, post)
        assert torch.isnan(yb[0, 1]).all()  # as an FFT convolution of that row gives
        rest = torch.ones(batch, channels, dtype=torch.bool)
        rest[0, 1] = False
        if path == "long_blocks":  # per-row input scales: no other row changes
            assert torch.equal(yb[rest], y[rest])
        else:  # a rest part on the tensor-core kernel scales batch rows b, b + 1 together: the partner's rounding moves
            assert torch.isfinite(yb[rest]).all() and _rel(yb[rest], y[rest]) <= BF16_TOL


@pytest.mark.parametrize("past,chunk,filter_len", [(49_999, 60_001, 50_000), (999_999, 1_000_003, 1_000_000)])
def test_streamed_chunk_is_circular_and_exact(past, chunk, filter_len):
    # [K-1 carried gated inputs | chunk]: the transform is sized for the row alone (overlap-save), not row + K - 1.
    cuda = _cuda()
    u, filt, taps, bias, pre, post = _case(past + chunk, 3, 1, torch.bfloat16, True, filter_len=filter_len, seed=4)
    history = (u * pre)[..., :past]
    y = causal_conv(u[..., past:], filt, pre[..., past:], post[..., past:], history=history)
    want = _oracle(u * pre, taps, bias, None, None)[..., past:] * post[..., past:].double()  # gated in bf16, as streamed
    assert _rel(y, want) <= BF16_TOL
    log_n = cuda.fft_plan(past + chunk, 1)
    assert log_n < cuda.fft_plan(past + chunk, filter_len)
    assert any(key[0] in ("cuda_spectrum", "cuda_long") and key[1] == log_n for key in filt._cache), list(filt._cache)


@pytest.mark.parametrize("seq_len,filter_len", [(40_001, 20_000), (50_001, 50_001), (100_001, 100_001),
                                                (400_001, 400_001), (700_000, 60_000), (3_000_000, 3_000_000)])
def test_long_path_rows_gates_and_views(seq_len, filter_len):
    # The long path (outer DFTs around the tensor-core kernel) on the whole row: N = 2^16 (R = 16, scalar outer
    # passes), 2^17 and 2^18 (R = 256 around the circular kernel's r = 2, 4), 2^20, 2^23 (R = 512); several rows and
    # channels not a multiple of anything, gates, a row view with a batch stride, one row with a NaN.
    cuda = _cuda()
    dev = torch.device("cuda")
    plan = cuda.long_plan(seq_len, filter_len, smem_per_block=cuda._smem_per_block(dev))
    assert plan is not None and cuda.path_plan(seq_len, filter_len, dev, pre=True, post=True)[0] == "long"
    batch, channels = (3, 5) if seq_len < 1_000_000 else (1, 3)
    u, filt, taps, bias, pre, post = _case(seq_len, channels, batch, torch.bfloat16, True, filter_len=filter_len,
                                           seed=11)
    y = _run_poisoned(u, filt, pre, post)
    assert _rel(y, _oracle(u, taps, bias, pre, post)) <= BF16_TOL
    wide = torch.stack([u, u], dim=2).flatten(1, 2)[:, ::2]  # u again, with channel stride 2 L
    assert _rel(causal_conv(wide, filt, pre, post), y) <= 1e-6
    bad = u.clone()
    bad[0, 1, seq_len // 3] = float("nan")
    yb = causal_conv(bad, filt, pre, post)
    assert torch.isnan(yb[0, 1]).all()  # as an FFT convolution of that row gives
    rest = torch.ones(batch, channels, dtype=torch.bool)
    rest[0, 1] = False
    assert torch.equal(yb[rest], y[rest])  # and no other row changes


@pytest.mark.parametrize("dtype,gated,offset", [(torch.bfloat16, False, 0), (torch.float16, True, 3)])
def test_row_scales_op_equals_the_python_scales(dtype, gated, offset):
    # long_row_scales (the scales a row's overlap-save blocks share): bitwise cuda._in_scale's on channel-strided
    # views, rows not 16-byte aligned, a NaN row, an inf gate, an all-zero row, peaks past the first chunk.
    cuda = _cuda()
    dev = torch.device("cuda")
    seq_len = 300_001
    gen = torch.Generator().manual_seed(23)
    u = torch.randn(2, 8, seq_len + offset, generator=gen).to(dtype).to(dev)[:, ::2, offset:]
    pre = torch.randn(2, 8, seq_len + offset, generator=gen).to(dtype).to(dev)[:, ::2, offset:] if gated else None
    u[1, 2, 777] = float("nan")
    u[0, 1] = 0
    u[0, 0, seq_len - 1], u[1, 3, 200_001] = 300.0, -100.0
    if gated:
        pre[1, 0, 5] = float("inf")
    got = torch.ops.genoconv_fftconv.long_row_scales(u, pre)
    assert got.shape == (4, 2) and got.dtype == torch.float32
    assert torch.equal(got, cuda._in_scale(u, pre))
    assert got[2, 1] == 0 and (got[0, 1] == 0) == gated
    with pytest.raises(RuntimeError, match="at least one sample"):
        torch.ops.genoconv_fftconv.long_row_scales(u[..., :0], None)


@pytest.mark.parametrize("dtype,gated,offset", [(torch.bfloat16, False, 0), (torch.float16, True, 0),
                                                (torch.bfloat16, True, 3)])
def test_long_path_scales_in_the_op_match_the_python_ones(dtype, gated, offset, monkeypatch):
    # The whole-row long path lets the op compute its rows' input scales (a peak pass per channel block) instead of
    # taking cuda._in_scale's: the outputs must be bitwise the same, with rows holding inf/NaN, an all-zero row, a
    # row of tiny values, rows not 16-byte aligned (offset), and channel blocks of one channel (a small workspace).
    cuda = _cuda()
    dev = torch.device("cuda")
    seq_len, channels, batch = 100_001, 5, 2
    gen = torch.Generator().manual_seed(21)
    base = torch.randn(batch, channels, seq_len + offset, generator=gen).to(dtype)
    u = base.to(dev)[..., offset:]
    u[0, 1, 777] = float("nan")
    u[1, 2, 5] = float("inf")
    u[1, 0] = 0
    u[0, 3] = u[0, 3] * 1e-3
    # Peaks a binade above the rest decide their rows' scales: at an odd index, in the second peak chunk (32,768
    # samples a block), at the last sample (of row (0, 4), and of row (0, 0), 16-byte aligned at offset 0: one of its
    # L % 8 samples past the 16-byte words, which the packed maximum once dropped).
    u[0, 0, 1001], u[1, 1, 40_001], u[0, 4, seq_len - 1] = 40.0, -100.0, 300.0
    u[0, 0, seq_len - 1] = 500.0
    taps = _long_filter(channels, seq_len, gen)
    filt = LongFilter(taps.to(dev), torch.randn(channels, generator=gen).to(dev))
    pre = torch.randn(batch, channels, seq_len + offset, generator=gen).to(dtype).to(dev)[..., offset:] if gated else None
    post = torch.rand(batch, channels, seq_len, generator=gen).to(dtype).to(dev) if gated else None
    path, how = cuda.path_plan(seq_len, seq_len, dev, pre=gated, post=gated)
    assert path == "long"
    own = cuda._run_path(u, filt, pre, post, path, how)
    real_op = cuda._long_op

    def python_scales(f, uv, prev, postv, y, in_scale, *rest, op=None):
        assert in_scale is None
        return real_op(f, uv, prev, postv, y, cuda._in_scale(uv, prev), *rest, op=op)

    monkeypatch.setattr(cuda, "_long_op", python_scales)
    want = cuda._run_path(u, filt, pre, post, path, how)
    assert torch.equal(own.isnan(), want.isnan()) and torch.equal(own.nan_to_num(), want.nan_to_num())
    assert own[0, 1].isnan().all() and own[1, 2].isnan().all() and (own[1, 0] == 0).all()
    monkeypatch.setenv("GENOCONV_LONG_WORK_BYTES", "1")  # one channel per launch
    small = cuda._run_path(u, filt, pre, post, path, how)
    assert torch.equal(small.isnan(), want.isnan()) and torch.equal(small.nan_to_num(), want.nan_to_num())
