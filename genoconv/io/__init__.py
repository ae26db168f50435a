"""Input readers: FASTA/FASTQ (plain, gzip, bgzip), SAM/BAM/CRAM, and regions (BED/GTF/GFF3) of a reference.

All numbers are 0-based half-open. ``open_records(paths, ...)`` gives a ``RecordSource``: iterate it for
``Record`` objects (``id``, ``length``, ``source``, ``coords``, ``sequence(start, end)``).
"""

from genoconv.io.record import Record, reverse_complement
from genoconv.io.source import RecordSource, open_records, total_bases

__all__ = ["Record", "RecordSource", "open_records", "reverse_complement", "total_bases"]
