"""Seeing embeddings: principal-component projections, genome-browser tracks, pooled tables and pictures.

Above the store, below the command line (layer 3): numpy and the store's reader, never torch. Optional packages
are imported only where needed, each with a one-line error saying how to install it: pyBigWig (bigWig tracks),
pyarrow (Parquet tables), matplotlib (pictures), umap-learn (UMAP). Modules: ``projection`` (PCA fit, apply, save
and load), ``bins`` (the rows of a record and their place on the reference), ``tracks`` (bigWig/bedGraph),
``tables`` (pooled vectors keyed by id), ``plot`` (the figure).
"""

from genoconv.viz.bins import Bins, choose_bins, file_projection, iter_bins, placement, record_bins, reference_intervals
from genoconv.viz.projection import Projection, fit_projection
from genoconv.viz.tables import pooled_table, write_table
from genoconv.viz.tracks import collect_tracks, export_tracks, read_chrom_sizes

__all__ = ["Bins", "Projection", "choose_bins", "collect_tracks", "export_tracks", "file_projection",
           "fit_projection", "iter_bins", "placement", "pooled_table", "read_chrom_sizes", "record_bins",
           "reference_intervals", "write_table"]
