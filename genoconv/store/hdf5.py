"""Low-level HDF5 access shared by the writer and the reader: crash-tolerant opening, fsync, checksums.

Everything about *how* genoconv opens HDF5 files (SWMR from the first byte, a bounded metadata retry for files whose
writer died, optional locking for NFS/Lustre) lives here; see :mod:`genoconv.store` for why.
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import functools
import os
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from genoconv.errors import OUT_OF_SPACE, ResourceError

# Raw-data chunk cache per dataset: holds the partial chunk at a record boundary between commits.
RDCC_NBYTES = 8 * 2**20
RDCC_NSLOTS = 1009


def now() -> str:
    # Milliseconds: per-shard throughput reports divide by end - start, which whole seconds made 0 for short runs.
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def locking_setting(locking: bool | None) -> bool | None:
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


def file_access(locking: bool | None) -> h5py.h5p.PropFAID:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    # SWMR needs the latest format; it also keeps many datasets per group fast (h5py #1055).
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    fapl.set_cache(0, RDCC_NSLOTS, RDCC_NBYTES, 0.75)
    if locking is not None:
        fapl.set_file_locking(locking, True)
    return fapl


def open_swmr_write(path: Path, create: bool, locking: bool | None) -> h5py.File:
    """Create or reopen with the SWMR-write flag set from the first byte, so no moment exists in which a
    kill leaves a file that only ``h5clear`` could open."""
    fapl = file_access(locking)
    lib = hdf5_library()
    if lib is not None:  # a metadata block whose checksum fails would otherwise be re-read for minutes (open_read)
        lib.H5Pset_metadata_read_attempts(fapl.id, 1)
    name = os.fsencode(path)
    if create:
        fid = h5py.h5f.create(name, h5py.h5f.ACC_TRUNC | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl)
    else:
        fid = h5py.h5f.open(name, h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl)
    return h5py.File(fid)


@functools.lru_cache(maxsize=1)
def hdf5_library() -> ctypes.CDLL | None:
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


def open_read(path: Path, locking: bool | None, attempts: int = 1) -> h5py.File:
    """Read-only: plain first (a closed file), then SWMR read (a file whose writer died or is running).

    An SWMR reader retries a metadata block whose checksum fails, doubling its sleep each time, up to the
    fapl's read-attempt limit (default 100: practically forever). A dead writer's torn block never heals, so
    the limit is set to ``attempts`` (measured: 1 of ~1000 SIGKILLs left such a block; it hung salvage)."""
    kw = {} if locking is None else {"locking": locking}
    try:
        return h5py.File(path, "r", **kw)
    except OSError as plain_err:
        fapl = file_access(locking)
        lib = hdf5_library()
        if lib is not None:
            lib.H5Pset_metadata_read_attempts(fapl.id, attempts)
        try:
            fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
        except OSError:
            raise plain_err from None
        return h5py.File(fid)


def out_of_space(path: str | os.PathLike[str], err: BaseException) -> ResourceError | None:
    """The one-line error to raise when ``err`` (an OSError, or the RuntimeError h5py raises from a failed HDF5
    write, which carries the errno in its text) means the disk is full; None otherwise."""
    code = getattr(err, "errno", None)
    if code not in OUT_OF_SPACE:
        found = re.search(r"errno = (\d+),", str(err))
        code = int(found.group(1)) if found else None
    if code not in OUT_OF_SPACE:
        return None
    return ResourceError(f"{path}: {os.strerror(code).lower()}; free some space and rerun the same command: it "
                         "resumes from what was committed")


def write_failed(err: BaseException) -> bool:
    """Whether ``err`` is the operating system refusing a write (full disk, I/O error), as opposed to HDF5 finding
    something wrong in what it read (a damaged file, which can still be written)."""
    return out_of_space("", err) is not None or getattr(err, "errno", None) == errno.EIO \
        or "file write failed" in str(err)


def abandon(f: h5py.File, err: BaseException) -> None:
    """Close ``f`` after ``err`` interrupted a write, writing to it as little as possible: the journal, not the
    file, says what is committed (no "closed" line is written, so the next open salvages it).

    After a refused write (``write_failed``) HDF5 still holds metadata it cannot write and retries it at every
    flush and close; each retry fails and h5py then crashes tearing the objects down (measured: a merge into a
    full disk died with SIGSEGV in 2 of 2 trials). So the file's descriptor is pointed at /dev/null first: the
    close completes and those writes are discarded. After a damaged read the file is closed as it is (there the
    /dev/null trick is what crashes: HDF5 re-reads metadata while closing)."""
    if write_failed(err):
        try:
            fd = f.id.get_vfd_handle()
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
        except (OSError, ValueError, RuntimeError, AttributeError):
            pass
    try:
        f.close()
    except Exception:  # noqa: BLE001 - nothing more can be done for this file
        pass


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fsync_path(path.parent if str(path.parent) else Path("."))
    except OSError:  # some filesystems refuse fsync on directories; the renames are still atomic
        pass


def unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def crc(array: np.ndarray, start: int = 0) -> int:
    return zlib.crc32(np.ascontiguousarray(array).view(np.uint8), start)


def is_complete(path: Path, locking: bool | None) -> bool:
    try:
        with open_read(path, locking) as f:
            return bool(f.attrs.get("complete", False))
    except Exception:  # noqa: BLE001 - unreadable or damaged: not a complete file
        return False


def attrs_digest(f: h5py.File) -> int:
    """CRC32 of the root attributes. Their string values live in HDF5's global heap, which has no checksum (a flipped
    byte there reads back as another value, silently); the journal keeps this digest to check them on resume."""
    value = 0
    for key in sorted(f.attrs):
        item = f.attrs[key]
        data = item.tobytes() if isinstance(item, np.ndarray) else (item if isinstance(item, bytes) else str(item).encode())
        value = zlib.crc32(key.encode() + b"=" + data + b";", value)
    return value


def read_all_metadata(f: h5py.File) -> None:
    """Read every object header, attribute and chunk index of ``f``, no raw data (milliseconds per thousand chunks),
    so that a damaged metadata block ("incorrect metadata checksum") shows now rather than in the middle of a run."""
    def visit(name: str, obj: Any) -> None:
        dict(obj.attrs)
        if isinstance(obj, h5py.Dataset) and obj.chunks and hasattr(obj.id, "chunk_iter"):
            obj.id.chunk_iter(lambda info: None)

    dict(f.attrs)
    f.visititems(visit)


class RowSource:
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
