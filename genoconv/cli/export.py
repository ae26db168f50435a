"""``genoconv export``: principal-component tracks for genome browsers (bigWig/bedGraph) and pooled tables for R and
pandas (TSV/Parquet); a thin shell over :mod:`genoconv.viz`."""

from __future__ import annotations

import logging

from ..errors import InputError
from . import params as p

log = logging.getLogger("genoconv")


def export(
    path: p.EmbeddingsPath,
    tracks: p.Tracks = None,
    fmt: p.TrackFormatOpt = p.TrackFormat.bigwig,
    table: p.Table = None,
    pool: p.PoolSelect = [],  # noqa: B006 - Typer reads the default
    layer: p.ReadLayer = None,
    components: p.Components = 3,
    source: p.SourceOpt = p.RowSource.auto,
    bin_size: p.Bin = None,
    projection: p.ProjectionIn = None,
    save_projection: p.SaveProjection = None,
    chrom_sizes: p.ChromSizes = None,
    overlap: p.OverlapOpt = p.Overlap.error,
) -> None:
    """Export embeddings: principal-component tracks (bigWig/bedGraph) on the reference, pooled vectors as a table."""
    from ..options import split_modes
    from ..store import open_embeddings
    from ..viz import choose_bins, export_tracks, file_projection, pooled_table, write_table

    if tracks is None and table is None and save_projection is None:
        raise InputError("nothing to export: give --tracks PREFIX, --table FILE and/or --save-projection FILE")
    if projection is not None and save_projection is not None:
        raise InputError("--projection and --save-projection exclude each other: a loaded projection is not refitted")
    with open_embeddings(path) as f:
        if table is not None:
            write_table(pooled_table(f, list(split_modes(pool)), layer), table)
            log.info("wrote %s: pooled vectors of %d records", table, len(f))
        if tracks is None and save_projection is None:
            return
        bins = choose_bins(f, source.value, bin_size, layer)
        proj = file_projection(f, bins, components, projection)
        if save_projection is not None:
            proj.save(save_projection)
            shares = ", ".join(f"{100 * r:.1f}%" for r in proj.explained_ratio)
            log.info("saved the projection to %s (%s; variance explained: %s)", save_projection, bins.describe(),
                     shares)
        if tracks is not None:
            for written in export_tracks(f, tracks, proj, bins, fmt=fmt.value, chrom_sizes=chrom_sizes,
                                         overlap=overlap.value):
                log.info("wrote %s", written)
