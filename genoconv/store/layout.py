"""The file layout: what a genoconv HDF5 file holds (:class:`StoreSpec`), its attributes, and its size.

The layout itself is documented in :mod:`genoconv.store` (and the README's output table).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from genoconv._version import __version__
from genoconv.coords import Coords
from genoconv.errors import InputError, InputFileError, ResourceError
from genoconv.options import COMPRESSIONS, POOL_MODES, STORE_DTYPES

FORMAT = "genoconv-embeddings"
FORMAT_VERSION = 1
NUMPY_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
assert tuple(NUMPY_DTYPES) == STORE_DTYPES
# Target bytes per chunk of the big row datasets (h5py docs: 10 KiB - 1 MiB; the whole chunk is read on any
# access). Tests lower it to get many chunks per record quickly.
CHUNK_BYTES = 2**20
# Small per-record datasets (pooled rows, index arrays) get small chunks: each commit rewrites one.
SMALL_CHUNK_BYTES = 2**16
UTF8 = h5py.string_dtype("utf-8")
# /coords/<field>: one value per record, "" / -1 where a record has no coordinates (see genoconv.store).
COORD_FIELDS = ("contig", "start", "end", "strand")


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
            raise InputError(f"--store-dtype must be {' or '.join(STORE_DTYPES)}, got {self.store_dtype!r}")
        if (self.compression or "none") not in COMPRESSIONS or self.compression == "none":
            raise InputError(f"compression must be None, 'gzip' or 'lzf', got {self.compression!r}")
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


def n_windows(length: int, window: int | None) -> int:
    return 0 if not window else -(-length // window)


def attr_value(value: Any) -> Any:
    """HDF5 cannot hold None or nested values: None -> "", dicts and non-numeric lists -> JSON text."""
    if value is None:
        return ""
    numeric = isinstance(value, (list, tuple)) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if isinstance(value, (dict, list, tuple)) and not numeric:
        return json.dumps(value, sort_keys=True, default=str)
    return value


def canonical_run_config(provenance: Mapping[str, Any]) -> str:
    rc = provenance.get("run_config", {})
    if isinstance(rc, (str, bytes)):
        try:
            rc = json.loads(rc)
        except ValueError:
            return rc.decode() if isinstance(rc, bytes) else rc
    return json.dumps(rc, sort_keys=True, separators=(",", ":"), default=str)


def fmt_option(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    return "none" if value is None else str(value)


def write_attrs(f: h5py.File, spec: StoreSpec, provenance: Mapping[str, Any], run_config: str,
                 start_time: str) -> None:
    for key, value in provenance.items():
        if key != "run_config":
            f.attrs[key] = attr_value(value)
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


def estimate_bytes(spec: StoreSpec, n_records: int, total_bases: int) -> int:
    """Upper estimate of the file size in bytes (compression is not counted on: its ratio on embeddings
    is data-dependent, so the check stays on the safe side)."""
    d, n_layers = spec.d_model, len(spec.layers)
    size = 0
    if spec.per_nucleotide:
        size += total_bases * d * NUMPY_DTYPES[spec.store_dtype].itemsize * n_layers
    if spec.window:
        size += (total_bases // spec.window + n_records) * d * 4 * n_layers
    size += n_records * d * 4 * n_layers * len(spec.pools)
    size += n_records * (5 * 8 + 4 * 64)  # index arrays, ids, modes and coordinates
    # metadata, partial last chunks and the journal
    n_big = n_layers * (int(spec.per_nucleotide) + int(bool(spec.window)))
    return int(size * 1.01) + 3 * n_big * CHUNK_BYTES + n_records * 512 + 2**20  # + the two /_tail slots


def coord_columns(coords: Sequence[Coords | None]) -> dict[str, np.ndarray]:
    """``contig``, ``start``, ``end``, ``strand`` columns (object or int64 arrays); ``""``/``-1`` for None."""
    missing = ("", -1, -1, "")
    rows = [missing if c is None else c for c in coords]
    columns = list(zip(*rows)) if rows else [()] * len(COORD_FIELDS)
    return {name: np.asarray(values, dtype=np.int64 if name in ("start", "end") else object)
            for name, values in zip(COORD_FIELDS, columns)}


def write_coords(f: h5py.File, coords: Sequence[Coords | None]) -> None:
    """``/coords/{contig,start,end,strand}`` for records in order; written only when at least one record has
    coordinates."""
    if all(c is None for c in coords):
        return
    for name, values in coord_columns(coords).items():
        f.create_dataset(f"coords/{name}", data=values, dtype="<i8" if values.dtype == np.int64 else UTF8)


def read_coords(f: h5py.File, n: int) -> list[Coords | None] | None:
    """The ``/coords`` of the first ``n`` records (None for a record without them), or None when the file has
    no ``/coords`` (no record had coordinates, or a file from before they were stored)."""
    if "coords" not in f:
        return None
    group = f["coords"]
    contig, strand = group["contig"].asstr()[:n], group["strand"].asstr()[:n]
    start, end = group["start"][:n], group["end"][:n]
    return [Coords(c, int(a), int(b), s) if c else None for c, a, b, s in zip(contig, start, end, strand)]


def human(n: float) -> str:
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
    if os.statvfs(where).f_flag & os.ST_RDONLY:  # such a mount reports 0 B free: say what is really wrong
        raise InputFileError(f"cannot write {path}: {where} is on a read-only filesystem")
    free = shutil.disk_usage(where).free
    if needed_bytes > free:
        raise ResourceError(
            f"not enough disk space for {path}: need about {human(needed_bytes)}, "
            f"{human(free)} free on {where}"
        )
