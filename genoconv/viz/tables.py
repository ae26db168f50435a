"""Pooled vectors as a table keyed by record id, for R and pandas: TSV always, Parquet when pyarrow is installed.

Columns, in order: ``id``, ``length``, then ``contig``, ``start``, ``end``, ``strand`` when the file has
coordinates (0-based half-open; ``""``/``-1`` for records without), then ``<mode>_<j>`` for ``j`` in ``0..d-1``
for each pooling mode asked for (float32; TSV with 9 significant digits, which round-trips float32 exactly).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from genoconv.errors import InputError, cannot_write
from genoconv.store import EmbeddingsFile

TABLE_SUFFIXES = (".tsv", ".txt", ".parquet")


def pooled_table(f: EmbeddingsFile, modes: list[str] | None = None, layer: int | None = None) -> dict[str, np.ndarray]:
    """The table's columns, in order (``modes`` default: every stored pooling mode)."""
    modes = list(f.pools) if not modes else list(modes)
    missing = [m for m in modes if m not in f.pools]
    if not f.pools:
        raise InputError(f"{f.path} has no pooled vectors (embed with --pool mean)")
    if missing:
        raise InputError(f"{f.path} has no pooled {', '.join(missing)} vectors (stored: {', '.join(f.pools)})")
    try:
        layer = f.resolve_layer(layer)
    except (KeyError, IndexError) as err:
        raise InputError(str(err).strip("'\"")) from None
    columns: dict[str, np.ndarray] = {"id": np.asarray(f.ids, dtype=object), "length": f.lengths.astype(np.int64)}
    if f.has_coords:
        columns.update({k: v for k, v in f.coords_table().items() if k != "id"})
    for mode in modes:
        matrix = np.asarray(f.pooled(mode, layer), np.float32)
        columns.update({f"{mode}_{j}": matrix[:, j] for j in range(matrix.shape[1])})
    return columns


def write_table(columns: dict[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """TSV (``.tsv``/``.txt``) or Parquet (``.parquet``, needs pyarrow), chosen by the file name."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{path}: table format from the name: .tsv, .txt or .parquet")
    if suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"{path}: writing Parquet needs pyarrow: pip install pyarrow (or 'genoconv[parquet]'), "
                             "or write a .tsv") from None
        table = pa.table({k: (v.tolist() if v.dtype == object else v) for k, v in columns.items()})
        try:
            pq.write_table(table, str(path))
        except OSError as err:
            raise cannot_write(path, err) from None
        return
    floats = [k for k, v in columns.items() if v.dtype.kind == "f"]
    text_cols = [k for k in columns if k not in floats]
    block = io.StringIO()
    if floats:
        np.savetxt(block, np.column_stack([columns[k] for k in floats]), fmt="%.9g", delimiter="\t")
    numbers = block.getvalue().splitlines() if floats else [""] * len(columns["id"])
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\t".join(text_cols + floats) + "\n")
            for i, tail in enumerate(numbers):
                head = "\t".join(str(columns[k][i]) for k in text_cols)
                fh.write(f"{head}\t{tail}\n" if floats else f"{head}\n")
    except OSError as err:
        raise cannot_write(path, err) from None
