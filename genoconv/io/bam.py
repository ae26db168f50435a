"""Reads from SAM, BAM, CRAM and unaligned BAM, through ``pysam.AlignmentFile``.

Every record is read in file order (``until_eof=True``, no index needed, unmapped reads included) and
returned in its original sequencing orientation (``get_forward_sequence``). Secondary and supplementary
alignments repeat (part of) a primary read, so they are skipped unless asked for; records without SEQ
(``*``) cannot be embedded. Each skipped record is counted once in ``RecordSource.skipped``, under the first
reason that applies: ``secondary``, ``supplementary``, ``no_sequence``.

Read ids are the read name, with ``/1`` or ``/2`` appended for the two reads of a pair (they share a name).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pysam

from genoconv.errors import InputError
from genoconv.io.record import Record


class AlignmentInput:
    def __init__(
        self,
        path: Path,
        kind: str,
        *,
        reference: Path | None = None,
        include_secondary: bool = False,
        include_supplementary: bool = False,
    ) -> None:
        self.path = path
        self.kind = kind.upper()
        self.reference = reference
        self.include_secondary = include_secondary
        self.include_supplementary = include_supplementary
        self._open(warn=None).close()  # fail now, not in the middle of a run, when the header cannot be read

    def _open(self, warn) -> pysam.AlignmentFile:
        kwargs = {"check_sq": False, "ignore_truncation": True}
        if self.kind == "CRAM" and self.reference is not None:
            kwargs["reference_filename"] = str(self.reference)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                handle = pysam.AlignmentFile(str(self.path), **kwargs)
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
                for read in handle.fetch(until_eof=True):
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
                    yield Record.from_sequence(name, read.get_forward_sequence(), str(self.path)), ordinal
        except (OSError, ValueError) as e:
            if self.kind == "CRAM":
                hint = "; pass the reference it was written against (--reference)" if self.reference is None else ""
                raise InputError(
                    f"{self.path}: cannot decode CRAM record {ordinal + 1} ({e}): is the reference right{hint}?"
                ) from None
            raise InputError(
                f"{self.path}: truncated or corrupt at record {ordinal + 1}, after {ordinal} records were read ({e})"
            ) from None

    def position(self, ordinal: int) -> str:
        return f"record {ordinal} of {self.path}"

    def describe(self) -> str:
        extra = [
            what
            for what, on in (("secondary", self.include_secondary), ("supplementary", self.include_supplementary))
            if on
        ]
        return f"{self.path} ({self.kind}{', with ' + ' and '.join(extra) if extra else ''})"

    def files(self) -> list[tuple[str, Path, tuple[Path, ...]]]:
        """This file, and the reference a CRAM is decoded against (its bases become the reads')."""
        used = self.kind == "CRAM" and self.reference is not None
        return [("inputs", self.path, ())] + ([("reference", self.reference, ())] if used else [])

    def close(self) -> None:
        pass
