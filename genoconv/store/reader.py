"""The reader: :func:`open_embeddings` gives a lazy, dict-like view of a genoconv file (numpy + h5py only)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from genoconv.coords import Coords
from genoconv.errors import InputError
from genoconv.store.hdf5 import RowSource, crc, locking_setting, open_read
from genoconv.store.journal import entry_coords, journal_path, read_journal
from genoconv.store.layout import FORMAT, coord_columns, n_windows, read_coords


def plain_value(value: Any) -> Any:
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

    Layers are counted as ``--layer`` and ``Embedder.embed`` count them: a non-negative ``layer`` is an absolute
    hidden-state index (0 = embeddings), a negative one counts the model's hidden states from the end (-1 = the
    final LayerNorm); either must be one of the stored ``layers``. The default (``None``) is the last stored layer.

    An unfinished file (interrupted run) opens with a warning and shows only its journaled records.
    """

    def __init__(self, path: str | os.PathLike[str], *, locking: bool | None = None) -> None:
        self.path = Path(path)
        try:
            # Through a symlink, its target: HDF5 looks for a virtual merge's shards beside the file it opened.
            self._f = open_read(self.path.resolve(), locking_setting(locking), attempts=8)
        except OSError as err:
            raise InputError(f"cannot open {self.path} as HDF5: {err}") from None
        f = self._f
        try:
            if f.attrs.get("format") != FORMAT:
                raise InputError(f"{self.path} is not a genoconv embeddings file (no format={FORMAT!r} attribute)")
            self.complete = bool(f.attrs.get("complete", False))
            self.layers = [int(x) for x in np.atleast_1d(f.attrs["layers"])]
            self.window = int(f.attrs.get("window", 0)) or None
            self.pools = list(json.loads(f.attrs.get("pools", "[]")))
            self.provenance = {k: plain_value(v) for k, v in f.attrs.items()}
            self._crcs: list[dict] | None = None  # an unfinished file's journaled checksums, per record
            if self.complete:
                n = f["lengths"].shape[0]
                self.ids = list(f["ids"].asstr()[:n])
                self.modes = list(f["modes"].asstr()[:n])
                self._coords = read_coords(f, n)
                self.lengths = np.asarray(f["lengths"][:n], dtype=np.int64)
                self._offsets = np.asarray(f["offsets"][:n], dtype=np.int64)
                self._window_offsets = np.asarray(f["window_offsets"][:n], dtype=np.int64) if self.window else None
                self._source = RowSource(f, None)
                self._check_virtual_sources(locking)
            else:
                # Only the journal knows what was committed and where the newest rows live (/_tail).
                journal = read_journal(journal_path(self.path.resolve()))
                entries = journal.entries
                self.ids = [e["id"] for e in entries]
                self.modes = [e["mode"] for e in entries]
                self._coords = [entry_coords(e) for e in entries]
                if all(c is None for c in self._coords):
                    self._coords = None
                self.lengths = np.asarray([e["len"] for e in entries], dtype=np.int64)
                self._offsets = np.asarray([e["off"] for e in entries], dtype=np.int64)
                self._window_offsets = np.asarray([e["woff"] for e in entries], dtype=np.int64) if self.window else None
                self._source = RowSource(f, journal.tail)  # a checkpoint of a record in progress may be newest
                self._crcs = [e.get("crc", {}) for e in entries]  # rows are checked against them as they are read
                warnings.warn(
                    f"{self.path} is unfinished (interrupted run); showing its {len(entries)} committed records",
                    stacklevel=3,
                )
        except (OSError, RuntimeError) as err:  # a block HDF5 cannot parse: a damaged (e.g. truncated) file
            f.close()
            raise InputError(f"{self.path} is damaged and cannot be read ({err})") from None
        except Exception:
            f.close()
            raise
        self._index = {rid: i for i, rid in enumerate(self.ids)}
        self._verified: set[tuple[int, str]] = set()

    def _check_virtual_sources(self, locking: bool | None) -> None:
        """A ``merge --virtual`` output reads its rows from the shard files, and HDF5 reads a missing source as
        zeros and a rewritten one as its new rows, silently. So every source must be where the merge found it,
        finished at the same time (``merged_from`` records each shard's ``end_time``), and not this file."""
        f, sources = self._f, set()
        for group in ("per_nucleotide", "windowed"):
            for dset in f.get(group, {}).values():
                if dset.is_virtual:
                    sources.update(vs.file_name for vs in dset.virtual_sources())
        if not sources:
            return
        recorded = self.provenance.get("merged_from", "[]")
        try:
            recorded = json.loads(recorded) if isinstance(recorded, str) else list(recorded)
        except ValueError:
            recorded = []
        finished = {e.get("source", e.get("path")): e.get("end_time") for e in recorded if isinstance(e, dict)}
        for name in sorted(sources):
            src = Path(name) if Path(name).is_absolute() else self.path.resolve().parent / name
            what = f"{self.path} is a --virtual merge whose rows live in {os.path.normpath(src)}"
            if name == "." or (src.exists() and src.resolve() == self.path.resolve()):
                raise InputError(f"{self.path} is a --virtual merge that maps rows onto itself (it was written over "
                                 "one of its shards); it cannot be read: merge the shards again")
            if not src.exists():
                raise InputError(f"{what}, which is missing (moved or deleted): put it back, or merge again "
                                 "without --virtual")
            want = finished.get(name)
            if want is None:
                continue  # merged by an older genoconv, which recorded paths only
            try:
                with open_read(src, locking_setting(locking)) as g:
                    got = plain_value(g.attrs.get("end_time", ""))
            except OSError as err:
                raise InputError(f"{what}, which cannot be opened: {err}") from None
            if got != want:
                raise InputError(f"{what}, which was rewritten after the merge (it finished at {got}, the merged one "
                                 f"at {want}): merge again")

    # ---- dict-like
    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._index

    def __getitem__(self, record_id: str) -> np.ndarray:
        """Per-nucleotide rows (length, d) of the last stored layer; reads only that slice."""
        return self.get(record_id)

    def keys(self) -> list[str]:
        return list(self.ids)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for rid in self.ids:
            yield rid, self.get(rid)

    @property
    def has_per_nucleotide(self) -> bool:
        """Whether the file stores per-nucleotide rows (not with ``--no-per-nucleotide``)."""
        return "per_nucleotide" in self._f

    def resolve_layer(self, layer: int | None) -> int:
        """The absolute layer index a ``layer`` argument means (see the class docstring); KeyError/IndexError
        when it is not stored."""
        return self._layer(layer)

    def _n_hidden_states(self) -> int | None:
        """The model's hidden states (0 = embeddings .. n_layer + 1 = final LayerNorm), from its recorded config."""
        cfg = self.provenance.get("model_config")
        try:
            cfg = json.loads(cfg) if isinstance(cfg, str) else cfg
            return int(cfg["n_layer"]) + 2
        except (TypeError, ValueError, KeyError):
            return None

    def _layer(self, layer: int | None) -> int:
        if layer is None:
            return self.layers[-1]
        if layer < 0:
            n = self._n_hidden_states()
            if n is None:  # no model config recorded: count the stored layers from the end
                if -layer > len(self.layers):
                    raise IndexError(f"layer {layer} out of range: {self.path} stores layers {self.layers}")
                return self.layers[layer]
            if layer < -n:
                raise IndexError(f"layer {layer} out of range for {self.path}'s model ({n} hidden states: "
                                 f"-{n}..{n - 1})")
            if layer % n not in self.layers:
                raise KeyError(f"layer {layer} (= {layer % n} of this model) is not stored in {self.path} "
                               f"(stored: {self.layers})")
            return layer % n
        if layer not in self.layers:
            raise KeyError(f"layer {layer} is not stored in {self.path} (stored: {self.layers})")
        return layer

    def get(self, record_id: str, layer: int | None = None, kind: str = "per_nucleotide") -> np.ndarray:
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
            start, count = int(self._window_offsets[i]), n_windows(int(self.lengths[i]), self.window)
        else:
            raise ValueError(f"kind must be 'per_nucleotide' or 'windowed', got {kind!r}")
        rows = self._read(kind, layer, start, count)
        self._verify(i, kind, layer, rows)
        return rows

    def _read(self, kind: str, layer: int, start: int, count: int) -> np.ndarray:
        try:
            return self._source.read(kind, layer, start, count)
        except (OSError, RuntimeError) as err:  # HDF5 cannot read the block: a damaged (e.g. truncated) file
            raise InputError(f"{self.path} is damaged: cannot read its {kind.replace('_', '-')} rows of layer "
                             f"{layer} ({err})") from None

    def _verify(self, i: int, kind: str, layer: int, rows: np.ndarray | None = None) -> None:
        """An unfinished file's rows against the CRC its run journaled for them (once per record, kind and layer):
        a damaged or truncated file reads as zeros or old bytes in HDF5 without an error. A finished file was
        checked when it was finished (see genoconv.store.writer)."""
        key = f"{'p' if kind == 'per_nucleotide' else 'w'}/{layer}"
        if self._crcs is None or (i, key) in self._verified or key not in self._crcs[i]:
            return
        if rows is None:
            self.get(self.ids[i], layer, kind)  # reads the whole record, which verifies it
            return
        if crc(rows) != int(self._crcs[i][key]):
            raise InputError(f"{self.path}: record {self.ids[i]!r} ({kind.replace('_', '-')} rows, layer {layer}) does "
                             "not match the checksum its run journaled: the unfinished file is damaged; rerun its "
                             "genoconv embed command to keep what is intact and recompute the rest")
        self._verified.add((i, key))

    def rows(self, record_id: str, start: int, stop: int, layer: int | None = None,
             kind: str = "per_nucleotide") -> np.ndarray:
        """Rows ``[start, stop)`` (0-based, half-open, clipped to the record) of one record; reads only those."""
        if record_id not in self._index:
            raise KeyError(f"no record {record_id!r} in {self.path}")
        i = self._index[record_id]
        if kind == "per_nucleotide":
            base, count = int(self._offsets[i]), int(self.lengths[i])
        elif kind == "windowed" and self._window_offsets is not None:
            base, count = int(self._window_offsets[i]), n_windows(int(self.lengths[i]), self.window)
        else:
            return self.get(record_id, layer, kind)  # raises the right error
        if kind == "per_nucleotide" and "per_nucleotide" not in self._f:
            raise KeyError(f"{self.path} has no per-nucleotide rows (run with --per-nucleotide)")
        start, stop = max(0, min(start, count)), max(0, min(stop, count))
        self._verify(i, kind, self._layer(layer))
        return self._read(kind, self._layer(layer), base + start, max(0, stop - start))

    @property
    def has_coords(self) -> bool:
        """Whether any record has reference coordinates (``--regions`` records, aligned reads)."""
        return self._coords is not None

    def coords(self, record_id: str) -> Coords | None:
        """Where ``record_id`` lies on the reference: ``Coords(contig, start, end, strand)``, 0-based half-open,
        strand as embedded (see :mod:`genoconv.coords`); None for a FASTA/FASTQ record or an unmapped read."""
        if record_id not in self._index:
            raise KeyError(f"no record {record_id!r} in {self.path}")
        return None if self._coords is None else self._coords[self._index[record_id]]

    def coords_table(self) -> dict[str, np.ndarray]:
        """Columns ``id``, ``contig``, ``start``, ``end``, ``strand`` (numpy arrays in ``ids`` order; ``""`` and
        ``-1`` for records without coordinates), ready for ``pandas.DataFrame(f.coords_table())``."""
        return {"id": np.asarray(self.ids, dtype=object), **coord_columns(self._coords or [None] * len(self.ids))}

    def pooled(self, mode: str = "mean", layer: int | None = None) -> np.ndarray:
        """(n, d) float32 matrix, rows in the order of ``ids``."""
        layer = self._layer(layer)
        name = f"pooled/{mode}/{layer}"
        if name not in self._f:
            raise KeyError(f"{self.path} has no pooled {mode!r} rows for layer {layer}")
        rows = self._f[name][: len(self.ids)]
        for i, row in enumerate(rows if self._crcs is not None else ()):
            want = self._crcs[i].get(f"m/{mode}/{layer}")
            if want is not None and crc(np.asarray(row, dtype="<f4")) != int(want):
                raise InputError(f"{self.path}: the pooled {mode} row of record {self.ids[i]!r} does not match the "
                                 "checksum its run journaled: the unfinished file is damaged; rerun its genoconv "
                                 "embed command to keep what is intact and recompute the rest")
        return rows

    def to_anndata(self, mode: str = "mean", layer: int | None = None) -> Any:
        """The pooled matrix as an AnnData (obs = records with their lengths, uns = provenance)."""
        try:
            import anndata
            import pandas as pd
        except ImportError:
            raise ImportError("to_anndata needs the anndata package: pip install anndata") from None
        obs = pd.DataFrame({"length": self.lengths}, index=pd.Index(self.ids, name="id"))
        if self.has_coords:
            for name, values in self.coords_table().items():
                if name != "id":
                    obs[name] = values
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
