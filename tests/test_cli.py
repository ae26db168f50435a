"""`genoconv embed/inspect/doctor` end to end: real data, resume after SIGKILL/SIGTERM, bad input -> exit 2."""

import gzip
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pysam
import pytest

from genoconv import Embedder, open_embeddings
from genoconv.cli import main
from genoconv.io import reverse_complement
from genoconv.store.journal import read_journal


def run_cli(args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["genoconv", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _write_fasta(path: Path, records):
    with open(path, "w") as fh:
        for rid, seq in records:
            fh.write(f">{rid}\n")
            for i in range(0, len(seq), 60):
                fh.write(seq[i:i + 60] + "\n")
    return path


@pytest.fixture(scope="module")
def ecoli_200k(shared_data, tmp_path_factory):
    """The first 200 kbp of E. coli K-12 as 50 records of 4 kbp (max_seq_len of the test model is 4,098)."""
    fa = pysam.FastaFile(str(shared_data / "ecoli_K12_MG1655.fa.gz"))
    seq = fa.fetch("NC_000913", 0, 200_000)
    path = tmp_path_factory.mktemp("ecoli") / "ecoli_200k.fa"
    return _write_fasta(path, [(f"ecoli_{i:03d}", seq[i * 4000:(i + 1) * 4000]) for i in range(50)])


def test_version_is_one_parseable_line(monkeypatch, capsys):
    code, out, _ = run_cli(["--version"], monkeypatch, capsys)
    assert code == 0 and out.strip().startswith("genoconv ") and out.count("\n") == 1


def test_embed_ecoli_first_200kbp(ecoli_200k, small_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ecoli.h5"
    code, _, err = run_cli(["embed", ecoli_200k, "-o", out, "--model", small_model_dir, "--device", "cpu",
                            "--pool", "mean,max", "--window", "1000", "--layer", "-1", "--layer", "1"],
                           monkeypatch, capsys)
    assert code == 0, err
    emb = Embedder.from_pretrained(small_model_dir, device="cpu")
    seqs = {rec.name: rec.sequence for rec in pysam.FastxFile(str(ecoli_200k))}
    with open_embeddings(out) as f:
        assert f.complete and len(f) == 50 and int(f.lengths.sum()) == 200_000
        assert f.ids == sorted(seqs)  # input order
        assert f.provenance["store_dtype"] == "float16" and f.provenance["compute_dtype"] == "float32"
        for rid in ("ecoli_000", "ecoli_017", "ecoli_049"):
            rows = f[rid]
            assert rows.dtype == np.float16 and rows.shape == (4000, 16)
            want = emb.embed(seqs[rid])
            assert np.linalg.norm(rows - want) / np.linalg.norm(want) < 2e-3  # float16 storage
            assert np.abs(f.get(rid, layer=1) - emb.embed(seqs[rid], layer=1)).max() < 5e-3 * np.abs(want).max()
            i = f.ids.index(rid)
            np.testing.assert_allclose(f.pooled("mean")[i], want.mean(0), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(f.pooled("max")[i], want.max(0), rtol=1e-5, atol=1e-5)
            assert f.get(rid, kind="windowed").shape == (4, 16)
    code, out_text, _ = run_cli(["inspect", out], monkeypatch, capsys)
    assert code == 0 and "ecoli_000" in out_text and "200,000" in out_text


def test_embed_nanopore_bam_reports_skips(shared_data, small_model_dir, tmp_path, monkeypatch, capsys, caplog):
    out = tmp_path / "reads.h5"
    code, _, err = run_cli(["embed", shared_data / "nanopore_cdna_pcs109_5k.bam", "-o", out, "--model",
                            small_model_dir, "--device", "cpu", "--no-per-nucleotide", "--pool", "mean,last"],
                           monkeypatch, capsys)
    assert code == 0, err
    with open_embeddings(out) as f:
        assert len(f) == 5000 and f.pooled("last").shape == (5000, 16)
        assert "per_nucleotide" not in h5py.File(out, "r")
    assert "skipped 7326 input records: secondary" in err and "skipped 121 input records: supplementary" in err


def test_embed_bed_regions_on_bgzipped_chrx(shared_data, small_model_dir, tmp_path, monkeypatch, capsys):
    bed = tmp_path / "genes.bed"
    bed.write_text("X\t31137344\t31140344\tDMD_3prime\t0\t-\nX\t40000000\t40002500\tplus_region\t0\t+\n")
    out = tmp_path / "regions.h5"
    code, _, err = run_cli(["embed", "--reference", shared_data / "GRCh37_chrX_1-70M.fa.gz", "--regions", bed,
                            "-o", out, "--model", small_model_dir, "--device", "cpu", "--store-dtype", "float32"],
                           monkeypatch, capsys)
    assert code == 0, err
    chrx = pysam.FastaFile(str(shared_data / "GRCh37_chrX_1-70M.fa.gz"))
    by_hand = {"DMD_3prime": reverse_complement(chrx.fetch("X", 31137344, 31140344)),  # minus strand, by hand
               "plus_region": chrx.fetch("X", 40000000, 40002500)}
    emb = Embedder.from_pretrained(small_model_dir, device="cpu")
    with open_embeddings(out) as f:
        assert f.ids == ["plus_region", "DMD_3prime"]  # short records are processed sorted by length
        for rid, seq in by_hand.items():
            np.testing.assert_allclose(f[rid], emb.embed(seq), rtol=1e-4, atol=2e-5)


def _many_records(tmp_path, n=40):
    rng = np.random.default_rng(0)
    recs = [(f"rec{i:02d}", "".join(rng.choice(list("ACGT"), size=int(n_)))) for i, n_ in
            enumerate(rng.integers(300, 4000, size=n))]
    return _write_fasta(tmp_path / "many.fa", recs)


def _cmd(fasta, out, model):
    return [sys.executable, "-m", "genoconv", "-q", "embed", str(fasta), "-o", str(out), "--model", str(model),
            "--device", "cpu", "--pool", "mean,max,last", "--window", "256", "--commit-interval", "0"]


def _content(path):
    """Every dataset and every attribute except the run's times: what must be identical after a resume."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out["attrs"] = {k: v for k, v in f.attrs.items() if k not in ("start_time", "end_time", "command_line")}
    return out


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if k == "attrs":
            assert a[k].keys() == b[k].keys()
            for name in a[k]:
                assert np.array_equal(np.asarray(a[k][name]), np.asarray(b[k][name])), name
        else:
            assert np.array_equal(a[k], b[k]), k


def _wait_for_commits(journal: Path, proc, at_least: int, timeout: float = 120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        # Record commits only: the journal also holds the header, "attrs" and streamed-record checkpoint lines, and
        # counting lines made a kill after 8 lines find 7 records (a flake under load).
        if len(read_journal(journal).entries) >= at_least:
            return
        if proc.poll() is not None:
            pytest.fail(f"embed finished before it could be interrupted (exit {proc.returncode})")
        time.sleep(0.02)
    pytest.fail("no commits observed")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_run_resumes_to_identical_output(tmp_path, small_model_dir, sig):
    fasta = _many_records(tmp_path)
    ref_out = tmp_path / "uninterrupted.h5"
    subprocess.run(_cmd(fasta, ref_out, small_model_dir), check=True)
    out = tmp_path / "out.h5"
    proc = subprocess.Popen(_cmd(fasta, out, small_model_dir), stderr=subprocess.PIPE, text=True)
    _wait_for_commits(Path(str(out) + ".journal"), proc, at_least=8)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 3, err  # documented "resumable" exit code
    else:
        assert proc.returncode == -signal.SIGKILL
    with pytest.warns(UserWarning, match="unfinished"):
        with open_embeddings(out) as partial:
            done = len(partial)
    assert 8 <= done < 40
    rerun = subprocess.run(_cmd(fasta, out, small_model_dir), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    _assert_same(_content(out), _content(ref_out))
    # A finished file is not overwritten without --overwrite.
    again = subprocess.run(_cmd(fasta, out, small_model_dir), capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr


# ---- bad input: exit code 2 and one line naming the file / record -------------------------------------------
def _bad_inputs(tmp_path, shared_data):
    cases = {}
    (tmp_path / "empty.fa").write_text("")
    cases["empty"] = (["empty.fa"], "empty.fa")
    (tmp_path / "noseq.fa").write_text(">good\nACGT\n>hollow\n>after\nACGT\n")
    cases["record without sequence"] = (["noseq.fa"], "hollow")
    (tmp_path / "headerless.fa").write_text("ACGTACGT\n>r1\nACGT\n")
    cases["header-less FASTA"] = (["headerless.fa"], "headerless.fa")
    data = gzip.compress(b">r1\n" + b"ACGT" * 50000 + b"\n")
    (tmp_path / "truncated.fa.gz").write_bytes(data[: len(data) // 2])
    cases["truncated gz"] = (["truncated.fa.gz"], "truncated.fa.gz")
    (tmp_path / "weird.fa").write_text(">ok\nACGT\n>odd_one\nACGTXACGT\n")
    cases["non-nucleotide, strict"] = (["weird.fa", "--strict-tokenizer"], "odd_one")
    (tmp_path / "dups.fa").write_text(">same\nACGT\n>same\nACGA\n")
    cases["duplicate ids"] = (["dups.fa"], "same")
    cases["missing input"] = (["nope.fa"], "nope.fa")
    (tmp_path / "fine.fa").write_text(">r\nACGTACGT\n")
    cases["output folder missing"] = (["fine.fa", "-o", "no_such_dir/out.h5"], "no_such_dir")
    ref = shared_data / "GRCh37_chrX_1-70M.fa.gz"
    (tmp_path / "backwards.bed").write_text("X\t1000\t900\tbackwards\n")
    cases["BED end < start"] = (["--reference", ref, "--regions", "backwards.bed"], "backwards.bed")
    (tmp_path / "nocontig.bed").write_text("chr99\t0\t100\tnowhere\n")
    cases["contig not in reference"] = (["--reference", ref, "--regions", "nocontig.bed"], "chr99")
    return cases


def test_every_bad_input_exits_2_with_one_line(tmp_path, shared_data, small_model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, (args, named) in _bad_inputs(tmp_path, shared_data).items():
        out = ["-o", "out.h5"] if "-o" not in args else []
        code, _, err = run_cli(["-q", "embed", *args, *out, "--model", small_model_dir, "--device", "cpu",
                                "--overwrite"], monkeypatch, capsys)
        lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
        assert code == 2, f"{name}: exit {code}: {err}"
        assert len(lines) == 1 and named in lines[0], f"{name}: {err!r}"


def test_usage_errors_exit_2(tmp_path, small_model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fine.fa").write_text(">r\nACGTACGT\n")
    for args in (["embed", "fine.fa"],  # no -o
                 ["embed", "fine.fa", "-o", "x.h5", "--pool", "median", "--model", small_model_dir],
                 ["embed", "fine.fa", "-o", "x.h5", "--layer", "9", "--model", small_model_dir],
                 ["embed", "fine.fa", "-o", "x.h5", "--model", tmp_path / "not_a_model"],
                 ["embed", "fine.fa", "-o", "x.h5", "--device", "tpu", "--model", small_model_dir]):
        code, _, err = run_cli(args, monkeypatch, capsys)
        assert code == 2, (args, err)


def test_doctor_reports_without_gpu(monkeypatch, capsys):
    code, out, _ = run_cli(["doctor"], monkeypatch, capsys)
    assert code == 0 and "torch" in out and "fftconv kernels" in out


def test_doctor_check_runs_every_path_and_fails_loudly(monkeypatch, capsys):
    # --check: one case per dispatch path, plain and gated, against float64; on the CPU the reference path.
    from genoconv.ops import selfcheck

    code, out, _ = run_cli(["doctor", "--check", "--device", "cpu"], monkeypatch, capsys)
    assert code == 0, out
    for name, *_ in selfcheck.CASES:
        assert out.count(name) == 2  # plain and gated
    assert out.count(" ok ") == 2 * len(selfcheck.CASES) + 1 and "FAIL" not in out  # + the model row (float32)
    assert "the shipped model on cpu" in out
    # A convolution that is off on one path (as a wrong kernel on a user's GPU would be): exit 1, one line naming it.
    real = selfcheck.causal_conv

    def off_for_long_rows(u, *args, **kwargs):
        y = real(u, *args, **kwargs)
        return y * 1.01 if u.shape[-1] == 270_000 else y

    monkeypatch.setattr(selfcheck, "causal_conv", off_for_long_rows)
    code, out, err = run_cli(["doctor", "--check", "--device", "cpu"], monkeypatch, capsys)
    assert code == 1 and out.count("FAIL") == 2
    assert (f"self-check failed on cpu: 2 of {2 * len(selfcheck.CASES)} cases off (worst: long, K << L" in err
            and len(err.strip().splitlines()) == 1)
    # The model row alone off (fused steps or GEMMs on a user's GPU): exit 1 naming the dtype.
    from genoconv.cli import doctor

    monkeypatch.setattr(selfcheck, "causal_conv", real)
    monkeypatch.setattr(doctor, "_model_check", lambda dev: [("float32", float("nan"), 1e-4)])
    code, out, err = run_cli(["doctor", "--check", "--device", "cpu"], monkeypatch, capsys)
    assert code == 1 and out.count("FAIL") == 1 and "model self-check failed on cpu: the shipped model in float32" in err


def test_refuses_to_start_without_disk_space(tmp_path, small_model_dir, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    (tmp_path / "r.fa").write_text(">r\n" + "ACGT" * 1000 + "\n")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    code, _, err = run_cli(["embed", tmp_path / "r.fa", "-o", tmp_path / "out.h5", "--model", small_model_dir,
                            "--device", "cpu"], monkeypatch, capsys)
    assert code == 1 and "free" in err and not (tmp_path / "out.h5").exists()


def test_out_of_memory_in_the_middle_of_a_streamed_record_restarts_it(small_model_dir, tmp_path, monkeypatch,
                                                                        capsys):
    """An OOM on the third chunk of a streamed record (after rows were written) drops the record's partial output
    and restarts it in smaller chunks; the file completes and equals a run made with the smaller chunks directly."""
    import torch

    from genoconv.model import HyenaDNA

    seq = "".join(np.random.default_rng(9).choice(list("ACGT"), size=30_000))
    fasta = _write_fasta(tmp_path / "long.fa", [("long", seq), ("short", seq[:500])])
    real = HyenaDNA.hidden_states
    calls = {"n": 0}

    def flaky(self, ids, layers=(-1,), stream=None, conv=None):
        if stream is not None and ids.shape[1] == 8192:
            calls["n"] += 1
            if calls["n"] == 3:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated, mid-record)")
        return real(self, ids, layers, stream, conv) if conv is not None else real(self, ids, layers, stream)

    monkeypatch.setattr(HyenaDNA, "hidden_states", flaky)
    out = tmp_path / "oom.h5"
    args = ["embed", fasta, "-o", out, "--model", small_model_dir, "--device", "cpu", "--chunk-size", "8192",
            "--store-dtype", "float32", "--pool", "mean,max", "--window", "100"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert calls["n"] == 3 and "retrying in chunks of 4096" in err
    monkeypatch.setattr(HyenaDNA, "hidden_states", real)
    direct = tmp_path / "direct.h5"
    code, _, err = run_cli([*args[:3], direct, *args[4:8], "--chunk-size", "4096", *args[10:]], monkeypatch, capsys)
    assert code == 0, err
    with open_embeddings(out) as a, open_embeddings(direct) as b:
        assert a.complete and a.ids == b.ids and a.modes[a.ids.index("long")] == "partial:K=4098;streamed:C=4096"
        for rid in a.ids:
            np.testing.assert_array_equal(a[rid], b[rid])
            np.testing.assert_array_equal(a.get(rid, kind="windowed"), b.get(rid, kind="windowed"))
        for mode in ("mean", "max"):
            np.testing.assert_array_equal(a.pooled(mode), b.pooled(mode))

# ---- progress (issue 17) -------------------------------------------------------------------------------------
def _progress_lines(err: str) -> list[str]:
    return [line.split("INFO ", 1)[1] for line in err.splitlines() if "INFO progress:" in line]


def test_progress_inside_one_long_record(tmp_path, small_model_dir, monkeypatch, capsys):
    """One 12 kbp record streamed in 2 kbp chunks: rate and ETA lines come while the record is still running."""
    rng = np.random.default_rng(3)
    fasta = _write_fasta(tmp_path / "long.fa", [("long", "".join(rng.choice(list("ACGT"), size=12_000)))])
    monkeypatch.setenv("GENOCONV_LOG_INTERVAL", "0")
    code, _, err = run_cli(["embed", fasta, "-o", tmp_path / "long.h5", "--model", small_model_dir, "--device", "cpu",
                            "--chunk-size", "2000"], monkeypatch, capsys)
    assert code == 0, err
    lines = _progress_lines(err)
    inside = [line for line in lines if line.startswith("progress: 0/1 records")]
    assert [line.split(", ")[1] for line in inside] == [f"{n:,}/12,000 bases ({100 * n / 12000:.1f}%)"
                                                        for n in (2000, 4000, 6000, 8000, 10000)]
    for line in inside:
        assert " kb/s, ETA " in line and "ETA unknown" not in line, line
    assert lines[-1].startswith("progress: 1/1 records, 12,000/12,000 bases (100.0%)")
    assert "wrote" in err.split(inside[-1], 1)[1]  # every in-record line came before the record was written


def test_resumed_run_counts_committed_records(tmp_path, small_model_dir, monkeypatch, capsys):
    from genoconv.cli.embed import ProgressReporter

    fasta = _write_fasta(tmp_path / "five.fa", [(f"r{i}", "ACGT" * (100 + i)) for i in range(5)])
    args = ["embed", fasta, "-o", tmp_path / "five.h5", "--model", small_model_dir, "--device", "cpu"]
    update = ProgressReporter.update

    def ctrl_c_after_two(self, progress):
        update(self, progress)
        if progress.records == 2:
            raise KeyboardInterrupt

    monkeypatch.setenv("GENOCONV_LOG_INTERVAL", "0")
    monkeypatch.setattr(ProgressReporter, "update", ctrl_c_after_two)
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 3, err
    monkeypatch.setattr(ProgressReporter, "update", update)
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    lines = _progress_lines(err)
    committed = sum(4 * (100 + i) for i in range(2))  # r0, r1: the shortest, committed first
    assert lines[0] == f"progress: 2/5 records, {committed:,}/{4 * 510:,} bases ({100 * committed / 2040:.1f}%) " \
                       "already committed; resuming"
    assert [line.split(",")[0] for line in lines[1:]] == ["progress: 3/5 records", "progress: 4/5 records",
                                                         "progress: 5/5 records"]
    assert f"wrote {tmp_path / 'five.h5'}: 5 records, 2,040 bases" in err or \
        f"wrote {tmp_path / 'five.h5'}: 5 records, 2040 bases" in err


# ---- pipes (issue 17) ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["-", "/dev/stdin", "<(zcat ...)"])
def test_embed_from_a_pipe_equals_the_file(tmp_path, small_model_dir, how, monkeypatch, capsys):
    """`zcat x | genoconv embed -`, `cat x | genoconv embed /dev/stdin` and `genoconv embed <(zcat x)` give what
    the file itself gives."""
    fasta = _many_records(tmp_path, n=6)
    gz = tmp_path / "many.fa.gz"
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    ref, out = tmp_path / "from_file.h5", tmp_path / "from_pipe.h5"
    code, _, err = run_cli(["-q", "embed", fasta, "-o", ref, "--model", small_model_dir, "--device", "cpu"],
                           monkeypatch, capsys)
    assert code == 0, err
    base = f"{shlex.quote(sys.executable)} -m genoconv -q embed --model {small_model_dir} --device cpu -o"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = {"-": f"zcat {gz} | {base} {out} -",
               "/dev/stdin": f"cat {gz} | {base} {out} /dev/stdin",
               "<(zcat ...)": f"{base} {out} <(zcat {gz})"}[how]
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, env=env, executable="/bin/bash")
    assert proc.returncode == 0, proc.stderr
    a, b = _content(ref), _content(out)
    for key in ("inputs", "input_files", "run_config"):  # they name the input; nothing else may differ
        a["attrs"].pop(key), b["attrs"].pop(key)
    _assert_same(a, b)


def test_a_piped_run_starts_but_does_not_resume(tmp_path, small_model_dir, monkeypatch, capsys):
    import io

    from genoconv.cli.embed import ProgressReporter

    data = _many_records(tmp_path, n=5).read_bytes()
    args = ["embed", "-", "-o", tmp_path / "piped.h5", "--model", small_model_dir, "--device", "cpu"]
    update = ProgressReporter.update

    def ctrl_c_after_two(self, progress):
        update(self, progress)
        if progress.records == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressReporter, "update", ctrl_c_after_two)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 3, err  # a piped run starts (and stops here, resumable as far as the file goes)
    assert "<stdin> is a pipe, which a rerun cannot check against this run: rerun with --overwrite" in err
    monkeypatch.setattr(ProgressReporter, "update", update)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, _, err = run_cli(args, monkeypatch, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and errors == [f"error: {tmp_path / 'piped.h5'}: cannot resume its 2 committed records: <stdin> "
                                    "is a pipe, whose content cannot be checked against the earlier run; rerun with "
                                    "--overwrite to start afresh, or save the input to a file"], err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, _, err = run_cli([*args, "--overwrite"], monkeypatch, capsys)
    assert code == 0, err
    with open_embeddings(tmp_path / "piped.h5") as f:
        assert f.complete and len(f) == 5
    # Interrupted again, now replacing that complete file: the unfinished piped.h5.new it leaves is not resumed by
    # the next --overwrite (which refused, naming --overwrite, every time), it is started afresh.
    monkeypatch.setattr(ProgressReporter, "update", ctrl_c_after_two)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, _, err = run_cli([*args, "--overwrite"], monkeypatch, capsys)
    assert code == 3 and (tmp_path / "piped.h5.new").exists(), err
    monkeypatch.setattr(ProgressReporter, "update", update)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, _, err = run_cli([*args, "--overwrite"], monkeypatch, capsys)
    assert code == 0 and not (tmp_path / "piped.h5.new").exists(), err
    with open_embeddings(tmp_path / "piped.h5") as f:
        assert f.complete and len(f) == 5


def test_embed_bam_reads_within_regions(shared_data, small_model_dir, tmp_path, monkeypatch, capsys):
    bam = shared_data / "celegans_range.bam"
    bed = tmp_path / "sel.bed"
    bed.write_text("CHROMOSOME_II\t1300\t1400\nCHROMOSOME_II\t1420\t1430\n")
    out = tmp_path / "sel.h5"
    code, _, err = run_cli(["embed", bam, "--regions", bed, "-o", out, "--model", small_model_dir, "--device", "cpu",
                            "--no-per-nucleotide"], monkeypatch, capsys)
    assert code == 0, err
    with pysam.AlignmentFile(str(bam)) as f:  # overlapping either region, counted once (no secondary here)
        want = {r.query_name + ("/1" if r.is_read1 else "/2") for r in f.fetch("CHROMOSOME_II", 1300, 1430)
                if r.reference_start < 1400 or r.reference_end > 1420}
    with open_embeddings(out) as f:
        assert f.complete and set(f.ids) == want and len(f.ids) == len(want) > 5


def test_more_shards_than_records_merge(tmp_path, small_model_dir, monkeypatch, capsys):
    """A 1-record file in 2 shards: shard 2/2 is an empty, complete file, and merge takes the pair."""
    fasta = _write_fasta(tmp_path / "one.fa", [("only", "ACGTTGCA" * 50)])
    opts = ["--model", small_model_dir, "--device", "cpu", "--pool", "mean,max", "--window", "64"]
    for i in (1, 2):
        code, _, err = run_cli(["embed", fasta, "-o", tmp_path / f"s{i}.h5", "--shard", f"{i}/2", *opts],
                               monkeypatch, capsys)
        assert code == 0, err
    assert "shard 2/2 has none of the 1 records; writing an empty, complete file" in err
    with open_embeddings(tmp_path / "s2.h5") as empty:
        assert empty.complete and len(empty) == 0 and empty.pooled("max").shape == (0, 16)
    code, _, err = run_cli(["embed", fasta, "-o", tmp_path / "all.h5", *opts], monkeypatch, capsys)
    assert code == 0, err
    for extra in ([], ["--virtual"]):
        merged = tmp_path / f"merged{''.join(extra)}.h5"
        code, _, err = run_cli(["merge", tmp_path / "s2.h5", tmp_path / "s1.h5", "-o", merged, *extra],
                               monkeypatch, capsys)
        assert code == 0, err
        with open_embeddings(merged) as f, open_embeddings(tmp_path / "all.h5") as whole:
            assert f.complete and f.ids == ["only"]
            assert np.array_equal(f["only"], whole["only"]) and np.array_equal(f.pooled("max"), whole.pooled("max"))
            assert np.array_equal(f.get("only", kind="windowed"), whole.get("only", kind="windowed"))


def test_protein_fasta_is_refused_before_any_work(tmp_path, small_model_dir, monkeypatch, capsys):
    # Longer than the test model's max_seq_len: no "partial convolution" line may come before the error.
    protein = _write_fasta(tmp_path / "titin.fa", [("TITIN_fragment", "MTTQAPTFTQPLQSVVVLEGSTATFEAH" * 200)])
    code, _, err = run_cli(["embed", protein, "-o", tmp_path / "p.h5", "--model", small_model_dir, "--device", "cpu"],
                           monkeypatch, capsys)
    assert code == 2 and "partial convolution" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: {protein}: record 'TITIN_fragment' holds amino acids")
    late = _write_fasta(tmp_path / "late.fa", [("dna", "ACGT" * 10), ("prot", "ACGTMKWVTFISLLFLFSSAYS")])
    code, _, err = run_cli(["embed", late, "-o", tmp_path / "l.h5", "--model", small_model_dir, "--device", "cpu"],
                           monkeypatch, capsys)
    assert code == 2 and "record 'prot'" in err and "amino acid? genoconv embeds DNA, not protein" in err


# ---- help and version (issue 17) -----------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["embed"], ["score"], ["merge"], ["inspect"], ["doctor"], ["models"],
                                     ["models", "list"], ["models", "download"]])
def test_help_shows_no_type_placeholders(command, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run_cli([*command, "--help"], monkeypatch, capsys)
    assert code == 0 and "Usage:" in out, err
    assert re.findall(r"<[^<>\s]+>", out) == [], out  # no <bool>, <list[Path]>, <int>, <float32|bfloat16|float16>
    if command == ["embed"]:
        assert "float32|bfloat16|float16" in out and "INPUT" in out and "--per-nucleotide" in out


def test_version_does_not_import_torch():
    """`genoconv --version` stays fast (~0.2 s): it imports neither torch nor h5py, numpy or pysam."""
    probe = ("import runpy, sys\nsys.argv = ['genoconv', '--version']\ntry:\n    runpy.run_module('genoconv', "
             "run_name='__main__')\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'h5py', 'numpy', 'pysam'}))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"genoconv {__import__('genoconv').__version__}", "[]"]


def test_progress_bar_moves_inside_a_record_and_starts_from_committed(monkeypatch):
    from genoconv.cli.embed import ProgressReporter
    from genoconv.engine import Progress

    reporter = ProgressReporter()
    reporter.tty = True  # the rich bar, as on a terminal
    with reporter:
        reporter.start(4, 10_000, Progress(records=1, bases=2_000))  # a resumed run: one record committed
        task = reporter.bar.tasks[0]
        assert task.completed == 2_000 and task.fields["records"] == "1/4 records"
        reporter.update(Progress(records=1, bases=2_000, record_bases=3_000))  # a chunk inside record 2
        assert task.completed == 5_000 and task.fields["rate"].endswith("kb/s")


def test_every_option_is_named_after_its_parameter():
    """Typer 0.27 with click 8.5 named an option after its metavar when that was its name in capitals (`--DEVICE`);
    the GPU machine's image has that pair. Options declare such names explicitly, and none is in capitals."""
    import typer

    from genoconv.cli import app

    renamed = {("export", "fmt"): "--format", ("export", "bin_size"): "--bin", ("plot", "bin_size"): "--bin"}
    bad = []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))
        for param in getattr(command, "params", []):
            if param.param_type_name != "option" or param.name == "help":
                continue
            want = renamed.get((path[-1] if path else "", param.name), "--" + param.name.replace("_", "-"))
            if want not in param.opts or any(o.startswith("--") and o[2:].isupper() for o in param.opts):
                bad.append((path, param.name, param.opts))

    walk(typer.main.get_command(app), ())
    assert not bad


# ---- issue 16 -------------------------------------------------------------------------------------------------
def test_case5_a_second_embed_of_the_same_output_exits_2_naming_the_first(tmp_path, small_model_dir, monkeypatch,
                                                                         capsys):
    fasta = _many_records(tmp_path, n=120)
    out = tmp_path / "out.h5"
    first = subprocess.Popen(_cmd(fasta, out, small_model_dir), stderr=subprocess.PIPE, text=True)
    _wait_for_commits(Path(str(out) + ".journal"), first, at_least=2)
    code, _, err = run_cli(["-q", "embed", fasta, "-o", out, "--model", small_model_dir, "--device", "cpu", "--pool",
                            "mean,max,last", "--window", "256", "--commit-interval", "0"], monkeypatch, capsys)
    still_running = first.poll() is None
    _, first_err = first.communicate(timeout=600)
    assert still_running, "the first run ended before the second one started; make the input larger"
    assert code == 2 and f"is being written by another genoconv run (pid {first.pid} on" in err, err
    assert len(err.strip().splitlines()) == 1
    assert first.returncode == 0, first_err
    with open_embeddings(out) as f:
        assert f.complete and len(f) == 120


def _limited(max_file_bytes: int):
    """preexec_fn: files this process writes may not grow past ``max_file_bytes`` (EFBIG, as a full disk would
    give ENOSPC: HDF5 fails inside a write either way). SIGXFSZ is ignored so the write fails instead of killing."""
    import resource

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return apply


def _sha(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fails_for_space(cmd, limit):
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_limited(limit))
    assert proc.returncode == 1, (proc.returncode, proc.stderr)  # not -11/139: no segfault
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "file too large" in lines[0], proc.stderr
    return lines[0]


def test_case7_full_disk_during_embed_and_merge_exits_1_keeps_the_complete_file_and_resumes(tmp_path, small_model_dir):
    fasta = _many_records(tmp_path, n=40)
    ref = tmp_path / "ref.h5"
    subprocess.run(_cmd(fasta, ref, small_model_dir), check=True)
    # an earlier complete output, then an --overwrite run of it into a "full disk"
    out = tmp_path / "out.h5"
    small = _write_fasta(tmp_path / "small.fa", [("a", "ACGT" * 100)])
    subprocess.run(_cmd(small, out, small_model_dir), check=True)
    before = _sha(out)
    line = _fails_for_space(_cmd(fasta, out, small_model_dir) + ["--overwrite"], 6 << 20)
    assert "out.h5" in line and os.path.getsize(ref) > 5 << 20
    assert _sha(out) == before  # the complete file is intact until its replacement is complete
    aside = tmp_path / "out.h5.new"
    assert len(open_embeddings_quiet(aside)) > 0  # what was committed before the disk filled up
    rerun = subprocess.run(_cmd(fasta, out, small_model_dir) + ["--overwrite"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    _assert_same(_content(out), _content(ref))
    assert not aside.exists()
    # merge: shards, an earlier merged file, then a merge --overwrite into a "full disk"
    shards = []
    for i in (1, 2):
        shards.append(tmp_path / f"shard{i}.h5")
        subprocess.run(_cmd(fasta, shards[-1], small_model_dir) + ["--shard", f"{i}/2"], check=True)
    merged = tmp_path / "merged.h5"
    merge = [sys.executable, "-m", "genoconv", "-q", "merge", *map(str, shards), "-o", str(merged)]
    subprocess.run(merge, check=True)
    before = _sha(merged)
    line = _fails_for_space(merge + ["--overwrite"], 6 << 20)
    assert "merged.h5" in line and _sha(merged) == before
    for virtual in ([], ["--virtual"]):
        again = subprocess.run(merge + ["--overwrite", *virtual], capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        with open_embeddings(merged) as m, open_embeddings(ref) as r:
            assert m.complete and sorted(m.ids) == sorted(r.ids)


def open_embeddings_quiet(path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_embeddings(path) as f:
            return list(f.ids)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs (needs root and mount): a real ENOSPC."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_case7_real_enospc_in_a_small_tmpfs(small_tmpfs, tmp_path, small_model_dir, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    fasta = _many_records(tmp_path, n=40)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 10**12))  # pass the start-up check
    args = ["-q", "embed", fasta, "-o", small_tmpfs / "out.h5", "--model", small_model_dir, "--device", "cpu",
            "--window", "1", "--commit-interval", "0"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 1 and err.startswith("error: ") and "no space left on device" in err, err
    assert len(err.strip().splitlines()) == 1
    committed = open_embeddings_quiet(small_tmpfs / "out.h5")
    assert committed
    monkeypatch.undo()
    # with space again (the same folder, grown), the same command resumes
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    with open_embeddings(small_tmpfs / "out.h5") as f:
        assert f.complete and len(f) == 40


def test_case9_nul_in_an_id_exits_2_before_anything_is_written(tmp_path, small_model_dir, monkeypatch, capsys):
    (tmp_path / "nul.fa").write_bytes(b">fine\nACGTACGT\n>bro\x00ken\nACGTACGT\n")
    out = tmp_path / "out.h5"
    code, _, err = run_cli(["-q", "embed", tmp_path / "nul.fa", "-o", out, "--model", small_model_dir, "--device",
                            "cpu"], monkeypatch, capsys)
    assert code == 2 and "nul.fa" in err and "bro\\x00ken" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_case10_a_run_that_committed_nothing_restarts_without_overwrite(tmp_path, small_model_dir, monkeypatch,
                                                                        capsys):
    """A bad record found while embedding (after the output exists) leaves an output with nothing committed; the
    corrected rerun, even with other options or inputs, starts it afresh instead of asking for --overwrite."""
    (tmp_path / "bad.fa").write_text(">long\n" + "ACGT" * 100 + "\n>short\nACGTXACGT\n")
    out = tmp_path / "out.h5"
    args = ["-q", "embed", "-o", out, "--model", small_model_dir, "--device", "cpu", "--strict-tokenizer"]
    code, _, err = run_cli([*args, tmp_path / "bad.fa"], monkeypatch, capsys)
    assert code == 2 and "short" in err and "bad.fa" in err, err
    assert out.exists()  # created before the bad record was found
    (tmp_path / "fixed.fa").write_text(">long\n" + "ACGT" * 100 + "\n>short\nACGTAACGT\n")
    code, _, err = run_cli([*args, tmp_path / "fixed.fa", "--window", "4"], monkeypatch, capsys)
    assert code == 0, err
    with open_embeddings(out) as f:
        assert f.complete and f.ids == ["short", "long"]


# ---- issue 16, case 12 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_case12_signal_during_start_up_exits_3(tmp_path, small_model_dir, sig):
    """The input is a FIFO nobody writes to: the run is held in start-up (reading its inputs) until signalled."""
    fifo = tmp_path / "in.fa"
    os.mkfifo(fifo)
    out = tmp_path / "out.h5"
    proc = subprocess.Popen([sys.executable, "-m", "genoconv", "embed", str(fifo), "-o", str(out), "--model",
                             str(small_model_dir), "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the model is loaded: the run is reading its inputs now
        if "INFO model" in line:
            break
    time.sleep(0.5)
    proc.send_signal(sig)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 3, err
    assert f"interrupted by {sig.name} while starting" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not Path(f"{out}.lock").exists()


def test_case12_signal_while_loading_the_model_exits_3(tmp_path, small_model_dir, monkeypatch, capsys):
    from genoconv.cli import common

    load = common.load_model

    def slow_load(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the model loads
        return load(*args, **kwargs)

    monkeypatch.setattr(common, "load_model", slow_load)
    monkeypatch.setattr("genoconv.cli.embed.load_model", slow_load)
    (tmp_path / "r.fa").write_text(">r\nACGT\n")
    try:
        code, _, err = run_cli(["embed", tmp_path / "r.fa", "-o", tmp_path / "o.h5", "--model", small_model_dir,
                                "--device", "cpu"], monkeypatch, capsys)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert code == 3 and "interrupted by SIGTERM while starting" in err, err


def test_case12_small_usage_errors_exit_2_with_one_clear_line(tmp_path, small_model_dir, monkeypatch, capsys):
    (tmp_path / "r.fa").write_text(">r\nACGT\n")
    base = ["-q", "embed", tmp_path / "r.fa", "-o", tmp_path / "o.h5", "--device", "cpu"]
    for extra, named in ((["--model", small_model_dir, "--max-memory", "0"], "--max-memory '0': must be more than 0"),
                         (["--model", "m" * 5000], "--model mmmm"),
                         (["--model", "/" + "d/" * 3000], "--model /d/")):
        code, _, err = run_cli([*base, *extra], monkeypatch, capsys)
        assert code == 2 and named in err and len(err.strip().splitlines()) == 1 and len(err) < 400, err
    from genoconv.errors import InputError
    from genoconv.model.embedder import LoadedModel

    with pytest.raises(InputError, match="must be more than 0 bytes"):
        Embedder.from_pretrained(small_model_dir, device="cpu", max_memory=0)

    with pytest.raises(InputError, match="must be more than 0 bytes"):
        LoadedModel(Embedder.from_pretrained(small_model_dir, device="cpu").model, max_memory=0)


def test_case12_read_only_output_folder_is_reported_as_such(tmp_path, small_model_dir, monkeypatch, capsys):
    """A read-only mount reports 0 B free: the message must say read-only, not 'not enough disk space'."""
    import shutil
    from collections import namedtuple

    (tmp_path / "r.fa").write_text(">r\nACGT\n")
    statvfs = os.statvfs

    class ReadOnly:
        def __init__(self, st):
            self._st = st
            self.f_flag = st.f_flag | os.ST_RDONLY

        def __getattr__(self, name):
            return getattr(self._st, name)

    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly(statvfs(path)))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("usage", "total used free")(10**9, 10**9, 0))
    code, _, err = run_cli(["-q", "embed", tmp_path / "r.fa", "-o", tmp_path / "o.h5", "--model", small_model_dir,
                            "--device", "cpu"], monkeypatch, capsys)
    assert code == 2 and "read-only" in err and "disk space" not in err, err


def test_case12_record_errors_name_the_file_too(tmp_path, small_model_dir, monkeypatch, capsys):
    (tmp_path / "weird.fa").write_text(">ok\nACGT\n>odd_one\nACGTXACGT\n")
    code, _, err = run_cli(["-q", "embed", tmp_path / "weird.fa", "-o", tmp_path / "o.h5", "--model",
                            small_model_dir, "--device", "cpu", "--strict-tokenizer"], monkeypatch, capsys)
    assert code == 2 and f"{tmp_path / 'weird.fa'}: record 'odd_one': character 'X'" in err, err


@pytest.mark.filterwarnings("ignore:.*unfinished")
def test_case8_flipped_byte_in_a_partial_output_never_ends_in_an_unexpected_error(tmp_path, small_model_dir, cli,
                                                                                   stop_after_batches):
    import shutil

    fasta = _many_records(tmp_path, n=24)
    ref = tmp_path / "ref.h5"
    subprocess.run(_cmd(fasta, ref, small_model_dir), check=True)
    partial = tmp_path / "partial.h5"
    stop_after_batches(3)
    code, _, err = cli(*_cmd(fasta, partial, small_model_dir)[3:])
    assert code == 3, err
    data = partial.read_bytes()
    headers = [i for i in range(len(data)) if data.startswith(b"OHDR", i)]
    for k, offset in enumerate([headers[1] + 9, headers[len(headers) // 2] + 9, headers[-1] + 9]):
        out = tmp_path / f"out{k}.h5"
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        out.write_bytes(bytes(damaged))
        shutil.copyfile(f"{partial}.journal", f"{out}.journal")
        code, _, err = cli(*_cmd(fasta, out, small_model_dir)[3:])
        if code == 2:  # refused, saying how to go on: the rerun it asks for finishes
            assert "rerun the same command" in err or "--overwrite" in err, err
            code, _, err = cli(*_cmd(fasta, out, small_model_dir)[3:])
        assert code == 0 and "unexpected" not in err, (offset, err)
        _assert_same(_content(out), _content(ref))


# ---- issue 16, case 6: a long record checkpoints per chunk and resumes mid-record -------------------------------
def _long_record(tmp_path):
    """One 60 kbp record (longer than the test model's l_max 4,098: partial convolution) and two short ones."""
    rng = np.random.default_rng(6)
    seqs = [("before", 900), ("chromosome", 60_000), ("after", 1_200)]
    return _write_fasta(tmp_path / "long.fa", [(rid, "".join(rng.choice(list("ACGT"), size=n))) for rid, n in seqs])


def _long_cmd(fasta, out, model, *extra):
    return ["embed", str(fasta), "-o", str(out), "--model", str(model), "--device", "cpu", "--chunk-size", "4096",
            "--pool", "mean,max,last", "--window", "1000", "--store-dtype", "float32", "--commit-interval", "0",
            *extra]


def test_sigterm_inside_a_long_record_resumes_there(tmp_path, small_model_dir, cli, stop_after_batches):
    fasta = _long_record(tmp_path)
    ref = tmp_path / "uninterrupted.h5"
    code, _, err = cli(*_long_cmd(fasta, ref, small_model_dir))
    assert code == 0, err
    out = tmp_path / "out.h5"
    stop_after_batches(6)  # 'before', then 5 chunks of the long record: SIGTERM in the middle of it
    code, _, err = cli(*_long_cmd(fasta, out, small_model_dir))
    assert code == 3 and "inside record 'chromosome' at base 24,576" in err, err
    with pytest.warns(UserWarning, match="unfinished"):
        with open_embeddings(out) as partial, open_embeddings(ref) as whole:
            assert partial.ids == ["before"]  # the long record is not committed, but checkpointed
            np.testing.assert_array_equal(partial["before"], whole["before"])  # read past the checkpoint's tail
    code, _, err = cli(*_long_cmd(fasta, out, small_model_dir))
    assert code == 0, err
    assert "record chromosome: resuming at base 24576 of 60000 from its checkpoint" in err
    _assert_same(_content(out), _content(ref))
    assert not list(tmp_path.glob("out.h5.state*"))  # the saved state goes with the journal


def test_a_checkpoint_is_not_thrown_away_by_a_changed_option(tmp_path, small_model_dir, cli, stop_after_batches):
    # Interrupted inside the first (long) record: nothing committed, one checkpoint. A rerun with one option changed
    # started afresh and dropped it (hours, for a chromosome); now it is refused like committed records are.
    rng = np.random.default_rng(8)
    fasta = _write_fasta(tmp_path / "one.fa", [("chromosome", "".join(rng.choice(list("ACGT"), size=30_000)))])
    out = tmp_path / "out.h5"
    stop_after_batches(3)
    code, _, err = cli(*_long_cmd(fasta, out, small_model_dir))
    assert code == 3 and "inside record 'chromosome'" in err, err
    code, _, err = cli(*_long_cmd(fasta, out, small_model_dir), "--window", "500")
    assert code == 2 and "was started with different options" in err and "window" in err, err
    code, _, err = cli(*_long_cmd(fasta, out, small_model_dir))
    assert code == 0 and "record chromosome: resuming at base" in err, err


@pytest.mark.parametrize("damage", [None, "journal"])
def test_kill_inside_a_long_record_resumes_from_the_last_checkpoint(tmp_path, small_model_dir, damage):
    """SIGKILL after a few checkpoints (--checkpoint-interval 0: after every chunk). The rerun resumes the record
    from the last checkpoint; with the journal's clean-close line missing (always, after a kill) it salvages the file
    first, and the checkpoint survives that too. Every dataset and attribute but times equals an uninterrupted run."""
    fasta = _long_record(tmp_path)
    ref = tmp_path / "uninterrupted.h5"
    base = [sys.executable, "-m", "genoconv", "-v"]
    subprocess.run([*base, *_long_cmd(fasta, ref, small_model_dir)], check=True, capture_output=True)
    out = tmp_path / "out.h5"
    args = _long_cmd(fasta, out, small_model_dir, "--checkpoint-interval", "0")
    proc = subprocess.Popen([*base, *args], stderr=subprocess.PIPE, text=True)
    journal = Path(str(out) + ".journal")
    t0 = time.monotonic()
    while not (journal.exists() and journal.read_text(errors="replace").count('{"p":') >= 4):
        assert proc.poll() is None, "finished before it could be killed"
        assert time.monotonic() - t0 < 120
        time.sleep(0.01)
    proc.kill()
    proc.communicate(timeout=60)
    if damage == "journal":  # a torn last line, as a kill in the middle of a write leaves
        with open(journal, "ab") as fh:
            fh.write(b'{"p": {"c": 1, "id": "chromo')
    rerun = subprocess.run([*base, *args], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "record chromosome: resuming at base" in rerun.stderr
    _assert_same(_content(out), _content(ref))


def test_python_warnings_are_one_log_line(tmp_path):
    # `inspect` of an unfinished file warned as "<file>.py:23: UserWarning: ..." plus the source line before.
    from genoconv.store import EmbeddingWriter, StoreSpec

    out = tmp_path / "unfinished.h5"
    with EmbeddingWriter.open(out, StoreSpec(d_model=4, layers=(0,), pools=("mean",)), {"run_config": {}}) as w:
        rec = w.begin("r1", 3, "exact")
        rec.append(0, np.ones((3, 4), np.float32))
        rec.commit({("mean", 0): np.ones(4, np.float32)})
    done = subprocess.run([sys.executable, "-m", "genoconv", "inspect", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "WARNING" in lines[0] and "unfinished.h5 is unfinished" in lines[0], done.stderr
    assert "UserWarning" not in done.stderr and ".py:" not in done.stderr


EXAMPLE_FA = Path(__file__).parents[1] / "reference_data" / "example.fa"


def test_a_startup_stop_wrapped_by_a_library_still_exits_3(tmp_path):
    # SIGTERM while torch's load_state_dict copies a parameter: torch caught the Interrupted and raised its own
    # RuntimeError, so the run exited 1 ("unexpected") where the README promises 3.
    code = f"""
import signal, sys
from genoconv import errors
from genoconv.cli import main
import genoconv.model.embedder as em
def load(*args, **kwargs):
    try:
        errors.interrupt_now(signal.SIGTERM, None)
    except errors.Interrupted as err:
        raise RuntimeError(f"Error(s) in loading state_dict for HyenaDNA: {{err}}")
em.LoadedModel.from_checkpoint = classmethod(lambda cls, *a, **k: load())
sys.argv = ["genoconv", "embed", {str(EXAMPLE_FA)!r}, "-o", {str(tmp_path / "x.h5")!r}]
main()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM while starting")


def test_log_flags_work_after_the_subcommand(tmp_path, small_model_dir, monkeypatch, capsys):
    """-q / -v belong to the root command, but users write them anywhere (``genoconv embed x.fa -q``): they are
    honoured after the subcommand too, not refused as the subcommand's unknown options."""
    fasta = _write_fasta(tmp_path / "x.fa", [("a", "ACGTACGTTGCA" * 20)])
    common = ["--model", small_model_dir, "--device", "cpu"]
    code, _, err = run_cli(["embed", fasta, "-o", tmp_path / "loud.h5", *common], monkeypatch, capsys)
    assert code == 0 and "wrote" in err
    code, _, err = run_cli(["embed", fasta, "-o", tmp_path / "quiet.h5", *common, "-q"], monkeypatch, capsys)
    assert code == 0 and "wrote" not in err and (tmp_path / "quiet.h5").exists()
    code, _, err = run_cli(["embed", fasta, "--quiet", "-o", tmp_path / "quiet2.h5", *common], monkeypatch, capsys)
    assert code == 0 and "wrote" not in err


def test_sigterm_during_a_merge_exits_3_with_the_merges_own_message_and_resumes(tmp_path, small_model_dir,
                                                                                monkeypatch, capsys):
    """A SIGTERM that arrives while merge copies rows (a job's time limit): exit 3 saying how far the merge got (it
    said "nothing was embedded yet", and a stop raised inside HDF5 calls could be lost); the rerun completes it."""
    from genoconv.store import writer as store_writer

    fasta = _write_fasta(tmp_path / "x.fa", [(f"r{i}", "ACGTTGCAAC" * (10 + i)) for i in range(4)])
    opts = ["--model", small_model_dir, "--device", "cpu", "--pool", "mean"]
    for i in (1, 2):
        code, _, err = run_cli(["embed", fasta, "-o", tmp_path / f"s{i}.h5", "--shard", f"{i}/2", *opts],
                               monkeypatch, capsys)
        assert code == 0, err
    begin = store_writer.EmbeddingWriter.begin
    calls = []

    def begin_then_term(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the second record is being copied
        return begin(self, *args, **kwargs)

    merged = tmp_path / "merged.h5"
    with monkeypatch.context() as m:
        m.setattr(store_writer.EmbeddingWriter, "begin", begin_then_term)
        code, _, err = run_cli(["merge", tmp_path / "s1.h5", tmp_path / "s2.h5", "-o", merged], monkeypatch, capsys)
    assert code == 3 and "merge interrupted by SIGTERM after 2 of 4 records" in err, err
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the merge put the previous handler back
    code, _, err = run_cli(["merge", tmp_path / "s1.h5", tmp_path / "s2.h5", "-o", merged], monkeypatch, capsys)
    assert code == 0, err
    with open_embeddings(merged) as f:
        assert f.complete and sorted(f.ids) == ["r0", "r1", "r2", "r3"]


@pytest.mark.parametrize("args", [["score", EXAMPLE_FA, "--device", "cpu"], ["--version"], ["embed", "--help"]],
                         ids=["score", "version", "help"])
@pytest.mark.parametrize("buffered", [False, True], ids=["unbuffered", "buffered"])
def test_a_closed_stdout_exits_0_without_a_word(args, buffered):
    # `genoconv score x.fa | head -1` exited 1 without a word: typer (and rich, for --help and tables) turned the
    # broken pipe into exit 1; a closed pipe downstream is no error for a Unix filter. Buffered output (--version)
    # meets it only at the final flush, which Python's exit reports as "Exception ignored ... BrokenPipeError", 120.
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: the first write (or flush) meets EPIPE
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    try:
        done = subprocess.run([sys.executable, "-m", "genoconv", *map(str, args)], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=300, check=False)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (0, "")
