"""The fp32 FFT reference against the float64 direct convolution, and the dispatch contract."""

import math

import pytest
import torch

from genoconv.ops import LongFilter, backend_for, causal_conv, causal_conv_direct, causal_conv_ref, fft_size


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _long_filter(channels: int, taps: int, gen: torch.Generator) -> torch.Tensor:
    # A realistic long filter: slowly decaying noise plus an oscillation, energy spread over all taps.
    t = torch.arange(taps, dtype=torch.float64)
    decay = torch.exp(-t[None] * torch.rand(channels, 1, generator=gen, dtype=torch.float64) * 3.0 / taps)
    k = torch.randn(channels, taps, generator=gen, dtype=torch.float64) * decay / taps**0.5
    return (k + 0.1 * torch.cos(t[None] * 0.01) / taps**0.5).float()


@pytest.mark.parametrize("seq_len", [1, 2, 3, 17, 128, 1000, 4097, 16384])
@pytest.mark.parametrize("gated", [False, True])
def test_reference_equals_float64_direct(seq_len, gated):
    gen = torch.Generator().manual_seed(seq_len)
    batch, channels = (2, 5) if seq_len <= 4097 else (1, 2)  # the float64 oracle is O(L^2)
    u = torch.randn(batch, channels, seq_len, generator=gen)
    k = _long_filter(channels, seq_len, gen)
    bias = torch.randn(channels, generator=gen)
    pre = torch.randn(batch, channels, seq_len, generator=gen) if gated else None
    post = torch.randn(batch, channels, seq_len, generator=gen) if gated else None
    y = causal_conv_ref(u, LongFilter(k, bias), pre, post)
    assert y.dtype == torch.float32 and y.shape == u.shape
    assert _rel(y, causal_conv_direct(u, k, bias, pre, post)) <= 1e-6


@pytest.mark.parametrize("seq_len,filter_len", [(5000, 300), (300, 5000), (4096, 1), (1234, 1234)])
def test_partial_and_overlong_filters(seq_len, filter_len):
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(1, 3, seq_len, generator=gen)
    k = _long_filter(3, filter_len, gen)
    bias = torch.randn(3, generator=gen)
    y = causal_conv(u, LongFilter(k, bias))
    assert _rel(y, causal_conv_direct(u, k, bias)) <= 1e-6


def test_direct_oracle_against_explicit_sum():
    gen = torch.Generator().manual_seed(3)
    u, k, bias = torch.randn(1, 2, 9, generator=gen), torch.randn(2, 4, generator=gen), torch.randn(2, generator=gen)
    y = causal_conv_direct(u, k, bias)
    for h in range(2):
        for t in range(9):
            want = sum(k[h, s].item() * u[0, h, t - s].item() for s in range(4) if t - s >= 0) + bias[h].item() * u[0, h, t].item()
            assert y[0, h, t].item() == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_spectrum_is_computed_once_per_size(monkeypatch):
    filt = LongFilter(torch.randn(4, 256), torch.zeros(4))
    calls = []
    real_rfft = torch.fft.rfft

    def counting_rfft(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return real_rfft(x, *args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft", counting_rfft)
    u = torch.randn(3, 4, 256)
    for _ in range(5):
        causal_conv(u, filt)
    filter_transforms = [s for s in calls if s == (4, 256)]
    assert len(filter_transforms) == 1  # the filter's spectrum once; the 5 signal transforms are (3, 4, 256)
    assert len(calls) == 6


def test_fft_size_is_linear_and_fast():
    for seq_len, filter_len in [(1, 1), (1000, 1000), (1000, 10), (16384, 16384), (2_220_382, 1_000_002)]:
        n = fft_size(seq_len, filter_len)
        assert n >= seq_len + filter_len - 1
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        assert m == 1


def test_fft_size_is_the_smallest_smooth_size():
    # The CPU's FFT size is the least 5-smooth n >= L + K - 1, found without stepping through the gap to it (near
    # 2M that gap is thousands of candidates, and every 1 Mbp call asked several times: ~0.7 s of host time).
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    gen = torch.Generator().manual_seed(5)
    for need in [2, 3, 7, 11, 97, 1000, 1025, 4097, *torch.randint(2, 5_000_000, (40,), generator=gen).tolist()]:
        n = fft_size(need, 1, "cpu")
        assert n >= need and smooth(n)
        assert not any(smooth(m) for m in range(need, n))


def test_frequency_sparse_keep_one_is_exact_and_less_keeps_low_bins():
    gen = torch.Generator().manual_seed(11)
    u, k = torch.randn(1, 2, 2048, generator=gen), _long_filter(2, 2048, gen)
    exact = causal_conv(u, LongFilter(k, None))
    assert torch.equal(causal_conv(u, LongFilter(k, None, freq_keep=1.0)), exact)
    sparse = LongFilter(k, None, freq_keep=0.25)
    n = fft_size(2048, 2048)
    spec = sparse.spectrum(n)
    keep = sparse.kept_bins(n)
    assert keep == math.ceil(0.25 * (n // 2 + 1))
    assert spec.shape == (2, keep)  # dropped bins are neither stored nor multiplied
    dense = torch.fft.rfft(k, n=n)
    dense[:, keep:] = 0
    x = torch.fft.irfft(torch.fft.rfft(u, n=n) * dense, n=n)[..., :2048]  # the same filter, zeroed explicitly
    assert _rel(causal_conv(u, sparse), x) < 1e-6
    err = _rel(causal_conv(u, sparse), exact)
    assert 0 < err < 1  # an approximation, reported by the quality benchmark, not hidden


def test_dispatch_uses_reference_on_cpu_and_checks_shapes():
    filt = LongFilter(torch.randn(4, 8), None)
    u = torch.randn(2, 4, 8)
    assert backend_for(u, filt) == "reference"
    with pytest.raises(ValueError, match="batch, 4, seq_len"):
        causal_conv(torch.randn(2, 3, 8), filt)
    with pytest.raises(ValueError, match="pregate"):
        causal_conv(u, filt, pregate=torch.randn(2, 4, 7))


def test_output_keeps_input_dtype():
    filt = LongFilter(torch.randn(4, 64), torch.randn(4))
    u = torch.randn(1, 4, 64).to(torch.bfloat16)
    y = causal_conv(u, filt)
    assert y.dtype == torch.bfloat16
    assert _rel(y, causal_conv_direct(u, filt.taps, filt.bias)) < 1e-2


def test_reference_is_differentiable_and_matches_inference():
    gen = torch.Generator().manual_seed(5)
    u = torch.randn(1, 3, 300, generator=gen, requires_grad=True)
    gate = torch.randn(1, 3, 300, generator=gen, requires_grad=True)
    taps = torch.randn(3, 300, generator=gen, requires_grad=True)
    y = causal_conv(u, LongFilter(taps, torch.zeros(3)), pregate=gate)
    y.square().sum().backward()
    assert u.grad is not None and gate.grad is not None and taps.grad is not None
    with torch.no_grad():
        assert torch.allclose(y, causal_conv(u, LongFilter(taps.detach(), torch.zeros(3)), pregate=gate), atol=1e-6)
