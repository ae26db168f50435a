"""``open_records``: every input of one run as one stream of uniquely named records."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from genoconv.errors import InputError
from genoconv.io.bam import AlignmentInput
from genoconv.io.fasta import FastaInput, FastqInput, open_indexed
from genoconv.io.identity import file_identity
from genoconv.io.record import Record
from genoconv.io.regions import RegionsInput
from genoconv.io.sniff import sniff

log = logging.getLogger("genoconv.io")

# Positions of seen ids are packed as input_index << 40 | ordinal to keep the map small for millions of reads.
_ORDINAL_BITS = 40


class RecordSource:
    """The records of all inputs, in order: inputs as given, each in file order, then regions.

    Iterating streams them (each pass re-reads the files; ``skipped`` and ``warnings`` describe the latest
    pass). ``skipped`` counts records left out, by reason; ``warnings`` holds one-line warnings.
    """

    def __init__(self, inputs: list, *, dedupe_ids: bool = False) -> None:
        self._inputs = inputs
        self.dedupe_ids = dedupe_ids
        self.skipped: Counter = Counter()
        self.warnings: list[str] = []

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning(message)

    def __iter__(self) -> Iterator[Record]:
        self.skipped.clear()
        self.warnings.clear()
        seen: dict[str, int] = {}
        for index, reader in enumerate(self._inputs):
            for record, ordinal in reader.records(self):
                if "\x00" in record.id:  # HDF5 strings end at NUL: the run could never store it
                    raise InputError(f"{reader.position(ordinal)}: record id {record.id!r} contains a NUL byte; "
                                     "rename the record")
                packed = index << _ORDINAL_BITS | ordinal
                first = seen.get(record.id)
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
        out = []
        for reader in self._inputs:
            for role, path, index_files in reader.files():
                if (role, Path(path)) not in seen:
                    seen.add((role, Path(path)))
                    out.append((role, Path(path), file_identity(Path(path), index_files)))
        return out

    def close(self) -> None:
        for reader in self._inputs:
            reader.close()

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

    ``reference`` without ``regions`` is used only to decode CRAM. Records of ``regions`` follow the inputs'.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if regions is not None and reference is None:
        raise InputError(f"{regions}: regions need a reference genome (--reference genome.fa)")
    if not inputs and regions is None:
        raise InputError("no inputs: give sequence files, or --reference with --regions")
    readers: list = []
    ref_path = Path(reference) if reference is not None else None
    for item in inputs:
        path = Path(item)
        fmt = sniff(path)
        if fmt.kind == "fasta":
            readers.append(FastaInput(path, fmt.compression))
        elif fmt.kind == "fastq":
            readers.append(FastqInput(path, fmt.compression))
        else:
            readers.append(
                AlignmentInput(
                    path,
                    fmt.kind,
                    reference=ref_path,
                    include_secondary=include_secondary,
                    include_supplementary=include_supplementary,
                )
            )
    if regions is not None:
        ref_fmt = sniff(ref_path)
        if ref_fmt.kind != "fasta":
            raise InputError(f"{ref_path}: the reference must be a FASTA file, not {ref_fmt.kind.upper()}")
        handle = open_indexed(ref_path, ref_fmt.compression, required=True)
        readers.append(RegionsInput(Path(regions), handle, feature=feature, strand_aware=strand_aware))
    return RecordSource(readers, dedupe_ids=dedupe_ids)
