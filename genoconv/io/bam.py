"""Reads from SAM, BAM, CRAM and unaligned BAM, through ``pysam.AlignmentFile``.

Every record is read in file order (``until_eof=True``, no index needed, unmapped reads included) and
returned in its original sequencing orientation (``get_forward_sequence``). Secondary and supplementary
alignments repeat (part of) a primary read, so they are skipped unless asked for; records without SEQ
(``*``) cannot be embedded. Each skipped record is counted once in ``RecordSource.skipped``, under the first
reason that applies: ``secondary``, ``supplementary``, ``no_sequence``.

Read ids are the read name, with ``/1`` or ``/2`` appended for the two reads of a pair (they share a name).

With ``regions`` (``--regions`` beside SAM/BAM/CRAM inputs) only the reads overlapping the regions are read, as
``samtools view -L regions.bed`` does with an index: each read once, in position order, through the file's
``.bai``/``.csi``/``.crai`` index (required). Region numbers are 0-based half-open after reading (BED as written,
GTF/GFF converted from 1-based closed).

An aligned read carries its ``coords``: reference name, aligned span ``[reference_start, reference_end)`` and
``-`` for a reverse-strand alignment (see :mod:`genoconv.coords`); unmapped reads carry none.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pysam

from genoconv.coords import Coords
from genoconv.errors import InputError
from genoconv.io.record import Record
from genoconv.io.regions import region_intervals


class AlignmentInput:
    def __init__(
        self,
        path: Path,
        kind: str,
        *,
        reference: Path | None = None,
        include_secondary: bool = False,
        include_supplementary: bool = False,
        data: Path | None = None,
        regions: Path | None = None,
        feature: str = "gene",
    ) -> None:
        self.path = path
        self.data = data  # a pipe's saved bytes, read in place of path (named in messages)
        self.kind = kind.upper()
        self.reference = reference
        self.include_secondary = include_secondary
        self.include_supplementary = include_supplementary
        self.regions = regions
        with self._open(warn=None) as handle:  # fail now, not in the middle of a run, when the header cannot be read
            self._intervals = self._select(handle, regions, feature) if regions is not None else None
        stale = self._older_index()
        if stale is not None:  # what samtools warns of too: a rewritten file read through its old index
            logging.getLogger("genoconv.io").warning(
                "%s: its index %s is older than the file; if the file was rewritten, rebuild it (samtools index %s)",
                self.path, stale.name, self.path)

    def _select(self, handle: pysam.AlignmentFile, regions: Path, feature: str) -> list[tuple[str, int, int]]:
        """The regions merged where they overlap, in the file's contig order: what ``fetch`` reads."""
        if self.data is not None or not handle.has_index():
            where = "a pipe has none" if self.data is not None else f"{self.path} has none"
            raise InputError(f"{self.path}: --regions selects reads through a {self.kind} index and {where}; sort and "
                             f"index the file (samtools sort -o sorted.bam; samtools index sorted.bam)")
        order = {name: i for i, name in enumerate(handle.references)}
        merged: list[list] = []
        for contig, start, end in sorted(region_intervals(regions, feature, dict(zip(handle.references,
                                                                                     handle.lengths)), self.path),
                                         key=lambda r: (order[r[0]], r[1])):
            if merged and merged[-1][0] == contig and start <= merged[-1][2]:
                merged[-1][2] = max(merged[-1][2], end)
            else:
                merged.append([contig, start, end])
        return [tuple(x) for x in merged]

    def _reads(self, handle: pysam.AlignmentFile) -> Iterator[pysam.AlignedSegment]:
        if self._intervals is None:
            yield from handle.fetch(until_eof=True)
            return
        previous_contig, previous_end = None, 0
        for contig, start, end in self._intervals:
            # A read that starts before the previous interval (same contig) ends overlapped it: it came then.
            seen_below = previous_end if contig == previous_contig else 0
            for read in handle.fetch(contig, start, end):
                if read.reference_start >= seen_below:
                    yield read
            previous_contig, previous_end = contig, end

    def _open(self, warn) -> pysam.AlignmentFile:
        kwargs = {"check_sq": False, "ignore_truncation": True}
        if self.kind == "CRAM" and self.reference is not None:
            kwargs["reference_filename"] = str(self.reference)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                handle = pysam.AlignmentFile(str(self.data or self.path), **kwargs)
            except (OSError, ValueError) as e:
                raise InputError(f"{self.path}: cannot read this {self.kind} file ({e})") from None
        for w in caught:
            text = str(w.message)
            if "EOF" in text:
                text = "no BGZF end-of-file marker, the file may be truncated; reading the records that are there"
            if warn is not None:
                warn(f"{self.path}: {text}")
        return handle

    def records(self, source) -> Iterator[tuple[Record, int]]:
        handle = self._open(warn=source._warn)
        ordinal = 0
        skipped = source.skipped
        try:
            with handle:
                for read in self._reads(handle):
                    ordinal += 1
                    if read.is_secondary and not self.include_secondary:
                        skipped["secondary"] += 1
                        continue
                    if read.is_supplementary and not self.include_supplementary:
                        skipped["supplementary"] += 1
                        continue
                    if read.query_length == 0 or read.query_sequence is None:
                        skipped["no_sequence"] += 1
                        continue
                    name = read.query_name or ""
                    if read.is_paired and read.is_read1 != read.is_read2:
                        name += "/1" if read.is_read1 else "/2"
                    yield Record.from_sequence(name, read.get_forward_sequence(), str(self.path),
                                               _aligned_span(read)), ordinal
        except (OSError, ValueError) as e:
            if self.kind == "CRAM":
                hint = "; pass the reference it was written against (--reference)" if self.reference is None else ""
                raise InputError(
                    f"{self.path}: cannot decode CRAM record {ordinal + 1} ({e}): is the reference right{hint}?"
                ) from None
            stale = self._older_index()
            if stale is not None:  # reads fetched at the old file's offsets: the index is the fault, not the file
                raise InputError(f"{self.path}: cannot read record {ordinal + 1} through its index {stale.name}, "
                                 f"which is older than the file: rebuild it (samtools index {self.path})") from None
            headless = self.kind == "SAM" and ordinal == 0 and not self._has_sq_lines()
            raise InputError(
                f"{self.path}: truncated or corrupt at record {ordinal + 1}, after {ordinal} records were read ({e})"
                + ("; it has no @SQ header lines, which aligned SAM records need (samtools view -h keeps them)"
                   if headless else "")
            ) from None

    def _has_sq_lines(self) -> bool:
        try:
            with self._open(warn=None) as handle:
                return bool(handle.references)
        except InputError:
            return False

    def _older_index(self) -> Path | None:
        """The index ``--regions`` reads through when it is older than the file (samtools warns of the same)."""
        if self._intervals is None or self.data is not None:
            return None
        ext = {"BAM": (".bai", ".csi"), "CRAM": (".crai",)}.get(self.kind, (".csi",))
        for index in [Path(f"{self.path}{e}") for e in ext] + [self.path.with_suffix(e) for e in ext]:
            try:
                if index.exists() and index.stat().st_mtime_ns < self.path.stat().st_mtime_ns:
                    return index
            except OSError:
                return None
        return None

    def position(self, ordinal: int) -> str:
        return f"record {ordinal} of {self.path}" + (f" within {self.regions}" if self.regions is not None else "")

    def describe(self) -> str:
        extra = [
            what
            for what, on in (("secondary", self.include_secondary), ("supplementary", self.include_supplementary))
            if on
        ]
        within = f", reads overlapping {self.regions}" if self.regions is not None else ""
        return f"{self.path} ({self.kind}{', with ' + ' and '.join(extra) if extra else ''}{within})"

    def files(self) -> list[tuple[str, Path, tuple[Path, ...]]]:
        """This file, the reference a CRAM is decoded against (its bases become the reads'), and the regions
        that select the reads (another file of regions is another set of records: a resume must see it)."""
        used = self.kind == "CRAM" and self.reference is not None
        return ([("inputs", self.path, ())] + ([("reference", self.reference, ())] if used else [])
                + ([("regions", self.regions, ())] if self.regions is not None else []))

    def close(self) -> None:
        pass


def _aligned_span(read: pysam.AlignedSegment) -> Coords | None:
    """Where an aligned read lies on the reference; None when unmapped (or mapped without aligned bases)."""
    if read.is_unmapped or read.reference_name is None or read.reference_end is None:
        return None
    if read.reference_end <= read.reference_start:
        return None
    return Coords(read.reference_name, read.reference_start, read.reference_end, "-" if read.is_reverse else "+")
