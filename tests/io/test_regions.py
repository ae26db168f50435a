"""Regions of a reference: BED (0-based), GTF/GFF3 (1-based), strand handling, index building."""

from __future__ import annotations

import shutil

import numpy as np
import pysam
import os

import pytest

from genoconv.coords import Coords
from genoconv.errors import InputError, InputFileError
from genoconv.io import open_records

# GRCh37 chrX:31,137,345-33,357,726 (1-based closed, minus strand) = [31137344, 33357726) 0-based half-open.
DMD_START, DMD_END = 31_137_344, 33_357_726


def revcomp_by_hand(seq: str) -> str:
    pairs = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N", "a": "t", "c": "g", "g": "c", "t": "a", "n": "n"}
    return "".join(pairs[base] for base in reversed(seq))


def test_bed_on_bgzipped_chrx_with_a_minus_strand_region(shared_data, tmp_path):
    chrx = shared_data / "GRCh37_chrX_1-70M.fa.gz"
    bed = tmp_path / "regions.bed"
    bed.write_text(
        "track name=test\n"
        "# a comment\n"
        "X\t1000000\t1000100\tplus_region\t0\t+\n"
        f"X\t{DMD_START}\t{DMD_START + 300}\tDMD_3prime_end\t0\t-\n"
        "X\t59950\t60050\n"  # no name: the id is the region string, 1-based closed (samtools), across the telomere gap's end
        "X\t2000000\t2000040\tno_strand\t0\t.\n"
    )
    source = open_records([], reference=chrx, regions=bed)
    records = list(source)
    assert [(r.id, r.length) for r in records] == [
        ("plus_region", 100),
        ("DMD_3prime_end", 300),
        ("X:59951-60050", 100),
        ("no_strand", 40),
    ]
    assert records[1].source == f"{chrx}:X:{DMD_START + 1}-{DMD_START + 300}(-)"  # a region string: 1-based
    with pysam.FastaFile(str(chrx)) as fa:
        forward = fa.fetch("X", DMD_START, DMD_START + 300)
        assert records[0].sequence() == fa.fetch("X", 1_000_000, 1_000_100)
        assert records[2].sequence() == fa.fetch("X", 59_950, 60_050)
        assert records[3].sequence() == fa.fetch("X", 2_000_000, 2_000_040)
    minus = records[1]
    assert minus.sequence() == revcomp_by_hand(forward)
    # Chunks of a minus-strand record are slices of the record as embedded.
    assert "".join(minus.sequence(i, i + 70) for i in range(0, 300, 70)) == minus.sequence()
    assert minus.sequence(10, 40) == revcomp_by_hand(forward)[10:40]
    assert source.lengths() == [(r.id, r.length) for r in records]

    unstranded = list(open_records([], reference=chrx, regions=bed, strand_aware=False))
    assert unstranded[1].sequence() == forward
    assert unstranded[1].source.endswith("(+)")


def test_gtf_gene_name_and_the_whole_dmd_gene(shared_data, tmp_path):
    chrx = shared_data / "GRCh37_chrX_1-70M.fa.gz"
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(
        "#!genome-build GRCh37\n"
        f"X\tHAVANA\tgene\t{DMD_START + 1}\t{DMD_END}\t.\t-\t.\t"
        'gene_id "ENSG00000198947"; gene_type "protein_coding"; gene_name "DMD";\n'
        f"X\tHAVANA\ttranscript\t{DMD_START + 1}\t{DMD_START + 500}\t.\t-\t.\t"
        'gene_id "ENSG00000198947"; transcript_id "ENST1"; gene_name "DMD"; transcript_name "DMD-201";\n'
        'X\tHAVANA\tgene\t1000001\t1000010\t.\t+\t.\tgene_id "ENSG0000000X";\n'
    )
    genes = list(open_records([], reference=chrx, regions=gtf))
    assert [(r.id, r.length) for r in genes] == [("DMD", 2_220_382), ("ENSG0000000X", 10)]
    # The DMD file holds the gene as stored on the reference (+) strand; the minus-strand gene is its reverse
    # complement.
    (stored,) = list(open_records([shared_data / "DMD_GRCh37_chrX.fa.gz"]))
    assert genes[0].sequence() == revcomp_by_hand(stored.sequence())

    transcripts = list(open_records([], reference=chrx, regions=gtf, feature="transcript"))
    assert [(r.id, r.length) for r in transcripts] == [("DMD-201", 500)]

    with pytest.raises(InputError, match=r"no 'exon' features \(found: gene, transcript\)"):
        list(open_records([], reference=chrx, regions=gtf, feature="exon"))


