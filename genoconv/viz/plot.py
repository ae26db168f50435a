"""Pictures of embeddings (matplotlib, the ``[viz]`` extra): one figure with up to two panels.

(a) *pooled*: the pooled vectors of every record of one or more files on two axes — their joint PCA ("PC1 (x% of
    variance)", "PC2 (...)"), or UMAP ("UMAP 1", "UMAP 2") with ``method="umap"`` when umap-learn is installed —
    one colour per input file, or per label from a table (``id<TAB>label`` lines; records not in it are
    "unlabelled", grey). Up to 20 points are named by their record id.
(b) *tracks*: one record's bins (:mod:`.bins`) on the top principal components (fitted on its file's bins, or a
    saved projection), one stacked axis per component (y label ``PC<j>``), against the record's reference
    position (x label ``<contig> position (bp)``, 0-based; minus-strand records drawn in reference order; a FASTA
    record without coordinates is its own contig from 0). Each bin is drawn at its centre.

The image is ``width`` x ``height`` inches at ``dpi`` (default 10 x 5 in at 100 dpi: a 1000 x 500 pixel PNG),
panel (a) on the left. The format follows the file name (``.png``, ``.svg``, ``.pdf``); SVG keeps text as text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genoconv.coords import Coords
from genoconv.errors import InputError, InputFileError, cannot_write
from genoconv.store import EmbeddingsFile
from genoconv.viz.bins import Bins, placement, record_bins, reference_intervals
from genoconv.viz.projection import Projection, fit_projection

IMAGE_SUFFIXES = (".png", ".svg", ".pdf")
METHODS = ("pca", "umap")
UNLABELLED = "unlabelled"
ANNOTATE_UP_TO = 20  # points named by their record id in the pooled panel


def require_matplotlib():
    """matplotlib, or a one-line InputError (exit 2) saying how to install it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401  (fails on a broken install, not later)
    except ImportError:
        raise InputError("plotting needs matplotlib: pip install 'genoconv[viz]' (or pip install matplotlib)") from None
    return matplotlib


