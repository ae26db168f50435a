"""The HDF5 store: one file per run, written crash-safely, read lazily in notebooks.

This is the only module that imports h5py.

Layout (``n`` records, ``d`` = model width; "rows" are 0-based, half-open ``[start, end)``)
------------------------------------------------------------------------------------------
``/ids``                      (n,) utf-8 strings, in commit order
``/lengths``                  (n,) int64, bases per record
``/offsets``                  (n,) int64, first row of each record in ``/per_nucleotide/<layer>``
``/modes``                    (n,) utf-8 strings, the convolution mode used for each record
                              (``exact``, ``partial:K=1000000``, ``streamed:K=...,C=...``)
``/per_nucleotide/<layer>``   (total_bases, d), float16 by default (``store_dtype`` float16|float32);
                              record ``i`` is rows ``offsets[i] : offsets[i] + lengths[i]``, base 0 first.
                              Chunks of ``max(1, 2**20 // (d * itemsize))`` rows (~1 MiB; 2048 rows at
                              d=256 float16), optional gzip or lzf compression with byte shuffle.
``/pooled/<mode>/<layer>``    (n, d) float32, one row per record, for each pooling mode (mean, max, last)
``/windowed/<layer>``         (total_windows, d) float32: row ``k`` of a record is the mean over its bases
                              ``[k*W, (k+1)*W)``; the last window is partial; ``ceil(length / W)`` rows per
                              record, starting at ``/window_offsets[i]`` (n,) int64.

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
   (id, length, mode, row offsets, where its newest rows live, and the CRC32 of every byte stored for the
   record: per-nucleotide rows, windowed rows, pooled rows). ``commit()`` writes the data, flushes HDF5
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
   first (so a kill from then on counts as unclean), then the file is reopened and appended to.
5. Any other journal (a kill, an error in close) means the HDF5 file is not trusted for writing: it is opened
   read-only (SWMR read), every journal entry's bytes are read back and checked against its CRCs, in order,
   up to the first mismatch, and the verified records are replayed into a fresh ``<out>.salvage`` (with its
   own journal) through the ordinary write path; both are fsynced and renamed over the originals
   (``os.replace``). A kill during salvage leaves the originals untouched; one between the two renames
   leaves a clean file with the old journal, which the next start salvages again. If the damaged file cannot
   be opened at all, nothing verifies and the run starts over: the output is still right, only time is lost.
   Salvage rewrites the committed data once, so it needs that much free disk space for a moment.
6. ``finish()`` writes ``/ids``, ``/modes`` and ``end_time``, flushes and fsyncs, and only then sets
   ``complete=True``, closes, fsyncs and deletes the journal. A complete file is refused without
   ``overwrite``; a journal left beside a complete file is deleted.
So the committed records are exactly the verified journal prefix; their bytes are checked against CRCs
taken from the arrays the caller passed; the caller recomputes only what follows
(``EmbeddingWriter.committed`` lists what to skip). ``commit_interval`` > 0 trades this for speed with many
short records: commits are made durable together, at most that many seconds apart and at close/finish.

File locking: HDF5 locks files by default, which fails on some NFS/Lustre mounts ("No locks available").
Pass ``locking=False`` or set ``GENOCONV_HDF5_LOCKING=0`` (``HDF5_USE_FILE_LOCKING=FALSE`` also works).
Only one process may write a given output at a time.
"""

from __future__ import annotations

import ctypes
import datetime
import functools
import json
import os
import shutil
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from genoconv._version import __version__
from genoconv.errors import InputError, InputFileError, ResourceError

FORMAT = "genoconv-embeddings"
FORMAT_VERSION = 1
JOURNAL_FORMAT = "genoconv-store-journal"
POOL_MODES = ("mean", "max", "last")
STORE_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
COMPRESSIONS = (None, "gzip", "lzf")
# Target bytes per chunk of the big row datasets (h5py docs: 10 KiB - 1 MiB; the whole chunk is read on any
# access). Tests lower it to get many chunks per record quickly.
CHUNK_BYTES = 2**20
# Small per-record datasets (pooled rows, index arrays) get small chunks: each commit rewrites one.
SMALL_CHUNK_BYTES = 2**16
# Raw-data chunk cache per dataset: holds the partial chunk at a record boundary between commits.
_RDCC_NBYTES = 8 * 2**20
_RDCC_NSLOTS = 1009
_BLOCK_BYTES = 64 * 2**20  # read-back block size when verifying a damaged file

_STR = h5py.string_dtype("utf-8")


