"""Regions of a reference genome: BED, GTF and GFF3, plain or gzip.

File conventions: BED is 0-based half-open (``chrom start end [name score strand]``); GTF and GFF3 are
1-based closed (``start <= end``) and are converted on reading to 0-based half-open coordinates. Written as a region
string (the fallback id ``contig:start-end``, titles, messages) a span is 1-based closed, as samtools and IGV read
it (:meth:`genoconv.coords.Coords.region`) — except in error messages about a line, which quote the file's own
numbers (a BED line's as ``contig start end``, then its samtools string).

Sequences are fetched lazily with ``pysam.FastaFile``; a minus-strand region is reverse-complemented when
``strand_aware`` (IUPAC complement, case kept), so its base 0 is the region's 5' end on the minus strand. Each
record carries its ``coords`` (contig, start, end, and strand as embedded: see :mod:`genoconv.coords`).
Region ids: BED name column (4); GTF ``<feature>_name``, ``<feature>_id``, then ``gene_name``, ``gene_id``; GFF3
``Name``, ``gene_name``, ``ID``; else the region string ``contig:start-end`` (1-based closed).
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import unquote

from genoconv.coords import Coords
from genoconv.errors import InputError
from genoconv.io.fasta import FastaHandle, FastaSlice
from genoconv.io.record import Record
from genoconv.io.sniff import check_readable

_GTF_ATTRIBUTE = re.compile(r'\s*([^\s;]+)\s+(?:"([^"]*)"|([^\s;]+))\s*;?')
# A .gff file of GTF lines (GENCODE/Ensembl ship both under .gff): the first attribute is `key "value"`, where GFF3
# writes key=value (an '=' inside a quoted GTF value, as in note "a=b", does not make the line GFF3).
_GTF_STYLE = re.compile(r'\s*[^\s=;"]+\s+"')


def regions_format(path: Path) -> str:
    """``bed``, ``gtf`` or ``gff`` from the extension (``.gz`` ignored)."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bgz")]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".bed", ".bed3", ".bed6", ".bed12", ".narrowpeak", ".broadpeak"):
        return "bed"
    if ext == ".gtf":
        return "gtf"
    if ext in (".gff", ".gff3", ".gff2"):
        return "gff"
    raise InputError(f"{path}: unknown regions format (expected a .bed, .gtf, .gff or .gff3 file)")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    check_readable(path)
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:  # -sig: a leading BOM is dropped
            for line_no, line in enumerate(fh, 1):
                yield line_no, line.rstrip("\r\n")
    except (EOFError, OSError) as e:
        raise InputError(f"{path}: truncated or corrupt gzip file ({e})") from None


