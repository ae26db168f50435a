"""benchmarks/bench_quality.py against the model API it drives (it had drifted: a removed helper and a removed
model method made it fail at import and at its first variant), on a tiny random model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from genoconv.model import HyenaDNA
from genoconv.model.hyena import HyenaConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench_quality():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_quality as module
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_variants_move_the_output_and_the_reference_does_not(bench_quality):
    model = HyenaDNA(HyenaConfig(d_model=16, n_layer=2, d_inner=64, max_seq_len=258)).init_weights(seed=3).eval()
    ids = torch.randint(7, 11, (1, 258), generator=torch.Generator().manual_seed(0))
    variants = [("K=258 (reference)", 258, 1.0), ("K=16", 16, 1.0), ("F=0.25", 258, 0.25)]
    rows = {r["variant"]: r for r in bench_quality.evaluate(model, [("r", ids)], variants, chunk=None, with_bits=True)}
    assert rows["K=258 (reference)"]["per_base_rel"] == 0
    for label in ("K=16", "F=0.25"):
        assert 0 < rows[label]["per_base_rel"] < 1
        assert rows[label]["bits_per_base"] != rows["K=258 (reference)"]["bits_per_base"]  # the variant reached the LM head
    streamed = bench_quality.evaluate(model, [("r", ids)], variants[:2], chunk=100, with_bits=False)
    assert streamed[0]["per_base_rel"] == 0 and streamed[1]["per_base_rel"] > 0
