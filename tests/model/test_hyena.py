"""Properties that pin the architecture down: causality, layer indexing, batching, dtypes, long-input errors."""

import pytest
import torch

from genoconv.model import ConvSettings, HyenaConfig, HyenaDNA


@pytest.fixture(scope="module")
def model():
    return HyenaDNA(HyenaConfig(d_model=32, n_layer=3, max_seq_len=1026), lm_head=True).init_weights(seed=0).eval()


def _ids(n, seed=0):
    return torch.randint(7, 12, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("t", [0, 1, 2, 250, 511])
def test_causality(model, t):
    ids = _ids(512)
    changed = ids.clone()
    changed[0, t] = 7 if ids[0, t] != 7 else 8
    with torch.inference_mode():
        a = model.hidden_states(ids, range(model.num_hidden_states))
        b = model.hidden_states(changed, range(model.num_hidden_states))
    for layer in a:
        scale = a[layer].abs().max()
        # An FFT convolution spreads float32 rounding over all outputs, so "unchanged" means at rounding level,
        # while the changed base itself moves its own output by O(1).
        before = (a[layer][0, :t] - b[layer][0, :t]).abs().max() if t else torch.tensor(0.0)
        assert before <= 1e-5 * scale, f"layer {layer}: output before {t} changed by {before}"
        assert (a[layer][0, t] - b[layer][0, t]).abs().max() > 1e-2 * scale, f"layer {layer}: base {t} had no effect"


def test_every_layer_depends_on_long_range_context(model):
    # The long convolution reaches back hundreds of bases (the short conv alone would reach 2 per layer).
    ids = _ids(1000)
    changed = ids.clone()
    changed[0, 10] = 7 if ids[0, 10] != 7 else 8
    with torch.inference_mode():
        diff = (model(ids) - model(changed))[0, 900:].abs().max()
    assert diff > 1e-6


def test_hidden_state_indexing(model):
    ids = _ids(64)
    with torch.inference_mode():
        hs = model.hidden_states(ids, range(-model.num_hidden_states, model.num_hidden_states))
        final = model(ids)
    assert sorted(hs) == list(range(model.num_hidden_states))  # embeddings, 3 blocks, ln_f
    assert torch.equal(hs[model.num_hidden_states - 1], final)
    assert torch.equal(hs[0], model.backbone.embeddings(ids))
    # ln_f output is normalised per position; the residual stream is not
    assert torch.allclose(final.mean(-1), torch.zeros(1, 64), atol=1e-4) or model.backbone.ln_f.bias.abs().max() > 0
    with pytest.raises(IndexError):
        model.resolve_layer(model.num_hidden_states)


def test_batch_rows_are_independent(model):
    ids = torch.cat([_ids(300, 1), _ids(300, 2)])
    with torch.inference_mode():
        both = model(ids)
        one = model(ids[1:])
    assert torch.allclose(both[1], one[0], atol=1e-5)


def test_bfloat16_compute_is_close_to_float32():
    m = HyenaDNA(HyenaConfig(d_model=32, n_layer=2, max_seq_len=1026)).init_weights(seed=4).eval()
    ids = _ids(800)
    with torch.inference_mode():
        ref = m(ids)
        m.set_compute_dtype(torch.bfloat16)
        low = m(ids)
    assert low.dtype == torch.float32
    assert ((low - ref).norm() / ref.norm()).item() < 3e-2


def test_longer_than_max_seq_len_is_refused_without_partial_convolution():
    m = HyenaDNA(HyenaConfig(d_model=8, n_layer=1, max_seq_len=100)).init_weights(seed=0).eval()
    with pytest.raises(ValueError, match="longer than the model's max_seq_len 100"):
        m(_ids(101))
    with torch.inference_mode():
        assert m(_ids(250), ConvSettings(filter_len=100)).shape == (1, 250, 8)


def test_logits_use_tied_head_when_absent():
    m = HyenaDNA(HyenaConfig(d_model=8, n_layer=1, max_seq_len=64)).init_weights(seed=0).eval()
    ids = _ids(20)
    with torch.inference_mode():
        logits = m.logits(ids)
        want = m(ids) @ m.backbone.embeddings.word_embeddings.weight.t()
    assert logits.shape == (1, 20, 16) and torch.allclose(logits, want)


@pytest.mark.parametrize("length", [1, 2, 3, 50])
def test_short_conv_equals_official_conv1d(length):
    """The shifted-sum short conv equals nn.Conv1d(padding=2)[..., :L], also with carried history."""
    from genoconv.ops.fused import causal_short_conv

    gen = torch.Generator().manual_seed(length)
    conv = torch.nn.Conv1d(6, 6, kernel_size=3, padding=2, groups=6)
    x = torch.randn(2, 6, 40 + length, generator=gen)
    with torch.no_grad():
        want = conv(x)[..., :x.shape[-1]]
        got = causal_short_conv(x, conv.weight, conv.bias)
        assert torch.allclose(got, want, atol=1e-6)
        # the last `length` outputs from the last `length` inputs plus 2 carried ones
        tail = causal_short_conv(x[..., -length:], conv.weight, conv.bias, past=x[..., -length - 2:-length])
        assert torch.allclose(tail, want[..., -length:], atol=1e-6)
