"""Next-base likelihood: bits/base by hand, uniform = 2, segments, the score command, the shipped demo model."""

import gzip
import math

import numpy as np
import pysam
import pytest
import torch
import typer
from typer.testing import CliRunner

from genoconv import Embedder
from genoconv.cli.score import score
from genoconv.errors import InputError
from genoconv.model.likelihood import bits_per_base, score_records
from genoconv.model import HyenaConfig, HyenaDNA, Tokenizer
from genoconv.model.checkpoint import save_checkpoint
from genoconv.model.registry import resolve_model

MAX_LEN = 64


@pytest.fixture(scope="module")
def model():
    return HyenaDNA(HyenaConfig(d_model=16, n_layer=2, d_inner=32, max_seq_len=MAX_LEN)).init_weights(seed=3).eval()


def _hand_bits(model, ids: np.ndarray, segment_len: int) -> tuple[float, int]:
    """Loop over positions in float64: -log2 softmax(logits[t, A..T])[base t+1], segment by segment."""
    total, scored = 0.0, 0
    for start in range(0, len(ids), segment_len):
        chunk = ids[start:start + segment_len]
        if len(chunk) < 2:
            continue
        with torch.no_grad():
            logits = model.logits(torch.from_numpy(chunk)[None])[0].double().numpy()
        for t in range(len(chunk) - 1):
            target = chunk[t + 1]
            if target not in (7, 8, 9, 10):
                continue
            z = logits[t, 7:11]
            log_p = z - (z.max() + math.log(np.exp(z - z.max()).sum()))
            total -= log_p[target - 7] / math.log(2)
            scored += 1
    return total, scored


@pytest.mark.parametrize("length", [1, 2, 63, 64, 65, 150])
def test_bits_per_base_equals_hand_computation(model, length):
    rng = np.random.default_rng(length)
    seq = "".join(rng.choice(list("ACGTN"), p=[0.24, 0.24, 0.24, 0.24, 0.04], size=length))
    ids = Tokenizer().encode_array(seq).astype(np.int64)
    result = bits_per_base(model, torch.from_numpy(ids), batch_size=2)
    total, scored = _hand_bits(model, ids, MAX_LEN)
    assert result.scored == scored
    # segments of max_seq_len, each scored from its own start: every segment loses its first base
    n_targets = sum(max(0, min(MAX_LEN, length - s) - 1) for s in range(0, length, MAX_LEN))
    assert scored == n_targets - sum(1 for s in range(0, length, MAX_LEN)
                                     for t in range(s + 1, min(s + MAX_LEN, length)) if seq[t] == "N")
    if scored:
        assert result.total_bits == pytest.approx(total, rel=1e-5)
        assert result.bits_per_base == pytest.approx(total / scored, rel=1e-5)
    else:
        assert math.isnan(result.bits_per_base)
    small = bits_per_base(model, ids, segment_len=16)  # numpy input and a smaller segment
    assert small.total_bits == pytest.approx(_hand_bits(model, ids, 16)[0], rel=1e-5)


def test_uniform_logits_score_exactly_two_bits():
    cfg = HyenaConfig(d_model=16, n_layer=2, d_inner=32, max_seq_len=MAX_LEN)
    model = HyenaDNA(cfg, lm_head=True).init_weights(seed=0)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # all logits 0: every base has probability 1/4
    emb = Embedder(model, device="cpu")
    seq = "ACGTTGCANNACGT" * 20
    assert abs(emb.bits_per_base(seq) - 2.0) < 1e-12
    ids = Tokenizer().encode(seq)
    res = bits_per_base(model, ids)
    assert res.total_bits == pytest.approx(2.0 * res.scored, abs=1e-9)


def test_score_records_overall_is_weighted(model):
    emb = Embedder(model, device="cpu")
    records = [("a", "ACGT" * 40), ("b", "GATTACA" * 3), ("c", "A")]
    per, overall = score_records(emb, records)
    assert [r.name for r in per] == ["a", "b", "c"]
    assert per[0].bits_per_base == pytest.approx(emb.bits_per_base("ACGT" * 40))
    assert per[2].scored == 0 and math.isnan(per[2].bits_per_base)
    assert overall.scored == per[0].scored + per[1].scored
    assert overall.bits_per_base == pytest.approx((per[0].total_bits + per[1].total_bits) / overall.scored)


