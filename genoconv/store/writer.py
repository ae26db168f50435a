"""The crash-safe writer: :class:`EmbeddingWriter` (one run's file) and :class:`RecordWriter` (one record)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from genoconv.coords import Coords
from genoconv.errors import GenoconvError, InputError, InputFileError, NonFiniteError
from genoconv.store.hdf5 import (RowSource, abandon, attrs_digest, crc, fsync_dir, fsync_path, is_complete,
                                 locking_setting, now, open_read, open_swmr_write, out_of_space, read_all_metadata,
                                 unlink)
from genoconv.store.journal import (JOURNAL_FORMAT, Journal, JournalState, aside_path, entry_coords, journal_path,
                                    read_journal, salvage_path, state_path)
from genoconv.store.layout import (NUMPY_DTYPES, SMALL_CHUNK_BYTES, UTF8, StoreSpec, canonical_run_config, chunk_rows,
                                   fmt_option, n_windows, write_attrs, write_coords)
from genoconv.store.lock import OutputLock

log = logging.getLogger("genoconv.store")
VERIFY_BLOCK_BYTES = 64 * 2**20  # read-back block size when verifying a damaged file


class RowAppender:
    """Appends rows to a growable (rows, d) dataset and keeps its committed tail safe.

    Only whole chunks go to the main dataset, each written once (a compressed chunk rewritten at every commit
    would be relocated each time: measured 7x file growth for 150-base records). The rows after the last
    whole chunk stay in memory and, at each durable point, are copied to slot 0 or 1 of the uncompressed
    ``/_tail/...`` dataset, alternately, so the slot the journal points at is never being overwritten."""

    def __init__(self, ds: h5py.Dataset, tail: h5py.Dataset, aligned: int, pending: np.ndarray | None = None) -> None:
        self.ds, self.tail = ds, tail
        self.chunk = ds.chunks[0]
        self.written = aligned  # rows in the main dataset: always whole chunks until finish()
        self.pending: list[np.ndarray] = [] if pending is None or not len(pending) else [pending]
        self.n_pending = 0 if pending is None else len(pending)

    @property
    def end(self) -> int:
        return self.written + self.n_pending

    def push(self, rows: np.ndarray) -> None:
        self.pending.append(rows)
        self.n_pending += len(rows)
        boundary = self.end - self.end % self.chunk
        if boundary > self.written:
            self._write(boundary - self.written)

    def save_tail(self, slot: int) -> None:
        if self.n_pending:
            self._join()
            self.tail[slot, : self.n_pending] = self.pending[0]

    def finalize(self) -> None:
        if self.n_pending:
            self._write(self.n_pending)

    def reset(self, end: int) -> None:
        """Forget rows past ``end`` (a record begun but not committed)."""
        self._join()
        if end >= self.written:
            keep = end - self.written
            self.pending = [self.pending[0][:keep]] if keep else []
            self.n_pending = keep
        else:  # the dropped record already completed whole chunks: reload the committed part of the last one
            aligned = end - end % self.chunk
            self.pending = [self.ds[aligned:end]] if end > aligned else []
            self.n_pending, self.written = end - aligned, aligned

    def _join(self) -> None:
        if len(self.pending) > 1:
            self.pending = [np.concatenate(self.pending)]

    def _write(self, count: int) -> None:
        self._join()
        block = self.pending[0]
        start = self.written
        if self.ds.shape[0] != start + count:
            self.ds.resize(start + count, axis=0)
        self.ds[start : start + count] = block[:count]
        rest = block[count:]
        self.pending = [rest] if len(rest) else []
        self.n_pending = len(rest)
        self.written = start + count


class RecordWriter:
    """One record in progress: ``append``/``append_windows`` rows in order, then ``commit`` once."""

    def __init__(self, owner: "EmbeddingWriter", record_id: str, length: int, mode: str,
                 coords: Coords | None) -> None:
        self._owner = owner
        self.record_id, self.length, self.mode, self.coords = record_id, length, mode, coords
        spec = owner.spec
        self._rows = {layer: 0 for layer in spec.layers}
        self._windows = {layer: 0 for layer in spec.layers}
        self._crc: dict[str, int] = {}
        self._done = False
        self._checkpoint: dict[str, Any] | None = None  # the last durable checkpoint of this record
        self._last_checkpoint = time.monotonic()

    @property
    def row_dtype(self) -> np.dtype:
        """The dtype per-nucleotide rows are stored in (callers may convert before handing rows over)."""
        return self._owner._dtype

    def _check_open(self) -> None:
        if self._done or self._owner._record is not self:
            raise RuntimeError(f"record {self.record_id!r} is no longer open for writing")

    def _rows_in(self, layer: int, rows: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
        if layer not in self._rows:
            layers = list(self._owner.spec.layers)
            raise ValueError(f"layer {layer} is not stored in {self._owner.path} (layers {layers})")
        rows = np.asarray(rows)
        d = self._owner.spec.d_model
        if rows.ndim != 2 or rows.shape[1] != d:
            raise ValueError(f"{what} rows for record {self.record_id!r} must have shape (n, {d}), got {rows.shape}")
        with np.errstate(over="ignore"):  # float16 overflow becomes Inf, which the check below refuses
            rows = np.ascontiguousarray(rows, dtype=dtype)
        self._check_finite(rows, f"{what} rows of layer {layer}")  # after the cast: float16 overflow shows here
        return rows

    def _check_finite(self, rows: np.ndarray, what: str) -> None:
        """A NaN/Inf row is never stored: the record fails (and is dropped; earlier commits stay)."""
        if not np.isfinite(rows).all():
            hint = " (float16 storage overflows past 65504: try --store-dtype float32)" \
                if rows.dtype == np.float16 else ""
            raise NonFiniteError(f"{self._owner.path}: record {self.record_id!r}: {what} hold NaN or Inf; the "
                                 f"record is not stored{hint}")

    def append(self, layer: int, rows: np.ndarray) -> None:
        """Next per-nucleotide rows (n, d) of this record for ``layer``; cast to the store dtype."""
        self._check_open()
        if not self._owner.spec.per_nucleotide:
            raise ValueError(f"{self._owner.path} stores no per-nucleotide rows (per_nucleotide=False)")
        rows = self._rows_in(layer, rows, self._owner._dtype, "per-nucleotide")
        if self._rows[layer] + len(rows) > self.length:
            raise ValueError(
                f"record {self.record_id!r}: more than {self.length} per-nucleotide rows for layer {layer}"
            )
        key = f"p/{layer}"
        self._crc[key] = crc(rows, self._crc.get(key, 0))
        with self._owner._writing():
            self._owner._per_nt[layer].push(rows)
        self._rows[layer] += len(rows)

    def append_windows(self, layer: int, rows: np.ndarray) -> None:
        """Next windowed-mean rows (n, d) of this record for ``layer``, float32."""
        self._check_open()
        if not self._owner.spec.window:
            raise ValueError(f"{self._owner.path} stores no windowed rows (window=None)")
        rows = self._rows_in(layer, rows, np.dtype("<f4"), "windowed")
        if self._windows[layer] + len(rows) > n_windows(self.length, self._owner.spec.window):
            raise ValueError(f"record {self.record_id!r}: too many windowed rows for layer {layer}")
        key = f"w/{layer}"
        self._crc[key] = crc(rows, self._crc.get(key, 0))
        with self._owner._writing():
            self._owner._windowed[layer].push(rows)
        self._windows[layer] += len(rows)

    def checkpoint_due(self) -> bool:
        """Whether ``checkpoint_interval`` seconds have passed since this record began or was last checkpointed."""
        return time.monotonic() - self._last_checkpoint >= self._owner._checkpoint_interval

    def checkpoint(self, state: Mapping[str, np.ndarray], position: int) -> None:
        """Make the rows written so far durable, with ``state`` (whatever the caller needs to continue from base
        ``position``: accumulators, a stream's carried state), so that an interruption resumes here
        (:meth:`EmbeddingWriter.resume`) instead of at the record's first base."""
        self._check_open()
        self._owner._checkpoint_record(self, state, position)
        self._last_checkpoint = time.monotonic()

    def abort(self) -> None:
        """Drop this record's rows; the writer is ready for the next ``begin`` (the record is not committed)."""
        self._check_open()
        self._owner._abort_record()
        self._done = True

    def commit(self, pooled: Mapping[tuple[str, int], np.ndarray]) -> None:
        """Add the pooled rows and make the record durable: once this returns (with the default
        ``commit_interval=0``) the record survives any crash. ``pooled[(mode, layer)]`` is a (d,) vector for
        every stored mode and layer."""
        self._check_open()
        self._owner._commit(self, pooled)
        self._done = True


def _unlink_journal_and_states(path: Path) -> None:
    """Remove the journal and the checkpoint state files of a run writing ``path``."""
    unlink(journal_path(path))
    for slot in (0, 1):
        unlink(state_path(path, slot))


class EmbeddingWriter:
    """Writes one run's HDF5 file; resumable after any interruption (see the module docstring)."""

    committed: list[str]

    def __init__(self) -> None:  # use EmbeddingWriter.open
        raise TypeError("use EmbeddingWriter.open(path, spec, provenance)")

    # ---- opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        spec: StoreSpec,
        provenance: Mapping[str, Any],
        *,
        overwrite: bool = False,
        locking: bool | None = None,
        commit_interval: float = 0.0,
        checkpoint_interval: float = 300.0,
        fresh: bool = False,
    ) -> "EmbeddingWriter":
        """A new file, or the resume of an unfinished one started with the same spec and run_config.
        ``fresh`` (with ``overwrite``): never resume an unfinished aside file (its inputs were a pipe, which a
        resume cannot check).

        ``committed`` lists the ids already in the file (the caller skips them). ``locking=False`` (or
        GENOCONV_HDF5_LOCKING=0) turns HDF5 file locking off for NFS/Lustre. ``commit_interval`` > 0 groups
        commits: records become durable together at most that many seconds apart (and at close/finish),
        which makes many short records much faster; a kill then loses at most that much work.
        ``checkpoint_interval``: how often a long record in progress may be checkpointed (``RecordWriter.
        checkpoint_due``), so that a kill loses at most that much of it.

        The writer holds the output's lock (:mod:`genoconv.store.lock`) until ``finish`` or ``close``: a second
        writer of the same output gets an InputError naming this process."""
        if Path(path).is_dir():  # found at the start, not when the finished file is renamed over it
            raise InputError(f"{path} is a directory; give the output file's path")
        lock = OutputLock(path).acquire()
        try:
            if fresh and overwrite:  # under the lock: no other run is writing the aside file
                unlink(aside_path(Path(path)))
                _unlink_journal_and_states(aside_path(Path(path)))
            self = cls._open(Path(path), spec, provenance, overwrite, locking_setting(locking), commit_interval)
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        self._checkpoint_interval = float(checkpoint_interval)
        return self

    @classmethod
    def _open(cls, path: Path, spec: StoreSpec, provenance: Mapping[str, Any], overwrite: bool,
              locking: bool | None, commit_interval: float) -> "EmbeddingWriter":
        run_config = canonical_run_config(provenance)
        if overwrite and path.exists():
            # Replace only once the new file is complete: it is written aside, and renamed over path by finish().
            # An interrupted --overwrite run resumes its aside file like any other (a different one is replaced).
            self = cls._open_target(aside_path(path), spec, provenance, run_config, locking, commit_interval, True)
            self._final = path
            return self
        if overwrite:
            unlink(journal_path(path))
        return cls._open_target(path, spec, provenance, run_config, locking, commit_interval, False)

    @classmethod
    def _open_target(cls, path: Path, spec: StoreSpec, provenance: Mapping[str, Any], run_config: str,
                     locking: bool | None, commit_interval: float, replace: bool) -> "EmbeddingWriter":
        """Resume ``path`` or create it. ``replace``: whatever is there that cannot be resumed is started afresh
        (an aside file); otherwise only a run that committed nothing is."""
        journal = journal_path(path)
        salvage = salvage_path(path)
        for stale in (salvage, journal_path(salvage), journal.with_name(journal.name + ".tmp"),
                      journal_path(salvage).with_name(journal_path(salvage).name + ".tmp")):
            unlink(stale)
        if not path.exists():
            unlink(journal)
            return cls._create(path, spec, provenance, run_config, locking, commit_interval)
        state = read_journal(journal)
        if is_complete(path, locking):
            unlink(journal)  # leftover of a kill between complete=True and the journal's removal
            if replace:
                return cls._create(path, spec, provenance, run_config, locking, commit_interval)
            raise InputError(f"{path} is complete; use --overwrite to replace it")
        if state.header is None:
            if journal.exists() or replace:
                # the header is written atomically, so this journal is not ours to trust: start over
                return cls._create(path, spec, provenance, run_config, locking, commit_interval)
            raise InputError(
                f"{path} exists but is not an unfinished genoconv run (no {journal.name} beside it); "
                "use --overwrite or another output path"
            )
        diffs = spec_diffs(state.header, spec, run_config)
        if diffs and (replace or (not state.entries and state.partial is None)):
            # Nothing committed nor checkpointed (a run that failed on its first records), or ours to replace:
            # nothing is lost. A checkpoint of a long record is work (hours, for a chromosome): refused below.
            log.info("%s: starting afresh (nothing committed, or --overwrite)", path)
            return cls._create(path, spec, provenance, run_config, locking, commit_interval)
        if diffs:
            raise InputError(
                f"{path} was started with different options ({'; '.join(diffs)}); "
                "use --overwrite or another output path"
            )
        if state.clean and intact_in_child(path, spec, locking):
            try:
                return cls._reopen(path, spec, state, locking, commit_interval)
            except InputFileError:
                pass  # damaged after all: fall through to salvage
        return cls._salvage(path, spec, provenance, run_config, state, locking, commit_interval)

    @classmethod
    def _blank(cls, path: Path, spec: StoreSpec, commit_interval: float) -> "EmbeddingWriter":
        self = object.__new__(cls)
        self.path, self.spec = path, spec
        self._dtype = NUMPY_DTYPES[spec.store_dtype]
        self._record: RecordWriter | None = None
        self._closed = False
        self._lock: OutputLock | None = None
        self._final: Path | None = None  # with --overwrite: the output this aside file replaces when complete
        self.committed = []
        self._ids_set: set[str] = set()
        self._modes: list[str] = []
        self._coords: list[Coords | None] = []
        self._lengths: list[int] = []
        self._n_bases = 0
        self._n_windows = 0
        self._staged: list[tuple[dict[str, Any], dict[tuple[str, int], np.ndarray]]] = []
        self._n_durable = 0
        self._slot = 1  # the tail slot of the last durable point; the next one writes the other
        self._aligned = {"p": 0, "w": 0}  # whole-chunk rows of main datasets at the last durable point
        self._commit_interval = float(commit_interval)
        self._last_durable = time.monotonic()
        self._per_nt: dict[int, RowAppender] = {}
        self._windowed: dict[int, RowAppender] = {}
        self._partial: dict[str, Any] | None = None  # a journaled checkpoint of the next record, to resume
        self._checkpoint_interval = 300.0
        return self

    @classmethod
    def _create(cls, path: Path, spec: StoreSpec, provenance: Mapping[str, Any], run_config: str,
                locking: bool | None, commit_interval: float = 0.0, start_time: str | None = None,
                journal_file: Path | None = None) -> "EmbeddingWriter":
        self = cls._blank(path, spec, commit_interval)
        start_time = start_time or now()
        header = {"journal": JOURNAL_FORMAT, "version": 1, "spec": spec.to_dict(), "run_config": run_config,
                  "start_time": start_time, "h5": path.name}
        with self._writing():
            try:
                self._journal = Journal(journal_file or journal_path(path), header)
                self._f = open_swmr_write(path, True, locking)
            except (PermissionError, IsADirectoryError, NotADirectoryError, FileNotFoundError) as err:
                self._abandon(err)
                raise InputFileError(f"cannot write {path}: {err.strerror or err}") from None
            self._write_layout(provenance, run_config, start_time)
            self._f.flush()
            self._journal.write({"attrs": attrs_digest(self._f)})
        self._attach(None)
        return self

    @classmethod
    def _reopen(cls, path: Path, spec: StoreSpec, state: JournalState, locking: bool | None,
                commit_interval: float) -> "EmbeddingWriter":
        self = cls._blank(path, spec, commit_interval)
        with self._writing():
            self._journal = Journal(journal_path(path))
            # From here on the journal no longer ends in "closed": a kill is treated as unclean.
            self._journal.write({"opened": len(state.entries)}, sync=True)
            self._f = open_swmr_write(path, False, locking)
            for e in state.entries:
                self._note_committed(e["id"], e["mode"], e["len"], entry_coords(e))
            self._n_durable = len(self.committed)
            last = state.tail
            if last is not None:
                self._slot, self._aligned = int(last["s"]), {"p": int(last["a"]["p"]), "w": int(last["a"]["w"])}
            self._partial = state.partial
            self._attach(RowSource(self._f, last))
            self._truncate()
            self._f.flush()
        return self

    @classmethod
    def _salvage(cls, path: Path, spec: StoreSpec, provenance: Mapping[str, Any], run_config: str,
                 state: JournalState, locking: bool | None, commit_interval: float) -> "EmbeddingWriter":
        """Replay every journal entry whose bytes verify into a fresh file, then swap it in."""
        salvage = salvage_path(path)
        assert state.header is not None
        new = cls._create(salvage, spec, provenance, run_config, locking, 0.0,
                          start_time=state.header.get("start_time"), journal_file=journal_path(salvage))
        old = None
        try:
            old = open_read(path, locking)
            source = RowSource(old, state.tail)
        except Exception:  # noqa: BLE001 - unreadable or damaged: nothing can be verified, the run starts over
            if old is not None:
                old.close()
            old = None
        try:
            if old is not None and state.entries:
                for entry in state.entries:
                    if not replay(source, new, entry):
                        break
                new._make_durable()
            kept, total = len(new.committed), len(state.entries)
            if kept < total:  # rows are contiguous: the first bad record ends what can be kept
                log.warning("%s is damaged: kept %d of its %d committed records; record %r and the %d after it did "
                            "not verify against the journal and are computed again", path, kept, total,
                            state.entries[kept]["id"], total - kept - 1)
            elif total:
                log.info("%s: copied its %d committed records into a fresh file (they verify)", path, total)
            if old is not None and state.partial is not None and len(new.committed) == len(state.entries):
                replay_partial(source, new, state.partial, state_path(path, int(state.partial["s"])))
        finally:
            if old is not None:
                old.close()
        new.close()
        fsync_path(salvage)
        for slot in (0, 1):
            unlink(state_path(path, slot))
            if state_path(salvage, slot).exists():
                os.replace(state_path(salvage, slot), state_path(path, slot))
        os.replace(salvage, path)
        os.replace(journal_path(salvage), journal_path(path))
        fsync_dir(path)
        return cls._reopen(path, spec, read_journal(journal_path(path)), locking, commit_interval)

    def _write_layout(self, provenance: Mapping[str, Any], run_config: str, start_time: str) -> None:
        f, spec = self._f, self.spec
        d = spec.d_model
        write_attrs(f, spec, provenance, run_config, start_time)
        small = max(1, SMALL_CHUNK_BYTES // 8)
        for name in ("lengths", "offsets") + (("window_offsets",) if spec.window else ()):
            f.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(small,), dtype="<i8")
        for name in ("ids", "modes"):
            f.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(1024,), dtype=UTF8)
        filters: dict[str, Any] = {}
        if spec.compression:
            filters = {"compression": spec.compression, "shuffle": True}
        for layer in spec.layers:
            big = []
            if spec.per_nucleotide:
                big.append((f"per_nucleotide/{layer}", self._dtype))
            if spec.window:
                big.append((f"windowed/{layer}", np.dtype("<f4")))
            for name, dtype in big:
                rows = chunk_rows(d, dtype.itemsize)
                f.create_dataset(name, shape=(0, d), maxshape=(None, d), dtype=dtype, chunks=(rows, d), **filters)
                f.create_dataset(f"_tail/{name}", shape=(2, rows, d), dtype=dtype)  # contiguous: rewritten in place
            for mode in spec.pools:
                f.create_dataset(f"pooled/{mode}/{layer}", shape=(0, d), maxshape=(None, d), dtype="<f4",
                                 chunks=(chunk_rows(d, 4, SMALL_CHUNK_BYTES), d))

    def _attach(self, source: RowSource | None) -> None:
        f, spec = self._f, self.spec

        def appender(kind: str, key: str, end: int) -> RowAppender:
            aligned = self._aligned[key]
            pending = source.read(kind, layer, aligned, end - aligned) if source is not None and end > aligned else None
            return RowAppender(f[f"{kind}/{layer}"], f[f"_tail/{kind}/{layer}"], aligned, pending)

        extra_rows, extra_windows = self._partial_counts()
        for layer in spec.layers:
            if spec.per_nucleotide:
                self._per_nt[layer] = appender("per_nucleotide", "p", self._n_bases + extra_rows)
            if spec.window:
                self._windowed[layer] = appender("windowed", "w", self._n_windows + extra_windows)
        self._small = {name: f[name] for name in ("lengths", "offsets", "window_offsets") if name in f}
        self._pooled_ds = {(m, l): f[f"pooled/{m}/{l}"] for m in spec.pools for l in spec.layers}

    def _note_committed(self, record_id: str, mode: str, length: int, coords: Coords | None) -> None:
        self.committed.append(record_id)
        self._ids_set.add(record_id)
        self._modes.append(mode)
        self._coords.append(coords)
        self._lengths.append(length)
        self._n_bases += length
        self._n_windows += n_windows(length, self.spec.window)

    def _truncate(self) -> None:
        """Cut every dataset back to its durable extent (drops rows of records never committed)."""
        n = self._n_durable
        for ds in (*self._small.values(), *self._pooled_ds.values()):
            if ds.shape[0] != n:
                ds.resize(n, axis=0)
        for apps, key in ((self._per_nt, "p"), (self._windowed, "w")):
            for app in apps.values():
                if app.ds.shape[0] != self._aligned[key]:
                    app.ds.resize(self._aligned[key], axis=0)

    # ---- writing
    def begin(self, record_id: str, length: int, mode: str, coords: Coords | tuple | None = None) -> RecordWriter:
        """Start the next record (``length`` bases, convolution ``mode``, and where it lies on a reference:
        ``coords`` = (contig, start, end, strand) or None, see :mod:`genoconv.coords`); one record at a time."""
        self._check_writable()
        if self._record is not None:
            raise RuntimeError(f"record {self._record.record_id!r} is still open; commit it first")
        self._discard_partial()
        if record_id in self._ids_set:
            raise ValueError(f"record id {record_id!r} is already committed in {self.path}")
        if int(length) < 1:
            raise ValueError(f"record {record_id!r} has length {length}; records must have at least one base")
        try:
            checked = None if coords is None else Coords.checked(coords)
        except ValueError as err:
            raise ValueError(f"record {record_id!r}: {err}") from None
        self._record = RecordWriter(self, str(record_id), int(length), str(mode), checked)
        return self._record

    def resume(self, record_id: str, length: int, mode: str,
               coords: Coords | tuple | None = None) -> tuple[RecordWriter, dict[str, np.ndarray], int] | None:
        """Continue a record checkpointed before an interruption: ``(record writer, saved state, position)`` when
        the journal's checkpoint is of this record (same id, length, mode and coordinates) and its saved state
        verifies; then append from base ``position`` on. None otherwise (the checkpoint is dropped; ``begin``)."""
        self._check_writable()
        partial, self._partial = self._partial, None
        if partial is None:
            return None
        co = None if coords is None else list(Coords.checked(coords))
        same = (partial.get("id"), partial.get("len"), partial.get("mode"), partial.get("co")) == \
            (record_id, int(length), mode, co)
        state = _load_state(state_path(self.path, int(partial["s"])), partial.get("state")) if same else None
        if state is None:
            if not same:
                log.info("%s: a checkpoint of record %r is dropped: the next record is %r", self.path,
                         partial.get("id"), record_id)
            self._partial = partial
            self._discard_partial()
            return None
        rec = RecordWriter(self, str(record_id), int(length), str(mode), None if co is None else Coords.checked(co))
        for layer in self.spec.layers:
            rec._rows[layer] = int(partial["rows"])
            rec._windows[layer] = int(partial["wins"])
        rec._crc = {k: int(v) for k, v in partial["crc"].items()}
        rec._checkpoint = partial
        self._record = rec
        return rec, state, int(partial["pos"])

    def _partial_counts(self) -> tuple[int, int]:
        """Rows and windowed rows a checkpointed record in progress holds beyond the committed ones."""
        if self._partial is None:
            return 0, 0
        return int(self._partial["rows"]), int(self._partial["wins"])

    def _discard_partial(self) -> None:
        """Forget a checkpoint that will not be resumed: its rows go (the next durable point supersedes it)."""
        if self._partial is not None:
            self._partial = None
            for app in self._per_nt.values():
                app.reset(self._n_bases)
            for app in self._windowed.values():
                app.reset(self._n_windows)

    def _checkpoint_record(self, rec: RecordWriter, state: Mapping[str, np.ndarray], position: int) -> None:
        """Commits staged before it, then the record's rows so far (tails to the other slot), then its state
        (``<out>.state<slot>.npz``, the file of the slot the journal does not name), then one journal line."""
        rows = {layer: n for layer, n in rec._rows.items()}
        wins = {layer: n for layer, n in rec._windows.items()}
        if len(set(rows.values())) > 1 or len(set(wins.values())) > 1:
            raise ValueError(f"record {rec.record_id!r}: a checkpoint needs the same rows in every layer")
        with self._writing():
            if self._staged:
                self._write_durable()
            slot = 1 - self._slot
            for app in (*self._per_nt.values(), *self._windowed.values()):
                app.save_tail(slot)
            self._f.flush()
            state_crc = _save_state(state_path(self.path, slot), state)
            aligned = {"p": next(iter(self._per_nt.values())).written if self._per_nt else 0,
                       "w": next(iter(self._windowed.values())).written if self._windowed else 0}
            line = {"c": len(self.committed), "id": rec.record_id, "len": rec.length, "mode": rec.mode,
                    "off": self._n_bases, "woff": self._n_windows, "rows": next(iter(rows.values()), 0),
                    "wins": next(iter(wins.values()), 0), "crc": dict(rec._crc), "pos": int(position),
                    "state": state_crc, "a": aligned, "s": slot}
            if rec.coords is not None:
                line["co"] = list(rec.coords)
            self._journal.write({"p": line})
            self._slot, self._aligned = slot, aligned
            rec._checkpoint = line
            self._last_durable = time.monotonic()

    def _commit(self, rec: RecordWriter, pooled: Mapping[tuple[str, int], np.ndarray]) -> None:
        spec = self.spec
        n_win = n_windows(rec.length, spec.window)
        name = f"record {rec.record_id!r}"
        for layer in spec.layers:
            if spec.per_nucleotide and rec._rows[layer] != rec.length:
                got = rec._rows[layer]
                raise ValueError(f"{name}: {got} of {rec.length} per-nucleotide rows written for layer {layer}")
            if spec.window and rec._windows[layer] != n_win:
                got = rec._windows[layer]
                raise ValueError(f"{name}: {got} of {n_win} windowed rows written for layer {layer}")
        pooled_rows = {}
        for mode in spec.pools:
            for layer in spec.layers:
                if (mode, layer) not in pooled:
                    raise ValueError(f"{name}: pooled[({mode!r}, {layer})] is missing")
                row = np.ascontiguousarray(pooled[(mode, layer)], dtype="<f4").reshape(-1)
                if row.shape != (spec.d_model,):
                    raise ValueError(f"{name}: pooled[({mode!r}, {layer})] must have shape ({spec.d_model},)")
                rec._check_finite(row, f"pooled {mode} row of layer {layer}")
                pooled_rows[(mode, layer)] = row
                rec._crc[f"m/{mode}/{layer}"] = crc(row)
        entry = {"c": len(self.committed), "id": rec.record_id, "len": rec.length, "mode": rec.mode,
                 "off": self._n_bases, "woff": self._n_windows, "crc": rec._crc}
        if rec.coords is not None:
            entry["co"] = list(rec.coords)
        self._staged.append((entry, pooled_rows))
        self._note_committed(rec.record_id, rec.mode, rec.length, rec.coords)
        self._record = None
        if time.monotonic() - self._last_durable >= self._commit_interval:
            self._make_durable()

    def _make_durable(self) -> None:
        """Tails to the other slot, staged index and pooled rows, flush, then the journal lines."""
        if not self._staged:
            return
        with self._writing():
            self._write_durable()

    def _write_durable(self) -> None:
        slot = 1 - self._slot
        for app in (*self._per_nt.values(), *self._windowed.values()):
            app.save_tail(slot)
        n0, n1 = self._n_durable, len(self.committed)
        entries = [e for e, _ in self._staged]
        columns = {"lengths": [e["len"] for e in entries], "offsets": [e["off"] for e in entries],
                   "window_offsets": [e["woff"] for e in entries]}
        for name, ds in self._small.items():
            ds.resize(n1, axis=0)
            ds[n0:n1] = np.asarray(columns[name], dtype=np.int64)
        for key, ds in self._pooled_ds.items():
            ds.resize(n1, axis=0)
            ds[n0:n1] = np.stack([rows[key] for _, rows in self._staged])
        self._f.flush()  # data and metadata reach the OS before the journal says "committed"
        aligned = {"p": next(iter(self._per_nt.values())).written if self._per_nt else 0,
                   "w": next(iter(self._windowed.values())).written if self._windowed else 0}
        self._journal.write_many([{**e, "a": aligned, "s": slot} for e in entries])
        self._slot, self._aligned, self._n_durable = slot, aligned, n1
        self._staged = []
        self._last_durable = time.monotonic()

    # ---- ending
    def finish(self) -> None:
        """Write the final ``/ids``, ``/modes``, ``/coords`` (when any record has coordinates) and ``end_time``,
        flush and fsync, then mark complete."""
        self._check_writable()
        if self._record is not None:
            raise RuntimeError(f"record {self._record.record_id!r} was begun but not committed")
        self._make_durable()
        f, n = self._f, len(self.committed)
        with self._writing():
            for app in (*self._per_nt.values(), *self._windowed.values()):
                app.finalize()  # the last partial chunk, once
            for name, values in (("ids", self.committed), ("modes", self._modes)):
                f[name].resize(n, axis=0)
                if n:
                    f[name][:] = np.asarray(values, dtype=object)
            write_coords(f, self._coords)
            f.flush()  # main now holds every row: the tails can go
            if "_tail" in f:
                del f["_tail"]
            f.attrs["end_time"] = now()
            f.flush()
            fsync_path(self.path)
            f.attrs["complete"] = True  # only now: everything else is on disk
            f.close()
            fsync_path(self.path)
        self._closed = True
        self._journal.close()
        written = self.path  # the file as written: its journal and checkpoint state files go once it is complete
        try:
            if self._final is not None:  # --overwrite: the complete file replaces the old output only now
                os.replace(self.path, self._final)
                _unlink_journal_and_states(self._final)  # those of an unfinished run it replaces
                self.path = self._final
            unlink(self._journal.path)
            for slot in (0, 1):
                unlink(state_path(written, slot))
            fsync_dir(self.path)
        finally:
            self._release()

    def close(self) -> None:
        """Make committed work durable and close without marking complete; the same call to ``open``
        resumes. Rows of a record that was begun but not committed are dropped."""
        if self._closed:
            return
        with self._writing():  # on failure: abandoned, no "closed" line, so the next open salvages
            if self._record is not None:
                self._close_record()
            self._make_durable()
            self._truncate()
            self._f.close()
            fsync_path(self.path)
            self._journal.write({"closed": len(self.committed)}, sync=True)
        self._closed = True
        self._journal.close()
        self._release()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Around every write to the file or its journal. A failed write leaves HDF5 in a state it must not be
        written from again: the file is abandoned (closed without another write, see ``hdf5.abandon``; the
        journal has no "closed" line, so the next open salvages it), and a full disk becomes a one-line
        ResourceError naming the file."""
        try:
            yield
        except GenoconvError:
            raise  # raised knowingly (an inner write already abandoned the file, or a refusal)
        except Exception as err:
            self._abandon(err)
            full = out_of_space(self.path, err)
            if full is not None:
                raise full from None
            what = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputFileError(f"{self.path}: writing it failed ({what}); the committed records are safe in its "
                                 "journal: rerun the same command to salvage them, or add --overwrite to start "
                                 "afresh") from err

    def _abandon(self, err: BaseException) -> None:
        if self._closed:
            return
        self._closed = True
        self._record = None
        if hasattr(self, "_f"):
            abandon(self._f, err)
        if hasattr(self, "_journal"):
            self._journal.close()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _close_record(self) -> None:
        """Closing with a record open: it resumes from its last checkpoint (rows written after it are dropped),
        or, never checkpointed, it is forgotten."""
        rec, self._record = self._record, None
        point = rec._checkpoint
        if point is None:
            self._abort_record()
            return
        self._make_durable()  # commits staged before the record (none when it was checkpointed since)
        for app in self._per_nt.values():
            app.reset(self._n_bases + int(point["rows"]))
        for app in self._windowed.values():
            app.reset(self._n_windows + int(point["wins"]))

    def _abort_record(self) -> None:
        """Forget a record that was begun but will not be committed."""
        self._record = None
        for app in self._per_nt.values():
            app.reset(self._n_bases)
        for app in self._windowed.values():
            app.reset(self._n_windows)

    def _check_writable(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.path} is closed")

    def __enter__(self) -> "EmbeddingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unfinished_run(path: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[dict, int] | None:
    """``(run_config, committed records)`` of the unfinished run that ``EmbeddingWriter.open(path, ...,
    overwrite=overwrite)`` would resume, from its journal; None when it would start afresh (or the run_config is
    not readable: ``open`` then decides)."""
    path = Path(path)
    if overwrite or not path.exists():
        return None
    state = read_journal(journal_path(path))
    try:
        run_config = json.loads(state.header["run_config"]) if state.header else None
    except (TypeError, ValueError):
        return None
    return (run_config, len(state.entries)) if isinstance(run_config, dict) else None


def space_needed(path: str | os.PathLike[str], estimate: int, *, overwrite: bool = False) -> int:
    """Free bytes a run into ``path`` still needs, of ``estimate`` for the whole file: less what an unfinished file
    it resumes already holds, but at least that much again (a salvage copies the committed part once)."""
    path = Path(path)
    target = aside_path(path) if overwrite and path.exists() else path
    if (overwrite and target == path) or not journal_path(target).exists():
        return estimate
    try:
        existing = target.stat().st_size
    except FileNotFoundError:
        return estimate
    return max(estimate, 2 * existing) - existing


def spec_diffs(header: Mapping[str, Any], spec: StoreSpec, run_config: str) -> list[str]:
    old_spec = header.get("spec", {})
    diffs = [f"{k}: {fmt_option(old_spec.get(k))} vs {fmt_option(v)}"
             for k, v in spec.to_dict().items() if old_spec.get(k) != v]
    old_rc = header.get("run_config", "")
    if old_rc != run_config:
        try:
            a, b = json.loads(old_rc), json.loads(run_config)
        except ValueError:
            a = b = None
        if isinstance(a, dict) and isinstance(b, dict):
            reported = {d.split(":")[0] for d in diffs}
            diffs += [f"{k}: {fmt_option(a.get(k))} vs {fmt_option(b.get(k))}"
                      for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in reported]
        if not diffs:
            diffs.append(f"run_config: {old_rc} vs {run_config}")
    return diffs


def intact(path: Path, spec: StoreSpec, state: JournalState, locking: bool | None) -> bool:
    """Whether a cleanly closed unfinished file still is what its journal says: every metadata block reads, the
    root attributes match the digest journaled at creation (their text lives in HDF5's global heap, which has no
    checksum) and every committed byte and index value matches the journaled CRCs. A clean close vouches for what
    was written, not for the disk since."""
    try:
        with open_read(path, locking) as f:
            read_all_metadata(f)
            if state.attrs is not None and attrs_digest(f) != state.attrs:
                return False
            source = RowSource(f, state.tail)
            return verified_prefix(source, spec, state.entries) == len(state.entries)
    except Exception:  # noqa: BLE001 - whatever HDF5 makes of the damage
        return False


def intact_in_child(path: Path, spec: StoreSpec, locking: bool | None) -> bool:
    """:func:`intact`, checked in a child process: on a damaged file HDF5 can spin forever or crash (measured: one
    flipped byte in the global heap made an attribute read loop for minutes). A child that crashes or does not
    answer within a minute plus the time to read the file at 50 MB/s counts as finding damage."""
    request = json.dumps({"path": str(path), "spec": spec.to_dict(), "locking": locking})
    root = Path(__file__).resolve().parents[2]  # the folder holding this genoconv package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    code = "import sys; from genoconv.store.writer import intact_main; sys.exit(intact_main(sys.stdin.read()))"
    try:
        done = subprocess.run([sys.executable, "-P", "-c", code], input=request, env=env, capture_output=True,
                              text=True, timeout=60 + path.stat().st_size / 50e6)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def intact_main(request: str) -> int:
    """The child's side of :func:`intact_in_child`: 0 when intact, 1 otherwise."""
    args = json.loads(request)
    path = Path(args["path"])
    return 0 if intact(path, StoreSpec.from_dict(args["spec"]), read_journal(journal_path(path)), args["locking"]) else 1


