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
from ..model.embedder import FILTER_SHARE, LoadedModel
from ..model.hyena import ConvSettings
from ..ops import conv_bytes, max_conv_length, planned_backend
from ..ops.cuda import spectrum_build_bytes
from ..ops.layout import carried_inputs
from ..options import EmbedOptions

log = logging.getLogger("genoconv.engine")

MIN_CHUNK = 4096
# Token budget of a batch on the CPU: records longer than half of it run alone. A batch buys the CPU no parallelism
# (each op is already threaded over one record's length) and multiplies every temporary by B (2 cores, tiny-16k
# shape: 16K windows in batches of 16 peaked at 2.1 GiB, one at a time 0.6; 150-bp reads batched 16K tokens at a
# time ran as fast as in batches of 256K).
CPU_TOKENS_PER_BATCH = 16_384
# On the CPU a record whose filter is short next to it (a partial convolution) streams in chunks of at most
# CPU_MAX_CHUNK bases (or 4 (K - 1), so a long filter's history stays a small share of each transform), whatever the
# budget would allow: temporaries of a few hundred MiB and more are mapped and page-faulted afresh on every chunk.
# E. coli genome, shipped demo (K = 16,386), 2 cores: chunks of 524,288 (the budget's choice) 114 s, 12.8 GB RSS,
# 75 s of system time; 262,144: 74.1 s, 7.5 GB; 131,072: 64.7 s, 4.2 GB; 65,536: 63.8 s, 2.5 GB, 1.3 s of system.
CPU_MAX_CHUNK = 1 << 16
# Distinct record lengths whose plans a planner keeps (a plan is a few small numbers; past this the cache restarts).
_PLAN_CACHE_SIZE = 1 << 16


@dataclass(frozen=True)
class Plan:
    """How one record is computed: its convolution settings and, when streamed, the chunk length.

    ``peak_bytes`` is the memory model's prediction for the record's forward passes (activations, convolution
    workspaces, filters: built per call, or added to the layers' caches); ``backend`` what runs the long
    convolutions. Both are what the planner
    decided from, and what a GPU test checks against ``torch.cuda.max_memory_allocated``.
    """

    conv: ConvSettings = ConvSettings()
    chunk_size: int | None = None  # None: one pass
    backend: str = field(default="reference", compare=False)
    peak_bytes: int = field(default=0, compare=False)
    # One pass in the whole budget: the layers' filter caches are emptied before the record (Planner._plan).
    clear_caches: bool = field(default=False, compare=False)

    @property
    def filter_len(self) -> int | None:
        return self.conv.filter_len

    @property
    def one_pass_exact(self) -> bool:
        return self.conv.filter_len is None and self.chunk_size is None

    @property
    def mode(self) -> str:
        parts = [] if self.conv.filter_len is None else [f"partial:K={self.conv.filter_len}"]
        if self.conv.freq_keep < 1:  # an approximation: the mode must not read "exact"
            parts.append(f"freq-sparse:F={self.conv.freq_keep:g}")
        parts = parts or ["exact"]
        if self.chunk_size is not None:
            parts.append(f"streamed:C={self.chunk_size}")
        return ";".join(parts)


