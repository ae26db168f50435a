"""genoconv: single-nucleotide DNA embeddings with HyenaDNA long-convolution models."""

from ._version import __version__
from .api import Embedder

__all__ = ["Embedder", "__version__", "open_embeddings"]


def open_embeddings(path):
    """Open a genoconv HDF5 output lazily (see :mod:`genoconv.store`)."""
    from .store import open_embeddings as _open

    return _open(path)
