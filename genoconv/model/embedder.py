"""The loaded-model core: a HyenaDNA network on a device, in a compute dtype, with its tokenizer and provenance.

This is what the engine runs (it imports nothing above the model layer). :class:`genoconv.api.Embedder` is the
notebook face built on it: names resolved like ``--model``, ``embed``/``embed_many``/``embed_file``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ..errors import InputError
from ..ops.cpu_alloc import keep_freed_memory
from ..options import parse_bytes
from .checkpoint import CheckpointInfo, load_checkpoint
from .hyena import EXACT, ConvSettings, HyenaDNA, StreamState
from .tokenizer import Tokenizer

# float64 evaluates everything (residual, filters, FFTs) in double precision: the fidelity oracle, not a fast path.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else the CPU; ``cuda[:i]`` must exist."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device is available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise InputError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    return dev


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise InputError(f"--dtype {dtype!r}: expected float32, bfloat16 or float16") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def default_memory_budget(device: torch.device) -> int:
    """Bytes a run may use: 80% of free GPU memory, or a quarter of RAM (at most 8 GiB) on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 8 << 30
    return int(min(ram // 4, 8 << 30))


# Filters (taps + spectra) the layers keep between calls take at most 1/FILTER_SHARE of the memory budget. A streamed
# chromosome under the large-1m model transforms [1M history | 2.2M chunk] at N = 4M: 5 GB of taps and spectrum per
# layer, 40 GB for 8 layers, which a quarter of an H200's budget did not hold, so every chunk rebuilt them.
FILTER_SHARE = 2


class LoadedModel:
    """A HyenaDNA model ready to run: tokenizer, device, compute dtype and provenance in one place.

    ``max_memory`` is the bytes runs may use on the device (None: 80% of free GPU memory, or a quarter of RAM up to
    8 GiB); half of it bounds the filter taps and spectra the layers keep between calls (``FILTER_SHARE``).
    """

    def __init__(self, model: HyenaDNA, *, name: str = "model", info: CheckpointInfo | None = None,
                 device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                 tokenizer: str = "clean", max_memory: int | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":
            keep_freed_memory()  # CPU temporaries reused call to call, not page-faulted in afresh (ops.cpu_alloc)
        if self.dtype == torch.float64:  # the oracle: every parameter and buffer in double precision too
            self.model.double()
        self.model.set_compute_dtype(self.dtype)
        self.max_memory = parse_bytes(max_memory) or default_memory_budget(self.device)
        self.model.set_filter_cache_bytes(self.max_memory // (FILTER_SHARE * model.config.n_layer))
        self.tokenizer = Tokenizer(tokenizer)
        self.name = name
        self.info = info

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "auto", dtype: str = "float32",
                        tokenizer: str = "clean", shift: float | None = None, name: str | None = None,
                        max_memory: int | None = None):
        """Load a checkpoint directory (``-hf`` or original layout)."""
        model, info = load_checkpoint(path, shift=shift)
        return cls(model, name=name or Path(path).name, info=info, device=device, dtype=dtype, tokenizer=tokenizer,
                   max_memory=max_memory)

    # ---- properties
    @property
    def config(self):
        return self.model.config

    @property
    def d_model(self) -> int:
        return self.model.config.d_model

    @property
    def max_seq_len(self) -> int:
        return self.model.config.max_seq_len

    @property
    def sha256(self) -> str:
        return self.info.sha256 if self.info else "unsaved"

    def resolve_layers(self, layers: Sequence[int]) -> list[int]:
        """Absolute hidden-state indices (sorted, distinct) for ``--layer`` values; negative count from the end."""
        try:
            return sorted({self.model.resolve_layer(i) for i in layers})
        except IndexError as exc:
            raise InputError(f"--layer: {exc}") from None

    # ---- forward
    @torch.inference_mode()
    def hidden_states(self, ids: torch.Tensor, layers: Sequence[int], stream: StreamState | None = None,
                      conv: ConvSettings = EXACT) -> dict[int, torch.Tensor]:
        """Hidden states (B, L, d) fp32 on the model's device for token ids (B, L); ``stream`` continues a
        :class:`~genoconv.model.hyena.StreamState` (the next chunk of a long record); ``conv`` selects partial /
        frequency-sparse convolutions for this call."""
        return self.model.hidden_states(ids.to(self.device), layers, stream, conv)
