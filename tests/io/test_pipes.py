"""Inputs read once: stdin (``-``), FIFOs as ``/dev/stdin`` and process substitution give them (issue 17)."""

from __future__ import annotations

import gzip
import io
import os
import sys
import threading
from pathlib import Path

import pysam
import pytest

from genoconv.errors import InputError
from genoconv.io import open_records

FASTA = b">a first\nACGTACGTNN\nacg\n>b\nTTTT\n"
FASTQ = b"@r1\nACGT\n+\nIIII\n@r2 x\nGGGGCC\n+\nIIIIII\n"


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def _fifo(tmp_path: Path, data: bytes, name: str = "pipe") -> Path:
    """A named pipe fed by a thread, as `<(zcat x.fa.gz)` or a `|` into /dev/stdin feeds genoconv."""
    path = tmp_path / name
    os.mkfifo(path)

    def feed():
        with open(path, "wb") as fh:
            for i in range(0, len(data), 1000):  # small writes: the reader sees a stream arrive in pieces
                fh.write(data[i:i + 1000])

    threading.Thread(target=feed, daemon=True).start()
    return path


def _bgzip(data: bytes, tmp_path: Path) -> bytes:
    plain = tmp_path / "plain.txt"
    plain.write_bytes(data)
    pysam.tabix_compress(str(plain), str(tmp_path / "plain.gz"), force=True)
    return (tmp_path / "plain.gz").read_bytes()


@pytest.mark.parametrize("compression", ["none", "gzip", "bgzip"])
def test_stdin_fasta_every_compression(monkeypatch, tmp_path, compression):
    data = {"none": FASTA, "gzip": gzip.compress(FASTA), "bgzip": _bgzip(FASTA, tmp_path)}[compression]
    _stdin(monkeypatch, data)
    source = open_records(["-"])
    assert source.piped_inputs == ["<stdin>"]
    assert source.lengths() == [("a", 13), ("b", 4)]  # read twice, as a run does
    assert {r.id: r.sequence() for r in source} == {"a": "ACGTACGTNNacg", "b": "TTTT"}
    assert "<stdin> (FASTA" in source.describe() and "from a pipe" in source.describe()
    copy = source._saved[0].data
    assert copy.exists()
    source.close()
    assert not copy.exists()  # the temporary copy goes with the source


def test_fifo_fastq_gzip_longer_than_the_sniffed_head(tmp_path):
    # 300 records of 500 bases: far more than the 64 KiB sniffed first, so the copy must join head and rest.
    records = b"".join(b"@r%d\n%s\n+\n%s\n" % (i, b"ACGT" * 125, b"I" * 500) for i in range(300))
    source = open_records([_fifo(tmp_path, gzip.compress(records))])
    assert source.piped_inputs == [str(tmp_path / "pipe")]
    lengths = source.lengths()
    assert len(lengths) == 300 and {n for _, n in lengths} == {500}
    assert [r.id for r in source][-1] == "r299"
    source.close()


def test_fifo_bam(tmp_path, shared_data):
    source = open_records([_fifo(tmp_path, (shared_data / "celegans_range.bam").read_bytes())])
    assert len(source.lengths()) == 112 and source.piped_inputs
    source.close()


def test_pipe_errors_name_the_pipe(monkeypatch, tmp_path):
    _stdin(monkeypatch, b"")
    with pytest.raises(InputError, match="^<stdin>: empty file$"):
        open_records(["-"])
    _stdin(monkeypatch, b">ok\nACGT\n>hollow\n")
    with pytest.raises(InputError, match="^<stdin>: record 2 'hollow' \\(line 3\\) has no sequence$"):
        open_records(["-"]).lengths()
    _stdin(monkeypatch, b"hello world\n")
    with pytest.raises(InputError, match="^<stdin>: unknown format"):
        open_records(["-"])
    with pytest.raises(InputError, match="stdin.*more than once"):
        open_records(["-", "-"])
    fasta = tmp_path / "ref.fa"
    fasta.write_bytes(FASTA)
    bed = tmp_path / "r.bed"
    bed.write_text("a\t0\t4\n")
    with pytest.raises(InputError, match="regions cannot come from a pipe"):
        open_records([], reference=fasta, regions=_fifo(tmp_path, b"a\t0\t4\n"))
    with pytest.raises(InputError, match="reference is read through its index"):
        open_records([], reference=_fifo(tmp_path, FASTA, "ref_pipe"), regions=bed)


def test_scratch_folder_for_the_copy(monkeypatch, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("GENOCONV_SCRATCH", str(scratch))
    _stdin(monkeypatch, FASTA)
    source = open_records(["-"])
    assert [p.parent for p in scratch.iterdir()] == [scratch]  # the copy lives there while the source is open
    source.close()
    assert list(scratch.iterdir()) == []
    monkeypatch.setenv("GENOCONV_SCRATCH", str(tmp_path / "missing"))
    _stdin(monkeypatch, FASTA)
    with pytest.raises(InputError, match=r"^<stdin>: cannot save this pipe's contents in .*missing \(No such file or "
                                         r"directory\); set GENOCONV_SCRATCH to a writable folder$"):
        open_records(["-"])
