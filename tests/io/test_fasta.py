"""FASTA/FASTQ readers: lazy indexed access, streaming, ids, dedupe."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pysam
import pytest

from genoconv.errors import InputError
from genoconv.io import Record, open_records, reverse_complement, total_bases
from genoconv.io.record import _InMemory

ECOLI_LENGTH = 4_639_675
RECORDS = {"chr1": "ACGTacgtNNRYKM" * 7 + "ACG", "chr2": "TTTTGGGGCCCCAAAA", "plasmid": "a"}


def write_fasta(path: Path, records: dict[str, str], compression: str = "none", width: int = 60) -> Path:
    text = "".join(
        f">{name} some description\n" + "".join(seq[i : i + width] + "\n" for i in range(0, len(seq), width))
        for name, seq in records.items()
    )
    if compression == "gzip":
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    elif compression == "bgzip":
        plain = path.with_name(path.name + ".txt")
        plain.write_text(text)
        pysam.tabix_compress(str(plain), str(path), force=True)
        plain.unlink()
    else:
        path.write_text(text)
    return path


def test_ecoli_bgzip_is_lazy_and_matches_pysam(shared_data):
    path = shared_data / "ecoli_K12_MG1655.fa.gz"
    source = open_records([path])
    assert source.lengths() == [("NC_000913", ECOLI_LENGTH)]
    assert total_bases(source) == ECOLI_LENGTH
    (record,) = list(source)
    assert (record.id, record.length, record.source) == ("NC_000913", ECOLI_LENGTH, str(path))
    assert not isinstance(record._access, _InMemory)  # read from disk on demand, not held as a string
    assert "indexed" in source.describe()
    with pysam.FastaFile(str(path)) as fa:
        for start, end in [(0, 1000), (2_000_003, 2_065_539), (ECOLI_LENGTH - 777, ECOLI_LENGTH)]:
            assert record.sequence(start, end) == fa.fetch("NC_000913", start, end)
    assert record.sequence(ECOLI_LENGTH - 5) == record.sequence(ECOLI_LENGTH - 5, ECOLI_LENGTH + 100)
    assert len(record.sequence(ECOLI_LENGTH - 5)) == 5


def test_plain_gzip_is_streamed_and_equals_the_same_gene_in_bgzip_chrx(shared_data):
    source = open_records([shared_data / "DMD_GRCh37_chrX.fa.gz"])
    (record,) = list(source)
    assert "streamed" in source.describe()
    assert (record.id, record.length) == ("DMD", 2_220_382)
    with pysam.FastaFile(str(shared_data / "GRCh37_chrX_1-70M.fa.gz")) as fa:
        # GRCh37 chrX:31,137,345-33,357,726 (1-based closed) is [31137344, 33357726) here.
        assert record.sequence(0, 50_000) == fa.fetch("X", 31_137_344, 31_187_344)
        assert record.sequence(2_200_000) == fa.fetch("X", 31_137_344 + 2_200_000, 33_357_726)


@pytest.mark.parametrize("compression", ["none", "gzip", "bgzip"])
def test_small_fasta_every_compression(tmp_path, compression):
    path = write_fasta(tmp_path / "small.fa", RECORDS, compression, width=10)
    source = open_records([path])
    records = list(source)
    assert [(r.id, r.length) for r in records] == [(k, len(v)) for k, v in RECORDS.items()]
    assert {r.id: r.sequence() for r in records} == RECORDS  # first word of the header; case kept
    assert records[0].sequence(3, 17) == RECORDS["chr1"][3:17]
    if compression != "gzip":
        assert Path(f"{path}.fai").exists()  # built next to the file
        assert not isinstance(records[0]._access, _InMemory)


def test_unwritable_folder_without_index_streams(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    path = write_fasta(folder / "small.fa", RECORDS)
    folder.chmod(0o555)
    try:
        source = open_records([path])
        assert {r.id: r.sequence() for r in source} == RECORDS
        assert not Path(f"{path}.fai").exists()
        assert "streamed" in source.describe()
    finally:
        folder.chmod(0o755)


def test_shared_data_gets_no_new_files(shared_data):
    before = sorted(p.name for p in shared_data.iterdir())
    for name in ["ecoli_K12_MG1655.fa.gz", "DMD_GRCh37_chrX.fa.gz", "celegans_ce.fa", "celegans_range.bam"]:
        open_records([shared_data / name]).lengths()
    assert sorted(p.name for p in shared_data.iterdir()) == before


def test_index_that_drops_a_duplicate_is_not_trusted(tmp_path):
    # htslib's faidx keeps only the first of two records with one name (stderr note only).
    path = tmp_path / "dup.fa"
    path.write_text(">a x\nACGT\n>b\nCC\n>a y\nGGGGG\n")
    with pytest.raises(InputError) as e:
        list(open_records([path]))
    msg = str(e.value)
    assert "'a'" in msg and "record 1 of" in msg and "record 3 of" in msg and "\n" not in msg
    records = list(open_records([path], dedupe_ids=True))
    assert [(r.id, r.sequence()) for r in records] == [("a", "ACGT"), ("b", "CC"), ("a_2", "GGGGG")]


def test_duplicates_across_inputs_and_dedupe(tmp_path):
    a = write_fasta(tmp_path / "a.fa", {"x": "ACGT", "x_2": "GG"})
    b = write_fasta(tmp_path / "b.fa", {"x": "TTTT"})
    with pytest.raises(InputError, match=r"record 1 of .*a\.fa and record 1 of .*b\.fa"):
        list(open_records([a, b]))
    source = open_records([a, b], dedupe_ids=True)
    assert source.lengths() == [("x", 4), ("x_2", 2), ("x_3", 4)]


def test_fastq_plain_and_gzip(tmp_path):
    text = "@r1 extra\nACGTN\n+\nIIIII\n@r2\nGGC\nC\n+r2\nII\nII\n"
    plain = tmp_path / "reads.fq"
    plain.write_text(text)
    packed = tmp_path / "reads.fq.gz"
    with gzip.open(packed, "wt") as fh:
        fh.write(text)
    for path in (plain, packed):
        records = list(open_records([path], dedupe_ids=True))
        assert [(r.id, r.sequence()) for r in records] == [("r1", "ACGTN"), ("r2", "GGCC")]


def test_record_slices_and_reverse_complement():
    record = Record.from_sequence("r", "ACGTacgtN")
    assert record.sequence() == "ACGTacgtN"
    assert record.sequence(2, 6) == "GTac"
    assert record.sequence(5, 5) == ""
    with pytest.raises(ValueError):
        record.sequence(-1, 3)
    with pytest.raises(ValueError):
        record.sequence(6, 2)
    assert reverse_complement("ACGTacgtNRYKMBVDHSWU-") == "-AWSDHBVKMRYNacgtACGT"


def test_records_pickle_and_read_after_unpickling(shared_data, tmp_path):
    import pickle

    shutil.copy(shared_data / "celegans_ce.fa", tmp_path / "ce.fa")
    (record, *_) = list(open_records([tmp_path / "ce.fa"]))
    clone = pickle.loads(pickle.dumps(record))
    assert clone.sequence(1000, 1100) == record.sequence(1000, 1100)


# ---- byte-order marks, CR-only line ends (issue 17) ---------------------------------------------------------
@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_bom_and_every_line_ending(tmp_path, compression, newline):
    text = "\ufeff" + "".join(f">{name} d{newline}" + "".join(seq[i:i + 10] + newline for i in range(0, len(seq), 10))
                              for name, seq in RECORDS.items())
    path = tmp_path / ("bom.fa" + (".gz" if compression == "gzip" else ""))
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if compression == "gzip" else data)
    source = open_records([path])
    assert {r.id: r.sequence() for r in source} == RECORDS
    assert "streamed" in source.describe()  # htslib would index a BOM or CR-only file wrongly: never trusted
    fastq = tmp_path / "cr.fq"
    fastq_text = "\ufeff@r1 x\rACGTN\r+\rIIIII\r@r2\rGG\r+\rII\r"
    fastq.write_bytes(fastq_text.encode("utf-8").replace(b"\r", newline.encode()))
    assert [(r.id, r.sequence()) for r in open_records([fastq])] == [("r1", "ACGTN"), ("r2", "GG")]


def test_cr_only_record_longer_than_a_read_block(tmp_path):
    seq = "ACGT" * (1 << 21)  # 8 MiB on one line: spans several 4 MiB blocks of the CR splitter
    path = tmp_path / "long_cr.fa"
    path.write_bytes(b">long\r" + seq.encode() + b"\r>short\rAC\r")
    assert [(r.id, r.length) for r in open_records([path])] == [("long", len(seq)), ("short", 2)]


# ---- issue 16, case 3: an index older than its FASTA (or not matching its size) is rebuilt, or refused -------
def _lengths(path, **kw):
    with open_records([path], **kw) as source:
        return dict(source.lengths())


def _grow_last_record(path: Path, compression: str) -> None:
    records = dict(RECORDS, plasmid="a" + "C" * 150)
    write_fasta(path, records, compression)  # rewritten in place: the old .fai/.gzi stay beside it


@pytest.mark.parametrize("compression", ["none", "bgzip"])
def test_stale_index_is_rebuilt(tmp_path, compression, caplog):
    path = write_fasta(tmp_path / "g.fa", RECORDS, compression)
    assert _lengths(path)["plasmid"] == 1 and Path(f"{path}.fai").exists()
    built = Path(f"{path}.fai").stat().st_mtime_ns
    assert _lengths(path)["plasmid"] == 1 and Path(f"{path}.fai").stat().st_mtime_ns == built  # fresh: kept
    assert "rebuilding" not in caplog.text
    _grow_last_record(path, compression)
    assert _lengths(path)["plasmid"] == 151
    with open_records([path]) as source:
        assert next(r for r in source if r.id == "plasmid").sequence() == "a" + "C" * 150


def test_index_that_ends_elsewhere_than_the_file_is_stale_whatever_its_time(tmp_path):
    from genoconv.io.fasta import stale_index

    path = write_fasta(tmp_path / "g.fa", RECORDS)
    _lengths(path)
    fai = Path(f"{path}.fai")
    with open(path, "a") as fh:
        fh.write("GGGG\n")  # four more bases of the last record
    future = path.stat().st_mtime_ns + 10**9
    os.utime(fai, ns=(future, future))  # an index that looks newer than the file
    assert stale_index(path, "none") == "g.fa.fai places the end of the last record at byte 194, the file has 199 bytes"
    assert _lengths(path)["plasmid"] == 5


@pytest.mark.parametrize("compression", ["none", "bgzip"])
def test_an_index_of_another_version_is_not_trusted_for_its_newer_time(tmp_path, compression):
    # `cp -p` / `rsync -a` / `tar x` bring a new version with an old time beside a newer index: for bgzip only the
    # times were checked, and htslib cut the grown record at its old length with exit 0.
    path = write_fasta(tmp_path / "g.fa", RECORDS, compression)
    assert _lengths(path)["plasmid"] == 1
    old = Path(f"{path}.fai").stat().st_mtime_ns - 2 * 86_400 * 10**9
    grown = dict(RECORDS, chr2="TTTTGGGGCCCCAAAA" * 3)  # a middle record grows: every later offset moves
    write_fasta(path, grown, compression)
    os.utime(path, ns=(old, old))
    assert _lengths(path) == {name: len(seq) for name, seq in grown.items()}
    with open_records([path]) as source:
        assert {r.id: r.sequence() for r in source} == grown
    # A same-sized file's index (another file's, names and all) is not this one's either.
    other = write_fasta(tmp_path / "h.fa", {"r1": "A" * 70, "r2": "C" * 50})
    write_fasta(tmp_path / "h2.fa", {"r2": "G" * 50, "r1": "T" * 70})
    _lengths(tmp_path / "h2.fa")
    shutil.copyfile(f"{tmp_path / 'h2.fa'}.fai", f"{other}.fai")
    assert _lengths(other) == {"r1": 70, "r2": 50}


@pytest.mark.parametrize("compression", ["none", "bgzip"])
@pytest.mark.parametrize("use", ["input", "reference"])
def test_a_rewrapped_version_with_every_length_and_offset_kept(tmp_path, compression, use, monkeypatch):
    # 1,000 bases in lines of 60 or of 59 both take 17 lines: same size, lengths and offsets; only the wrapping, from
    # which htslib computes where base k lies, differs. Read through the old index, a region came out shifted.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seqs = {"r0": "ACGTTGCAAC" * 100, "r1": "GGCATTACAG" * 200}
    path = write_fasta(tmp_path / "g.fa", seqs, compression, width=60)
    assert _lengths(path) == {"r0": 1000, "r1": 2000}  # indexed
    stamp = Path(f"{path}.fai").stat().st_mtime_ns - 10**9
    text = ">r0 some description\n" + "".join(seqs["r0"][i:i + 59] + "\n" for i in range(0, 1000, 59))
    text += ">r1 some description\n" + "".join(seqs["r1"][i:i + 60] + "\n" for i in range(0, 2000, 60))
    if compression == "bgzip":
        (tmp_path / "plain.fa").write_text(text)
        pysam.tabix_compress(str(tmp_path / "plain.fa"), str(path), force=True)
    else:
        assert len(text) == path.stat().st_size
        path.write_text(text)
    os.utime(path, ns=(stamp, stamp))  # older than its index, as cp -p leaves it
    if use == "input":
        with open_records([path]) as source:
            assert {r.id: r.sequence() for r in source} == seqs
    else:
        (tmp_path / "one.bed").write_text("r0\t950\t959\tx\n")
        region = open_records([], reference=path, regions=tmp_path / "one.bed")
        assert [r.sequence() for r in region] == [seqs["r0"][950:959]]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_cr_only_record_inside_an_lf_file(tmp_path, compression):
    # Classic-Mac line ends in one record only (the first 64 KB are LF): that record's header was glued to its
    # bases and the next record vanished, exit 0. Indexed (plain) and streamed (gzip) paths.
    text = (">c1\n" + "ACGT" * 25 + "\n>c2 pasted\r" + ("GGCC" * 15 + "\r") * 2 + ">c3\n" + "TTAA" * 5 + "\n"
            + ">c4\r\nAC\r\n")
    path = tmp_path / "mix.fa"
    if compression == "gzip":
        with gzip.open(path, "wb") as fh:
            fh.write(text.encode())
    else:
        path.write_bytes(text.encode())
    with open_records([path]) as source:
        assert {r.id: r.sequence() for r in source} == {"c1": "ACGT" * 25, "c2": "GGCC" * 30, "c3": "TTAA" * 5,
                                                        "c4": "AC"}
    assert not Path(f"{path}.fai").exists()  # htslib's index of it (c2 and c3 merged) is not left behind


def test_stale_index_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = write_fasta(folder / "g.fa", RECORDS)
    _lengths(path)
    _grow_last_record(path, "none")
    folder.chmod(0o555)
    try:
        assert _lengths(path)["plasmid"] == 151  # an input: read through without the index
        bed = tmp_path / "r.bed"
        bed.write_text("plasmid\t0\t100\tp\n")
        with pytest.raises(InputError, match=r"g.fa: its index is stale \(g.fa.fai is older than the file\) and its "
                                             r"folder is not writable"):
            open_records([], reference=path, regions=bed)
    finally:
        folder.chmod(0o755)


def test_an_index_loaded_while_another_shard_was_writing_it(tmp_path):
    # Shards started together on a FASTA without an index: one process loaded the .fai another was still writing
    # (0 records, or fewer), while the file on disk, checked later, was whole. The loaded index must match too.
    from genoconv.io.fasta import FastaInput
    from genoconv.io.sniff import sniff

    path = write_fasta(tmp_path / "g.fa", RECORDS, "bgzip")
    _lengths(path)  # builds the .fai and .gzi
    fai = Path(f"{path}.fai")
    whole = fai.read_bytes()
    fai.write_bytes(whole.splitlines(keepends=True)[0])  # what a reader could see mid-write: one record of three
    reader = FastaInput(path, sniff(path))
    assert list(reader.handle.references) == ["chr1"]
    fai.write_bytes(whole)  # the writer finishes
    assert {r.id: r.sequence() for r, _ in reader.records(type("S", (), {"skipped": {}})())} == RECORDS
