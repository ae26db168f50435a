"""A tiny HyenaDNA with weights from numpy's PCG64 (stable across numpy/torch versions) and a fixed input."""

import numpy as np
import torch

from genoconv.model import HyenaConfig, HyenaDNA

GOLDEN_CFG = HyenaConfig(d_model=24, n_layer=2, d_inner=48, max_seq_len=600)


def golden_model() -> HyenaDNA:
    model = HyenaDNA(GOLDEN_CFG, lm_head=False)
    rng = np.random.default_rng(20261122)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            values = rng.standard_normal(tuple(param.shape))
            if name.endswith(".freq"):
                values = 10.0 + values
            elif name.endswith("filter_fn.bias") or "norm" in name or "ln_f" in name:
                values = 1.0 + 0.1 * values if name.endswith("weight") else 0.1 * values
            else:
                values = values / np.sqrt(max(1, param.shape[-1]))
            param.copy_(torch.from_numpy(values))
    return model.eval()


def golden_input(length: int = 500) -> torch.Tensor:
    rng = np.random.default_rng(7)
    return torch.from_numpy(rng.integers(7, 12, size=(1, length)))
