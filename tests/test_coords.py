"""Reference coordinates of records (issue 19): read from BED/GTF regions and aligned reads, passed by the engine,
kept by the store through commit, resume, salvage and merge, and exposed by the reader."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pysam
import pytest

from genoconv import store
from genoconv.coords import Coords
from genoconv.store import EmbeddingWriter, StoreSpec, open_embeddings
from test_cli import run_cli  # genoconv ARGS... in-process: (exit code, stdout, stderr)

SPEC = StoreSpec(d_model=4, layers=(1,), per_nucleotide=False, pools=("mean",), window=5)
PROVENANCE = {"run_config": {"test": "coords"}}
# (id, length, coords): a plus-strand region, a record without coordinates, a minus-strand read
RECORDS = [("r_plus", 12, Coords("chr1", 100, 112, "+")), ("fasta_rec", 7, None),
           ("read/1", 9, Coords("chr2", 50, 61, "-"))]
# Where the DMD gene lies on GRCh37 chrX, 0-based half-open (minus strand).
DMD_START, DMD_END = 31_137_344, 33_357_726


def _write(writer: EmbeddingWriter, records=RECORDS) -> None:
    for rid, length, coords in records:
        if rid in writer.committed:
            continue
        rec = writer.begin(rid, length, "exact", coords)
        rec.append_windows(1, np.full((-(-length // 5), 4), length, np.float32))
        rec.commit({("mean", 1): np.full(4, length, np.float32)})


def _check(path: Path, records=RECORDS) -> None:
    with open_embeddings(path) as f:
        assert f.has_coords
        for rid, _, coords in records:
            assert f.coords(rid) == coords
        table = f.coords_table()
        assert list(table["id"]) == [r[0] for r in records]
        assert list(table["contig"]) == [c.contig if c else "" for _, _, c in records]
        assert table["start"].dtype == np.int64
        assert list(table["start"]) == [c.start if c else -1 for _, _, c in records]
        assert list(table["end"]) == [c.end if c else -1 for _, _, c in records]
        assert list(table["strand"]) == [c.strand if c else "" for _, _, c in records]


def test_store_writes_and_reads_coords(tmp_path):
    out = tmp_path / "c.h5"
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        _write(w)
        w.finish()
    _check(out)
    with h5py.File(out, "r") as f:
        assert sorted(f["coords"]) == ["contig", "end", "start", "strand"]
        assert f["coords/start"].dtype == np.int64 and f["coords/contig"].shape == (3,)
        assert list(f["coords/strand"].asstr()[:]) == ["+", "", "-"]


def test_no_coords_group_without_coordinates(tmp_path):
    out = tmp_path / "plain.h5"
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        _write(w, [("a", 5, None), ("b", 6, None)])
        w.finish()
    with h5py.File(out, "r") as f:
        assert "coords" not in f
    with open_embeddings(out) as f:
        assert not f.has_coords and f.coords("a") is None
        assert list(f.coords_table()["start"]) == [-1, -1]


def test_bad_coords_are_refused(tmp_path):
    with EmbeddingWriter.open(tmp_path / "x.h5", SPEC, PROVENANCE) as w:
        for bad in [("chr1", 10, 10, "+"), ("chr1", 0, 5, "."), ("", 0, 5, "+"), ("chr1", -1, 5, "-"), (1, 2)]:
            with pytest.raises(ValueError, match="record 'a'"):
                w.begin("a", 5, "exact", bad)


def test_coords_survive_close_resume_and_salvage(tmp_path):
    out = tmp_path / "r.h5"
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        _write(w, RECORDS[:2])
    with pytest.warns(UserWarning, match="unfinished"):
        _check(out, RECORDS[:2])  # an unfinished file: from the journal
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:  # clean close: reopened
        assert w.committed == ["r_plus", "fasta_rec"]
        _write(w, RECORDS[:2] + [("read/1", 9, RECORDS[2][2])])
    journal = out.with_name(out.name + ".journal")
    lines = journal.read_bytes().splitlines(keepends=True)
    assert b'"closed"' in lines[-1]
    journal.write_bytes(b"".join(lines[:-1]))  # as after a kill: the records are replayed into a fresh file
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        assert w.committed == ["r_plus", "fasta_rec", "read/1"]
        w.finish()
    _check(out)


@pytest.mark.parametrize("virtual", [False, True])
def test_merge_carries_coords(tmp_path, virtual):
    parts = []
    for k, chunk in enumerate((RECORDS[:1], RECORDS[1:])):
        part = tmp_path / f"part{k}.h5"
        with EmbeddingWriter.open(part, SPEC, {"run_config": {"test": "coords", "shard": [k + 1, 2]}}) as w:
            _write(w, chunk)
            w.finish()
        parts.append(part)
    out = tmp_path / "merged.h5"
    assert store.merge(parts, out, virtual=virtual) == 3
    _check(out)


# ------------------------------------------------------------------------------------------ end to end
def _embed(args, monkeypatch, capsys, small_model_dir):
    code, _, err = run_cli(["embed", *args, "--model", small_model_dir, "--device", "cpu", "--no-per-nucleotide",
                            "--window", "50"], monkeypatch, capsys)
    assert code == 0, err


def test_bed_and_gtf_regions_store_their_coords(shared_data, small_model_dir, tmp_path, monkeypatch, capsys):
    chrx = shared_data / "GRCh37_chrX_1-70M.fa.gz"
    bed = tmp_path / "r.bed"
    bed.write_text("X\t1000000\t1000300\tplus\t0\t+\n"
                   f"X\t{DMD_START}\t{DMD_START + 400}\tminus\t0\t-\n"
                   "X\t2000000\t2000100\tnostrand\t0\t.\n")
    gtf = tmp_path / "g.gtf"
    gtf.write_text(f'X\tsrc\tgene\t{DMD_END - 999}\t{DMD_END}\t.\t-\t.\tgene_id "g1"; gene_name "DMD_5p";\n'
                   'X\tsrc\tgene\t1000001\t1000500\t.\t+\t.\tgene_id "g2";\n')
    _embed(["--reference", chrx, "--regions", bed, "-o", tmp_path / "bed.h5"], monkeypatch, capsys, small_model_dir)
    _embed(["--reference", chrx, "--regions", gtf, "-o", tmp_path / "gtf.h5"], monkeypatch, capsys, small_model_dir)
    with open_embeddings(tmp_path / "bed.h5") as f:
        assert f.coords("plus") == Coords("X", 1_000_000, 1_000_300, "+")
        assert f.coords("minus") == Coords("X", DMD_START, DMD_START + 400, "-")
        assert f.coords("nostrand") == Coords("X", 2_000_000, 2_000_100, "+")  # '.' is embedded as stored
    with open_embeddings(tmp_path / "gtf.h5") as f:  # GTF is 1-based closed: start - 1
        assert f.coords("DMD_5p") == Coords("X", DMD_END - 1000, DMD_END, "-")
        assert f.coords("g2") == Coords("X", 1_000_000, 1_000_500, "+")  # no gene_name: the gene_id
        assert dict(zip(f.ids, f.lengths)) == {"DMD_5p": 1000, "g2": 500}
    _embed(["--reference", chrx, "--regions", bed, "--no-strand-aware", "-o", tmp_path / "fwd.h5"],
           monkeypatch, capsys, small_model_dir)
    with open_embeddings(tmp_path / "fwd.h5") as f:
        assert f.coords("minus") == Coords("X", DMD_START, DMD_START + 400, "+")  # embedded forward


def test_bam_reads_store_their_aligned_span(shared_data, small_model_dir, tmp_path, monkeypatch, capsys):
    bam = shared_data / "celegans_range.bam"
    out = tmp_path / "reads.h5"
    _embed([bam, "-o", out], monkeypatch, capsys, small_model_dir)
    want = {}
    with pysam.AlignmentFile(str(bam)) as fh:
        for read in fh.fetch(until_eof=True):
            if read.is_secondary or read.is_supplementary:
                continue
            name = read.query_name + (("/1" if read.is_read1 else "/2") if read.is_paired else "")
            want[name] = None if read.is_unmapped else Coords(read.reference_name, read.reference_start,
                                                              read.reference_end, "-" if read.is_reverse else "+")
    with open_embeddings(out) as f:
        assert sorted(f.ids) == sorted(want)
        assert {rid: f.coords(rid) for rid in f.ids} == want
        strands = {c.strand for c in want.values() if c}
        assert strands == {"+", "-"}  # both orientations are exercised


def test_unmapped_reads_have_no_coords(tmp_path):
    from genoconv.io import open_records

    sam = tmp_path / "r.sam"
    sam.write_text("@SQ\tSN:c1\tLN:1000\n"
                   "mapped\t16\tc1\t101\t60\t3S5M1D4M\t*\t0\t0\tAAACCCCCGGGG\t*\n"  # 1-based POS 101
                   "unmapped\t4\t*\t0\t0\t*\t*\t0\t0\tACGTACGT\t*\n")
    records = {r.id: r for r in open_records([sam])}
    # the aligned span skips the soft clip and covers the deletion: [100, 110) on the reverse strand
    assert records["mapped"].coords == Coords("c1", 100, 110, "-") and records["mapped"].length == 12
    assert records["unmapped"].coords is None


def test_plain_fasta_has_no_coords(small_model_dir, tmp_path, monkeypatch, capsys):
    fa = tmp_path / "a.fa"
    fa.write_text(">s1\nACGTACGTAC\n>s2\nGGGCCCAAAT\n")
    _embed([fa, "-o", tmp_path / "a.h5"], monkeypatch, capsys, small_model_dir)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert "coords" not in f
