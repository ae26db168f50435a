"""genoconv: single-nucleotide DNA embeddings with HyenaDNA long-convolution models.

The names below are imported on first use, so ``from genoconv import open_embeddings`` needs only numpy and h5py
(reading a cluster's output on a laptop), while ``Embedder`` brings torch in when it is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__

_LAZY = {
    "Embedder": "genoconv.api",
    "open_embeddings": "genoconv.store.reader",
    "EmbedOptions": "genoconv.options",
    "list_models": "genoconv.model.registry",
    "resolve_model": "genoconv.model.registry",
}

__all__ = ["Embedder", "EmbedOptions", "__version__", "list_models", "open_embeddings", "resolve_model"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .api import Embedder
    from .model.registry import list_models, resolve_model
    from .options import EmbedOptions
    from .store.reader import open_embeddings


__getattr__ = lazy_exports("genoconv", globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
