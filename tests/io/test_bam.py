"""SAM/BAM/CRAM readers: skips counted, original orientation, missing EOF marker, unaligned BAM."""

from __future__ import annotations

import shutil
from pathlib import Path

import pysam
import pytest

from genoconv.errors import InputError
from genoconv.io import open_records, reverse_complement

# From ../shared/data/README.md: 12,447 records, 7,447 secondary/supplementary, 7,326 without SEQ.
# Every SEQ-less record is a secondary alignment (7,326 secondary + 121 supplementary = 7,447), so the
# primary records with SEQ are 12,447 - 7,447 = 5,000 (4,942 mapped + 58 unmapped).
NANOPORE_RECORDS = 12_447
NANOPORE_PRIMARY_WITH_SEQ = 5_000


def test_nanopore_skips_counted_exactly(shared_data):
    source = open_records([shared_data / "nanopore_cdna_pcs109_5k.bam"])
    records = list(source)
    assert len(records) == NANOPORE_PRIMARY_WITH_SEQ
    assert source.skipped == {"secondary": 7_326, "supplementary": 121}
    assert len(records) + sum(source.skipped.values()) == NANOPORE_RECORDS
    assert source.warnings == []
    assert len({r.id for r in records}) == len(records)
    assert max(r.length for r in records) <= 4_094
    assert list(source) and source.skipped["secondary"] == 7_326  # counts are per pass, not accumulated


def test_nanopore_include_flags(shared_data):
    path = shared_data / "nanopore_cdna_pcs109_5k.bam"
    source = open_records([path], include_secondary=True)
    assert len(list(source)) == NANOPORE_PRIMARY_WITH_SEQ  # every secondary record lacks SEQ here
    assert source.skipped == {"no_sequence": 7_326, "supplementary": 121}
    with pytest.raises(InputError, match="duplicate record id"):  # a supplementary repeats its primary's name
        list(open_records([path], include_supplementary=True))
    source = open_records([path], include_supplementary=True, dedupe_ids=True)
    assert len(source.lengths()) == NANOPORE_PRIMARY_WITH_SEQ + 121


def test_reads_come_back_in_original_orientation(shared_data):
    path = shared_data / "nanopore_cdna_pcs109_5k.bam"
    reverse = {}
    with pysam.AlignmentFile(str(path), check_sq=False) as bam:
        for read in bam.fetch(until_eof=True):
            if read.is_reverse and not read.is_secondary and not read.is_supplementary and read.query_sequence:
                reverse[read.query_name] = read.query_sequence
            if len(reverse) == 20:
                break
    records = {r.id: r for r in open_records([path]) if r.id in reverse}
    assert len(records) == 20
    for name, stored in reverse.items():
        assert records[name].sequence() == reverse_complement(stored)


def test_bam_without_eof_marker_is_read_with_a_warning(shared_data):
    source = open_records([shared_data / "human_NA07051_hg18_10k_reads.bam"])
    records = list(source)
    assert len(records) == 10_000 and all(r.length == 51 for r in records)
    assert len(source.warnings) == 1 and "end-of-file marker" in source.warnings[0]
    assert "\n" not in source.warnings[0] and "human_NA07051_hg18_10k_reads.bam" in source.warnings[0]
    # 5,000 pairs: the two reads of a pair share a name and get /1 and /2.
    assert len({r.id for r in records}) == 10_000
    assert sum(r.id.endswith("/1") for r in records) == 5_000


