"""The HDF5 store: one file per run, written crash-safely, read lazily in notebooks.

This package is the only code that imports h5py, and it needs neither torch nor the rest of genoconv: a laptop
reads a cluster's output with numpy + h5py alone (``from genoconv import open_embeddings``). Modules: ``layout``
(what a file holds), ``hdf5`` (how files are opened and synced), ``journal``, ``writer``, ``reader``, ``merge``.

Layout (``n`` records, ``d`` = model width; "rows" are 0-based, half-open ``[start, end)``)
------------------------------------------------------------------------------------------
``/ids``                      (n,) utf-8 strings, in commit order
``/lengths``                  (n,) int64, bases per record
``/offsets``                  (n,) int64, first row of each record in ``/per_nucleotide/<layer>``
``/modes``                    (n,) utf-8 strings, the convolution mode used for each record
                              (``exact``, ``partial:K=1000000``, ``partial:K=...;streamed:C=...``;
                              ``freq-sparse:F=0.25`` marks the approximation ``--freq-keep`` makes)
``/per_nucleotide/<layer>``   (total_bases, d), float16 by default (``store_dtype`` float16|float32);
                              record ``i`` is rows ``offsets[i] : offsets[i] + lengths[i]``, base 0 first.
                              Chunks of ``max(1, 2**20 // (d * itemsize))`` rows (~1 MiB; 2048 rows at
                              d=256 float16), optional gzip or lzf compression with byte shuffle.
``/pooled/<mode>/<layer>``    (n, d) float32, one row per record, for each pooling mode (mean, max, last)
``/windowed/<layer>``         (total_windows, d) float32: row ``k`` of a record is the mean over its bases
                              ``[k*W, (k+1)*W)``; the last window is partial; ``ceil(length / W)`` rows per
                              record, starting at ``/window_offsets[i]`` (n,) int64.
``/coords/contig``, ``/coords/start``, ``/coords/end``, ``/coords/strand``
                              (n,) utf-8, int64, int64, utf-8: where each record lies on the reference,
                              0-based half-open, strand ``+``/``-`` as embedded (``-``: record base 0 is reference
                              base ``end - 1``; see :mod:`genoconv.coords`). For ``--regions`` records and aligned
                              reads; ``""``/``-1`` for records without (FASTA/FASTQ, unmapped reads). The group
                              exists only when at least one record has coordinates.

``<layer>`` is an absolute, non-negative model layer index (the caller resolves negative ``--layer``
values); the root attribute ``layers`` lists the stored ones in the order given. Only the groups the run
asked for exist (no ``/per_nucleotide`` with ``--no-per-nucleotide``, no ``/windowed`` without ``--window``).
While a run is unfinished the file also holds ``/_tail`` (see below) and ``<out>.journal`` lies beside it;
read such a file with ``open_embeddings``, which warns and shows the committed records. Files use the
HDF5 1.10+ format (``libver="latest"``, needed for SWMR).

Root attributes: everything in the caller's provenance dict (model name, checkpoint sha256, compute dtype,
tokenizer policy, convolution mode, command line, ...; dicts and lists as JSON strings), ``run_config``
(canonical JSON of every option that affects the output), ``genoconv_version``, ``format``
(``genoconv-embeddings``), ``format_version``, ``store_spec`` (JSON), ``store_dtype``, ``d_model``,
``layers``, ``pools``, ``window`` (0 = none), ``start_time`` and ``end_time`` (ISO 8601 UTC) and
``complete`` (bool; set last, after everything else is on disk).

Crash safety (why a SIGKILL at any instant loses nothing committed and never yields a wrong file)
---------------------------------------------------------------------------------------------------
1. The file is created and reopened with HDF5's SWMR-write flag (libver latest) from its first byte.
   Measured with HDF5 2.0 / h5py 3.16: after a SIGKILL a plain HDF5 file cannot be opened at all, not even
   read-only or with ``locking=False`` ("file is already open for write ... h5clear"); an SWMR-written one
   still opens in SWMR-read mode, consistent up to its last flush.
2. Beside the file, ``<out>.journal`` is an append-only log, one line per event, each line carrying the
   CRC32 of its own text: a header (spec, run_config, start time), then one entry per committed record
   (id, length, mode, coordinates, row offsets, where its newest rows live, and the CRC32 of every byte stored
   for the record: per-nucleotide rows, windowed rows, pooled rows). ``commit()`` writes the data, flushes HDF5
   (data and metadata reach the OS), and only then appends the journal line. A torn last line fails its CRC
   and is ignored. A killed process does not lose what reached the OS, so no fsync is needed per commit.
3. The big row datasets only ever receive whole chunks, each written once (a compressed chunk rewritten at
   every commit is relocated each time: measured 7x file growth with 150-base records). Committed rows past
   the last whole chunk are copied at each commit to slot 0 or 1 of ``/_tail/<kind>/<layer>`` (uncompressed,
   contiguous, rewritten in place), alternating, and the journal line names the slot: the slot a journal
   entry points at is never the one being written. ``finish()`` writes the last partial chunk once and
   deletes ``/_tail``.
4. ``close()`` cuts off uncommitted rows, closes HDF5 cleanly, fsyncs, then appends a ``closed`` line.
   On resume, a journal that ends in exactly that line means a clean close: an ``opened`` line is appended
   first (so a kill from then on counts as unclean), then the file is reopened and appended to, once every
   metadata block has been read, the root attributes match the digest journaled at creation (their text lives
   in HDF5's global heap, which has no checksum) and every committed byte and index value matches the journal;
   a mismatch anywhere (a flipped byte since the close) sends the open to salvage instead. That check runs in a
   child process: on some damage HDF5 loops forever or crashes, and a child that does so counts as damage.
5. Any other journal (a kill, an error in close) means the HDF5 file is not trusted for writing: it is opened
   read-only (SWMR read), every journal entry's bytes are read back and checked against its CRCs, in order,
   up to the first mismatch, and the verified records are replayed into a fresh ``<out>.salvage`` (with its
   own journal) through the ordinary write path; both are fsynced and renamed over the originals
   (``os.replace``). A kill during salvage leaves the originals untouched; one between the two renames
   leaves a clean file with the old journal, which the next start salvages again. If the damaged file cannot
   be opened at all, nothing verifies and the run starts over: the output is still right, only time is lost.
   Salvage rewrites the committed data once, so it needs that much free disk space for a moment.
6. ``finish()`` writes ``/ids``, ``/modes``, ``/coords`` and ``end_time``, flushes and fsyncs, and only then sets
   ``complete=True``, closes, fsyncs and deletes the journal. A complete file is refused without
   ``overwrite``; a journal left beside a complete file is deleted.
7. A failed write (a full disk, an I/O error) abandons the file: it is never written again (``hdf5.abandon``)
   and gets no ``closed`` line, so the next open salvages it. A full disk is a one-line ``ResourceError``.
   ``overwrite`` writes the new file aside (``<out>.new``) and renames it over the old one only when complete.
So the committed records are exactly the verified journal prefix; their bytes are checked against CRCs
taken from the arrays the caller passed; the caller recomputes only what follows
(``EmbeddingWriter.committed`` lists what to skip). ``commit_interval`` > 0 trades this for speed with many
short records: commits are made durable together, at most that many seconds apart and at close/finish.

File locking: HDF5 locks files by default, which fails on some NFS/Lustre mounts ("No locks available").
Pass ``locking=False`` or set ``GENOCONV_HDF5_LOCKING=0`` (``HDF5_USE_FILE_LOCKING=FALSE`` also works).
Only one process may write a given output at a time: the writer holds ``<out>.lock`` (:mod:`genoconv.store.lock`).
"""

from genoconv.store.hdf5 import locking_setting
from genoconv.store.journal import read_journal
from genoconv.store.layout import (CHUNK_BYTES, FORMAT, FORMAT_VERSION, StoreSpec, check_free_space, chunk_rows,
                                   estimate_bytes)
from genoconv.store.lock import OutputLock
from genoconv.store.merge import check_shards, merge, write_virtual_merge
from genoconv.store.reader import EmbeddingsFile, open_embeddings
from genoconv.store.writer import EmbeddingWriter, RecordWriter, space_needed, unfinished_run

__all__ = ["CHUNK_BYTES", "FORMAT", "FORMAT_VERSION", "EmbeddingWriter", "EmbeddingsFile", "OutputLock", "RecordWriter",
           "StoreSpec", "check_free_space", "check_shards", "chunk_rows", "estimate_bytes", "locking_setting", "merge",
           "open_embeddings", "read_journal", "space_needed", "unfinished_run", "write_virtual_merge"]