# --------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class StoreSpec:
    """What the file holds: width, absolute layer indices, which kinds of output, and how rows are stored."""

    d_model: int
    layers: tuple[int, ...]
    per_nucleotide: bool = True
    pools: tuple[str, ...] = ("mean",)
    window: int | None = None
    store_dtype: str = "float16"
    compression: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        object.__setattr__(self, "pools", tuple(self.pools))
        if int(self.d_model) < 1:
            raise InputError(f"d_model must be positive, got {self.d_model}")
        if not self.layers:
            raise InputError("at least one layer must be stored")
        if any(x < 0 for x in self.layers) or len(set(self.layers)) != len(self.layers):
            raise InputError(f"layers must be distinct absolute (non-negative) indices, got {list(self.layers)}")
        bad = [p for p in self.pools if p not in POOL_MODES]
        if bad or len(set(self.pools)) != len(self.pools):
            raise InputError(
                f"unknown or repeated pooling mode in {list(self.pools)}; choose from {', '.join(POOL_MODES)}"
            )
        if self.window is not None and int(self.window) < 1:
            raise InputError(f"--window must be a positive number of bases, got {self.window}")
        if self.store_dtype not in STORE_DTYPES:
            raise InputError(f"--store-dtype must be float16 or float32, got {self.store_dtype!r}")
        if self.compression not in COMPRESSIONS:
            raise InputError(f"compression must be none, gzip or lzf, got {self.compression!r}")
        if not (self.per_nucleotide or self.pools or self.window):
            raise InputError("nothing to store: per-nucleotide output is off, no pooling and no window")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"], out["pools"] = list(self.layers), list(self.pools)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StoreSpec":
        """Inverse of ``to_dict`` (e.g. from a file's ``store_spec`` attribute)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def chunk_rows(d_model: int, itemsize: int, target_bytes: int | None = None) -> int:
    """Rows per chunk so that one chunk is about ``target_bytes`` (default ``CHUNK_BYTES``, 1 MiB)."""
    target = CHUNK_BYTES if target_bytes is None else target_bytes
    return max(1, target // (d_model * itemsize))


def _n_windows(length: int, window: int | None) -> int:
    return 0 if not window else -(-length // window)


# --------------------------------------------------------------------------------------------- helpers
def _now() -> str:
    # Milliseconds: per-shard throughput reports divide by end - start, which whole seconds made 0 for short runs.
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _locking(locking: bool | None) -> bool | None:
    """Explicit argument, else GENOCONV_HDF5_LOCKING=0/1, else None (HDF5's default, which honours
    HDF5_USE_FILE_LOCKING)."""
    if locking is not None:
        return bool(locking)
    env = os.environ.get("GENOCONV_HDF5_LOCKING", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return None


def _fapl(locking: bool | None) -> h5py.h5p.PropFAID:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    # SWMR needs the latest format; it also keeps many datasets per group fast (h5py #1055).
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    fapl.set_cache(0, _RDCC_NSLOTS, _RDCC_NBYTES, 0.75)
    if locking is not None:
        fapl.set_file_locking(locking, True)
    return fapl


def _open_swmr_write(path: Path, create: bool, locking: bool | None) -> h5py.File:
    """Create or reopen with the SWMR-write flag set from the first byte, so no moment exists in which a
    kill leaves a file that only ``h5clear`` could open."""
    fapl = _fapl(locking)
    name = os.fsencode(path)
    if create:
        fid = h5py.h5f.create(name, h5py.h5f.ACC_TRUNC | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl)
    else:
        fid = h5py.h5f.open(name, h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl)
    return h5py.File(fid)


@functools.lru_cache(maxsize=1)
def _hdf5_library() -> ctypes.CDLL | None:
    """The libhdf5 that h5py itself loaded (for the one call h5py does not wrap), or None."""
    paths: list[str] = []
    try:
        with open("/proc/self/maps") as maps:  # Linux: the exact library object h5py uses
            paths = [line.split()[-1] for line in maps if "libhdf5" in line and "libhdf5_hl" not in line]
    except OSError:
        pass
    root = Path(h5py.__file__).parent
    for pattern in ("../h5py.libs/libhdf5-*", ".dylibs/libhdf5.*", "../../../libhdf5.*", "../../../../lib/libhdf5.*"):
        paths += [str(p) for p in root.glob(pattern) if "_hl" not in p.name]
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            lib.H5Pset_metadata_read_attempts.argtypes = [ctypes.c_int64, ctypes.c_uint]
            return lib
        except (OSError, AttributeError):
            continue
    return None


def _open_read(path: Path, locking: bool | None, attempts: int = 1) -> h5py.File:
    """Read-only: plain first (a closed file), then SWMR read (a file whose writer died or is running).

    An SWMR reader retries a metadata block whose checksum fails, doubling its sleep each time, up to the
    fapl's read-attempt limit (default 100: practically forever). A dead writer's torn block never heals, so
    the limit is set to ``attempts`` (measured: 1 of ~1000 SIGKILLs left such a block; it hung salvage)."""
    kw = {} if locking is None else {"locking": locking}
    try:
        return h5py.File(path, "r", **kw)
    except OSError as plain_err:
        fapl = _fapl(locking)
        lib = _hdf5_library()
        if lib is not None:
            lib.H5Pset_metadata_read_attempts(fapl.id, attempts)
        try:
            fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
        except OSError:
            raise plain_err from None
        return h5py.File(fid)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync_path(path.parent if str(path.parent) else Path("."))
    except OSError:  # some filesystems refuse fsync on directories; the renames are still atomic
        pass


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _crc(array: np.ndarray, crc: int = 0) -> int:
    return zlib.crc32(np.ascontiguousarray(array).view(np.uint8), crc)


def _attr_value(value: Any) -> Any:
    """HDF5 cannot hold None or nested values: None -> "", dicts and non-numeric lists -> JSON text."""
    if value is None:
        return ""
    numeric = isinstance(value, (list, tuple)) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if isinstance(value, (dict, list, tuple)) and not numeric:
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _canonical_run_config(provenance: Mapping[str, Any]) -> str:
    rc = provenance.get("run_config", {})
    if isinstance(rc, (str, bytes)):
        try:
            rc = json.loads(rc)
        except ValueError:
            return rc.decode() if isinstance(rc, bytes) else rc
    return json.dumps(rc, sort_keys=True, separators=(",", ":"), default=str)


def _fmt_option(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    return "none" if value is None else str(value)


# --------------------------------------------------------------------------------------------- journal
def _journal_path(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def _salvage_path(path: Path) -> Path:
    return path.with_name(path.name + ".salvage")


def _encode_line(obj: Mapping[str, Any]) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return text + b"\t%08x\n" % zlib.crc32(text)


@dataclass
class _JournalState:
    header: dict[str, Any] | None
    entries: list[dict[str, Any]]
    clean: bool  # ends exactly with a valid "closed" line counting every entry


def _read_journal(path: Path) -> _JournalState:
    """Parse the valid prefix: lines with a good CRC, entries numbered 0, 1, 2, ... Stops at the first bad one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _JournalState(None, [], False)
    header: dict[str, Any] | None = None
    entries: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    pos, intact = 0, True
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            intact = False  # torn last line
            break
        line, pos = data[pos:nl], nl + 1
        text, _, crc = line.rpartition(b"\t")
        try:
            ok = int(crc, 16) == zlib.crc32(text)
            obj = json.loads(text) if ok else None
        except ValueError:
            ok, obj = False, None
        if not ok or not isinstance(obj, dict):
            intact = False
            break
        if header is None:
            if obj.get("journal") != JOURNAL_FORMAT:
                intact = False
                break
            header = obj
        elif "c" in obj:
            if obj["c"] != len(entries):
                intact = False
                break
            entries.append(obj)
        last = obj
    clean = intact and last is not None and last.get("closed") == len(entries) and header is not None
    return _JournalState(header, entries, clean)


