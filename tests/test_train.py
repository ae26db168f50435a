"""The training script: held-out crops, schedule, the reader, and a CPU smoke run resumed once."""

import gzip
import json

import numpy as np
import pytest
import torch

from genoconv.errors import InputError
from genoconv.model.checkpoint import load_checkpoint
from genoconv.train import CropSampler, lr_at, parse_region, read_fasta, train

LENGTH = 40_000
HELDOUT = "X:20001-25000"  # 0-based [20000, 25000)
GUARD = 500


@pytest.fixture(scope="module")
def fasta(tmp_path_factory):
    rng = np.random.default_rng(0)
    seq = rng.choice(list("ACGT"), size=LENGTH)
    seq[:3_000] = "N"  # a telomere-like N run
    seq[30_000:30_400] = "N"
    path = tmp_path_factory.mktemp("data") / "x.fa"
    text = "".join(seq)
    path.write_text(">X synthetic\n" + "\n".join(text[i:i + 60] for i in range(0, LENGTH, 60)) + "\n")
    return path


def _args(fasta, out, *extra):
    return ["--fasta", str(fasta), "--heldout", HELDOUT, "--guard", str(GUARD), "--n-layer", "2",
            "--d-model", "16", "--d-inner", "32", "--max-seq-len", "258", "--batch-size", "2", "--warmup", "2",
            "--steps", "4", "--out", str(out), "--save-every", "1", "--log-every", "1", "--no-rich",
            "--eval-max-bases", "1000", *extra]


def test_smoke_run_resumed_equals_straight_run(fasta, tmp_path):
    straight = train(_args(fasta, tmp_path / "a"))
    train(_args(fasta, tmp_path / "b", "--stop-at", "2"))
    state = torch.load(tmp_path / "b" / "train_state.pt", weights_only=False)
    assert state["step"] == 2
    resumed = train(_args(fasta, tmp_path / "b", "--resume", "--lr", "9.0"))  # saved hyper-parameters win
    assert resumed["steps"] == straight["steps"] == 4 and resumed["resumes"] == 1
    assert resumed["tokens_seen"] == straight["tokens_seen"] == 4 * 2 * 255
    assert resumed["hyperparameters"]["lr"] == straight["hyperparameters"]["lr"] == 1.5e-3
    model_a, info = load_checkpoint(tmp_path / "a")
    model_b, _ = load_checkpoint(tmp_path / "b")
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert not info.has_lm_head  # the head is tied to the input embedding
    saved = json.loads((tmp_path / "b" / "training.json").read_text())
    assert saved["data"]["train"]["file"] == "x.fa" and len(saved["data"]["train"]["sha256"]) == 64
    assert saved["heldout"]["excluded_0based_half_open"] == [20_000 - GUARD, 25_000 + GUARD]
    assert set(saved["validation_bits_per_base"]) == {"heldout"}
    assert saved["validation_bits_per_base"]["heldout"]["scored_bases"] > 900
    for key in ("genoconv_version", "seed", "device", "wall_seconds", "final_train_loss_bits_per_base"):
        assert key in saved
    again = train(_args(fasta, tmp_path / "b", "--resume"))  # a finished run: re-evaluates, trains nothing
    assert again["steps"] == 4 and again["resumes"] == 2
    assert again["final_train_loss_bits_per_base"] == pytest.approx(resumed["loss_history"][-1][1])


def test_crops_avoid_heldout_guard_and_n(fasta):
    _, seq = read_fasta(fasta)
    tokens = np.frombuffer(seq.encode(), np.uint8).copy()
    tokens[tokens == ord("N")] = 11
    contig, start, end = parse_region(HELDOUT)
    assert (contig, start, end) == ("X", 20_000, 25_000)
    allowed = [(0, start - GUARD), (end + GUARD, LENGTH)]
    sampler = CropSampler(tokens, allowed, 1_000, 0.5, np.random.default_rng(1))
    starts = sampler.sample_starts(2_000)
    ends = starts + 1_000
    assert ((ends <= start - GUARD) | (starts >= end + GUARD)).all()
    assert starts.min() >= 0 and ends.max() <= LENGTH
    assert all(np.count_nonzero(tokens[s:s + 1_000] == 11) <= 500 for s in starts)
    assert starts.min() >= 2_500  # crops that are mostly N at the start are redrawn
    assert sampler.batch(3).shape == (3, 1_000)


def test_schedule():
    assert lr_at(0, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_at(55, 100, 1.0, 10, 0.1) == pytest.approx(0.55)
    assert lr_at(50, None, 1.0, 10, 0.1) == 1.0  # schedule length not measured yet


def test_reader_reads_plain_gzip_and_indexed(fasta, tmp_path):
    import pysam

    gz = tmp_path / "x.fa.gz"
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    assert read_fasta(gz, None) == read_fasta(fasta)
    indexed = tmp_path / "y.fa"
    indexed.write_bytes(fasta.read_bytes())
    pysam.faidx(str(indexed))
    assert read_fasta(indexed, "X") == read_fasta(gz)
    with pytest.raises(InputError, match="no record 'Y'"):
        read_fasta(gz, "Y")


def test_bad_arguments(fasta, tmp_path):
    with pytest.raises(InputError, match="not the training record"):
        train(_args(fasta, tmp_path / "c", "--heldout", "chr2:1-10"))
    with pytest.raises(InputError, match="past the end"):
        train(_args(fasta, tmp_path / "d", "--heldout", "X:39001-40001"))
    with pytest.raises(InputError, match="CONTIG:START-END"):
        parse_region("X:10")
