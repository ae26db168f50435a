"""One input sequence as genoconv embeds it.

Coordinates: every number is 0-based half-open (``sequence(0, 10)`` is the first ten bases), on the record
*as embedded*, i.e. after a minus-strand region has been reverse-complemented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from genoconv.coords import Coords

# IUPAC nucleotide complement, both cases; U complements to A. Letters outside the table ('-', '*', '.')
# are kept as they are.
_COMPLEMENT = str.maketrans(
    "ACGTUMRWSYKVHDBNacgtumrwsykvhdbn",
    "TGCAAKYWSRMBDHVNtgcaakywsrmbdhvn",
)


def reverse_complement(sequence: str) -> str:
    """Reverse complement with the IUPAC codes (``R``<->``Y``, ``K``<->``M``, ``B``<->``V``, ``D``<->``H``);
    case is kept, so soft-masked (lowercase) bases stay lowercase."""
    return sequence.translate(_COMPLEMENT)[::-1]


class _Access(Protocol):
    def get(self, start: int, end: int) -> str:  # 0-based half-open, already bounds-checked
        ...


class _InMemory:
    """A sequence held as one Python string (streamed FASTA/FASTQ records, BAM reads)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def get(self, start: int, end: int) -> str:
        return self.text[start:end]


@dataclass(frozen=True)
class Record:
    """An input sequence: ``id`` (unique within one run), ``length`` in bases, and ``source`` for messages
    and provenance (``"path"``, or ``"reference:contig:start-end(strand)"`` for a region, 0-based half-open).

    ``sequence(start, end)`` returns letters exactly as in the file (case kept). Records from an indexed
    FASTA or a region read their bases lazily from disk, so a chromosome can be read chunk by chunk.

    ``coords``: where the record lies on a reference (:class:`genoconv.coords.Coords`) for a ``--regions`` record
    or an aligned read; None for FASTA/FASTQ records and unmapped reads.
    """

    id: str
    length: int
    source: str
    _access: _Access = field(repr=False, compare=False)
    coords: Coords | None = None

    @classmethod
    def from_sequence(cls, id: str, sequence: str, source: str = "<memory>", coords: Coords | None = None) -> Record:
        """A record held in memory; handy in tests and for the Python API."""
        return cls(id=id, length=len(sequence), source=source, _access=_InMemory(sequence), coords=coords)

    def sequence(self, start: int = 0, end: int | None = None) -> str:
        """Bases ``[start, end)`` of the record as embedded (0-based half-open). ``end=None`` or an end past
        the record means "to the end" (like Python slicing and ``pysam.FastaFile.fetch``); a negative
        ``start`` or ``start > end`` is a ``ValueError``."""
        end = self.length if end is None else min(end, self.length)
        if start < 0 or start > end:
            raise ValueError(f"record {self.id!r}: bad slice [{start}, {end}) of a {self.length} bp record")
        if start == end:
            return ""
        return self._access.get(start, end)