class _Journal:
    """Append-only line log; one ``os.write`` per line on an O_APPEND descriptor."""

    def __init__(self, path: Path, header: dict[str, Any] | None = None) -> None:
        self.path = path
        if header is not None:  # new journal: header written to a temp name, then renamed into place
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as fh:
                fh.write(_encode_line(header))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(path)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def write(self, obj: Mapping[str, Any], sync: bool = False) -> None:
        line = _encode_line(obj)
        if os.write(self.fd, line) != len(line):
            raise OSError(f"short write to {self.path}")
        if sync:
            os.fsync(self.fd)

    def write_many(self, objs: list[Mapping[str, Any]]) -> None:
        """Several lines in one write: a kill may tear it, leaving a valid prefix of whole lines."""
        data = b"".join(_encode_line(o) for o in objs)
        if os.write(self.fd, data) != len(data):
            raise OSError(f"short write to {self.path}")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --------------------------------------------------------------------------------------------- writer
class _RowAppender:
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


class _RowSource:
    """Where committed rows live: below ``aligned[kind]`` in the main dataset, above it in ``/_tail/<kind>/...``
    slot ``slot`` (as journaled with the last committed record). No tail (finished or never journaled): main."""

    def __init__(self, f: h5py.File, last_entry: Mapping[str, Any] | None) -> None:
        self.f = f
        use_tail = last_entry is not None and "_tail" in f and "a" in last_entry
        self.aligned = dict(last_entry["a"]) if use_tail else None
        self.slot = int(last_entry["s"]) if use_tail else 0

    def read(self, kind: str, layer: int, start: int, count: int) -> np.ndarray:
        main = self.f[f"{kind}/{layer}"]
        stop = start + count
        if self.aligned is None:
            if main.shape[0] < stop:
                raise ValueError(f"{kind}/{layer} has {main.shape[0]} rows, need {stop}")
            return main[start:stop]
        aligned = int(self.aligned["p" if kind == "per_nucleotide" else "w"])
        parts = []
        if start < aligned:
            parts.append(main[start : min(stop, aligned)])
        if stop > aligned:
            tail = self.f[f"_tail/{kind}/{layer}"]
            parts.append(tail[self.slot, max(start, aligned) - aligned : stop - aligned])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class RecordWriter:
    """One record in progress: ``append``/``append_windows`` rows in order, then ``commit`` once."""

    def __init__(self, owner: "EmbeddingWriter", record_id: str, length: int, mode: str) -> None:
        self._owner = owner
        self.record_id, self.length, self.mode = record_id, length, mode
        spec = owner.spec
        self._rows = {layer: 0 for layer in spec.layers}
        self._windows = {layer: 0 for layer in spec.layers}
        self._crc: dict[str, int] = {}
        self._done = False

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
        return np.ascontiguousarray(rows, dtype=dtype)

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
        self._crc[key] = _crc(rows, self._crc.get(key, 0))
        self._owner._per_nt[layer].push(rows)
        self._rows[layer] += len(rows)

    def append_windows(self, layer: int, rows: np.ndarray) -> None:
        """Next windowed-mean rows (n, d) of this record for ``layer``, float32."""
        self._check_open()
        if not self._owner.spec.window:
            raise ValueError(f"{self._owner.path} stores no windowed rows (window=None)")
        rows = self._rows_in(layer, rows, np.dtype("<f4"), "windowed")
        if self._windows[layer] + len(rows) > _n_windows(self.length, self._owner.spec.window):
            raise ValueError(f"record {self.record_id!r}: too many windowed rows for layer {layer}")
        key = f"w/{layer}"
        self._crc[key] = _crc(rows, self._crc.get(key, 0))
        self._owner._windowed[layer].push(rows)
        self._windows[layer] += len(rows)

    def commit(self, pooled: Mapping[tuple[str, int], np.ndarray]) -> None:
        """Add the pooled rows and make the record durable: once this returns (with the default
        ``commit_interval=0``) the record survives any crash. ``pooled[(mode, layer)]`` is a (d,) vector for
        every stored mode and layer."""
        self._check_open()
        self._owner._commit(self, pooled)
        self._done = True


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
    ) -> "EmbeddingWriter":
        """A new file, or the resume of an unfinished one started with the same spec and run_config.

        ``committed`` lists the ids already in the file (the caller skips them). ``locking=False`` (or
        GENOCONV_HDF5_LOCKING=0) turns HDF5 file locking off for NFS/Lustre. ``commit_interval`` > 0 groups
        commits: records become durable together at most that many seconds apart (and at close/finish),
        which makes many short records much faster; a kill then loses at most that much work."""
        path = Path(path)
        locking = _locking(locking)
        journal = _journal_path(path)
        salvage = _salvage_path(path)
        for stale in (salvage, _journal_path(salvage), journal.with_name(journal.name + ".tmp"),
                      _journal_path(salvage).with_name(_journal_path(salvage).name + ".tmp")):
            _unlink(stale)
        run_config = _canonical_run_config(provenance)
        if overwrite:
            _unlink(path)
            _unlink(journal)
        if not path.exists():
            _unlink(journal)
            return cls._create(path, spec, provenance, run_config, locking, commit_interval)
        state = _read_journal(journal)
        if _is_complete(path, locking):
            _unlink(journal)  # leftover of a kill between complete=True and the journal's removal
            raise InputError(f"{path} is complete; use --overwrite to replace it")
        if state.header is None:
            if journal.exists():
                # the header is written atomically, so this journal is not ours to trust: start over
                return cls._create(path, spec, provenance, run_config, locking, commit_interval)
            raise InputError(
                f"{path} exists but is not an unfinished genoconv run (no {journal.name} beside it); "
                "use --overwrite or another output path"
            )
        diffs = _spec_diffs(state.header, spec, run_config)
        if diffs:
            raise InputError(
                f"{path} was started with different options ({'; '.join(diffs)}); "
                "use --overwrite or another output path"
            )
        if state.clean:
            try:
                return cls._reopen(path, spec, state, locking, commit_interval)
            except (OSError, KeyError, ValueError):
                pass  # fall through to salvage
        return cls._salvage(path, spec, provenance, run_config, state, locking, commit_interval)

    @classmethod
    def _blank(cls, path: Path, spec: StoreSpec, commit_interval: float) -> "EmbeddingWriter":
        self = object.__new__(cls)
        self.path, self.spec = path, spec
        self._dtype = STORE_DTYPES[spec.store_dtype]
        self._record: RecordWriter | None = None
        self._closed = False
        self.committed = []
        self._ids_set: set[str] = set()
        self._modes: list[str] = []
        self._lengths: list[int] = []
        self._n_bases = 0
        self._n_windows = 0
        self._staged: list[tuple[dict[str, Any], dict[tuple[str, int], np.ndarray]]] = []
        self._n_durable = 0
        self._slot = 1  # the tail slot of the last durable point; the next one writes the other
        self._aligned = {"p": 0, "w": 0}  # whole-chunk rows of main datasets at the last durable point
        self._commit_interval = float(commit_interval)
        self._last_durable = time.monotonic()
        self._per_nt: dict[int, _RowAppender] = {}
        self._windowed: dict[int, _RowAppender] = {}
        return self

    @classmethod
    def _create(cls, path: Path, spec: StoreSpec, provenance: Mapping[str, Any], run_config: str,
                locking: bool | None, commit_interval: float = 0.0, start_time: str | None = None,
                journal_path: Path | None = None) -> "EmbeddingWriter":
        self = cls._blank(path, spec, commit_interval)
        start_time = start_time or _now()
        header = {"journal": JOURNAL_FORMAT, "version": 1, "spec": spec.to_dict(), "run_config": run_config,
                  "start_time": start_time, "h5": path.name}
        try:
            self._journal = _Journal(journal_path or _journal_path(path), header)
            self._f = _open_swmr_write(path, True, locking)
        except (PermissionError, IsADirectoryError, NotADirectoryError, FileNotFoundError) as err:
            raise InputFileError(f"cannot write {path}: {err.strerror or err}") from None
        self._write_layout(provenance, run_config, start_time)
        self._f.flush()
        self._attach(None)
        return self

    @classmethod
    def _reopen(cls, path: Path, spec: StoreSpec, state: _JournalState, locking: bool | None,
                commit_interval: float) -> "EmbeddingWriter":
        self = cls._blank(path, spec, commit_interval)
        self._journal = _Journal(_journal_path(path))
        # From here on the journal no longer ends in "closed": a kill is treated as unclean.
        self._journal.write({"opened": len(state.entries)}, sync=True)
        self._f = _open_swmr_write(path, False, locking)
        try:
            for e in state.entries:
                self._note_committed(e["id"], e["mode"], e["len"])
            self._n_durable = len(self.committed)
            last = state.entries[-1] if state.entries else None
            if last is not None:
                self._slot, self._aligned = int(last["s"]), {"p": int(last["a"]["p"]), "w": int(last["a"]["w"])}
            self._attach(_RowSource(self._f, last))
            self._truncate()
            self._f.flush()
        except Exception:
            self._f.close()
            self._journal.close()
            raise
        return self

    @classmethod
    def _salvage(cls, path: Path, spec: StoreSpec, provenance: Mapping[str, Any], run_config: str,
                 state: _JournalState, locking: bool | None, commit_interval: float) -> "EmbeddingWriter":
        """Replay every journal entry whose bytes verify into a fresh file, then swap it in."""
        salvage = _salvage_path(path)
        assert state.header is not None
        new = cls._create(salvage, spec, provenance, run_config, locking, 0.0,
                          start_time=state.header.get("start_time"), journal_path=_journal_path(salvage))
        try:
            old = _open_read(path, locking)
        except OSError:
            old = None  # unreadable: nothing can be verified, the run starts over
        try:
            if old is not None and state.entries:
                source = _RowSource(old, state.entries[-1])
                for entry in state.entries:
                    if not _replay(source, new, entry):
                        break
                new._make_durable()
        finally:
            if old is not None:
                old.close()
        new.close()
        _fsync_path(salvage)
        os.replace(salvage, path)
        os.replace(_journal_path(salvage), _journal_path(path))
        _fsync_dir(path)
        return cls._reopen(path, spec, _read_journal(_journal_path(path)), locking, commit_interval)

    def _write_layout(self, provenance: Mapping[str, Any], run_config: str, start_time: str) -> None:
        f, spec = self._f, self.spec
        d = spec.d_model
        _write_attrs(f, spec, provenance, run_config, start_time)
        small = max(1, SMALL_CHUNK_BYTES // 8)
        for name in ("lengths", "offsets") + (("window_offsets",) if spec.window else ()):
            f.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(small,), dtype="<i8")
        for name in ("ids", "modes"):
            f.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(1024,), dtype=_STR)
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

    def _attach(self, source: _RowSource | None) -> None:
        f, spec = self._f, self.spec

        def appender(kind: str, key: str, end: int) -> _RowAppender:
            aligned = self._aligned[key]
            pending = source.read(kind, layer, aligned, end - aligned) if source is not None and end > aligned else None
            return _RowAppender(f[f"{kind}/{layer}"], f[f"_tail/{kind}/{layer}"], aligned, pending)

        for layer in spec.layers:
            if spec.per_nucleotide:
                self._per_nt[layer] = appender("per_nucleotide", "p", self._n_bases)
            if spec.window:
                self._windowed[layer] = appender("windowed", "w", self._n_windows)
        self._small = {name: f[name] for name in ("lengths", "offsets", "window_offsets") if name in f}
        self._pooled_ds = {(m, l): f[f"pooled/{m}/{l}"] for m in spec.pools for l in spec.layers}

    def _note_committed(self, record_id: str, mode: str, length: int) -> None:
        self.committed.append(record_id)
        self._ids_set.add(record_id)
        self._modes.append(mode)
        self._lengths.append(length)
        self._n_bases += length
        self._n_windows += _n_windows(length, self.spec.window)

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
    def begin(self, record_id: str, length: int, mode: str) -> RecordWriter:
        """Start the next record (``length`` bases, convolution ``mode``); one record at a time."""
        self._check_writable()
        if self._record is not None:
            raise RuntimeError(f"record {self._record.record_id!r} is still open; commit it first")
        if record_id in self._ids_set:
            raise ValueError(f"record id {record_id!r} is already committed in {self.path}")
        if int(length) < 1:
            raise ValueError(f"record {record_id!r} has length {length}; records must have at least one base")
        self._record = RecordWriter(self, str(record_id), int(length), str(mode))
        return self._record

    def _commit(self, rec: RecordWriter, pooled: Mapping[tuple[str, int], np.ndarray]) -> None:
        spec = self.spec
        n_win = _n_windows(rec.length, spec.window)
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
                pooled_rows[(mode, layer)] = row
                rec._crc[f"m/{mode}/{layer}"] = _crc(row)
        entry = {"c": len(self.committed), "id": rec.record_id, "len": rec.length, "mode": rec.mode,
                 "off": self._n_bases, "woff": self._n_windows, "crc": rec._crc}
        self._staged.append((entry, pooled_rows))
        self._note_committed(rec.record_id, rec.mode, rec.length)
        self._record = None
        if time.monotonic() - self._last_durable >= self._commit_interval:
            self._make_durable()

    def _make_durable(self) -> None:
        """Tails to the other slot, staged index and pooled rows, flush, then the journal lines."""
        if not self._staged:
            return
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
        """Write the final ``/ids`` and ``/modes`` and ``end_time``, flush and fsync, then mark complete."""
        self._check_writable()
        if self._record is not None:
            raise RuntimeError(f"record {self._record.record_id!r} was begun but not committed")
        self._make_durable()
        f, n = self._f, len(self.committed)
        for app in (*self._per_nt.values(), *self._windowed.values()):
            app.finalize()  # the last partial chunk, once
        for name, values in (("ids", self.committed), ("modes", self._modes)):
            f[name].resize(n, axis=0)
            if n:
                f[name][:] = np.asarray(values, dtype=object)
        f.flush()  # main now holds every row: the tails can go
        if "_tail" in f:
            del f["_tail"]
        f.attrs["end_time"] = _now()
        f.flush()
        _fsync_path(self.path)
        f.attrs["complete"] = True  # only now: everything else is on disk
        f.close()
        _fsync_path(self.path)
        self._closed = True
        self._journal.close()
        _unlink(self._journal.path)
        _fsync_dir(self.path)

    def close(self) -> None:
        """Make committed work durable and close without marking complete; the same call to ``open``
        resumes. Rows of a record that was begun but not committed are dropped."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._record is not None:
                self._abort_record()
            self._make_durable()
            self._truncate()
            self._f.close()
            _fsync_path(self.path)
        except Exception:
            self._journal.close()  # no "closed" line: the next open salvages
            raise
        self._journal.write({"closed": len(self.committed)}, sync=True)
        self._journal.close()

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


def _write_attrs(f: h5py.File, spec: StoreSpec, provenance: Mapping[str, Any], run_config: str,
                 start_time: str) -> None:
    for key, value in provenance.items():
        if key != "run_config":
            f.attrs[key] = _attr_value(value)
    f.attrs.update({
        "run_config": run_config,
        "genoconv_version": __version__,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "store_spec": json.dumps(spec.to_dict(), sort_keys=True),
        "store_dtype": spec.store_dtype,
        "d_model": spec.d_model,
        "layers": np.asarray(spec.layers, dtype=np.int64),
        "pools": json.dumps(list(spec.pools)),
        "window": int(spec.window or 0),
        "start_time": start_time,
        "end_time": "",
        "complete": False,
    })


def _spec_diffs(header: Mapping[str, Any], spec: StoreSpec, run_config: str) -> list[str]:
    old_spec = header.get("spec", {})
    diffs = [f"{k}: {_fmt_option(old_spec.get(k))} vs {_fmt_option(v)}"
             for k, v in spec.to_dict().items() if old_spec.get(k) != v]
    old_rc = header.get("run_config", "")
    if old_rc != run_config:
        try:
            a, b = json.loads(old_rc), json.loads(run_config)
        except ValueError:
            a = b = None
        if isinstance(a, dict) and isinstance(b, dict):
            reported = {d.split(":")[0] for d in diffs}
            diffs += [f"{k}: {_fmt_option(a.get(k))} vs {_fmt_option(b.get(k))}"
                      for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in reported]
        if not diffs:
            diffs.append(f"run_config: {old_rc} vs {run_config}")
    return diffs


def _is_complete(path: Path, locking: bool | None) -> bool:
    try:
        with _open_read(path, locking) as f:
            return bool(f.attrs.get("complete", False))
    except OSError:
        return False


def _replay(source: _RowSource, new: EmbeddingWriter, entry: Mapping[str, Any]) -> bool:
    """Copy one journaled record from a damaged file into ``new``, committing it only if every byte read
    back matches the CRCs journaled when it was first written. Returns False (nothing committed) otherwise."""
    spec, old = new.spec, source.f
    try:
        if entry["off"] != new._n_bases or entry["woff"] != new._n_windows or entry["c"] != len(new.committed):
            return False
        length, crcs, i = int(entry["len"]), entry["crc"], int(entry["c"])
        pooled = {(mode, layer): np.asarray(old[f"pooled/{mode}/{layer}"][i], dtype="<f4")
                  for mode in spec.pools for layer in spec.layers}
        rec = new.begin(entry["id"], length, entry["mode"])
        for layer in spec.layers:
            parts = []
            if spec.per_nucleotide:
                parts.append((rec.append, "per_nucleotide", entry["off"], length))
            if spec.window:
                parts.append((rec.append_windows, "windowed", entry["woff"], _n_windows(length, spec.window)))
            for append, kind, start, count in parts:
                step = max(1, _BLOCK_BYTES // (spec.d_model * 4))
                for a in range(start, start + count, step):
                    append(layer, source.read(kind, layer, a, min(step, start + count - a)))
        expected = {k: crcs[k] for k in crcs if not k.startswith("m/")}
        if rec._crc != expected or any(_crc(v) != crcs[f"m/{m}/{l}"] for (m, l), v in pooled.items()):
            raise ValueError("checksum mismatch")
        rec.commit(pooled)
        return True
    except (OSError, KeyError, ValueError, IndexError, TypeError, RuntimeError):
        if new._record is not None:
            new._abort_record()
        return False


# --------------------------------------------------------------------------------------------- virtual merge
def write_virtual_merge(readers: list["EmbeddingsFile"], output: str | os.PathLike[str], spec: StoreSpec,
                        provenance: Mapping[str, Any], *, overwrite: bool = False) -> None:
    """Write ``output`` with the store's layout whose per-nucleotide and windowed rows are HDF5 virtual
    datasets over the given complete files, in order (their absolute paths are recorded, so they must stay
    where they are); ids, index arrays and pooled rows are copied. Built under a temporary name and renamed,
    so an interrupted merge leaves nothing half-made."""
    output = Path(output)
    if output.exists() and not overwrite:
        if _is_complete(output, None):
            raise InputError(f"{output} is complete; use --overwrite to replace it")
        raise InputError(f"{output} exists; use --overwrite or another output path")
    for r in readers:
        if not r.complete:
            raise InputError(f"{r.path} is unfinished; finish it before merging")
    tmp = output.with_name(output.name + ".tmp")
    n = sum(len(r) for r in readers)
    lengths = np.concatenate([r.lengths for r in readers]) if readers else np.zeros(0, np.int64)
    try:
        with h5py.File(tmp, "w", libver="latest") as f:
            _write_attrs(f, spec, provenance, _canonical_run_config(provenance), _now())
            f["lengths"] = lengths.astype(np.int64)
            f["offsets"] = (np.cumsum(lengths) - lengths).astype(np.int64)
            f.create_dataset("ids", data=np.asarray([i for r in readers for i in r.ids], dtype=object), dtype=_STR)
            f.create_dataset("modes", data=np.asarray([m for r in readers for m in r.modes], dtype=object),
                             dtype=_STR)
            if spec.window:
                n_win = np.asarray([_n_windows(int(x), spec.window) for x in lengths], dtype=np.int64)
                f["window_offsets"] = np.cumsum(n_win) - n_win
            kinds = [k for k, on in (("per_nucleotide", spec.per_nucleotide), ("windowed", spec.window)) if on]
            for layer in spec.layers:
                for kind in kinds:
                    name = f"{kind}/{layer}"
                    shapes = [r._f[name].shape for r in readers]
                    dtype = readers[0]._f[name].dtype
                    layout = h5py.VirtualLayout(shape=(sum(x[0] for x in shapes), spec.d_model), dtype=dtype)
                    pos = 0
                    for r, shape in zip(readers, shapes):
                        layout[pos : pos + shape[0]] = h5py.VirtualSource(str(r.path.resolve()), name, shape=shape)
                        pos += shape[0]
                    f.create_virtual_dataset(name, layout)
                for mode in spec.pools:
                    f[f"pooled/{mode}/{layer}"] = np.concatenate([r.pooled(mode, layer) for r in readers])
            assert f["lengths"].shape == (n,)
            f.attrs["end_time"] = _now()
            f.flush()
            f.attrs["complete"] = True
        _fsync_path(tmp)
        os.replace(tmp, output)
        _unlink(_journal_path(output))
        _fsync_dir(output)
    finally:
        _unlink(tmp)


# --------------------------------------------------------------------------------------------- sizes
def estimate_bytes(spec: StoreSpec, n_records: int, total_bases: int) -> int:
    """Upper estimate of the file size in bytes (compression is not counted on: its ratio on embeddings
    is data-dependent, so the check stays on the safe side)."""
    d, n_layers = spec.d_model, len(spec.layers)
    size = 0
    if spec.per_nucleotide:
        size += total_bases * d * STORE_DTYPES[spec.store_dtype].itemsize * n_layers
    if spec.window:
        size += (total_bases // spec.window + n_records) * d * 4 * n_layers
    size += n_records * d * 4 * n_layers * len(spec.pools)
    size += n_records * (3 * 8 + 2 * 64)  # index arrays, ids and modes
    # metadata, partial last chunks and the journal
    n_big = n_layers * (int(spec.per_nucleotide) + int(bool(spec.window)))
    return int(size * 1.01) + 3 * n_big * CHUNK_BYTES + n_records * 512 + 2**20  # + the two /_tail slots


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def check_free_space(path: str | os.PathLike[str], needed_bytes: int) -> None:
    """Raise ResourceError if the filesystem that will hold ``path`` has less than ``needed_bytes`` free."""
    path = Path(path)
    where = path.parent if str(path.parent) else Path(".")
    where = where.resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if needed_bytes > free:
        raise ResourceError(
            f"not enough disk space for {path}: need about {_human(needed_bytes)}, "
            f"{_human(free)} free on {where}"
        )


# --------------------------------------------------------------------------------------------- reader
def _plain(value: Any) -> Any:
    """numpy scalars and arrays from h5py attributes as plain Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def open_embeddings(path: str | os.PathLike[str], *, locking: bool | None = None) -> "EmbeddingsFile":
    """Open a genoconv HDF5 file for lazy reading: ``f["chr1"]``, ``f.get(id, layer)``, ``f.pooled()``."""
    return EmbeddingsFile(path, locking=locking)