def test_gff3_names_and_built_index(shared_data, tmp_path):
    reference = tmp_path / "ce.fa"
    shutil.copy(shared_data / "celegans_ce.fa", reference)  # no .fai: it is built in the writable folder
    gff = tmp_path / "genes.gff3"
    gff.write_text(
        "##gff-version 3\n"
        "CHROMOSOME_I\tsrc\tgene\t1001\t1100\t.\t+\t.\tID=gene:g1;Name=abc%3B1\n"
        "CHROMOSOME_I\tsrc\tgene\t2001\t2050\t.\t-\t.\tID=gene:g2\n"
        "CHROMOSOME_I\tsrc\tmRNA\t2001\t2050\t.\t-\t.\tID=tx:g2;Parent=gene:g2\n"
        "##FASTA\n>ignored\nACGT\n"
    )
    records = list(open_records([], reference=reference, regions=gff))
    assert [(r.id, r.length) for r in records] == [("abc;1", 100), ("gene:g2", 50)]
    assert (tmp_path / "ce.fa.fai").exists()
    with pysam.FastaFile(str(reference)) as fa:
        assert records[0].sequence() == fa.fetch("CHROMOSOME_I", 1000, 1100)
        assert records[1].sequence() == revcomp_by_hand(fa.fetch("CHROMOSOME_I", 2000, 2050))