def verified_prefix(source: RowSource, spec: StoreSpec, entries: list[Mapping[str, Any]]) -> int:
    """How many leading journal entries the file still matches: index arrays equal to the journal's, and every
    stored byte (rows, windows, pooled rows) equal to the CRCs journaled when it was written. Each dataset is read
    once, in blocks of VERIFY_BLOCK_BYTES (a resume reads what it resumes: about a salvage's reading, no writing)."""
    f, good = source.f, len(entries)

    def keep_matching(found: Sequence[Any], wanted: Sequence[Any]) -> None:
        nonlocal good
        good = next((i for i in range(good) if found[i] != wanted[i]), good)

    n_win = [n_windows(int(e["len"]), spec.window) for e in entries]
    columns = {"lengths": [e["len"] for e in entries], "offsets": [e["off"] for e in entries],
               "window_offsets": [e["woff"] for e in entries]}
    for name, wanted in columns.items():
        if name in f:
            found = f[name][: len(entries)].tolist()
            keep_matching(found + [None] * (len(entries) - len(found)), wanted)
    for mode in spec.pools:
        for layer in spec.layers:
            rows = np.asarray(f[f"pooled/{mode}/{layer}"][:good], dtype="<f4")
            keep_matching([crc(row) for row in rows] + [None] * (good - len(rows)),
                          [e["crc"][f"m/{mode}/{layer}"] for e in entries])
    kinds = ([("per_nucleotide", "p", [int(e["off"]) for e in entries], [int(e["len"]) for e in entries])]
             if spec.per_nucleotide else [])
    kinds += [("windowed", "w", [int(e["woff"]) for e in entries], n_win)] if spec.window else []
    step = max(1, VERIFY_BLOCK_BYTES // (spec.d_model * 4))
    for kind, key, starts, counts in kinds:
        for layer in spec.layers:
            crcs, i = [0] * good, 0
            end = starts[good - 1] + counts[good - 1] if good else 0
            for a in range(0, end, step):
                b = min(a + step, end)
                block = source.read(kind, layer, a, b - a)
                while i < good:
                    lo, hi = max(starts[i], a), min(starts[i] + counts[i], b)
                    if hi > lo:
                        crcs[i] = crc(block[lo - a : hi - a], crcs[i])
                    if starts[i] + counts[i] > b:
                        break
                    i += 1
            keep_matching(crcs, [e["crc"][f"{key}/{layer}"] for e in entries])
    return good


def replay(source: RowSource, new: EmbeddingWriter, entry: Mapping[str, Any]) -> bool:
    """Copy one journaled record from a damaged file into ``new``, committing it only if every byte read
    back matches the CRCs journaled when it was first written. Returns False (nothing committed) otherwise."""
    spec, old = new.spec, source.f
    try:
        if entry["off"] != new._n_bases or entry["woff"] != new._n_windows or entry["c"] != len(new.committed):
            return False
        length, crcs, i = int(entry["len"]), entry["crc"], int(entry["c"])
        pooled = {(mode, layer): np.asarray(old[f"pooled/{mode}/{layer}"][i], dtype="<f4")
                  for mode in spec.pools for layer in spec.layers}
        rec = new.begin(entry["id"], length, entry["mode"], entry_coords(entry))
        for layer in spec.layers:
            parts = []
            if spec.per_nucleotide:
                parts.append((rec.append, "per_nucleotide", entry["off"], length))
            if spec.window:
                parts.append((rec.append_windows, "windowed", entry["woff"], n_windows(length, spec.window)))
            for append, kind, start, count in parts:
                step = max(1, VERIFY_BLOCK_BYTES // (spec.d_model * 4))
                for a in range(start, start + count, step):
                    append(layer, source.read(kind, layer, a, min(step, start + count - a)))
        expected = {k: crcs[k] for k in crcs if not k.startswith("m/")}
        if rec._crc != expected or any(crc(v) != crcs[f"m/{m}/{l}"] for (m, l), v in pooled.items()):
            raise ValueError("checksum mismatch")
        rec.commit(pooled)
        return True
    except (OSError, KeyError, ValueError, IndexError, TypeError, RuntimeError, ArithmeticError):
        if new._closed:
            raise  # writing the new file failed (a full disk): not a damaged record
        if new._record is not None:
            new._abort_record()
        return False



def _save_state(path: Path, state: Mapping[str, np.ndarray]) -> int:
    """Write a checkpoint's state arrays (npz, no pickles) and fsync them; returns the file's CRC32."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, order="C") for k, v in state.items()})  # (ascontiguousarray makes 0-d 1-d)
    data = buf.getvalue()
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return zlib.crc32(data)


def _load_state(path: Path, expected_crc: int | None) -> dict[str, np.ndarray] | None:
    """A checkpoint's state arrays when the file is there and its CRC32 is the journaled one, else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if expected_crc is None or zlib.crc32(data) != int(expected_crc):
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def replay_partial(source: RowSource, new: EmbeddingWriter, partial: Mapping[str, Any], state_file: Path) -> bool:
    """Copy a checkpointed record in progress from a damaged file into ``new`` (after its committed records),
    checkpointing it there only if its rows match the journaled CRCs and its saved state verifies."""
    spec = new.spec
    state = _load_state(state_file, partial.get("state"))
    if state is None:
        return False
    try:
        rec = new.begin(partial["id"], int(partial["len"]), partial["mode"], entry_coords(partial))
        for layer in spec.layers:
            parts = []
            if spec.per_nucleotide:
                parts.append((rec.append, "per_nucleotide", int(partial["off"]), int(partial["rows"])))
            if spec.window:
                parts.append((rec.append_windows, "windowed", int(partial["woff"]), int(partial["wins"])))
            for append, kind, start, count in parts:
                step = max(1, VERIFY_BLOCK_BYTES // (spec.d_model * 4))
                for a in range(start, start + count, step):
                    append(layer, source.read(kind, layer, a, min(step, start + count - a)))
        if rec._crc != {k: int(v) for k, v in partial["crc"].items()}:
            raise ValueError("checksum mismatch")
        rec.checkpoint(state, int(partial["pos"]))  # left open: close() keeps it up to this checkpoint
        return True
    except (OSError, KeyError, ValueError, IndexError, TypeError, RuntimeError, ArithmeticError):
        if new._closed:
            raise
        if new._record is not None:
            new._abort_record()
        return False
