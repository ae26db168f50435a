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
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..model.embedder import LoadedModel
from ..model.hyena import ConvSettings
from ..ops import conv_bytes, planned_backend
from ..ops.cuda import SPECTRUM_BLOCK_BYTES
from ..options import EmbedOptions

log = logging.getLogger("genoconv.engine")

MIN_CHUNK = 4096


@dataclass(frozen=True)
class Plan:
    """How one record is computed: its convolution settings and, when streamed, the chunk length.

    ``peak_bytes`` is the memory model's prediction for the record's forward passes (activations, convolution
    workspaces, filters that are not cached); ``backend`` what runs the long convolutions. Both are what the planner
    decided from, and what a GPU test checks against ``torch.cuda.max_memory_allocated``.
    """

    conv: ConvSettings = ConvSettings()
    chunk_size: int | None = None  # None: one pass
    backend: str = field(default="reference", compare=False)
    peak_bytes: int = field(default=0, compare=False)

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
    """Turns (record length, options, model, memory budget) into a :class:`Plan`, from one memory model.

    The budget (``--max-memory``, else the model's: 80% of free GPU memory at load, a quarter of RAM up to 8 GiB on
    the CPU) holds the filters the layers keep (at most a quarter of it; ``LoadedModel``) and the activations of
    one forward pass (the rest): a record runs in one pass when :meth:`forward_bytes` fits, else in the largest
    chunks that do.
    """

    def __init__(self, model: LoadedModel, options: EmbedOptions):
        self.model = model
        self.opts = options
        cfg = model.config
        self.d, self.d_inner, self.n_layer = cfg.d_model, cfg.d_inner, cfg.n_layer
        self.max_memory = options.max_memory or model.max_memory
        if options.filter_len is not None and options.filter_len > model.max_seq_len:
            raise InputError(f"--filter-len {options.filter_len} exceeds the model's max_seq_len "
                             f"{model.max_seq_len}: the implicit filter is only defined up to it")
        self.backend = planned_backend(model.device, model.dtype, options.freq_keep)
        self.elt = torch.finfo(model.dtype).bits // 8
        self.n_stored = len(model.resolve_layers(options.layers))
        # What the layers' filter caches may hold (LoadedModel gives each layer max_memory / (4 n_layer)).
        self.filter_per_layer = model.model.filter_cache_bytes()
        self.filter_reserve = min(self.max_memory // 4, self.n_layer * self.filter_per_layer)
        self.activation_budget = max(0, self.max_memory - self.filter_reserve)
        # Most tokens one exact pass may take within the budget (batched records share it).
        self.exact_limit = self._largest(lambda n: self.forward_bytes(1, n, 0, min(n, model.max_seq_len)), 1 << 26)
        self.tokens_per_batch = options.tokens_per_batch or max(1024, min(self.exact_limit, 1 << 18))

    # ---- the memory model
    def forward_bytes(self, batch: int, length: int, history: int, n_taps: int) -> int:
        """Predicted peak bytes of one forward pass over (batch, length) tokens with ``history`` carried inputs and a
        filter of ``n_taps`` taps, excluding filters the layers keep cached (their reserve is set aside)."""
        d, elt, tokens = self.d, self.elt, batch * length
        n_fft, conv_extra = conv_bytes(batch, d, length, n_taps, history, self.backend, self.model.device)
        resident = tokens * d * 4 * (1 + self.n_stored)  # the fp32 residual stream and the hidden states kept
        # mixer: LayerNorm out, in_proj out (3d), x0 and the gated input, the convolution's output, out_proj out
        mixer = tokens * d * elt * 8 + conv_extra
        mlp = tokens * elt * (3 * d + self.d_inner)
        spectrum = d * n_fft * 4  # kernel-ordered (or complex64) spectrum, built per call when not cached
        filter_bytes = 0 if self._filter_cached(n_taps, n_fft) else d * n_taps * 4 + spectrum + SPECTRUM_BLOCK_BYTES
        return resident + max(mixer, mlp) + filter_bytes

    def _filter_cached(self, n_taps: int, n_fft: int) -> bool:
        return 0 < self.d * (n_taps * 4 + n_fft * 4) <= self.filter_per_layer

    def _largest(self, nbytes, upper: int) -> int:
        """Largest n in [1024, upper] whose ``nbytes(n)`` (increasing in n) fits the activation budget (at least
        1024, so a tiny budget still makes progress), by bisection."""
        if nbytes(upper) <= self.activation_budget:
            return upper
        lo, hi = 1024, upper
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if nbytes(mid) <= self.activation_budget else (lo, mid)
        return lo

    # ---- plans
    def plan(self, length: int) -> Plan:
        """Exact when the record fits context and budget; partial past max_seq_len; streamed when too large."""
        k = self.opts.filter_len
        if k is None and length > self.model.max_seq_len:
            k = self.model.max_seq_len
        if k is not None and k >= length:
            k = None  # a filter as long as the record: the convolution is exact
        n_taps = k or length
        chunk = self.opts.chunk_size
        if chunk is None and self.forward_bytes(1, length, 0, min(n_taps, length)) > self.activation_budget:
            chunk = self.choose_chunk(n_taps)
        if chunk is not None and chunk >= length:
            chunk = None
        if chunk is None:
            peak = self.forward_bytes(1, length, 0, min(n_taps, length))
        else:
            peak = self.forward_bytes(1, chunk, n_taps - 1, n_taps) + self.state_bytes(n_taps)
        return Plan(ConvSettings(k, self.opts.freq_keep), chunk, self.backend, peak)

    def runs_alone(self, length: int) -> bool:
        """Records that run by themselves: partial/streamed plans, or more than half a batch."""
        return not self.plan(length).one_pass_exact or length > self.tokens_per_batch // 2

    def state_bytes(self, filter_len: int) -> int:
        """What a stream carries between chunks: each layer's last K-1 gated inputs (and 2 short-conv inputs)."""
        history_elt = 4 if self.model.dtype == torch.float32 else 2
        return self.n_layer * self.d * (filter_len * history_elt + 3 * 2 * self.elt)

    def choose_chunk(self, filter_len: int) -> int:
        """Largest chunk whose forward pass plus the carried state fit the budget (a power of two from 8K up)."""
        budget = self.activation_budget - self.state_bytes(filter_len)

        def fits(c: int) -> bool:
            return self.forward_bytes(1, c, filter_len - 1, filter_len) <= budget

        if not fits(MIN_CHUNK):
            need = self.forward_bytes(1, MIN_CHUNK, filter_len - 1, filter_len) + self.state_bytes(filter_len)
            log.warning("memory budget %.1f GiB is below the %.1f GiB a filter of %d taps needs; using chunks of %d",
                        self.max_memory / 2**30, (need + self.filter_reserve) / 2**30, filter_len, MIN_CHUNK)
            return MIN_CHUNK
        chunk = MIN_CHUNK
        while chunk < (1 << 26) and fits(chunk * 2):
            chunk *= 2
        return chunk
