"""``genoconv plot``: a picture of embeddings (see :mod:`genoconv.viz.plot` for the panels and their labels)."""

from __future__ import annotations

import logging

from ..errors import InputError
from . import params as p

log = logging.getLogger("genoconv")


def plot(
    paths: p.EmbeddingsPaths,
    output: p.Image = ...,
    panels: p.PanelsOpt = p.Panels.both,
    record: p.Record = None,
    labels: p.Labels = None,
    method: p.MethodOpt = p.Method.pca,
    pool: p.PooledMode = None,
    layer: p.ReadLayer = None,
    components: p.Components = 3,
    source: p.SourceOpt = p.RowSource.auto,
    bin_size: p.Bin = None,
    projection: p.ProjectionIn = None,
    width: p.Width = 10.0,
    height: p.Height = 5.0,
    dpi: p.Dpi = 100,
) -> None:
    """Draw the pooled vectors on two axes (coloured by file or label) and one record's top components along the
    reference."""
    from contextlib import ExitStack

    from ..options import split_modes
    from ..store import open_embeddings
    from ..viz import choose_bins, file_projection
    from ..viz.plot import draw, pooled_points, read_labels, record_tracks, require_matplotlib

    require_matplotlib()  # before any work: the one-line install hint
    mode = None if pool is None else split_modes(pool)
    if mode is not None and len(mode) != 1:
        raise InputError(f"the pooled panel shows one pooling mode; got --pool {pool}")
    with ExitStack() as stack:
        files = [stack.enter_context(open_embeddings(path)) for path in paths]
        pooled = tracks = None
        if panels in (p.Panels.both, p.Panels.pooled):
            pooled = pooled_points(files, mode=mode[0] if mode else None, layer=layer,
                                   labels=read_labels(labels) if labels is not None else None, method=method.value)
        if panels in (p.Panels.both, p.Panels.tracks):
            if record is None:
                f = files[0]
                record_id = f.ids[int(f.lengths.argmax())]
            else:
                f = next((f for f in files if record in f), None)
                if f is None:
                    raise InputError(f"no record {record!r} in {', '.join(map(str, paths))}")
                record_id = record
            bins = choose_bins(f, source.value, bin_size, layer)
            tracks = record_tracks(f, record_id, bins, file_projection(f, bins, components, projection))
        draw(output, pooled=pooled, tracks=tracks, width=width, height=height, dpi=dpi)
    log.info("wrote %s (%d x %d pixels at %d dpi)", output, round(width * dpi), round(height * dpi), dpi)
