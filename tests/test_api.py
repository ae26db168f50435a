"""The public contract: Embedder.from_pretrained(...).embed(seq, layer=...)."""

import numpy as np
import pytest
import torch

import genoconv
from genoconv import Embedder
from genoconv.errors import InputError
from genoconv.model import HyenaConfig, HyenaDNA
from genoconv.model.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(HyenaDNA(HyenaConfig(d_model=16, n_layer=2, max_seq_len=2050)).init_weights(seed=9), path)
    return path


def test_embed_one_row_per_base(checkpoint):
    emb = Embedder.from_pretrained(checkpoint, device="cpu", dtype="float32")
    seq = "ACGTN" * 41 + "acg"
    x = emb.embed(seq)
    assert isinstance(x, np.ndarray) and x.shape == (len(seq), 16) and x.dtype == np.float32
    assert np.allclose(x, emb.embed(seq, layer=-1)) and np.allclose(x, emb.embed(seq, layer=3))
    with torch.inference_mode():
        direct = emb.model(emb.tokenizer.encode(seq)[None])[0].numpy()
    assert np.array_equal(x, direct)


def test_embed_layers_and_errors(checkpoint):
    emb = Embedder.from_pretrained(checkpoint, device="cpu")
    seq = "GATTACA" * 30
    assert not np.allclose(emb.embed(seq, layer=1), emb.embed(seq, layer=-1))
    assert np.allclose(emb.embed(seq, layer=-2), emb.embed(seq, layer=2))
    with pytest.raises(InputError, match="--layer: layer 4 out of range for a model with 4 hidden states"):
        emb.embed(seq, layer=4)
    with pytest.raises(InputError, match="empty"):
        emb.embed("")
    # Longer than max_seq_len: the CLI's plan (partial convolution with K = max_seq_len taps), not an error.
    long_seq = ("GATTACA" * 300)[:2051]
    got = emb.embed(long_seq, record="big")
    (_, want), = emb.embed_many([("big", long_seq)])
    assert want["mode"] == "partial:K=2050" and np.array_equal(got, want["per_nucleotide"][3])
    assert got.shape == (2051, emb.d_model)
    tensor = emb.embed(seq, as_tensor=True)
    assert tensor.device == emb.device and np.array_equal(tensor.numpy(), emb.embed(seq))


def test_dtype_and_device_choices(checkpoint):
    low = Embedder.from_pretrained(checkpoint, device="cpu", dtype="bfloat16")
    ref = Embedder.from_pretrained(checkpoint, device="auto", dtype="float32")
    seq = "ACGT" * 200
    a, b = low.embed(seq), ref.embed(seq)
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 3e-2
    with pytest.raises(InputError, match="--dtype"):
        Embedder.from_pretrained(checkpoint, dtype="int8")
    with pytest.raises(InputError, match="--device"):
        Embedder.from_pretrained(checkpoint, device="tpu")


def test_version_is_exported():
    assert genoconv.__version__.count(".") == 2


def test_embed_many_takes_regions_as_the_cli_does(checkpoint, tmp_path):
    # reference/regions were silently dropped unless a file path came first: [] gave 0 records, pairs lost the regions.
    rng = np.random.default_rng(3)
    chrom = "".join(rng.choice(list("ACGT"), size=600))
    (tmp_path / "ref.fa").write_text(f">c1\n{chrom}\n")
    (tmp_path / "genes.bed").write_text("c1\t10\t130\tg1\t0\t+\nc1\t200\t321\tg2\t0\t-\n")
    emb = Embedder.from_pretrained(checkpoint, device="cpu")
    where = {"reference": tmp_path / "ref.fa", "regions": tmp_path / "genes.bed"}
    only = dict(emb.embed_many(None, **where))
    assert list(only) == ["g1", "g2"] and dict(emb.embed_many([], **where)).keys() == only.keys()
    np.testing.assert_allclose(only["g1"]["per_nucleotide"][3], emb.embed(chrom[10:130]), rtol=1e-5, atol=1e-6)
    assert (only["g2"]["coords"].start, only["g2"]["coords"].strand) == (200, "-")
    both = dict(emb.embed_many([("mine", "ACGT" * 20)], **where))
    assert list(both) == ["mine", "g1", "g2"]  # the pairs, then the regions (FASTA inputs + --regions in the CLI)
    with pytest.raises(InputError, match="duplicate record id 'a': records 1 and 3 of the records given"):
        list(emb.embed_many([("a", "ACGT" * 9), ("b", "ACG"), ("a", "ACG")]))
    with pytest.raises(InputError, match="dedupe_ids apply to records read from files"):
        list(emb.embed_many([("a", "ACGT")], dedupe_ids=True))


def test_api_mistakes_are_input_errors(checkpoint):
    # Each of these raised a bare KeyError / TypeError / IndexError / ValueError, or returned nan.
    emb = Embedder.from_pretrained(checkpoint, device="cpu")
    with pytest.raises(InputError, match="embed returns one layer: pass layer=N"):
        emb.embed("ACGT" * 10, layers=[-2])
    (_, one), = emb.embed_many([("a", "ACGT" * 10)], layers=-2)  # an int is one layer
    assert list(one["per_nucleotide"]) == [2]
    with pytest.raises(InputError, match="at least one layer"):
        list(emb.embed_many([("a", "ACGT")], layers=[]))
    with pytest.raises(InputError, match="--window must be a whole number >= 1, got 2.5"):
        list(emb.embed_many([("a", "ACGT")], window=2.5))
    with pytest.raises(InputError, match="tokenizer policy must be one of"):
        Embedder.from_pretrained(checkpoint, device="cpu", tokenizer="foo")
    with pytest.raises(InputError, match="is empty"):
        emb.bits_per_base("")


@pytest.mark.parametrize("layer", [4, -5])
def test_a_layer_the_model_lacks_is_the_clis_input_error(checkpoint, layer, tmp_path, cli):
    # embed(seq, layer=4) raised a bare IndexError where `genoconv embed --layer 4` exits 2 with an InputError.
    emb = Embedder.from_pretrained(checkpoint, device="cpu")
    with pytest.raises(InputError) as api:
        emb.embed("ACGT" * 10, layer=layer)
    (tmp_path / "x.fa").write_text(">a\n" + "ACGT" * 10 + "\n")
    code, _, err = cli("embed", tmp_path / "x.fa", "-o", tmp_path / "x.h5", "--model", checkpoint, "--device", "cpu",
                       "--layer", layer)
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {api.value}"
    assert str(api.value).startswith(f"--layer: layer {layer} out of range for a model with 4 hidden states")