def test_unaligned_bam(tmp_path):
    path = tmp_path / "unaligned.bam"
    header = {"HD": {"VN": "1.6", "SO": "unsorted"}, "RG": [{"ID": "rg1"}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, seq in enumerate(["ACGTACGTTT", "GGGCCCAAAN", "TTTT"]):
            read = pysam.AlignedSegment(out.header)
            read.query_name = f"read{i}"
            read.flag = 4
            read.query_sequence = seq
            read.query_qualities = pysam.qualitystring_to_array("I" * len(seq))
            out.write(read)
    records = list(open_records([path]))
    expected = [("read0", "ACGTACGTTT"), ("read1", "GGGCCCAAAN"), ("read2", "TTTT")]
    assert [(r.id, r.sequence()) for r in records] == expected


def test_cram_and_sam_give_the_same_reads_as_bam(shared_data, tmp_path):
    bam = shared_data / "celegans_range.bam"
    reference = tmp_path / "ce.fa"
    shutil.copy(shared_data / "celegans_ce.fa", reference)
    shutil.copy(shared_data / "celegans_ce.fa.fai", f"{reference}.fai")
    cram, sam = tmp_path / "reads.cram", tmp_path / "reads.sam"
    with pysam.AlignmentFile(str(bam)) as src:
        with pysam.AlignmentFile(str(cram), "wc", template=src, reference_filename=str(reference)) as c, \
                pysam.AlignmentFile(str(sam), "w", template=src) as s:
            for read in src.fetch(until_eof=True):
                c.write(read)
                s.write(read)
    expected = [(r.id, r.sequence()) for r in open_records([bam])]
    assert len(expected) == 112
    assert [(r.id, r.sequence()) for r in open_records([cram], reference=reference)] == expected
    assert [(r.id, r.sequence()) for r in open_records([sam])] == expected


def test_truncated_bam_is_an_input_error(shared_data, tmp_path):
    data = (shared_data / "nanopore_cdna_pcs109_5k.bam").read_bytes()
    path = tmp_path / "cut.bam"
    path.write_bytes(data[: len(data) // 2])
    source = open_records([path])
    with pytest.raises(InputError) as e:
        list(source)
    msg = str(e.value)
    assert "cut.bam" in msg and "record" in msg and "\n" not in msg
    assert any("end-of-file marker" in w for w in source.warnings)


def test_cram_without_its_reference_asks_for_it(shared_data, tmp_path, monkeypatch):
    # Keep htslib from looking the reference up by MD5 on the network or in a cache.
    monkeypatch.setenv("REF_PATH", str(tmp_path / "no_refs" / "%s"))
    monkeypatch.setenv("REF_CACHE", str(tmp_path / "no_cache" / "%s"))
    reference = tmp_path / "ce.fa"
    shutil.copy(shared_data / "celegans_ce.fa", reference)
    cram = tmp_path / "reads.cram"
    with pysam.AlignmentFile(str(shared_data / "celegans_range.bam")) as src:
        with pysam.AlignmentFile(str(cram), "wc", template=src, reference_filename=str(reference)) as out:
            for read in src.fetch(until_eof=True):
                out.write(read)
    reference.unlink()
    Path(f"{reference}.fai").unlink(missing_ok=True)
    with pytest.raises(InputError) as e:
        list(open_records([cram]))
    assert "reads.cram: cannot decode CRAM record 1" in str(e.value) and "--reference" in str(e.value)


# ---- --regions with alignments: samtools view -L (issue 17) ---------------------------------------------------
# Out of contig order, overlapping (I), and apart on one contig with reads spanning both (II 1344-1444, 1415-1515).
SELECTION_BED = ("CHROMOSOME_III\t1400\t1500\nCHROMOSOME_I\t1000\t1300\nCHROMOSOME_I\t1250\t1600\n"
                 "CHROMOSOME_II\t1300\t1400\nCHROMOSOME_II\t1420\t1430\n")


def _samtools_ids(*args: str) -> list[str]:
    """Read ids (genoconv's: /1, /2 for a pair) of `samtools view -F 0x900 ARGS` (samtools inside pysam)."""
    ids = []
    for line in pysam.view("-F", "0x900", *args).splitlines():
        name, flag = line.split("\t")[0], int(line.split("\t")[1])
        if flag & 1 and bool(flag & 0x40) != bool(flag & 0x80):
            name += "/1" if flag & 0x40 else "/2"
        ids.append(name)
    return ids


def test_regions_select_reads_like_samtools_view_L(shared_data, tmp_path):
    bam = shared_data / "celegans_range.bam"
    bed = tmp_path / "sel.bed"
    bed.write_text(SELECTION_BED)
    source = open_records([bam], regions=bed)  # no --reference needed for a BAM
    records = list(source)
    want = _samtools_ids("-L", str(bed), str(bam))
    assert 0 < len(want) < 112 and len(set(want)) == len(want)
    assert [r.id for r in records] == want  # each read once, in position order
    by_name = {r.id: r for r in open_records([bam])}
    assert all(r.sequence() == by_name[r.id].sequence() for r in records)
    assert "reads overlapping" in source.describe()
    gff = tmp_path / "sel.gff3"  # the same regions, 1-based closed
    gff.write_text("".join(f"{c}\t.\tgene\t{int(s) + 1}\t{e}\t.\t+\t.\tID=g{i}\n"
                           for i, (c, s, e) in enumerate(x.split("\t") for x in SELECTION_BED.splitlines())))
    assert [r.id for r in open_records([bam], regions=gff)] == want


def test_regions_select_cram_reads(shared_data, tmp_path):
    ref = shared_data / "celegans_ce.fa"
    cram = tmp_path / "reads.cram"
    pysam.view("-C", "-T", str(ref), "-o", str(cram), str(shared_data / "celegans_range.bam"), catch_stdout=False)
    pysam.index(str(cram))
    bed = tmp_path / "sel.bed"
    bed.write_text(SELECTION_BED)
    records = list(open_records([cram], regions=bed, reference=ref))
    assert [r.id for r in records] == _samtools_ids("-L", str(bed), str(shared_data / "celegans_range.bam"))


def test_regions_with_alignments_errors(shared_data, tmp_path):
    bed = tmp_path / "sel.bed"
    bed.write_text(SELECTION_BED)
    unindexed = tmp_path / "unindexed.bam"
    shutil.copy(shared_data / "celegans_range.bam", unindexed)
    with pytest.raises(InputError, match=r"unindexed.bam: --regions selects reads through a BAM index and .* has "
                                         r"none; sort and index the file \(samtools sort"):
        open_records([unindexed], regions=bed)
    fasta = tmp_path / "x.fa"
    fasta.write_text(">x\nACGT\n")
    with pytest.raises(InputError, match=r"x.fa: --regions beside SAM/BAM/CRAM inputs selects their reads .*samtools "
                                         r"view -L.*FASTA input"):
        open_records([shared_data / "celegans_range.bam", fasta], regions=bed)
    wrong = tmp_path / "wrong.bed"
    wrong.write_text("CHROMOSOME_I\t0\t10\nI\t0\t100\n")
    with pytest.raises(InputError, match=r"wrong.bed: line 2: contig 'I' is not in .*celegans_range.bam \(its "
                                         r"contigs: CHROMOSOME_I, "):
        open_records([shared_data / "celegans_range.bam"], regions=wrong)
