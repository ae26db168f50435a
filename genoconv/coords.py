"""Where a record lies on a reference genome: :class:`Coords`, shared by the readers (which know it) and the store
(which keeps it), so neither has to import the other.

Convention: ``start``/``end`` are 0-based half-open on ``contig`` (``[start, end)``, BED style), and ``strand`` is the
orientation of the record *as embedded*: ``+`` means record base 0 is reference base ``start``; ``-`` means the
record is the reverse complement of the reference there, so record base 0 is reference base ``end - 1``. A BED/GTF
region on the minus strand embedded with ``--strand-aware`` (the default) is ``-``; with ``--no-strand-aware``, or
with strand ``.``, it is ``+``. An aligned read is ``-`` when it aligned to the reverse strand (it is embedded in its
sequencing orientation); its ``[start, end)`` is the aligned span, which soft clips and indels make differ from
the read's length.

Written as text (record ids of unnamed regions, tables, titles, messages) a span is a region string as samtools and
IGV read it, 1-based closed: ``[start, end)`` is ``contig:start+1-end`` (:meth:`Coords.region`).
"""

from __future__ import annotations

from typing import NamedTuple

STRANDS = ("+", "-")


class Coords(NamedTuple):
    """``contig``, 0-based half-open ``[start, end)``, and ``strand`` (``+``/``-``) of a record on a reference."""

    contig: str
    start: int
    end: int
    strand: str

    @classmethod
    def checked(cls, value) -> "Coords":
        """A ``Coords`` from any 4-sequence ``(contig, start, end, strand)``; ``ValueError`` when it is not one."""
        try:
            contig, start, end, strand = value
            out = cls(str(contig), int(start), int(end), str(strand))
        except (TypeError, ValueError):
            raise ValueError(f"coordinates must be (contig, start, end, strand), got {value!r}") from None
        if not out.contig or out.start < 0 or out.end <= out.start or out.strand not in STRANDS:
            raise ValueError(f"bad coordinates {tuple(out)!r}: need a contig name, 0 <= start < end, strand '+' or '-'")
        return out

    def region(self) -> str:
        """samtools/IGV region notation, 1-based closed: ``contig:start+1-end`` (the fields stay 0-based)."""
        return f"{self.contig}:{self.start + 1}-{self.end}"

    def __str__(self) -> str:
        return f"{self.region()}({self.strand})"
