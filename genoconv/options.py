"""What one run computes, reads and stores: the option sets that the CLI, the Python API and the runner share.

Each option is defined once, here, with its check; ``genoconv embed``'s flags, ``Embedder.embed_many``'s keywords
and ``runner.embed_to_file`` all build these dataclasses. No torch and no h5py: this module sits at the bottom of
the import graph (README, "Layout").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .errors import InputError

POOL_MODES = ("mean", "max", "last")
STORE_DTYPES = ("float16", "float32")
COMPRESSIONS = ("none", "gzip", "lzf")
DTYPE_NAMES = ("float32", "bfloat16", "float16")

_BYTE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20, "g": 1e9,
               "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def parse_bytes(text: str | int | None, option: str = "--max-memory") -> int | None:
    """``"4GiB"``, ``"500MB"``, ``"8G"`` or a plain number of bytes -> int bytes (> 0); None stays None."""
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?i?b?)?\s*", str(text).lower())
        scale = _BYTE_UNITS.get(m.group(2) or "") if m else None
        if m is None or scale is None:
            raise InputError(f"{option} {text!r}: expected a size such as 4GiB, 500MB or 8G")
        try:
            value = int(float(m.group(1)) * scale)
        except ValueError:
            raise InputError(f"{option} {text!r}: expected a size such as 4GiB, 500MB or 8G") from None
    if value <= 0:
        raise InputError(f"{option} {text!r}: must be more than 0 bytes")
    return value


def split_modes(values: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``["mean,max", "last"]`` -> ``("mean", "max", "last")`` (order kept, repeats dropped)."""
    if isinstance(values, str):
        values = [values]
    modes = [m.strip() for v in values for m in v.split(",") if m.strip()]
    return tuple(dict.fromkeys(modes))


@dataclass(frozen=True)
class EmbedOptions:
    """What is computed per record, and within which resources."""

    layers: tuple[int, ...] = (-1,)
    per_nucleotide: bool = True
    pools: tuple[str, ...] = ("mean",)
    window: int | None = None  # stored windowed means, one row per `window` bases
    rc_average: bool = False
    filter_len: int | None = None  # partial convolution: first K taps (None: full filter, K = max_seq_len past it)
    chunk_size: int | None = None  # streaming chunk C (None: chosen from the memory budget)
    freq_keep: float = 1.0  # frequency-sparse convolution: fraction of low-frequency bins kept
    max_memory: int | None = None  # bytes the run may use on its device (None: a default per device)
    tokens_per_batch: int | None = None  # padded bases per batch of short records (None: from max_memory)

    def __post_init__(self) -> None:
        layers = (self.layers,) if isinstance(self.layers, int) else self.layers  # layers=-2 means (-2,)
        object.__setattr__(self, "layers", tuple(int(x) for x in layers))
        if not self.layers:
            raise InputError("--layer: give at least one layer")
        object.__setattr__(self, "pools", split_modes(self.pools))
        object.__setattr__(self, "max_memory", parse_bytes(self.max_memory))
        bad = [p for p in self.pools if p not in POOL_MODES]
        if bad:
            raise InputError(f"--pool: unknown mode(s) {', '.join(bad)} (choose from {', '.join(POOL_MODES)})")
        for name in ("window", "chunk_size", "filter_len", "tokens_per_batch"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not float(value).is_integer() or int(value) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not 0.0 < self.freq_keep <= 1.0:
            raise InputError(f"--freq-keep must be in (0, 1], got {self.freq_keep}")
        if not (self.per_nucleotide or self.pools or self.window):
            raise InputError("nothing to store: enable --per-nucleotide, a --pool mode or --window")


@dataclass(frozen=True)
class ReadOptions:
    """How inputs become records (see :func:`genoconv.io.open_records`)."""

    reference: str | None = None
    regions: str | None = None
    feature: str = "gene"
    strand_aware: bool = True
    include_secondary: bool = False
    include_supplementary: bool = False
    dedupe_ids: bool = False

    def __post_init__(self) -> None:
        for name in ("reference", "regions"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))

    def as_kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class StoreOptions:
    """How the output file is written."""

    store_dtype: str = "float16"  # per-nucleotide rows
    compression: str | None = None  # none, gzip or lzf
    commit_interval: float = 2.0  # seconds between durable commits (0: every record)
    checkpoint_interval: float = 300.0  # seconds between checkpoints of a long (streamed) record in progress
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.compression == "none":
            object.__setattr__(self, "compression", None)
        if self.store_dtype not in STORE_DTYPES:
            raise InputError(f"--store-dtype {self.store_dtype!r}: expected {' or '.join(STORE_DTYPES)}")
        if (self.compression or "none") not in COMPRESSIONS:
            raise InputError(f"--compression {self.compression!r}: expected {', '.join(COMPRESSIONS)}")
        if self.commit_interval < 0:
            raise InputError(f"--commit-interval must be >= 0, got {self.commit_interval}")
        if self.checkpoint_interval < 0:
            raise InputError(f"--checkpoint-interval must be >= 0, got {self.checkpoint_interval}")


OPTION_SETS = (EmbedOptions, ReadOptions, StoreOptions)


def split_options(options: Mapping[str, Any]) -> tuple[EmbedOptions, ReadOptions, StoreOptions]:
    """Keyword arguments (as ``Embedder.embed_many``/``embed_file`` take them) -> the three option sets.

    An unknown keyword is an :class:`InputError` naming it, so a typo never silently changes nothing.
    """
    by_set: list[dict[str, Any]] = [{} for _ in OPTION_SETS]
    for key, value in options.items():
        for i, cls in enumerate(OPTION_SETS):
            if key in cls.__dataclass_fields__:
                by_set[i][key] = value
                break
        else:
            known = sorted(k for cls in OPTION_SETS for k in cls.__dataclass_fields__)
            raise InputError(f"unknown option {key!r} (known: {', '.join(known)})")
    embed, read, store = (cls(**kw) for cls, kw in zip(OPTION_SETS, by_set))
    return embed, read, store