def test_missing_index_in_unwritable_folder_says_how_to_make_one(shared_data, tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    reference = folder / "ce.fa"
    shutil.copy(shared_data / "celegans_ce.fa", reference)
    bed = tmp_path / "r.bed"
    bed.write_text("CHROMOSOME_I\t0\t10\n")
    folder.chmod(0o555)  # no write bit: genoconv leaves it alone even when running as root
    try:
        with pytest.raises(InputFileError) as e:
            open_records([], reference=reference, regions=bed)
        assert not (folder / "ce.fa.fai").exists()
    finally:
        folder.chmod(0o755)
    msg = str(e.value)
    assert f"samtools faidx {reference}" in msg and "not writable" in msg and "\n" not in msg


def test_plain_gzip_reference_and_regions_without_reference(shared_data, tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("DMD\t0\t10\n")
    with pytest.raises(InputError, match="bgzip"):
        open_records([], reference=shared_data / "DMD_GRCh37_chrX.fa.gz", regions=bed)
    with pytest.raises(InputError, match="reference"):
        open_records([], regions=bed)


def test_reference_index_must_describe_the_reference(tmp_path):
    # Regions are cut by the .fai's offsets: a duplicate contig (htslib keeps the first, silently) is refused, and
    # an index of an older version with a newer time (cp -p) is rebuilt, not trusted.
    from genoconv.errors import InputError

    (tmp_path / "r.bed").write_text("chrB\t10\t40\tb\n")
    ref = tmp_path / "ref.fa"
    ref.write_text(">chrA\n" + "A" * 50 + "\n>chrB\n" + "C" * 20 + "G" * 40 + "\n>chrA\n" + "T" * 50 + "\n")
    with pytest.raises(InputError, match=r"contig 'chrA' is in the reference twice \(records 1 and 3\)"):
        open_records([], reference=ref, regions=tmp_path / "r.bed")
    ref.write_text(">chrA\n" + "A" * 50 + "\n>chrB\n" + "C" * 20 + "G" * 40 + "\n")
    assert [r.sequence() for r in open_records([], reference=ref, regions=tmp_path / "r.bed")] == ["C" * 10 + "G" * 20]
    stamp = os.stat(f"{ref}.fai").st_mtime_ns - 10**9
    ref.write_text(">chrA\n" + "A" * 55 + "\n>chrB\n" + "T" * 20 + "G" * 40 + "\n")  # same contigs, moved bytes
    os.utime(ref, ns=(stamp, stamp))
    assert [r.sequence() for r in open_records([], reference=ref, regions=tmp_path / "r.bed")] == ["T" * 10 + "G" * 20]


def test_a_checked_reference_is_not_scanned_again_until_it_changes(tmp_path, monkeypatch):
    # A cluster run's every shard would scan a 3 Gbp reference again (~20 s): a passed check is remembered by the
    # file's and index's identity, status-change time included, which no cp -p or touch can set back.
    from genoconv.io import fasta

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "r.bed").write_text("chrB\t10\t40\tb\n")
    ref = tmp_path / "ref.fa"
    ref.write_text(">chrA\n" + "A" * 50 + "\n>chrB\n" + "C" * 60 + "\n")
    scans = []
    real = fasta.scan_fasta
    monkeypatch.setattr(fasta, "scan_fasta", lambda *a: scans.append(a) or real(*a))
    for _ in range(3):
        assert [r.sequence() for r in open_records([], reference=ref, regions=tmp_path / "r.bed")] == ["C" * 30]
    assert len(scans) == 1
    stamp = os.stat(ref).st_mtime_ns
    ref.write_text(">chrA\n" + "A" * 50 + "\n>chrB\n" + "G" * 60 + "\n")  # same size, same times set back
    os.utime(ref, ns=(stamp, stamp))
    os.utime(f"{ref}.fai", ns=(stamp + 1, stamp + 1))
    assert [r.sequence() for r in open_records([], reference=ref, regions=tmp_path / "r.bed")] == ["G" * 30]
    assert len(scans) == 2


def test_contigs_named_like_header_lines_exons_by_their_own_id_and_unknown_strand(tmp_path):
    # A BED/GTF line on contig "track_scaffold_1" or "browser2" was skipped as a track/browser header (exit 0, records
    # missing); an exon took its gene's name (every exon of a gene a duplicate); GFF3 strand '?' refused the file.
    rng = np.random.default_rng(9)
    names = ["chr1", "track_scaffold_1", "browser2"]
    seqs = {n: "".join(rng.choice(list("ACGT"), size=500)) for n in names}
    ref = tmp_path / "ref.fa"
    ref.write_text("".join(f">{n}\n{s}\n" for n, s in seqs.items()))
    bed = tmp_path / "r.bed"
    bed.write_text('track name="mine"\nbrowser position chr1:1-100\n'
                   + "".join(f"{n}\t10\t110\t{k}\t0\t+\n" for k, n in zip("ABC", names)))
    assert [(r.id, r.sequence()) for r in open_records([], reference=ref, regions=bed)] == [
        (k, seqs[n][10:110]) for k, n in zip("ABC", names)]
    gtf = tmp_path / "g.gtf"
    gtf.write_text("".join(f'chr1\tx\texon\t{a}\t{a + 49}\t.\t-\t.\tgene_id "G1"; gene_name "lin-3"; '
                           f'exon_id "G1.e{k}";\n' for k, a in enumerate((11, 201), 1)))
    exons = list(open_records([], reference=ref, regions=gtf, feature="exon"))
    assert [r.id for r in exons] == ["G1.e1", "G1.e2"]
    assert exons[1].coords == Coords("chr1", 200, 250, "-")
    gff = tmp_path / "q.gff3"
    gff.write_text("##gff-version 3\nchr1\tx\tgene\t101\t200\t.\t?\t.\tID=g2\n")
    (unknown,) = open_records([], reference=ref, regions=gff)
    assert unknown.sequence() == seqs["chr1"][100:200] and unknown.coords.strand == "+"


def test_gtf_lines_in_a_gff_file_keep_their_names_with_an_equals_sign_inside_quotes(tmp_path):
    """A .gff holding GTF lines is read as GTF by the shape of its first attribute: an '=' inside a quoted value
    (note "x=1") made it GFF3 before, and the gene lost its name (its region string was stored instead)."""
    ref = tmp_path / "ref.fa"
    ref.write_text(">chr1\n" + "ACGT" * 100 + "\n")
    gff = tmp_path / "g.gff"
    gff.write_text('chr1\tx\tgene\t11\t60\t.\t+\t.\tgene_id "G1"; gene_name "lin-3"; note "score=0.5";\n'
                   "chr1\tx\tgene\t101\t150\t.\t+\t.\tID=g2;Name=unc-5;Note=a \"quoted\" word\n")
    assert [r.id for r in open_records([], reference=ref, regions=gff)] == ["lin-3", "unc-5"]