def test_score_command(model, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(model, ckpt)
    fasta = tmp_path / "in.fa.gz"
    with gzip.open(fasta, "wt") as fh:
        fh.write(">r1 first\nACGTACGGTACCA\nTTGACNNACG\n>r2\nGGGCCCAAATTT\n")
    score([fasta], model=str(ckpt), device="cpu")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1] == "record\tlength\tscored_bases\tbits_per_base"
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[2:]}
    assert rows["r1"][1:3] == ["23", "20"] and rows["r2"][1:3] == ["12", "11"]
    assert rows["overall"][1:3] == ["35", "31"]
    emb = Embedder.from_pretrained(ckpt, device="cpu")
    assert float(rows["r2"][3]) == pytest.approx(emb.bits_per_base("GGGCCCAAATTT"), abs=1e-4)

    app = typer.Typer()
    app.command()(score)
    result = CliRunner().invoke(app, [str(fasta), "--model", str(ckpt), "--device", "cpu"])
    assert result.exit_code == 0 and "overall\t35\t31\t" in result.output

    bad = tmp_path / "bad.fa"
    bad.write_text(">x\nACGT*ACGT\n")
    with pytest.raises(InputError, match="record 'x'.*'\\*'"):
        score([bad], model=str(ckpt), device="cpu")
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    with pytest.raises(InputError, match="empty.fa: empty file"):  # the readers `embed` uses
        score([empty], model=str(ckpt), device="cpu")
    with pytest.raises(InputError, match="no such checkpoint directory"):
        score([fasta], model=str(tmp_path / "missing"), device="cpu")


def test_demo_model_beats_1_95_on_heldout_dmd(shared_data):
    """The shipped model on 20 kbp of the held-out DMD gene (never seen in training)."""
    import pysam

    with pysam.FastxFile(str(shared_data / "DMD_GRCh37_chrX.fa.gz")) as fh:
        dmd = next(iter(fh)).sequence
    emb = Embedder.from_pretrained(resolve_model(), device="cpu")
    bits = emb.bits_per_base(dmd[1_000_000:1_020_000])
    assert bits < 1.95, bits


def test_score_takes_what_embed_takes(model, shared_data, tmp_path, capsys):
    """A BAM (and its reads within --regions); a bad record anywhere fails before the table's first line."""
    ckpt = tmp_path / "ckpt"
    save_checkpoint(model, ckpt)
    bam = shared_data / "celegans_range.bam"
    score([bam], model=str(ckpt), device="cpu")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1] == "record\tlength\tscored_bases\tbits_per_base" and len(lines) == 2 + 112 + 1
    assert lines[-1].startswith("overall\t11200\t")  # 112 reads of 100 bases
    bed = tmp_path / "sel.bed"
    bed.write_text("CHROMOSOME_II\t1300\t1400\n")
    score([bam], model=str(ckpt), device="cpu", regions=bed)
    rows = capsys.readouterr().out.strip().splitlines()[2:-1]
    with pysam.AlignmentFile(str(bam)) as f:
        assert len(rows) == sum(1 for _ in f.fetch("CHROMOSOME_II", 1300, 1400)) > 3
    late = tmp_path / "late.fa"
    late.write_text(">ok\nACGTACGT\n>hollow\n")
    with pytest.raises(InputError, match="late.fa: record 2 'hollow'"):
        score([bam, late], model=str(ckpt), device="cpu")
    assert capsys.readouterr().out == ""  # nothing printed: no header, no half table


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_score_interrupted_says_how_far_the_table_got_and_that_it_does_not_resume(model, tmp_path, capsys,
                                                                                   monkeypatch, how):
    """A stop while scoring: exit 3 (Interrupted) naming the records printed and that the table lacks its 'overall'
    line; not embed's "while starting; nothing was written yet" or "rerun ... to resume" (score has no resume)."""
    import os
    import signal

    from genoconv.errors import Interrupted
    from genoconv.model import likelihood

    ckpt = tmp_path / "ckpt"
    save_checkpoint(model, ckpt)
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">r{i}\nACGTACGGTACCATTGAC\n" for i in range(5)))
    real = likelihood.score_records

    def stop_after_two(embedder, records, batch_size=1, on_record=None):
        def row(r):
            on_record(r)
            if r.name == "r1":
                if how == "SIGTERM":
                    os.kill(os.getpid(), signal.SIGTERM)
                raise KeyboardInterrupt
        return real(embedder, records, batch_size=1, on_record=row)

    monkeypatch.setattr(likelihood, "score_records", stop_after_two)
    with pytest.raises(Interrupted, match=rf"score interrupted by {how} after 2 record\(s\); the table above has no "
                                          "'overall' line; score does not resume"):
        score([fasta], model=str(ckpt), device="cpu")
    out = capsys.readouterr().out
    assert "r1\t" in out and "r2\t" not in out and "overall" not in out
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
