"""HyenaDNA: configuration, the network, its tokenizer, checkpoints, named models and the loaded-model core.

Names are imported on first use, so the torch-free parts (``registry``, ``config``) load without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_LAZY = {
    "HyenaConfig": "genoconv.model.config",
    "HyenaDNA": "genoconv.model.hyena",
    "ConvSettings": "genoconv.model.hyena",
    "Tokenizer": "genoconv.model.tokenizer",
    "LoadedModel": "genoconv.model.embedder",
}

__all__ = ["ConvSettings", "HyenaConfig", "HyenaDNA", "LoadedModel", "Tokenizer"]

if TYPE_CHECKING:  # pragma: no cover
    from .config import HyenaConfig
    from .embedder import LoadedModel
    from .hyena import ConvSettings, HyenaDNA
    from .tokenizer import Tokenizer


__getattr__ = lazy_exports("genoconv.model", globals(), _LAZY)