class Planner:
    """Turns (record length, options, model, memory budget) into a :class:`Plan`, from one memory model.

    The budget (``--max-memory``, else the model's: 80% of free GPU memory at load, a quarter of RAM up to 8 GiB on
    the CPU) holds the filters the layers keep (at most half of it; ``LoadedModel``) and the activations of
    one forward pass (the rest): a record runs in one pass when :meth:`forward_bytes` fits, else in the largest
    chunks that do.
    """

    # Devices on which a record past the activation budget may take one pass in the whole budget (Plan.clear_caches).
    clear_caches_on: tuple[str, ...] = ("cpu",)

    def __init__(self, model: LoadedModel, options: EmbedOptions):
        self.model = model
        self.opts = options
        cfg = model.config
        self.d, self.d_inner, self.n_layer = cfg.d_model, cfg.d_inner, cfg.n_layer
        self.max_memory = options.max_memory or model.max_memory
        if options.filter_len is not None and options.filter_len > model.max_seq_len:
            raise InputError(f"--filter-len {options.filter_len} exceeds the model's max_seq_len "
                             f"{model.max_seq_len}: the implicit filter is only defined up to it")
        self.backend = planned_backend(model.device, model.dtype)
        self.max_length = max_conv_length(self.backend)  # the kernels' longest [history | chunk]
        self.elt = torch.finfo(model.dtype).bits // 8
        self.n_stored = len(model.resolve_layers(options.layers))
        # What the layers' filter caches may hold (LoadedModel: max_memory / (FILTER_SHARE n_layer) each).
        self.filter_per_layer = model.model.filter_cache_bytes()
        self.filter_reserve = min(self.max_memory // FILTER_SHARE, self.n_layer * self.filter_per_layer)
        self.activation_budget = max(0, self.max_memory - self.filter_reserve)
        # Most tokens one exact pass may take within the budget (batched records share it).
        self.exact_limit = self._largest(lambda n: self.forward_bytes(1, n, 0, min(n, model.max_seq_len)), 1 << 26)
        default_batch = max(1024, min(self.exact_limit, 1 << 18))
        if model.device.type == "cpu":
            default_batch = min(default_batch, CPU_TOKENS_PER_BATCH)
        self.tokens_per_batch = options.tokens_per_batch or default_batch
        self._plans: dict[int, Plan] = {}

    # ---- the memory model
    def forward_bytes(self, batch: int, length: int, history: int, n_taps: int) -> int:
        """Predicted peak bytes of one forward pass over (batch, length) tokens with ``history`` carried inputs and a
        filter of ``n_taps`` taps: activations, convolution workspaces, and each layer's filter while it is built
        (filters the layers keep live in the cache reserve, :meth:`cache_bytes`).

        Peak at a layer's long convolution: the fp32 residual stream and kept hidden states, the LayerNorm output,
        x0 and the gated input, the layer's filter (taps + spectrum) unless cached, and the largest of the taps' and
        the spectrum's build temporaries and the convolution's output + workspace. Checked on the device against
        ``torch.cuda.max_memory_allocated`` (benchmarks/memory_plan.py, tests/test_gpu.py: within 25%)."""
        d, elt, tokens = self.d, self.elt, batch * length
        n_fft, conv_extra = conv_bytes(batch, d, length, n_taps, history, self.backend, self.model.device, elt)
        resident = tokens * d * 4 * (1 + self.n_stored)
        kernel_out = tokens * d * elt if self.backend == "cuda" else 0  # the reference counts its own output
        filt = 0 if self._filter_cached(n_taps, n_fft) else self._filter_bytes(n_taps, n_fft)
        build = spectrum_build_bytes(d, n_fft) if self.backend == "cuda" else 0  # the reference builds in place
        taps_build = self.model.model.filter_build_bytes(n_taps, self.model.device)  # the MLP over one block
        mixer = 3 * tokens * d * elt + filt + max(build, taps_build, kernel_out + conv_extra)
        mlp = tokens * elt * (2 * d + self.d_inner)  # LayerNorm output, fc1 (GELU) output, fc2 output
        return resident + max(mixer, mlp)

    def cache_bytes(self, n_taps: int, n_fft: int) -> int:
        """What the layers' filter caches gain from a call with this filter and FFT size (0 when not cached)."""
        return self.n_layer * self._filter_bytes(n_taps, n_fft) if self._filter_cached(n_taps, n_fft) else 0

    def _filter_bytes(self, n_taps: int, n_fft: int) -> int:
        lmax_taps = self.model.max_seq_len * self.d * 4
        taps = lmax_taps if lmax_taps <= self.filter_per_layer // 4 else n_taps * self.d * 4
        return taps + self.d * n_fft * 4  # the taps, and the spectrum in the kernel's (or complex64) layout

    def _filter_cached(self, n_taps: int, n_fft: int) -> bool:
        return 0 < self._filter_bytes(n_taps, n_fft) <= self.filter_per_layer

    def fft_size(self, batch: int, length: int, history: int, n_taps: int) -> int:
        return conv_bytes(batch, self.d, length, n_taps, history, self.backend, self.model.device, self.elt)[0]

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
        """Exact when the record fits context and budget; partial past max_seq_len; streamed when too large.
        Computed once per length (the planner's inputs are fixed): a BAM of reads asks for the same few lengths
        10,000s of times, and each answer walks the memory model and the kernels' path plans."""
        plan = self._plans.get(length)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.clear()
            plan = self._plans[length] = self._plan(length)
        return plan

    def _plan(self, length: int) -> Plan:
        k = self.opts.filter_len
        if k is None and length > self.model.max_seq_len:
            k = self.model.max_seq_len
        if k is not None and k >= length:
            k = None  # a filter as long as the record: the convolution is exact
        n_taps = k or length
        chunk = self.opts.chunk_size
        too_long = self.max_length is not None and length > self.max_length
        one_pass = (1, length, 0, min(n_taps, length))  # (batch, length, history, taps) of forward_bytes
        clear = False
        if chunk is None and (too_long or self.forward_bytes(*one_pass) > self.activation_budget):
            # Past the activation budget, but one pass may still fit the whole budget once the filter caches' reserve
            # is given back: far cheaper than streaming a record shorter than K, whose every chunk transforms its
            # whole history (large-1m, 200 kbp on 2 CPU cores: streamed in 4,096-base chunks 135 s, one pass 28 s).
            # On the CPU only (clear_caches_on): on an 80 GB H100 the 2.6-3.9 Mbp large-1m records of
            # tools/kernels/one_pass_ab.py never get here (one pass with the caches kept, 2026-12-06), so the GPU case
            # is unmeasured, and there emptying the caches makes the next records rebuild 1M-tap filters and spectra.
            clear = (not too_long and self.model.device.type in self.clear_caches_on
                     and self._peak(one_pass) <= self.max_memory)
            if not clear:
                chunk = self.choose_chunk(n_taps)
        if self.opts.chunk_size is None and k is not None and self.model.device.type == "cpu":
            cap = max(CPU_MAX_CHUNK, 4 * (n_taps - 1))
            if length > cap and (chunk is None or chunk > cap):
                chunk = cap
        if chunk is not None and chunk >= length:
            chunk = None
        if chunk is None:
            peak = self._peak(one_pass)
        else:
            peak = self._peak((1, chunk, carried_inputs(n_taps), n_taps), carried=self.state_bytes(n_taps))
        return Plan(ConvSettings(k, self.opts.freq_keep), chunk, self.backend, peak, clear and chunk is None)

    def _peak(self, shape: tuple[int, int, int, int], carried: int = 0) -> int:
        """A plan's predicted peak: the forward pass of ``shape`` (:meth:`forward_bytes`' arguments), the state a
        stream carries, and what this call's filter adds to the layers' caches."""
        return self.forward_bytes(*shape) + carried + self.cache_bytes(shape[3], self.fft_size(*shape))

    def runs_alone(self, length: int) -> bool:
        """Records that run by themselves: partial/streamed plans, or more than half a batch."""
        return not self.plan(length).one_pass_exact or length > self.tokens_per_batch // 2

    def state_bytes(self, filter_len: int) -> int:
        """What a stream carries between chunks: each layer's last K-1 gated inputs, rounded up to 8
        (:func:`carried_inputs`), and 2 short-conv inputs."""
        history_elt = 4 if self.model.dtype == torch.float32 else 2
        return self.n_layer * self.d * (carried_inputs(filter_len) * history_elt + 3 * 2 * self.elt)

    def choose_chunk(self, filter_len: int) -> int:
        """Largest chunk whose forward pass plus the carried state fit the budget and the kernels' length.

        Candidates fill an FFT size exactly: with K taps the kernels transform [K-1 history | C chunk] circularly
        (overlap-save) at a power of two N >= C + K - 1, so C = N - (K-1) new outputs per N (for K = 1M, N = 4M:
        3.19M, an FFT overhead of 1.3 instead of 2.0 for C = 2M); on the reference path, powers of two. The history
        is K - 1 rounded up to 8 (:func:`carried_inputs`), so C is a multiple of 8 as well."""
        budget = self.activation_budget - self.state_bytes(filter_len)
        history = carried_inputs(filter_len)

        def fits(c: int) -> bool:
            if self.max_length is not None and history + c > self.max_length:
                return False
            return self.forward_bytes(1, c, history, filter_len) <= budget

        if not fits(MIN_CHUNK):
            need = self.forward_bytes(1, MIN_CHUNK, history, filter_len) + self.state_bytes(filter_len)
            log.warning("memory budget %d MiB is below the %d MiB a filter of %d taps needs; using chunks of %d",
                        self.max_memory >> 20, -(-(need + self.filter_reserve) >> 20), filter_len, MIN_CHUNK)
            return MIN_CHUNK
        best = MIN_CHUNK
        for log_n in range(13, 27):
            candidates = [1 << log_n]
            if self.backend == "cuda":
                candidates.append((1 << log_n) - history)
            for c in candidates:
                if c > best and fits(c):
                    best = c
        return best