def _int(path: Path, line_no: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{path}: line {line_no}: {what} {text!r} is not an integer") from None


def _gtf_attributes(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in _GTF_ATTRIBUTE.finditer(text):
        out.setdefault(m.group(1), m.group(2) if m.group(2) is not None else m.group(3))
    return out


def _gff3_attributes(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq:
            out.setdefault(key, unquote(value))
    return out


def _parse(path: Path, fmt: str, feature: str) -> Iterator[tuple[int, str, int, int, str, str | None, str]]:
    """(line, contig, start, end, strand, name, as written) with 0-based half-open numbers; "as written" quotes the
    file's own numbers for messages: GTF/GFF ``contig:start-end`` (already samtools notation), BED ``contig start
    end`` followed by the samtools string, since a BED start written as ``contig:start-end`` would name another base."""
    seen_features: Counter = Counter()
    found = 0
    for line_no, line in _lines(path):
        header = line.startswith(("track", "browser")) and line.split(None, 1)[0] in ("track", "browser")
        if not line.strip() or line.startswith("#") or header:  # a header line, not contig track_scaffold_1
            if fmt == "gff" and line.startswith("##FASTA"):
                break
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if fmt == "bed":
            if len(fields) < 3:
                raise InputError(f"{path}: line {line_no}: a BED line needs at least 3 columns (chrom start end)")
            contig = fields[0]
            file_start = start = _int(path, line_no, fields[1], "start")
            file_end = end = _int(path, line_no, fields[2], "end")
            name = fields[3] if len(fields) > 3 and fields[3] not in ("", ".") else None
            strand = fields[5] if len(fields) > 5 else "."
        else:
            if len(fields) < 9:
                raise InputError(f"{path}: line {line_no}: a {fmt.upper()} line needs 9 tab-separated columns")
            seen_features[fields[2]] += 1
            if fields[2] != feature:
                continue
            contig = fields[0]
            file_start = _int(path, line_no, fields[3], "start")
            file_end = end = _int(path, line_no, fields[4], "end")
            start = file_start - 1
            strand = "." if fields[6] == "?" else fields[6]  # GFF3: '?' is a strand that is relevant but unknown
            attrs = fields[8]
            if fmt == "gtf" or (fmt == "gff" and _GTF_STYLE.match(attrs)):
                a = _gtf_attributes(attrs)
                keys = (f"{feature}_name", f"{feature}_id", "gene_name", "gene_id")  # an exon's own id first
            else:
                a = _gff3_attributes(attrs)
                keys = ("Name", "gene_name", "ID")
            name = next((a[k] for k in keys if a.get(k)), None)
        if start < 0:
            first = 0 if fmt == "bed" else 1
            raise InputError(f"{path}: line {line_no}: start {file_start} is before the first base ({first})")
        if end < start or (end == start and fmt != "bed"):  # GTF/GFF: end = start - 1 is end before start
            raise InputError(f"{path}: line {line_no}: end {file_end} is before start {file_start}")
        if end == start:
            raise InputError(f"{path}: line {line_no}: empty region {contig} {file_start} {file_end} (BED start = "
                             "end: no bases)")
        if strand not in ("+", "-", "."):
            raise InputError(f"{path}: line {line_no}: strand {strand!r} is not '+', '-' or '.'")
        found += 1
        samtools = Coords(contig, start, end, "+").region()
        as_written = f"{contig} {file_start} {file_end} (BED; {samtools})" if fmt == "bed" else samtools
        yield line_no, contig, start, end, strand, name, as_written
    if not found:
        if fmt != "bed" and seen_features:
            have = ", ".join(f for f, _ in seen_features.most_common(6))
            raise InputError(f"{path}: no '{feature}' features (found: {have}); choose another feature type")
        raise InputError(f"{path}: no regions in this file")


def check_region(path: Path, line_no: int, contig: str, end: int, contigs: Mapping[str, int],
                 where: Path, as_written: str) -> None:
    """InputError when a region's contig is not among ``contigs`` (those of ``where``: a reference or a BAM
    header) or the region runs past the contig's end; ``as_written`` quotes the region in the file's own numbers."""
    length = contigs.get(contig)
    if length is None:
        alt = contig[3:] if contig.startswith("chr") else "chr" + contig
        names = list(contigs)
        hint = (f" (it has {alt!r}: names must match exactly)" if alt in contigs else
                f" (its contigs: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
        raise InputError(f"{path}: line {line_no}: contig {contig!r} is not in {where}{hint}")
    if end > length:
        raise InputError(f"{path}: line {line_no}: {as_written} runs past the end of {contig} ({length} bp) in {where}")


def region_intervals(path: Path, feature: str, contigs: Mapping[str, int], where: Path) -> list[tuple[str, int, int]]:
    """Every region of a BED/GTF/GFF3 file as ``(contig, start, end)``, 0-based half-open, checked against the
    ``contigs`` of ``where`` (strands and names play no part: this is what selects reads)."""
    check_readable(path)
    out = []
    for line_no, contig, start, end, _, _, as_written in _parse(path, regions_format(path), feature):
        check_region(path, line_no, contig, end, contigs, where, as_written)
        out.append((contig, start, end))
    return out


class RegionsInput:
    """Regions of ``reference`` listed in a BED/GTF/GFF3 file, as lazy records."""

    kind = "regions"

    def __init__(
        self, regions: Path, reference: FastaHandle, *, feature: str = "gene", strand_aware: bool = True
    ) -> None:
        self.path = regions
        check_readable(regions)
        self.format = regions_format(regions)
        self.reference = reference
        self.feature = feature
        self.strand_aware = strand_aware
        self._contigs = dict(zip(reference.references, reference.lengths))

    def records(self, source) -> Iterator[tuple[Record, int]]:
        for line_no, contig, start, end, strand, name, as_written in _parse(self.path, self.format, self.feature):
            check_region(self.path, line_no, contig, end, self._contigs, self.reference.path, as_written)
            reverse = self.strand_aware and strand == "-"
            rid = name if name is not None else Coords(contig, start, end, "+").region()
            coords = Coords(contig, start, end, "-" if reverse else "+")
            access = FastaSlice(self.reference, contig, start, end, reverse)
            yield Record(id=rid, length=end - start, source=f"{self.reference.path}:{coords}", _access=access,
                         coords=coords), line_no

    def position(self, ordinal: int) -> str:
        return f"line {ordinal} of {self.path}"

    def describe(self) -> str:
        what = f"'{self.feature}' features of " if self.format != "bed" else ""
        strand = ", strand-aware" if self.strand_aware else ", forward strand only"
        return f"{what}{self.path} ({self.format.upper()}) on {self.reference.path}{strand}"

    def files(self) -> list[tuple[str, Path, tuple[Path, ...]]]:
        return [("regions", self.path, ()), ("reference", self.reference.path, self.reference.index_files)]

    def close(self) -> None:
        pass
