"""Every bad input is an InputError (exit 2) with one line naming the file and the record or line."""

from __future__ import annotations

import gzip
import os
import shutil

import pytest

from genoconv.errors import EXIT_USAGE, InputError, InputFileError
from genoconv.io import open_records


def fail(call) -> str:
    """Run ``call`` to the end (errors may surface while streaming) and return its one-line message."""
    with pytest.raises(InputError) as e:
        list(call())
    message = str(e.value)
    assert e.value.exit_code == EXIT_USAGE
    assert message and "\n" not in message, message
    return message


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.fa"
    empty.write_bytes(b"")
    assert "empty.fa: empty file" in fail(lambda: open_records([empty]))
    blank = tmp_path / "blank.fa"
    blank.write_text("\n\n  \n")
    assert "blank.fa: empty file" in fail(lambda: open_records([blank]))
    empty_gz = tmp_path / "empty.fa.gz"
    with gzip.open(empty_gz, "wb"):
        pass
    assert "empty.fa.gz: empty file" in fail(lambda: open_records([empty_gz]))


@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize(
    "text, where",
    [
        (">a\nACGT\n>b desc\n>c\nGG\n", "record 2 'b' (line 3) has no sequence"),  # an index would drop 'b'
        (">a\nACGT\n>last\n", "record 2 'last' (line 3) has no sequence"),
        (">a\nACGT\n>b\n\n\n", "record 2 'b' (line 3) has no sequence"),
    ],
)
def test_fasta_record_without_sequence(tmp_path, compression, text, where):
    path = tmp_path / ("bad.fa" + (".gz" if compression == "gzip" else ""))
    if compression == "gzip":
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    assert f"{path}: {where}" in fail(lambda: open_records([path]))


def test_fasta_record_without_a_name(tmp_path):
    path = tmp_path / "noname.fa"
    path.write_text(">a\nAC\n> \nGG\n")
    assert "noname.fa: record 2 (line 3) has an empty name" in fail(lambda: open_records([path]))


def test_header_less_fasta(tmp_path):
    path = tmp_path / "noheader.fa"
    path.write_text("ACGTACGT\nACGT\n>a\nAC\n")
    msg = fail(lambda: open_records([path]))
    assert "noheader.fa: line 1: sequence before the first '>'" in msg


