"""Golden values of a seeded tiny model, recorded once (genoconv 0.1.0, torch 2.13 CPU) and checked forever.

If this fails, the model's arithmetic changed: find out why before updating the numbers.
"""

import pytest
import torch

from golden import golden_input, golden_model

# layer: (mean, std, [0, 0], [250, 3], [-1, -1]) of the hidden state (L=500, d=24)
GOLDEN = {
    0: (-0.007255928680106687, 0.2055823671789333, -0.0726199746131897, -0.14023010432720184, 0.02798164263367653),
    1: (0.3758186166957021, 9.930055575571018, 0.4432845711708069, -11.852666854858398, -8.306020736694336),
    2: (0.4737015101824266, 11.42228938490788, 0.7738940715789795, -18.3057804107666, -8.798174858093262),
    3: (-0.0015297239382559078, 0.9987785185379717, 0.45014476776123047, -1.3954652547836304, -0.20604315400123596),
}


def test_golden_hidden_states():
    model, ids = golden_model(), golden_input()
    with torch.inference_mode():
        hs = model.hidden_states(ids, range(4))
    for layer, (mean, std, first, mid, last) in GOLDEN.items():
        h = hs[layer].double()[0]
        assert h.shape == (500, 24)
        got = (h.mean().item(), h.std().item(), h[0, 0].item(), h[250, 3].item(), h[-1, -1].item())
        assert got == pytest.approx((mean, std, first, mid, last), rel=2e-5, abs=2e-5), f"layer {layer}"
