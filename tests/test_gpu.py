"""The model and engine on a CUDA device (skipped without one): same results as the CPU, streaming exact."""

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

EXAMPLE = Path(__file__).resolve().parents[1] / "reference_data" / "example.fa"


def _example_records():
    name, seq, out = None, [], {}
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith(">"):
            if name:
                out[name] = "".join(seq)
            name, seq = line[1:].split()[0], []
        else:
            seq.append(line.strip())
    out[name] = "".join(seq)
    return out


@pytest.fixture(scope="module")
def demo_paths():
    from genoconv.model.registry import DEFAULT_MODEL, resolve_model

    return resolve_model(DEFAULT_MODEL)


def test_gpu_fp32_equals_cpu(demo_paths):
    from genoconv import Embedder

    seq = _example_records()["human_chrX_40000001_40012000"]
    cpu = Embedder.from_pretrained(demo_paths, device="cpu").embed(seq)
    gpu = Embedder.from_pretrained(demo_paths, device="cuda").embed(seq)
    assert np.linalg.norm(gpu - cpu) / np.linalg.norm(cpu) < 1e-4


@pytest.mark.parametrize("dtype,tol", [("bfloat16", 3e-2), ("float16", 1e-2)])
def test_gpu_low_precision_close_to_fp32(demo_paths, dtype, tol):
    from genoconv import Embedder

    seq = _example_records()["human_chrX_40000001_40012000"]
    ref = Embedder.from_pretrained(demo_paths, device="cuda").embed(seq)
    low = Embedder.from_pretrained(demo_paths, device="cuda", dtype=dtype).embed(seq)
    assert np.isfinite(low).all() and np.linalg.norm(low - ref) / np.linalg.norm(ref) < tol


def test_gpu_streaming_equals_one_pass(demo_paths):
    from genoconv import Embedder

    seq = "".join(_example_records().values())  # 36 kbp > l_max: partial convolution
    emb = Embedder.from_pretrained(demo_paths, device="cuda")
    one = dict(emb.embed_many([("x", seq)]))["x"]
    streamed = dict(emb.embed_many([("x", seq)], chunk_size=5000))["x"]
    assert streamed["mode"].endswith("streamed:C=5000")
    a, b = one["per_nucleotide"][5], streamed["per_nucleotide"][5]
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-5


def test_gpu_embed_file_matches_api(demo_paths, tmp_path):
    pytest.importorskip("pysam")
    from genoconv import Embedder, open_embeddings

    emb = Embedder.from_pretrained(demo_paths, device="cuda")
    emb.embed_file([EXAMPLE], tmp_path / "out.h5")
    with open_embeddings(tmp_path / "out.h5") as f:
        assert len(f) == 4
        seq = _example_records()["ecoli_2000001_2001000"]
        np.testing.assert_allclose(f["ecoli_2000001_2001000"], emb.embed(seq), rtol=2e-3, atol=2e-3)
