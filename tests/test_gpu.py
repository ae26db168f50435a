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


def test_gpu_float64_equals_cpu_and_doctor_check_passes(demo_paths):
    # float64 on a GPU reached the library's fp32-only LayerNorm: `Embedder(dtype="float64")` raised there, and so did
    # `genoconv doctor --check`, whose model check takes it as the yardstick (the twenty-fifth session's device run).
    from typer.testing import CliRunner

    from genoconv import Embedder
    from genoconv.cli import app

    seq = _example_records()["human_chrX_40000001_40012000"]
    cpu = Embedder.from_pretrained(demo_paths, device="cpu", dtype="float64").embed(seq, as_tensor=True)
    gpu = Embedder.from_pretrained(demo_paths, device="cuda", dtype="float64").embed(seq, as_tensor=True).cpu()
    assert gpu.dtype == torch.float64 and float((gpu - cpu).norm() / cpu.norm()) < 1e-10
    result = CliRunner().invoke(app, ["doctor", "--check", "--device", "cuda"])
    assert result.exit_code == 0, result.output


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


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_reads_pooled_at_once_equal_per_record(demo_paths, dtype):
    # Read-sized records (rows of <= 256 samples: the scalar fused kernel in bf16), pooled-only output: the whole batch
    # pooled on the device at once equals the per-record accumulators of the same batch.
    from genoconv import Embedder

    rng = np.random.default_rng(7)
    seqs = [(f"read{i}", "".join(rng.choice(list("ACGT"), size=int(n)))) for i, n in
            enumerate(rng.integers(40, 152, size=300))]
    emb = Embedder.from_pretrained(demo_paths, device="cuda", dtype=dtype)
    pools = ["mean", "max", "last"]
    fast = dict(emb.embed_many(seqs, pools=pools, per_nucleotide=False))
    slow = dict(emb.embed_many(seqs, pools=pools))
    assert list(fast) == list(slow)
    for rid, _ in seqs:
        for key, want in slow[rid]["pooled"].items():
            np.testing.assert_allclose(fast[rid]["pooled"][key], want, rtol=1e-6, atol=1e-7, err_msg=f"{rid} {key}")
        assert np.isfinite(slow[rid]["per_nucleotide"][5]).all()


def test_gpu_records_of_nearby_lengths_share_one_spectrum(demo_paths):
    # Exact calls on the kernels take the next power of two of taps (model.hyena.shared_taps): four records of
    # 2,100-3,900 bases build one tensor-core spectrum per layer (N = 2^13), where each length built its own.
    from genoconv import Embedder

    rng = np.random.default_rng(3)
    emb = Embedder.from_pretrained(demo_paths, device="cuda", dtype="bfloat16")
    for n in (2100, 2600, 3100, 3900):
        out = emb.embed("".join(rng.choice(list("ACGT"), size=n)))
        assert np.isfinite(out).all()
    for block in emb.model.backbone.layers:
        filt = block.mixer.filter_fn.cached_filter()
        assert filt.filter_len == 4096
        assert [key[:3] for key in filt._cache if key[0] == "cuda_monarch"] == [("cuda_monarch", 13, 4096)]


def test_gpu_rows_reach_the_host_in_bounded_pinned_pieces(demo_paths, tmp_path, monkeypatch):
    # Per-nucleotide rows cross to the host in page-locked pieces of at most HOST_PIECE_BYTES (a first call pinned
    # the whole record: 1.6 s for DMD); pieces of 7 rows give the same API arrays and HDF5 file as one piece, and
    # host_pieces yields every row once, in order, in the asked dtype (an empty chunk: one empty piece).
    from genoconv import Embedder, open_embeddings
    from genoconv.engine import outputs

    x = torch.randn(1000, 48, device="cuda")
    monkeypatch.setattr(outputs, "HOST_PIECE_BYTES", 7 * 48 * 2)
    got = list(outputs._Torch.host_pieces(x, np.float16))
    assert [len(p) for p in got] == [7] * 142 + [6] and all(p.dtype == np.float16 for p in got)
    np.testing.assert_array_equal(np.concatenate(got), x.half().cpu().numpy())
    assert [p.shape for p in outputs._Torch.host_pieces(x[:0])] == [(0, 48)]

    seq = _example_records()["human_chrX_40000001_40012000"]
    emb = Embedder.from_pretrained(demo_paths, device="cuda", dtype="bfloat16")
    results = {}
    for piece_bytes in (7 * emb.d_model * 4, 64 << 20):
        monkeypatch.setattr(outputs, "HOST_PIECE_BYTES", piece_bytes)
        out = tmp_path / f"{piece_bytes}.h5"
        emb.embed_file([EXAMPLE], out)
        with open_embeddings(out) as f:
            results[piece_bytes] = (emb.embed(seq), f["human_chrX_40000001_40012000"])
    (api_a, file_a), (api_b, file_b) = results.values()
    np.testing.assert_array_equal(api_a, api_b)
    np.testing.assert_array_equal(file_a, file_b)
    assert api_a.shape == (len(seq), emb.d_model)


