"""``open_records``: every input of one run as one stream of uniquely named records."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from genoconv.errors import InputError
from genoconv.io.bam import AlignmentInput
from genoconv.io.fasta import FastaInput, FastqInput, checked_reference
from genoconv.io.pipe import SavedStream
from genoconv.io.identity import file_identity
from genoconv.io.record import Record
from genoconv.io.regions import RegionsInput
from genoconv.io.sniff import STDIN, is_stream, sniff

log = logging.getLogger("genoconv.io")

ALIGNMENT_KINDS = ("sam", "bam", "cram")
# Positions of seen ids are packed as input_index << 40 | ordinal to keep the map small for millions of reads.
_ORDINAL_BITS = 40


class RecordSource:
    """The records of all inputs, in order: inputs as given, each in file order, then regions.

    Iterating streams them (each pass re-reads the files; ``skipped`` and ``warnings`` describe the latest
    pass). ``skipped`` counts records left out, by reason; ``warnings`` holds one-line warnings.
    """

    def __init__(self, inputs: list, *, dedupe_ids: bool = False, saved: Sequence[SavedStream] = ()) -> None:
        self._inputs = inputs
        self.dedupe_ids = dedupe_ids
        self._saved = list(saved)
        self.skipped: Counter = Counter()
        self.warnings: list[str] = []

    @property
    def piped_inputs(self) -> list[str]:
        """The inputs read from a pipe (stdin, process substitution): their content cannot be read again or
        fingerprinted, so a run that reads one cannot be checked against an earlier run (resumed)."""
        return [str(stream.name) for stream in self._saved]

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning(message)

    def __iter__(self) -> Iterator[Record]:
        self.skipped.clear()
        self.warnings.clear()
        seen: dict[str, int] = {}
        renamed: dict[str, int] = {}  # ids --dedupe-ids made -> where their record is
        for index, reader in enumerate(self._inputs):
            for record, ordinal in reader.records(self):
                if "\x00" in record.id:  # HDF5 strings end at NUL: the run could never store it
                    raise InputError(f"{reader.position(ordinal)}: record id {record.id!r} contains a NUL byte; "
                                     "rename the record")
                packed = index << _ORDINAL_BITS | ordinal
                first = seen.get(record.id)
                if record.id in renamed:  # a later record bears a name a duplicate was given: which is 'a_2'?
                    raise InputError(
                        f"--dedupe-ids: {self._position(renamed[record.id])} was renamed {record.id!r}, which "
                        f"{reader.position(ordinal)} is named too; rename one of them")
                if first is not None:
                    if not self.dedupe_ids:
                        raise InputError(
                            f"duplicate record id {record.id!r}: {self._position(first)} and "
                            f"{reader.position(ordinal)} (use --dedupe-ids to add a suffix)"
                        )
                    n = 2
                    while f"{record.id}_{n}" in seen:
                        n += 1
                    record = replace(record, id=f"{record.id}_{n}")
                    renamed[record.id] = packed
                seen[record.id] = packed
                yield record

    def _position(self, packed: int) -> str:
        reader = self._inputs[packed >> _ORDINAL_BITS]
        return reader.position(packed & ((1 << _ORDINAL_BITS) - 1))

    def lengths(self) -> list[tuple[str, int]]:
        """``[(id, length)]`` in iteration order. Indexed FASTA and regions read no sequence; streamed
        FASTA/FASTQ and alignment files are read once through."""
        return [(record.id, record.length) for record in self]

    def describe(self) -> str:
        return "; ".join(reader.describe() for reader in self._inputs)

    def identities(self) -> list[tuple[str, Path, dict]]:
        """``(role, path, identity)`` for every file the records come from (role ``inputs``, ``reference`` or
        ``regions``), in input order; see :mod:`genoconv.io.identity`. Call it after a pass over the records (the
        index a FASTA is read through is decided then)."""
        seen: set[tuple[str, Path]] = set()
        saved = {Path(stream.name): Path(stream.data) for stream in self._saved}  # a pipe: its saved copy
        out = []
        for reader in self._inputs:
            for role, path, index_files in reader.files():
                if (role, Path(path)) not in seen:
                    seen.add((role, Path(path)))
                    out.append((role, Path(path), file_identity(saved.get(Path(path), Path(path)), index_files)))
        return out

    def close(self) -> None:
        for reader in self._inputs:
            reader.close()
        for stream in self._saved:
            stream.remove()

    def __enter__(self) -> RecordSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def total_bases(source: RecordSource) -> int:
    """Sum of record lengths (see ``RecordSource.lengths`` for what it reads)."""
    return sum(length for _, length in source.lengths())


def open_records(
    inputs: Sequence[str | Path],
    *,
    reference: str | Path | None = None,
    regions: str | Path | None = None,
    feature: str = "gene",
    strand_aware: bool = True,
    include_secondary: bool = False,
    include_supplementary: bool = False,
    dedupe_ids: bool = False,
) -> RecordSource:
    """Open sequence inputs (FASTA/FASTQ plain, gzip or bgzip; SAM/BAM/CRAM) and/or ``regions`` (BED, GTF,
    GFF3) of ``reference``. Formats are recognised by content. Paths and headers are checked now; record
    contents as they are read. Every problem is an ``InputError`` with a one-line message.

    An input may be ``-`` (stdin) or a pipe (``/dev/stdin``, ``<(zcat x.fa.gz)``): it is read once, into a temporary
    copy (see :mod:`genoconv.io.pipe`). ``regions`` with SAM/BAM/CRAM inputs selects their reads that overlap the
    regions (``samtools view -L``; indexed files only); without, it embeds those regions of ``reference``, and
    their records follow the inputs'. ``reference`` otherwise only decodes CRAM.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not inputs and regions is None:
        raise InputError("no inputs: give sequence files, or --reference with --regions")
    if sum(str(x) in (STDIN, "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0") for x in inputs) > 1:
        raise InputError("- (stdin) is given more than once; it can be read only once")
    if regions is not None and is_stream(regions):
        raise InputError(f"{regions}: regions cannot come from a pipe (they are read twice, and their format is told "
                         "by the file extension); save them to a .bed, .gtf or .gff file")
    readers: list = []
    saved: list[SavedStream] = []
    ref_path = Path(reference) if reference is not None else None
    try:
        found = []  # (name, format, a pipe's saved bytes)
        for item in inputs:
            if is_stream(item):
                stream = SavedStream(item)
                saved.append(stream)
                found.append((stream.name, stream.format, stream.data))
            else:
                found.append((Path(item), sniff(item), None))
        aligned = [name for name, fmt, _ in found if fmt.kind in ALIGNMENT_KINDS]
        select = Path(regions) if regions is not None and aligned else None  # --regions picks their reads
        if select is not None:
            for name, fmt, _ in found:
                if fmt.kind not in ALIGNMENT_KINDS:
                    raise InputError(f"{name}: --regions beside SAM/BAM/CRAM inputs selects their reads that overlap "
                                     f"the regions (samtools view -L), which a {fmt.kind.upper()} input has no "
                                     "positions for; embed it in a run of its own (without SAM/BAM/CRAM, --regions "
                                     "embeds those regions of --reference)")
        elif regions is not None and reference is None:
            raise InputError(f"{regions}: regions need a reference genome (--reference genome.fa)")
        for path, fmt, data in found:
            if fmt.kind == "fasta":
                readers.append(FastaInput(path, fmt, data))
            elif fmt.kind == "fastq":
                readers.append(FastqInput(path, fmt, data))
            else:
                readers.append(
                    AlignmentInput(
                        path,
                        fmt.kind,
                        reference=ref_path,
                        include_secondary=include_secondary,
                        include_supplementary=include_supplementary,
                        data=data,
                        regions=select,
                        feature=feature,
                    )
                )
        if regions is not None and select is None:
            if is_stream(ref_path):
                raise InputError(f"{ref_path}: the reference is read through its index, so it must be a file, "
                                 "not a pipe")
            ref_fmt = sniff(ref_path)
            if ref_fmt.kind != "fasta":
                raise InputError(f"{ref_path}: the reference must be a FASTA file, not {ref_fmt.kind.upper()}")
            if ref_fmt.bom or ref_fmt.cr_only:
                raise InputError(f"{ref_path}: htslib cannot index a reference with a UTF-8 byte-order mark or CR-only "
                                 "line ends; write it out with plain LF line ends (e.g. seqkit seq) and index that")
            handle = checked_reference(ref_path, ref_fmt.compression)
            readers.append(RegionsInput(Path(regions), handle, feature=feature, strand_aware=strand_aware))
    except BaseException:
        for stream in saved:
            stream.remove()
        raise
    return RecordSource(readers, dedupe_ids=dedupe_ids, saved=saved)
