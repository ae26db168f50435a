"""The implicit filter equals the formulas of the official code (notes/hyenadna.md §1.3), computed independently."""

import math

import numpy as np
import torch

from genoconv.model import HyenaConfig, HyenaDNA


def _formula_filter(filter_fn, l_max: int, n_taps: int, shift: float) -> np.ndarray:
    """float64 numpy re-derivation: z = [t, cos(f w), -sin(f w)], MLP with sin(freq x), exp modulation + shift."""
    pos = np.arange(l_max, dtype=np.float64)
    t = np.linspace(0.0, 1.0, l_max)[:, None]
    w = 2 * math.pi * pos[:, None] / l_max
    f = np.linspace(1e-4, 1.0, 2)[None, :]  # bands = (5 - 1) // 2 = 2
    z = np.concatenate([t, np.cos(f * w), -np.sin(f * w)], axis=1)[:n_taps]
    seq = filter_fn.implicit_filter
    freq = seq[1].freq.detach().double().numpy()
    h = z
    for i in (0, 2, 4):
        lin = seq[i]
        h = np.sin(freq * (h @ lin.weight.detach().double().numpy().T + lin.bias.detach().double().numpy()))
    h = h @ seq[6].weight.detach().double().numpy().T
    d = h.shape[1]
    deltas = np.linspace(math.log(1e-2) / 1.5, math.log(1e-2) / 0.3, d)[None, :]
    h = h * (np.exp(-t[:n_taps] * np.abs(deltas)) + shift)
    return h.T  # (d, n_taps)


def test_filter_matches_official_formulas():
    cfg = HyenaConfig(d_model=32, n_layer=1, max_seq_len=4098)
    model = HyenaDNA(cfg).init_weights(seed=5)
    filt_fn = model.backbone.layers[0].mixer.filter_fn
    for n_taps in (1, 100, 4098):
        got = filt_fn.taps(n_taps).detach().double().numpy()
        want = _formula_filter(filt_fn, cfg.max_seq_len, n_taps, cfg.shift)
        assert got.shape == (32, n_taps)
        assert np.abs(got - want).max() <= 1e-6 * max(1.0, np.abs(want).max())


def test_shift_is_configurable_and_zero_matches_training_code():
    model = HyenaDNA(HyenaConfig(d_model=8, n_layer=1, max_seq_len=64, shift=0.0)).init_weights(seed=1)
    filt_fn = model.backbone.layers[0].mixer.filter_fn
    want = _formula_filter(filt_fn, 64, 64, 0.0)
    assert np.abs(filt_fn.taps(64).detach().double().numpy() - want).max() <= 1e-6


def test_taps_of_a_shorter_length_are_a_prefix():
    # Positions are normalised by l_max, not by the input length: filter(L) is the first L taps of filter(l_max).
    model = HyenaDNA(HyenaConfig(d_model=8, n_layer=1, max_seq_len=512)).init_weights(seed=2)
    filt_fn = model.backbone.layers[0].mixer.filter_fn
    assert torch.equal(filt_fn.taps(100), filt_fn.taps(512)[:, :100])


def test_filter_is_cached_until_a_parameter_changes():
    model = HyenaDNA(HyenaConfig(d_model=8, n_layer=1, max_seq_len=64)).init_weights(seed=3).eval()
    filt_fn = model.backbone.layers[0].mixer.filter_fn
    with torch.inference_mode():
        a = filt_fn.long_filter(64)
        assert filt_fn.long_filter(64) is a
    with torch.no_grad():
        filt_fn.implicit_filter[0].weight.add_(0.1)
    with torch.inference_mode():
        b = filt_fn.long_filter(64)
    assert b is not a and not torch.equal(a.taps, b.taps)


def test_kernel_calls_of_nearby_lengths_share_one_filter(monkeypatch):
    # On the CUDA kernels an exact call takes the next power of two of taps (at most K): taps past L never reach
    # outputs [0, L), so results are those of L taps, and records of lengths in (2^(m-1), 2^m] share one filter and its
    # per-FFT-size spectra. Checked here on the reference path (the same claim: extra taps change nothing).
    from genoconv.model import hyena

    model = HyenaDNA(HyenaConfig(d_model=16, n_layer=2, max_seq_len=4098)).init_weights(seed=4).eval()
    gen = torch.Generator().manual_seed(0)
    ids = {n: torch.randint(7, 11, (1, n), generator=gen) for n in (2049, 3000, 4000, 4096)}
    with torch.inference_mode():
        want = {n: model(x) for n, x in ids.items()}
    monkeypatch.setattr(hyena, "planned_backend", lambda device, dtype: "cuda")
    assert hyena.shared_taps(3000, 4098, torch.device("cpu"), torch.float32) == 4096
    assert hyena.shared_taps(4097, 4098, torch.device("cpu"), torch.float32) == 4098  # at most K
    assert hyena.shared_taps(1, 4098, torch.device("cpu"), torch.float32) == 1
    filt_fn = model.backbone.layers[0].mixer.filter_fn
    filters = set()
    with torch.inference_mode():
        for n, x in ids.items():
            got = model(x)
            torch.testing.assert_close(got, want[n], rtol=1e-4, atol=1e-5)
            filters.add(id(filt_fn.cached_filter()))
    assert len(filters) == 1 and filt_fn.cached_filter().filter_len == 4096
    monkeypatch.undo()
    with torch.inference_mode():
        model(ids[3000])
    assert filt_fn.cached_filter().filter_len == 3000  # the reference path keeps exactly L taps


def test_filters_of_several_lengths_stay_cached_side_by_side(monkeypatch):
    # Batches of different lengths alternate (the demo set's genes: 4096-tap batches between 16K-tap ones); each
    # layer keeps a filter per length with the spectra built for it, so coming back to a length reuses its filter (a
    # single entry rebuilt every spectrum at each switch: 704 builds in one demo-set run). A changed parameter makes
    # every cached filter stale; the budget still bounds what is kept.
    from genoconv.model import hyena

    monkeypatch.setattr(hyena, "planned_backend", lambda device, dtype: "cuda")
    model = HyenaDNA(HyenaConfig(d_model=16, n_layer=1, max_seq_len=9000)).init_weights(seed=4).eval()
    filt_fn = model.backbone.layers[0].mixer.filter_fn
    gen = torch.Generator().manual_seed(0)
    x3k, x8k = (torch.randint(7, 11, (1, n), generator=gen) for n in (3000, 8000))
    with torch.inference_mode():
        model(x3k)
        short = filt_fn.cached_filter()
        model(x8k)
        long = filt_fn.cached_filter()
        model(x3k)
        assert filt_fn.cached_filter() is short and short is not long
        assert (short.filter_len, long.filter_len) == (4096, 8192)
        model(x8k)
        assert filt_fn.cached_filter() is long
    with torch.no_grad():
        filt_fn.bias.add_(1.0)  # a parameter changed
    with torch.inference_mode():
        model(x3k)
    assert filt_fn.cached_filter() is not short and len(filt_fn._cache) == 1
    filt_fn.cache_bytes = 3 * 4096 * 16 * 4 + 1  # room for the 4096-tap filter's taps only, not for two filters
    with torch.inference_mode():
        model(x8k)
        model(x3k)
    assert len(filt_fn._cache) <= 1
