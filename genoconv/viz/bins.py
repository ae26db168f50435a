"""The rows a track or a projection is made of (bins of a record), and where each bin lies on the reference.

A *bin* is a stretch of consecutive bases of a record and one row for it: either a stored windowed row (``W``
bases, from ``embed --window W``), or the mean of the stored per-nucleotide rows over ``B`` bases. Bin ``k`` of a
record of ``L`` bases covers record bases ``[k*B, min((k+1)*B, L))`` (the last bin is partial), 0-based half-open.

On the reference, a record with coordinates ``(contig, start, end, strand)`` (:mod:`genoconv.coords`) maps record
base ``p`` to ``start + p`` on ``+`` and to ``end - 1 - p`` on ``-``: a minus-strand record's bins are flipped back
into reference order. A whole-contig FASTA record has no stored coordinates; in a file without any, its id is taken
as the contig and it starts at 0. When a record's length differs from its span (an aligned read with soft clips or
indels), bin edges are scaled linearly onto the aligned span (rounded to whole bases; bins that shrink to nothing
are dropped): the reference has no exact place for clipped or inserted bases.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from genoconv.coords import Coords
from genoconv.errors import InputError
from genoconv.store import EmbeddingsFile
from genoconv.viz.projection import Projection, fit_projection

ROW_BLOCK = 1 << 18  # per-nucleotide rows read at a time: bounded memory for a chromosome-sized record
SOURCES = ("auto", "windowed", "per-nucleotide")
DEFAULT_BIN = 100


@dataclass(frozen=True)
class Bins:
    """Which rows: ``kind`` (``windowed`` or ``per_nucleotide``), ``size`` bases per bin, absolute ``layer``."""

    kind: str
    size: int
    layer: int

    def describe(self) -> str:
        if self.kind == "windowed":
            return f"windowed rows (W={self.size}), layer {self.layer}"
        return f"per-nucleotide rows binned by {self.size}, layer {self.layer}"


def choose_bins(f: EmbeddingsFile, source: str = "auto", bin_size: int | None = None, layer: int | None = None) -> Bins:
    """``source``: ``windowed`` (the stored windows), ``per-nucleotide`` (stored rows averaged over ``bin_size``
    bases, default 100) or ``auto`` (the windows when stored and no ``bin_size`` is given, else per-nucleotide)."""
    if source not in SOURCES:
        raise InputError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    try:
        layer = f.resolve_layer(layer)
    except (KeyError, IndexError) as err:
        raise InputError(str(err).strip("'\"")) from None
    has_rows = f.has_per_nucleotide
    if source == "auto":
        source = "windowed" if f.window and bin_size is None else "per-nucleotide"
        if source == "per-nucleotide" and not has_rows:
            source = "windowed" if f.window else source
    if source == "windowed":
        if not f.window:
            raise InputError(f"{f.path} has no windowed rows (embed with --window W, or use per-nucleotide rows)")
        if bin_size is not None:
            raise InputError(f"--bin sets the bin of per-nucleotide rows; the windowed rows of {f.path} are "
                             f"{f.window} bases each")
        return Bins("windowed", f.window, layer)
    if not has_rows:
        instead = ("use its windowed rows (--source windowed)" if f.window
                   else "embed with --window W or --per-nucleotide")
        raise InputError(f"{f.path} has no per-nucleotide rows (embedded with --no-per-nucleotide): {instead}")
    size = DEFAULT_BIN if bin_size is None else int(bin_size)
    if size < 1:
        raise InputError(f"--bin must be a positive number of bases, got {size}")
    return Bins("per_nucleotide", size, layer)


def record_bins(f: EmbeddingsFile, record_id: str, length: int, bins: Bins) -> np.ndarray:
    """(ceil(length / size), d) float32 rows of one record, in record order."""
    if bins.kind == "windowed":
        return np.asarray(f.get(record_id, layer=bins.layer, kind="windowed"), np.float32)
    step = max(bins.size, ROW_BLOCK // bins.size * bins.size)  # whole bins per block: only the last is partial
    out = []
    for a in range(0, length, step):
        rows = np.asarray(f.rows(record_id, a, a + step, layer=bins.layer), np.float64)
        full = len(rows) // bins.size * bins.size
        out.append(rows[:full].reshape(-1, bins.size, rows.shape[1]).mean(1))
        if full < len(rows):
            out.append(rows[full:].mean(0, keepdims=True))
    return np.concatenate(out).astype(np.float32)


def iter_bins(f: EmbeddingsFile, bins: Bins, ids: Sequence[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """``(record id, rows)`` for ``ids`` (default: every record, in file order)."""
    lengths = dict(zip(f.ids, f.lengths.tolist()))
    for rid in f.ids if ids is None else ids:
        yield rid, record_bins(f, rid, lengths[rid], bins)


def file_projection(f: EmbeddingsFile, bins: Bins, n_components: int = 3,
                    load: str | os.PathLike[str] | None = None) -> Projection:
    """The projection tracks of ``f`` are drawn on: loaded from ``load`` (checked to fit ``f``'s model, layer and
    width), else fitted on all of ``f``'s bins."""
    sha = str(f.provenance.get("checkpoint_sha256", ""))
    d_model = int(f.provenance.get("d_model", 0))
    if load is not None:
        proj = Projection.load(load)
        proj.check_fits(str(f.path), sha, bins.layer, d_model, str(load))
        if n_components > proj.n_components:
            raise InputError(f"{load} holds {proj.n_components} components; {n_components} asked for")
        return Projection(proj.mean, proj.components[:n_components], proj.variance[:n_components],
                          proj.total_variance, proj.meta)
    meta = {"model_sha256": sha, "layer": bins.layer, "d_model": d_model, "rows": bins.describe(),
            "fitted_on": str(f.path)}
    return fit_projection((rows for _, rows in iter_bins(f, bins)), n_components, meta,
                          what=f"{f.path} {bins.describe()}")


def placement(f: EmbeddingsFile, record_id: str, length: int) -> Coords | None:
    """Where a record goes on the reference: its stored coordinates; in a file without any, the whole contig
    named by its id; None for a record without coordinates in a file where others have them."""
    if f.has_coords:
        return f.coords(record_id)
    return Coords(record_id, 0, int(length), "+")


def reference_intervals(coords: Coords, length: int, bin_size: int, n_bins: int) -> tuple[np.ndarray, np.ndarray,
                                                                                           np.ndarray]:
    """``(starts, ends, order)``: the reference intervals of the record's bins, ascending, and for each the index
    of its bin (so ``values[order]`` lines up with them)."""
    edges = np.minimum(np.arange(n_bins + 1, dtype=np.int64) * bin_size, length)
    edges[-1] = length
    span = coords.end - coords.start
    if span != length:
        edges = (edges * span + length // 2) // length
    lo, hi = edges[:-1], edges[1:]
    order = np.arange(n_bins)
    if coords.strand == "-":
        lo, hi, order = (span - hi)[::-1], (span - lo)[::-1], order[::-1]
    keep = hi > lo
    return coords.start + lo[keep], coords.start + hi[keep], order[keep]
