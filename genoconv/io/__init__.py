"""Input readers: FASTA/FASTQ (plain, gzip, bgzip), SAM/BAM/CRAM, and regions (BED/GTF/GFF3) of a reference.

All numbers are 0-based half-open. ``open_records(paths, ...)`` gives a ``RecordSource``: iterate it for
``Record`` objects (``id``, ``length``, ``source``, ``coords``, ``sequence(start, end)``). Importing this package
turns htslib's own stderr logging off: problems are reported as one-line ``InputError`` messages instead.
"""

import pysam

from genoconv.io.record import Record, reverse_complement
from genoconv.io.source import RecordSource, open_records, total_bases

# htslib writes its own "[E::fai_build_core] ..." / "[E::cram_index_load] ..." lines to stderr for conditions the
# readers handle and report in one line of their own (a header-only FASTA, a CRAM read without its index).
pysam.set_verbosity(0)

__all__ = ["Record", "RecordSource", "open_records", "reverse_complement", "total_bases"]
