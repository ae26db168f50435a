"""Exact streaming: chunk-by-chunk with carried state equals one pass with the same (partial) filter."""

import pytest
import torch

from genoconv.model import HyenaConfig, HyenaDNA
from genoconv.model.hyena import ConvSettings, StreamState
from genoconv.ops.layout import carried_inputs

CFG = HyenaConfig(d_model=16, n_layer=3, max_seq_len=2050)


@pytest.fixture(scope="module")
def model():
    return HyenaDNA(CFG).init_weights(seed=21).eval()


def _ids(length, seed):
    return torch.randint(7, 12, (2, length), generator=torch.Generator().manual_seed(seed))


def _stream(model, ids, chunk, layers, conv=ConvSettings()):
    state = StreamState.empty(model.config.n_layer)
    parts, sizes = [], []
    with torch.inference_mode():
        for start in range(0, ids.shape[1], chunk):
            parts.append(model.hidden_states(ids[:, start:start + chunk], layers, state, conv))
            sizes.append(state.nbytes())
    return {k: torch.cat([p[k] for p in parts], 1) for k in parts[0]}, sizes, state


@pytest.mark.parametrize("filter_len,chunk,length", [
    (2050, 512, 10_000),   # L >> K, chunk < K
    (2050, 3000, 10_000),  # chunk > K, does not divide L
    (100, 37, 5_001),      # tiny chunks, odd length
    (1, 64, 1_000),        # K = 1: no history at all
    (777, 777, 7_770),     # chunk = K, divides L
    (2050, 1, 300),        # one base at a time
])
def test_streamed_equals_unstreamed(model, filter_len, chunk, length):
    layers = [0, 1, 2, 3, 4]
    conv = ConvSettings(filter_len=filter_len)
    ids = _ids(length, filter_len + chunk)
    with torch.inference_mode():
        whole = model.hidden_states(ids, layers, conv=conv)
    streamed, sizes, state = _stream(model, ids, chunk, layers, conv)
    assert state.position == length
    for layer in layers:
        a, b = whole[layer], streamed[layer]
        assert ((a - b).norm() / a.norm()).item() <= 1e-6, f"layer {layer}"
    # The carried state is bounded by layers * (K - 1 rounded up to 8 + 2 short-conv inputs) * channels, whatever L.
    bound = CFG.n_layer * 2 * (CFG.d_model * carried_inputs(filter_len) + 3 * CFG.d_model * 2) * 4
    assert max(sizes) <= bound


def test_state_does_not_grow_with_length(model):
    conv = ConvSettings(filter_len=256)
    _, short_sizes, _ = _stream(model, _ids(2_000, 1), 200, [-1], conv)
    _, long_sizes, _ = _stream(model, _ids(20_000, 1), 200, [-1], conv)
    assert max(long_sizes) == max(short_sizes)


def test_filter_as_long_as_the_record_is_the_exact_convolution(model):
    ids = _ids(1500, 3)
    with torch.inference_mode():
        exact = model(ids)
        partial = model(ids, ConvSettings(filter_len=1500))
        keep_all = model(ids, ConvSettings(filter_len=2050, freq_keep=1.0))
    assert torch.equal(exact, partial) and torch.equal(exact, keep_all)


def test_partial_and_sparse_errors_are_measurable(model):
    ids = _ids(2000, 4)
    errors = {}
    with torch.inference_mode():
        exact = model(ids)
        for k in (1000, 250, 50):
            errors[f"K={k}"] = ((model(ids, ConvSettings(filter_len=k)) - exact).norm() / exact.norm()).item()
        for f in (0.5, 0.25):
            errors[f"F={f}"] = ((model(ids, ConvSettings(freq_keep=f)) - exact).norm() / exact.norm()).item()
    # Shorter filters lose more: the error grows as K shrinks (quality table in BENCHMARKS.md).
    assert 0 < errors["K=1000"] < errors["K=250"] < errors["K=50"]
    assert 0 < errors["F=0.5"] < errors["F=0.25"]


def test_a_record_shorter_than_the_filter_asks_only_for_the_taps_it_reaches(model, monkeypatch):
    """Streamed in chunks, a record of R < K bases convolves [history | chunk] (at most R long), so no chunk asks the
    implicit filter for more than history + chunk taps. Asking for all K each chunk was 15x the time and 2.4x the
    memory of a 80 kbp record on the large-1m shape (CPU; BENCHMARKS.md, thirteenth session); outputs unchanged."""
    asked = []
    for block in model.backbone.layers:
        fn = block.mixer.filter_fn
        orig = fn.long_filter
        monkeypatch.setattr(fn, "long_filter", lambda n, *a, _orig=orig, **k: asked.append(n) or _orig(n, *a, **k))
    ids = _ids(700, 3)
    streamed, _, _ = _stream(model, ids, 256, [3])
    with torch.inference_mode():
        whole = model.hidden_states(ids, [3])[3]
    assert asked and max(asked) <= 700
    assert asked[:CFG.n_layer] == [256] * CFG.n_layer  # the first chunk: no history yet
    assert ((streamed[3] - whole).norm() / whole.norm()).item() <= 1e-6
