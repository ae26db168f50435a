"""Pieces several commands share: loading a model the way ``--model/--device/--dtype`` say, and the input flags."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

from ..errors import InputError
from ..options import ReadOptions


def load_model(model: str | None, device: str, dtype: str, *, strict_tokenizer: bool = False,
               shift: float | None = None, max_memory: int | None = None):
    """The :class:`~genoconv.api.Embedder` for ``--model`` (None: the shipped default) on ``device`` in ``dtype``."""
    from ..api import Embedder

    return Embedder.from_pretrained(model, device=device, dtype=dtype,
                                    tokenizer="strict" if strict_tokenizer else "clean", shift=shift,
                                    max_memory=max_memory)


def read_options(flags: Mapping[str, Any]) -> ReadOptions:
    """The :class:`ReadOptions` of a command whose input flags are named as its fields (pass the command's
    ``locals()``); a usage error when there is nothing to read."""
    read = ReadOptions(**{f.name: flags[f.name] for f in fields(ReadOptions)})
    if not flags["inputs"] and read.regions is None:
        raise InputError("give at least one INPUT file, or --reference and --regions")
    return read
