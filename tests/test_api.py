"""The public contract: Embedder.from_pretrained(...).embed(seq, layer=...)."""

import numpy as np
import pytest
import torch

import genoconv
from genoconv import Embedder
from genoconv.errors import InputError, SequenceTooLongError
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
    with pytest.raises(IndexError):
        emb.embed(seq, layer=4)
    with pytest.raises(InputError, match="empty"):
        emb.embed("")
    with pytest.raises(SequenceTooLongError, match="2,051 bases.*max_seq_len 2,050.*--filter-len"):
        emb.embed("A" * 2051, record="big")


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
