"""Smoke embedding of the bundled example (reference_data/example.fa) with a seeded tiny model.

A stand-in for the main job until ``genoconv embed`` and the shipped demo model land; the seeded model is a
test fixture, not a model to use.
"""

from pathlib import Path

import pysam
import torch

from .api import Embedder
from .model import HyenaConfig, HyenaDNA


def main() -> None:
    example = Path(__file__).resolve().parents[1] / "reference_data" / "example.fa"
    model = HyenaDNA(HyenaConfig(d_model=128, n_layer=2, max_seq_len=32770)).init_weights(seed=0)
    emb = Embedder(model, name="seeded-smoke-model", device="auto")
    with pysam.FastxFile(str(example)) as fh:
        for rec in fh:
            x = emb.embed(rec.sequence, record=rec.name)
            print(f"{rec.name}\t{len(rec.sequence)} bp\t-> {x.shape} mean-pooled norm {float((x.mean(0) ** 2).sum() ** 0.5):.4f}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