def test_gpu_embed_file_matches_api(demo_paths, tmp_path):
    pytest.importorskip("pysam")
    from genoconv import Embedder, open_embeddings

    emb = Embedder.from_pretrained(demo_paths, device="cuda")
    emb.embed_file([EXAMPLE], tmp_path / "out.h5")
    with open_embeddings(tmp_path / "out.h5") as f:
        assert len(f) == 4
        seq = _example_records()["ecoli_2000001_2001000"]
        np.testing.assert_allclose(f["ecoli_2000001_2001000"], emb.embed(seq), rtol=2e-3, atol=2e-3)


@pytest.fixture(scope="module")
def large_random():
    """The HyenaDNA-large-1m shape (8 layers, d_model 256) with random weights, bf16, on the GPU."""
    from genoconv.model import HyenaConfig, HyenaDNA

    model = HyenaDNA(HyenaConfig(d_model=256, n_layer=8, d_inner=1024, max_seq_len=1_000_002)).init_weights(seed=0)
    return model


def _random_seq(n, seed):
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), size=n))


@pytest.mark.parametrize("length,filter_len,chunk,cache", [
    (100_000, None, None, "off"), (1_000_000, None, None, "off"), (300_000, 65_536, None, "off"),
    (2_000_000, 262_144, 524_288, "off"), (100_000, None, None, "on"), (500_000, 16_384, 65_536, "on"),
    (300_000, None, 65_536, "off"),  # streamed, shorter than K: each chunk asks for the taps it reaches only
])
def test_memory_plan_predicts_the_peak(large_random, monkeypatch, length, filter_len, chunk, cache):
    """What the plan says a record will take is what torch.cuda.max_memory_allocated sees, within 25%."""
    import gc

    from genoconv import Embedder
    from genoconv.engine import Engine
    from genoconv.options import EmbedOptions

    if cache == "off":
        monkeypatch.setenv("GENOCONV_FILTER_CACHE_MB", "0")
    emb = Embedder(large_random, device="cuda", dtype="bfloat16", max_memory=100 << 30)
    opts = dict(per_nucleotide=False, pools=("mean",), filter_len=filter_len, chunk_size=chunk)
    plan = Engine(emb, EmbedOptions(**opts)).plan(length)
    seq = _random_seq(length, length)
    emb.model.clear_filter_cache()  # the prediction includes what the layers cache during this call
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    (_, out), = emb.embed_many([("x", seq)], **opts)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert out["mode"] == plan.mode
    assert 0.75 <= peak / plan.peak_bytes <= 1.25, (plan, peak / 2**30, plan.peak_bytes / 2**30)


def test_repeated_calls_give_the_same_result_at_the_same_speed(large_random):
    import time

    from genoconv import Embedder

    emb = Embedder(large_random, device="cuda", dtype="bfloat16")
    seq = _random_seq(1_500_000, 5)  # longer than max_seq_len: partial convolution
    results, times = [], []
    for _ in range(3):
        torch.cuda.synchronize()
        t = time.perf_counter()
        (_, out), = emb.embed_many([("x", seq)], per_nucleotide=False, pools=("mean", "max"), window=1000)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        results.append(out)
    for out in results[1:]:
        assert out["mode"] == results[0]["mode"]
        for key, value in results[0]["pooled"].items():
            assert np.array_equal(out["pooled"][key], value)
        assert np.array_equal(out["windowed"][9], results[0]["windowed"][9])
    assert times[2] <= 1.5 * times[1] + 0.05, times  # no cache that grows call after call


def test_streamed_record_shorter_than_the_filter_equals_one_pass(large_random):
    """A record shorter than K = 1M streamed in chunks: each chunk convolves [history | chunk] with the taps it reaches
    (at most history + chunk, not all K); the result is the one-pass result to bf16 rounding."""
    from genoconv import Embedder

    emb = Embedder(large_random, device="cuda", dtype="bfloat16")
    seq = _random_seq(200_000, 11)
    (_, one), = emb.embed_many([("x", seq)], pools=("mean",))
    (_, streamed), = emb.embed_many([("x", seq)], pools=("mean",), chunk_size=65_536)
    assert one["mode"] == "exact" and streamed["mode"] == "exact;streamed:C=65536"
    a, b = one["per_nucleotide"][9], streamed["per_nucleotide"][9]
    assert np.isfinite(b).all() and np.linalg.norm(a - b) / np.linalg.norm(a) < 3e-2
