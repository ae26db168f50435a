"""How each record is computed: the plan, decided once per record from one memory model and passed explicitly.

A :class:`Plan` is what the model's forward receives (its :class:`~genoconv.model.hyena.ConvSettings`) and what the
store records per record (``/modes``), so what is stored is what ran:

- ``exact``: the whole record in one forward pass (it fits the model's context and the memory budget);
- ``partial``: a record longer than ``max_seq_len`` is convolved with the first K filter taps only (K defaults to
  ``max_seq_len``; the implicit filter is undefined past it) — never a silent truncation of the record itself;
- ``streamed``: a record too large for one pass is processed in chunks of C bases, each layer carrying exactly the
  inputs its causal convolutions look back on, so the result equals the one-pass result (to float rounding) while
  memory is O(layers · (K + C) · d_model), whatever the length.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..model.embedder import LoadedModel
from ..model.hyena import ConvSettings
from ..options import EmbedOptions

log = logging.getLogger("genoconv.engine")

# Bytes of activations and temporaries per base and per model dimension in one exact forward pass, for planning.
# Measured on an H200 (BENCHMARKS.md): a bf16 pass over 1 Mbp at d_model 256 peaks at ~38 GiB of which ~24 GiB are
# cached filters, i.e. ~55 B per base and dimension of activations; 96 leaves room for fp32 compute.
EXACT_BYTES_PER_BASE_DIM = 96
MIN_CHUNK = 4096


@dataclass(frozen=True)
class Plan:
    """How one record is computed: its convolution settings and, when streamed, the chunk length."""

    conv: ConvSettings = ConvSettings()
    chunk_size: int | None = None  # None: one pass

    @property
    def filter_len(self) -> int | None:
        return self.conv.filter_len

    @property
    def one_pass_exact(self) -> bool:
        return self.conv.filter_len is None and self.chunk_size is None

    @property
    def mode(self) -> str:
        parts = ["exact" if self.conv.filter_len is None else f"partial:K={self.conv.filter_len}"]
        if self.chunk_size is not None:
            parts.append(f"streamed:C={self.chunk_size}")
        return ";".join(parts)


class Planner:
    """Turns (record length, options, model, memory budget) into a :class:`Plan`."""

    def __init__(self, model: LoadedModel, options: EmbedOptions):
        self.model = model
        self.opts = options
        self.d = model.d_model
        self.max_memory = options.max_memory or model.max_memory
        if options.filter_len is not None and options.filter_len > model.max_seq_len:
            raise InputError(f"--filter-len {options.filter_len} exceeds the model's max_seq_len "
                             f"{model.max_seq_len}: the implicit filter is only defined up to it")
        # Largest record (bases) one exact pass may take within the budget.
        self.exact_limit = max(1024, self.max_memory // (EXACT_BYTES_PER_BASE_DIM * self.d))
        self.tokens_per_batch = options.tokens_per_batch or max(1024, min(self.exact_limit, 1 << 18))

    def plan(self, length: int) -> Plan:
        """Exact when the record fits context and budget; partial past max_seq_len; streamed when too large."""
        k = self.opts.filter_len
        if k is None and length > self.model.max_seq_len:
            k = self.model.max_seq_len
        if k is not None and k >= length:
            k = None  # a filter as long as the record: the convolution is exact
        chunk = self.opts.chunk_size
        if chunk is None and length > self.exact_limit:
            chunk = self.choose_chunk(k or length)
        if chunk is not None and chunk >= length:
            chunk = None
        return Plan(ConvSettings(k, self.opts.freq_keep), chunk)

    def runs_alone(self, length: int) -> bool:
        """Records that run by themselves: partial/streamed plans, or more than half a batch."""
        return not self.plan(length).one_pass_exact or length > self.tokens_per_batch // 2

    def choose_chunk(self, filter_len: int) -> int:
        """Largest chunk whose activations plus the carried state fit the budget (overlap-save wants C >= K)."""
        n_layer = self.model.config.n_layer
        state_bytes = n_layer * filter_len * self.d * (4 if self.model.dtype == torch.float32 else 2)
        per_base = EXACT_BYTES_PER_BASE_DIM * self.d
        chunk = (self.max_memory - state_bytes) // per_base - filter_len  # the FFT spans history + chunk
        if chunk < MIN_CHUNK:
            need = state_bytes + (filter_len + MIN_CHUNK) * per_base
            log.warning("memory budget %.1f GiB is below the %.1f GiB a filter of %d taps needs; using chunks of %d",
                        self.max_memory / 2**30, need / 2**30, filter_len, MIN_CHUNK)
            chunk = MIN_CHUNK
        return int(1 << int(math.log2(chunk))) if chunk >= 2 * MIN_CHUNK else int(chunk)
