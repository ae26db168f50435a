"""Pieces several commands share: loading a model the way ``--model/--device/--dtype`` say."""

from __future__ import annotations


def load_model(model: str | None, device: str, dtype: str, *, strict_tokenizer: bool = False,
               shift: float | None = None, max_memory: int | None = None):
    """The :class:`~genoconv.api.Embedder` for ``--model`` (None: the shipped default) on ``device`` in ``dtype``."""
    from ..api import Embedder

    return Embedder.from_pretrained(model, device=device, dtype=dtype,
                                    tokenizer="strict" if strict_tokenizer else "clean", shift=shift,
                                    max_memory=max_memory)