class EmbeddingsFile:
    """Lazy, read-only view of a genoconv embeddings file, like a dict from record id to rows.

    Layers: a non-negative ``layer`` is an absolute model layer index and must be one of ``layers``; a
    negative one indexes ``layers`` as listed, Python-style, so the default ``-1`` is the last listed layer
    (the model's final layer when the run kept it, as the default ``--layer -1`` does).

    An unfinished file (interrupted run) opens with a warning and shows only its journaled records.
    """

    def __init__(self, path: str | os.PathLike[str], *, locking: bool | None = None) -> None:
        self.path = Path(path)
        try:
            self._f = _open_read(self.path, _locking(locking), attempts=8)
        except OSError as err:
            raise InputError(f"cannot open {self.path} as HDF5: {err}") from None
        f = self._f
        try:
            if f.attrs.get("format") != FORMAT:
                raise InputError(f"{self.path} is not a genoconv embeddings file (no format={FORMAT!r} attribute)")
            self.complete = bool(f.attrs.get("complete", False))
            self.layers = [int(x) for x in np.atleast_1d(f.attrs["layers"])]
            self.window = int(f.attrs.get("window", 0)) or None
            self.provenance = {k: _plain(v) for k, v in f.attrs.items()}
            if self.complete:
                n = f["lengths"].shape[0]
                self.ids = list(f["ids"].asstr()[:n])
                self.modes = list(f["modes"].asstr()[:n])
                self.lengths = np.asarray(f["lengths"][:n], dtype=np.int64)
                self._offsets = np.asarray(f["offsets"][:n], dtype=np.int64)
                self._window_offsets = np.asarray(f["window_offsets"][:n], dtype=np.int64) if self.window else None
                self._source = _RowSource(f, None)
            else:
                # Only the journal knows what was committed and where the newest rows live (/_tail).
                entries = _read_journal(_journal_path(self.path)).entries
                self.ids = [e["id"] for e in entries]
                self.modes = [e["mode"] for e in entries]
                self.lengths = np.asarray([e["len"] for e in entries], dtype=np.int64)
                self._offsets = np.asarray([e["off"] for e in entries], dtype=np.int64)
                self._window_offsets = np.asarray([e["woff"] for e in entries], dtype=np.int64) if self.window else None
                self._source = _RowSource(f, entries[-1] if entries else None)
                warnings.warn(
                    f"{self.path} is unfinished (interrupted run); showing its {len(entries)} committed records",
                    stacklevel=3,
                )
        except Exception:
            f.close()
            raise
        self._index = {rid: i for i, rid in enumerate(self.ids)}

    # ---- dict-like
    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._index

    def __getitem__(self, record_id: str) -> np.ndarray:
        """Per-nucleotide rows (length, d) of the default (last listed) layer; reads only that slice."""
        return self.get(record_id)

    def keys(self) -> list[str]:
        return list(self.ids)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for rid in self.ids:
            yield rid, self.get(rid)

    def _layer(self, layer: int) -> int:
        if layer < 0:
            if -layer > len(self.layers):
                raise IndexError(f"layer {layer} out of range: {self.path} stores layers {self.layers}")
            return self.layers[layer]
        if layer not in self.layers:
            raise KeyError(f"layer {layer} is not stored in {self.path} (stored: {self.layers})")
        return layer

    def get(self, record_id: str, layer: int = -1, kind: str = "per_nucleotide") -> np.ndarray:
        """Rows of one record: ``kind="per_nucleotide"`` (length, d) or ``"windowed"`` (ceil(length/W), d)."""
        if record_id not in self._index:
            raise KeyError(f"no record {record_id!r} in {self.path}")
        i, layer = self._index[record_id], self._layer(layer)
        if kind == "per_nucleotide":
            if "per_nucleotide" not in self._f:
                raise KeyError(f"{self.path} has no per-nucleotide rows (run with --per-nucleotide)")
            start, count = int(self._offsets[i]), int(self.lengths[i])
        elif kind == "windowed":
            if self._window_offsets is None:
                raise KeyError(f"{self.path} has no windowed rows (run with --window)")
            start, count = int(self._window_offsets[i]), _n_windows(int(self.lengths[i]), self.window)
        else:
            raise ValueError(f"kind must be 'per_nucleotide' or 'windowed', got {kind!r}")
        return self._source.read(kind, layer, start, count)

    def rows(self, record_id: str, start: int, stop: int, layer: int = -1, kind: str = "per_nucleotide") -> np.ndarray:
        """Rows ``[start, stop)`` (0-based, half-open, clipped to the record) of one record; reads only those."""
        if record_id not in self._index:
            raise KeyError(f"no record {record_id!r} in {self.path}")
        i = self._index[record_id]
        if kind == "per_nucleotide":
            base, count = int(self._offsets[i]), int(self.lengths[i])
        elif kind == "windowed" and self._window_offsets is not None:
            base, count = int(self._window_offsets[i]), _n_windows(int(self.lengths[i]), self.window)
        else:
            return self.get(record_id, layer, kind)  # raises the right error
        if kind == "per_nucleotide" and "per_nucleotide" not in self._f:
            raise KeyError(f"{self.path} has no per-nucleotide rows (run with --per-nucleotide)")
        start, stop = max(0, min(start, count)), max(0, min(stop, count))
        return self._source.read(kind, self._layer(layer), base + start, max(0, stop - start))

    def pooled(self, mode: str = "mean", layer: int = -1) -> np.ndarray:
        """(n, d) float32 matrix, rows in the order of ``ids``."""
        layer = self._layer(layer)
        name = f"pooled/{mode}/{layer}"
        if name not in self._f:
            raise KeyError(f"{self.path} has no pooled {mode!r} rows for layer {layer}")
        return self._f[name][: len(self.ids)]

    def to_anndata(self, mode: str = "mean", layer: int = -1) -> Any:
        """The pooled matrix as an AnnData (obs = records with their lengths, uns = provenance)."""
        try:
            import anndata
            import pandas as pd
        except ImportError:
            raise ImportError("to_anndata needs the anndata package: pip install anndata") from None
        obs = pd.DataFrame({"length": self.lengths}, index=pd.Index(self.ids, name="id"))
        attrs = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in self.provenance.items()}
        uns = {"genoconv": attrs, "pooling": mode, "layer": self._layer(layer)}
        return anndata.AnnData(X=self.pooled(mode, layer), obs=obs, uns=uns)

    # ---- lifetime
    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "EmbeddingsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "complete" if self.complete else "unfinished"
        return f"<EmbeddingsFile {str(self.path)!r}: {len(self)} records, layers {self.layers}, {state}>"