def test_truncated_gzip(tmp_path):
    path = tmp_path / "cut.fa.gz"
    records = "".join(f">r{i}\n" + "ACGTTGCA" * 2000 + "\n" for i in range(40))
    data = gzip.compress(records.encode())
    path.write_bytes(data[: len(data) * 2 // 3])
    msg = fail(lambda: open_records([path]))
    assert "cut.fa.gz: truncated gzip file" in msg and "record" in msg


def test_truncated_bgzip_without_index(shared_data, tmp_path):
    data = (shared_data / "ecoli_K12_MG1655.fa.gz").read_bytes()
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(data[: len(data) // 2])
    msg = fail(lambda: open_records([path]))
    assert "cut.fa.gz: truncated gzip file" in msg and "record 1 'NC_000913'" in msg
    assert not (tmp_path / "cut.fa.gz.fai").exists()  # no half-built index left behind


def test_truncated_bgzip_with_a_stale_index(shared_data, tmp_path):
    data = (shared_data / "ecoli_K12_MG1655.fa.gz").read_bytes()
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(data[: len(data) // 2])
    for ext in (".fai", ".gzi"):
        shutil.copy(shared_data / f"ecoli_K12_MG1655.fa.gz{ext}", f"{path}{ext}")
    assert "cut.fa.gz: truncated gzip file" in fail(lambda: open_records([path]))


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(InputFileError, match=r"nope\.fa: no such file"):
        open_records([tmp_path / "nope.fa"])
    with pytest.raises(InputFileError, match="is a directory"):
        open_records([tmp_path])
    bed = tmp_path / "r.bed"
    bed.write_text("X\t0\t10\n")
    with pytest.raises(InputFileError, match=r"genome\.fa: no such file"):
        open_records([], reference=tmp_path / "genome.fa", regions=bed)


def test_unreadable_path(tmp_path):
    locked = tmp_path / "locked.fa"
    locked.write_text(">a\nACGT\n")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: permissions do not stop reading")
        with pytest.raises(InputFileError, match=r"locked\.fa: cannot read"):
            open_records([locked])
    finally:
        locked.chmod(0o644)


def test_unknown_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello world\n")
    assert "notes.txt: unknown format" in fail(lambda: open_records([path]))
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert "image.png: unknown format" in fail(lambda: open_records([binary]))


def test_fastq_quality_mismatch(tmp_path):
    path = tmp_path / "bad.fq"
    path.write_text("@r1\nACGT\n+\nIIII\n@r2\nACGT\n+\nII\n")
    assert "bad.fq: record 2 'r2' (line 5) has 4 bases but 2 quality values" in fail(lambda: open_records([path]))
    # short by exactly the next header's length: the header is taken as the last quality line, and the error only
    # surfaces at the next record's bases; it names the record whose quality ran on (not just line 6)
    ran_on = tmp_path / "ran_on.fq"
    ran_on.write_text("@r1\nACGTACGTAC\n+\nIIIIIII\n@r2\nACGTACGTAC\n+\nIIIIIIIIII\n")
    message = fail(lambda: open_records([ran_on]))
    assert "line 6: expected a FASTQ '@name' line" in message and "record 1 'r1'" in message, message
    fine = tmp_path / "fine.fq"  # a quality wrapped onto a line that starts with '@' (Phred 31) is still a quality
    fine.write_text("@r1\nACGTACGTAC\n+\nIIIII\n@IIII\n@r2\nACGT\n+\nIIII\n")
    assert [r.id for r in open_records([fine])] == ["r1", "r2"]


def test_duplicate_ids_name_both_positions(tmp_path):
    a = tmp_path / "a.fa"
    a.write_text(">x\nAC\n>y\nGG\n")
    b = tmp_path / "b.fq"
    b.write_text("@z\nA\n+\nI\n@y\nT\n+\nI\n")
    msg = fail(lambda: open_records([a, b]))
    assert f"duplicate record id 'y': record 2 of {a} and record 2 of {b}" in msg and "--dedupe-ids" in msg


@pytest.fixture
def ce_reference(shared_data, tmp_path):
    reference = tmp_path / "ce.fa"
    shutil.copy(shared_data / "celegans_ce.fa", reference)
    shutil.copy(shared_data / "celegans_ce.fa.fai", f"{reference}.fai")
    return reference


@pytest.mark.parametrize(
    "bed, expected",
    [
        ("CHROMOSOME_I\t0\t10\nCHROMOSOME_I\t500\t400\tbackwards\n", "line 2: end 400 is before start 500"),
        ("CHROMOSOME_I\t0\t10\n\nchrI\t0\t10\n", "line 3: contig 'chrI' is not in"),
        ("CHROMOSOME_II\t4990\t5010\n",
         "line 1: CHROMOSOME_II 4990 5010 (BED; CHROMOSOME_II:4991-5010) runs past the end"),
        ("CHROMOSOME_I\tten\t20\n", "line 1: start 'ten' is not an integer"),
        ("CHROMOSOME_I\t10\t10\n", "line 1: empty region"),
        ("CHROMOSOME_I\t0\t10\tn\t0\tx\n", "line 1: strand 'x'"),
        ("# nothing here\n", "no regions in this file"),
    ],
)
def test_bad_bed_lines(ce_reference, tmp_path, bed, expected):
    path = tmp_path / "bad.bed"
    path.write_text(bed)
    assert f"{path}: {expected}" in fail(lambda: open_records([], reference=ce_reference, regions=path))


def test_bad_gtf_line(ce_reference, tmp_path):
    path = tmp_path / "bad.gtf"
    path.write_text('CHROMOSOME_I\tx\tgene\t200\t100\t.\t+\t.\tgene_name "g";\n')
    assert f"{path}: line 1: end 100 is before start 200" in fail(
        lambda: open_records([], reference=ce_reference, regions=path)
    )


def test_contig_hint_for_chr_prefix(shared_data, tmp_path):
    path = tmp_path / "chr.bed"
    path.write_text("chrX\t100\t200\n")
    msg = fail(lambda: open_records([], reference=shared_data / "GRCh37_chrX_1-70M.fa.gz", regions=path))
    assert "line 1: contig 'chrX' is not in" in msg and "it has 'X'" in msg


def test_no_inputs():
    assert "no inputs" in fail(lambda: open_records([]))


def test_protein_fasta_says_amino_acids(tmp_path):
    path = tmp_path / "hba.fa"
    path.write_text(">sp|P69905|HBA_HUMAN Hemoglobin subunit alpha\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHF\n")
    message = fail(lambda: open_records([path]))
    assert message.startswith(f"{path}: record 'sp|P69905|HBA_HUMAN' holds amino acids (E, F, L, P), not DNA")
    assert "bases" not in message
    dna = tmp_path / "dna.fa"
    dna.write_text(">soft_masked\nacgtnACGTNRYKMSWBDHV-\n")  # every nucleotide code, both cases: not protein
    assert [r.length for r in open_records([dna])] == [21]


def test_htslib_is_silent_and_we_say_it(tmp_path, shared_data, capfd):
    """No "[E::...]" lines from htslib (a header-only FASTA, a CRAM without .crai): one message of ours instead."""
    header_only = tmp_path / "header_only.fa"
    header_only.write_text(">r1 nothing follows\n")
    assert "header_only.fa: record 1 'r1' (line 1) has no sequence" in fail(lambda: open_records([header_only]))
    cram = tmp_path / "reads.cram"  # no .crai beside it
    ref = shared_data / "celegans_ce.fa"
    import pysam

    pysam.view("-C", "-T", str(ref), "-o", str(cram), str(shared_data / "celegans_range.bam"), catch_stdout=False)
    assert len(list(open_records([cram], reference=ref))) == 112
    err = capfd.readouterr().err
    assert "[E::" not in err and "[W::" not in err, err


def test_reference_htslib_cannot_index(tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("a\t0\t4\n")
    for name, text in (("bom.fa", "\ufeff>a\nACGTACGT\n"), ("cr.fa", ">a\rACGTACGT\r")):
        ref = tmp_path / name
        ref.write_bytes(text.encode("utf-8"))
        assert f"{ref}: htslib cannot index a reference with a UTF-8 byte-order mark" in fail(
            lambda: open_records([], reference=ref, regions=bed))


# ---- issue 16, case 9: a NUL in a record id is refused when read (HDF5 could never store it) ------------------
@pytest.mark.parametrize("name, text", [
    ("nul.fa", b">ok\nACGT\n>re\x00c\nACGT\n"),
    ("nul.fa.gz", gzip.compress(b">ok\nACGT\n>re\x00c\nACGT\n")),
    ("nul.fq", b"@ok\nACGT\n+\nIIII\n@re\x00c\nACGT\n+\nIIII\n"),
])
def test_nul_in_a_record_id(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text)
    assert f"record 2 of {path}: record id 're\\x00c' contains a NUL byte" in fail(lambda: open_records([path]))


def test_nul_in_a_region_name(ce_reference, tmp_path):
    bed = tmp_path / "nul.bed"
    bed.write_bytes(b"CHROMOSOME_I\t0\t10\tfine\nCHROMOSOME_I\t10\t20\tg\x00ne\n")
    assert f"line 2 of {bed}: record id 'g\\x00ne' contains a NUL byte" in fail(
        lambda: open_records([], reference=ce_reference, regions=bed))
    gtf = tmp_path / "nul.gtf"
    gtf.write_bytes(b'CHROMOSOME_I\tx\tgene\t1\t10\t.\t+\t.\tgene_name "g\x00ne";\n')
    assert f"line 1 of {gtf}: record id" in fail(lambda: open_records([], reference=ce_reference, regions=gtf))


def test_nul_in_alignment_read_names(tmp_path):
    """SAM/BAM names end at their NUL (SAM spec: QNAME is NUL-terminated): htslib refuses a SAM line with one
    inside, and a BAM name reads up to it, so no id with a NUL ever comes from an alignment file."""
    sam = tmp_path / "nul.sam"
    sam.write_bytes(b"@HD\tVN:1.6\nre\x00ad\t4\t*\t0\t0\t*\t*\t0\t0\tACGT\tIIII\n")
    assert f"{sam}: truncated or corrupt at record 1" in fail(lambda: open_records([sam]))


# ---- issue 16, case 12: messages about a regions line quote the file's own numbers ------------------------------
@pytest.mark.parametrize("name, line, expected", [
    ("neg.bed", "CHROMOSOME_I\t-10\t20\n", "line 1: start -10 is before the first base (0)"),
    ("zero.gtf", 'CHROMOSOME_I\tx\tgene\t0\t20\t.\t+\t.\tgene_name "g";\n', "line 1: start 0 is before the first base (1)"),
    ("past.gtf", 'CHROMOSOME_II\tx\tgene\t4991\t5010\t.\t+\t.\tgene_name "g";\n',
     "line 1: CHROMOSOME_II:4991-5010 runs past the end"),
    ("empty.gtf", 'CHROMOSOME_I\tx\tgene\t11\t10\t.\t+\t.\tgene_name "g";\n', "line 1: end 10 is before start 11"),
    ("empty.bed", "CHROMOSOME_I\t10\t10\n", "line 1: empty region CHROMOSOME_I 10 10 (BED start = end"),
])
def test_region_errors_quote_the_input_numbers(ce_reference, tmp_path, name, line, expected):
    path = tmp_path / name
    path.write_text(line)
    assert f"{path}: {expected}" in fail(lambda: open_records([], reference=ce_reference, regions=path))


def test_fastq_reads_trimmed_to_nothing_are_skipped_and_counted(tmp_path):
    # One empty read (common after adapter trimming) stopped the whole run; SAM/BAM reads without SEQ are skipped.
    path = tmp_path / "trimmed.fq"
    path.write_text("@r1\nACGTACGTAC\n+\nIIIIIIIIII\n@trimmed_away\n\n+\n\n@r3\nGGGGCCCCAA\n+\nIIIIIIIIII\n")
    source = open_records([path])
    assert [(r.id, r.sequence()) for r in source] == [("r1", "ACGTACGTAC"), ("r3", "GGGGCCCCAA")]
    assert source.skipped == {"no_sequence": 1}


def test_dedupe_never_gives_a_record_another_records_name(tmp_path):
    # >a, >a, >a_2: the second 'a' became 'a_2' and the real 'a_2' became 'a_2_2', silently (exit 0).
    path = tmp_path / "d.fa"
    path.write_text(">a\nACGTACGTAC\n>a\nACGTACGTACACGTACGTAC\n>a_2\nGGGGC\n")
    assert "d.fa was renamed 'a_2', which record 3 of" in fail(lambda: open_records([path], dedupe_ids=True))
    path.write_text(">a\nACGTACGTAC\n>a_2\nGGGGC\n>a\nACGTACGTACACGTACGTAC\n")  # an existing name is skipped
    assert {r.id: r.length for r in open_records([path], dedupe_ids=True)} == {"a": 10, "a_2": 5, "a_3": 20}