def read_labels(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{id: label}`` from a TSV of ``id<TAB>label`` lines (a first line ``id<TAB>label`` is a header)."""
    labels: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.startswith("#"):
                    continue
                fields = line.split("\t")
                if len(fields) != 2:
                    raise InputError(f"{path}: line {line_no}: expected 'id<TAB>label', found {len(fields)} columns")
                if line_no == 1 and fields[0].lower() == "id":
                    continue
                if fields[0] in labels:
                    raise InputError(f"{path}: line {line_no}: id {fields[0]!r} is labelled twice")
                labels[fields[0]] = fields[1]
    except OSError as err:
        raise InputFileError(f"cannot read {path}: {err.strerror or err}") from None
    return labels


@dataclass
class PooledPoints:
    """Panel (a): ``xy`` (n, 2), the record ``ids`` and ``group`` of each point, and the two axis labels."""

    xy: np.ndarray
    ids: list[str]
    group: list[str]
    axis_labels: tuple[str, str]
    title: str


def pooled_points(files: list[EmbeddingsFile], *, mode: str | None = None, layer: int | None = None,
                  labels: dict[str, str] | None = None, method: str = "pca") -> PooledPoints:
    """The pooled vectors of every record of ``files`` on two axes (``mode`` default: each file's first)."""
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    blocks, group = [], []
    names = [f.path.name for f in files]
    for f, name in zip(files, names):
        _same_model(files[0], f, layer)
        use = mode or (f.pools[0] if f.pools else "mean")
        if use not in f.pools:
            raise InputError(f"{f.path} has no pooled {use!r} vectors (stored: {', '.join(f.pools) or 'none'}); "
                             "embed with --pool, or draw only the tracks (--panels tracks)")
        try:
            blocks.append(np.asarray(f.pooled(use, layer), np.float64))
        except (KeyError, IndexError) as err:
            raise InputError(str(err).strip("'\"")) from None
        shown = name if names.count(name) == 1 else str(f.path)
        group += [labels.get(rid, UNLABELLED) for rid in f.ids] if labels is not None else [shown] * len(f)
    x = np.concatenate(blocks)
    ids = [rid for f in files for rid in f.ids]
    if labels is not None and all(g == UNLABELLED for g in group):
        raise InputError("no record id of the embeddings is in the label table")
    mode_text = mode or (files[0].pools[0] if files[0].pools else "pooled")
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise InputError("--method umap needs umap-learn: pip install umap-learn") from None
        if len(x) < 4:
            raise InputError(f"UMAP needs at least 4 records, the files have {len(x)}")
        xy = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=0).fit_transform(x)
        return PooledPoints(np.asarray(xy), ids, group, ("UMAP 1", "UMAP 2"), f"{mode_text} vectors, UMAP")
    if len(x) < 2:  # one record has no spread to project; its tracks can still be drawn
        raise InputError(f"pooled vectors of {', '.join(names)}: {len(x)} record(s); the pooled panel's projection "
                         "needs at least 2 (draw this record's tracks alone with --panels tracks)")
    proj = fit_projection([x], min(2, x.shape[1]), what=f"pooled vectors of {', '.join(names)}")
    xy = proj.apply(x)
    if xy.shape[1] == 1:
        xy = np.column_stack([xy, np.zeros(len(xy))])
    ratio = list(proj.explained_ratio) + [0.0]
    axis = tuple(f"PC{j + 1} ({100 * ratio[j]:.1f}% of variance)" for j in range(2))
    return PooledPoints(xy, ids, group, axis, f"{mode_text} vectors of {len(x)} records, PCA")


def _same_model(first: EmbeddingsFile, other: EmbeddingsFile, layer: int) -> None:
    """Vectors share axes only when they come from the same model checkpoint and layer."""
    try:
        a, b = ((f.provenance.get("checkpoint_sha256"), f.resolve_layer(layer)) for f in (first, other))
    except (KeyError, IndexError) as err:
        raise InputError(str(err).strip("'\"")) from None
    if a != b:
        raise InputError(f"{other.path} comes from another model or layer than {first.path} (checkpoint "
                         f"{str(b[0])[:12]}…, layer {b[1]} vs {str(a[0])[:12]}…, layer {a[1]}): their vectors "
                         "share no axes")


@dataclass
class RecordTracks:
    """Panel (b): one record's bins on the reference (``centres``) and their ``values`` (n, k)."""

    record_id: str
    coords: Coords
    centres: np.ndarray
    values: np.ndarray
    bins: Bins


def record_tracks(f: EmbeddingsFile, record_id: str, bins: Bins, projection: Projection) -> RecordTracks:
    """One record's bins projected and placed on the reference (in reference order)."""
    length = int(f.lengths[f.ids.index(record_id)])
    coords = placement(f, record_id, length)
    if coords is None:
        raise InputError(f"{f.path}: record {record_id!r} has no reference coordinates (an unmapped read?)")
    rows = record_bins(f, record_id, length, bins)
    starts, ends, order = reference_intervals(coords, length, bins.size, len(rows))
    return RecordTracks(record_id, coords, (starts + ends) / 2, projection.apply(rows)[order], bins)


def draw(output: str | os.PathLike[str], *, pooled: PooledPoints | None = None, tracks: RecordTracks | None = None,
         width: float = 10.0, height: float = 5.0, dpi: int = 100):
    """Draw the panels given and save the image; returns the matplotlib Figure (for inspection)."""
    output = Path(output)
    if output.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{output}: image format from the name: {', '.join(IMAGE_SUFFIXES)}")
    if not output.parent.exists():
        raise InputFileError(f"{output}: output folder {output.parent} does not exist")
    if pooled is None and tracks is None:
        raise InputError("nothing to draw: no panel asked for")
    matplotlib = require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "genoconv", "font.size": 9}):
        fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
        k = tracks.values.shape[1] if tracks is not None else 1
        both = pooled is not None and tracks is not None
        grid = fig.add_gridspec(k, 2 if both else 1, width_ratios=[1, 1.6] if both else None)
        if pooled is not None:
            _scatter(fig.add_subplot(grid[:, 0]), pooled)
        if tracks is not None:
            column = 1 if both else 0
            axes = [fig.add_subplot(grid[0, column])]
            axes += [fig.add_subplot(grid[j, column], sharex=axes[0]) for j in range(1, k)]
            c = tracks.coords
            one = len(tracks.centres) == 1  # one bin: a record of 1 base, or one shorter than a bin
            if one:  # a line through one point draws nothing: a marker instead, on the record's span
                axes[0].set_xlim(c.start, c.end)
            for j, ax in enumerate(axes):
                ax.plot(tracks.centres, tracks.values[:, j], lw=0.9, color=f"C{j}", marker="o" if one else None)
                ax.set_ylabel(f"PC{j + 1}")
                ax.xaxis.set_major_formatter(FuncFormatter(_position_label))
                if j < k - 1:
                    ax.tick_params(labelbottom=False)
            if c.contig == tracks.record_id and c.start == 0:
                where = f"{tracks.record_id}, {c.end:,} bp"
            else:
                flipped = ", drawn in reference order" if c.strand == "-" else ""
                where = f"{tracks.record_id}\nat {c.contig}:{c.start + 1:,}-{c.end:,} ({c.strand}{flipped})"
            axes[0].set_title(f"{where}\n{tracks.bins.describe()}", fontsize=8)
            axes[-1].set_xlabel(f"{c.contig} position (bp)")
        try:
            png = {"pil_kwargs": {"optimize": True}} if output.suffix.lower() == ".png" else {}
            fig.savefig(output, dpi=dpi, **png)
        except OSError as err:
            raise cannot_write(output, err) from None
    return fig


def _position_label(bp: float, _pos) -> str:
    """A track's x tick label: a span of a few bases gets ticks between bases, left unlabelled rather than
    rounded to a repeated position."""
    return f"{bp:,.0f}" if abs(bp - round(bp)) < 1e-6 else ""


def _scatter(ax, pooled: PooledPoints) -> None:
    groups = list(dict.fromkeys(pooled.group))
    size = float(np.clip(3000 / max(1, len(pooled.group)), 6, 40))
    for i, name in enumerate(groups):
        mask = np.asarray([g == name for g in pooled.group])
        colour = "0.6" if name == UNLABELLED else f"C{i % 10}"
        ax.scatter(pooled.xy[mask, 0], pooled.xy[mask, 1], s=size, color=colour, label=name, alpha=0.8,
                   edgecolors="none")
    if len(pooled.ids) <= ANNOTATE_UP_TO:
        ax.margins(x=0.3, y=0.1)  # room for the names, which are clipped to the axes and left out of the layout
        middle = float(pooled.xy[:, 0].min() + pooled.xy[:, 0].max()) / 2
        for (x, y), rid in zip(pooled.xy, pooled.ids):
            right = x <= middle  # names point inwards
            text = ax.annotate(rid, (x, y), xytext=(4 if right else -4, 3), textcoords="offset points", fontsize=7,
                               ha="left" if right else "right", annotation_clip=False, clip_on=True)
            text.set_in_layout(False)
    ax.set_xlabel(pooled.axis_labels[0])
    ax.set_ylabel(pooled.axis_labels[1])
    ax.set_title(pooled.title, fontsize=8)
    if len(groups) <= 12:
        ax.legend(fontsize=7, frameon=False, loc="best")
