"""HyenaDNA, computed exactly as the official inference code computes it.

Module and parameter names reproduce the official state dicts (``backbone.layers.{i}.mixer.filter_fn...``), so a
checkpoint maps onto this tree key for key. Dropout is omitted: every released model is used in eval mode, where
it is the identity. Long convolutions go through :func:`genoconv.ops.causal_conv`, the one dispatch point.

Numerics: the residual stream, LayerNorms, the implicit filter and the filter's spectrum stay in fp32 whatever
the compute dtype; projections, the short conv and the gated long conv run in the compute dtype.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..ops import LongFilter, backend_for, causal_conv, planned_backend
from ..ops.fftconv import causal_conv_joined
from ..ops.fused import (add_layer_norm_cast, causal_short_conv, fused_available, gelu_linear, layer_norm_cast, linear,
                         onednn_enabled, short_conv_gate)
from ..ops.layout import aligned_rows, carried_inputs, over_padding, padded_rows
from .config import HyenaConfig


def _settle_vml_dispatch() -> None:
    """Call each MKL-VML-backed unary op once, serially, before anything calls it on several threads.

    oneMKL 2024.2 (in torch's CPU wheels) picks each VML function's kernel on that function's first call; when
    the first call runs on several intra-op threads at once, one thread can run a low-accuracy kernel over its
    whole chunk (pytorch/pytorch#188792). Here the implicit filter's first ``torch.sin`` (4,098 x 64 values, two
    threads) came back up to 8.8e-5 off on half its values in 7 of 250 fresh processes, so embeddings differed
    from run to run and a resumed run did not reproduce an uninterrupted one. One-element calls, which run on
    the calling thread alone, settle the dispatch: 0 wrong in 320 processes after.
    """
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype)
        for op in (torch.sin, torch.cos, torch.exp, torch.log, torch.sqrt, torch.tanh, torch.abs, torch.erf):
            op(x)


_settle_vml_dispatch()


class Sin(nn.Module):
    """sin(freq * x) with a learnt per-feature frequency (one instance is shared by the implicit filter MLP)."""

    def __init__(self, dim: int, w: float = 10.0):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class PositionalEmbedding(nn.Module):
    """Features z(t) = [t, cos(f·w), -sin(f·w)] over l_max positions, normalised by l_max (not by the input length)."""

    def __init__(self, emb_dim: int, seq_len: int):
        super().__init__()
        t = torch.linspace(0, 1, seq_len)[None, :, None]
        bands = (emb_dim - 1) // 2
        t_rescaled = torch.linspace(0, seq_len - 1, seq_len)[None, :, None]
        w = 2 * math.pi * t_rescaled / seq_len
        f = torch.linspace(1e-4, bands - 1, bands)[None, None]
        z = torch.exp(-1j * f * w)
        self.register_buffer("z", torch.cat([t, z.real, z.imag], dim=-1))
        self.register_buffer("t", t)

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.z[:, :seq_len], self.t[:, :seq_len]


class ExponentialModulation(nn.Module):
    """h(t) · (exp(-t·|delta_c|) + shift): per-channel decay from 1e-2 over 1.5 l_max (slow) to 0.3 l_max (fast)."""

    def __init__(self, d_model: int, fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5,
                 target: float = 1e-2, modulate: bool = True, shift: float = 0.05):
        super().__init__()
        self.modulate = modulate
        self.shift = shift
        max_decay = math.log(target) / fast_decay_pct
        min_decay = math.log(target) / slow_decay_pct
        self.register_buffer("deltas", torch.linspace(min_decay, max_decay, d_model)[None, None])

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.modulate:
            x = x * (torch.exp(-t * self.deltas.abs()) + self.shift)
        return x


def default_filter_cache_bytes(device: torch.device | None) -> int:
    """Per-layer cap on cached filter taps + spectra when the caller sets none.

    ``GENOCONV_FILTER_CACHE_MB`` (0 switches caching off) wins; else 256 MiB on the CPU and 1/32 of the GPU's memory
    on CUDA (4.4 GB on an H200: a 1M-tap, 256-channel filter is 1 GB of taps + 2 GB of spectrum, and regenerating it
    on every call cost more than the convolution itself).
    """
    env = os.environ.get("GENOCONV_FILTER_CACHE_MB")
    if env is not None:
        return int(env) << 20
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 32
    return 256 << 20


@dataclass(frozen=True)
class ConvSettings:
    """How one call computes its long convolutions; passed down every forward, never stored in the layers.

    ``filter_len``: a *partial* convolution with the first K filter taps (None: the full filter, i.e. exact up to
    ``max_seq_len``). ``freq_keep``: a *frequency-sparse* convolution keeping the lowest fraction of each filter's
    spectrum (1.0: all of it).
    """

    filter_len: int | None = None
    freq_keep: float = 1.0

    def __post_init__(self) -> None:
        if self.filter_len is not None and self.filter_len < 1:
            raise ValueError(f"filter_len must be >= 1, got {self.filter_len}")
        if not 0.0 < self.freq_keep <= 1.0:
            raise ValueError(f"freq_keep must be in (0, 1], got {self.freq_keep}")

    def taps(self, l_max: int) -> int:
        """K: the filter's taps, l_max unless a partial convolution asks for fewer."""
        return l_max if self.filter_len is None else min(self.filter_len, l_max)

    def taps_needed(self, seq_len: int, l_max: int, streaming: bool) -> int:
        """Filter taps a call needs: K (default l_max), but never more than the input reaches."""
        k = self.taps(l_max)
        return k if streaming else min(seq_len, k)


EXACT = ConvSettings()


def shared_taps(seq_len: int, k: int, device: torch.device, dtype: torch.dtype) -> int:
    """Taps an exact call (K >= L) takes: L on the reference path; on the CUDA kernels the next power of two >= L
    (at most K). Taps past L never reach outputs [0, L) (causality), and the kernels size their FFT by min(K, L), so
    results are those of L taps; but every length in (2^(m-1), 2^m] then asks for the same filter, whose spectrum the
    kernels build once per FFT size from 2^m taps. With L taps each record length built its own spectrum per layer
    (the demo set's 200 genes: a build per batch and layer, ~1 ms each, where the convolution itself is ~0.1 ms)."""
    if planned_backend(device, dtype) != "cuda":
        return seq_len
    return min(k, 1 << max(0, seq_len - 1).bit_length())


class HyenaFilter(nn.Module):
    """The implicit long filter: an MLP with Sin activations over positional features, exponentially modulated.

    ``long_filter(n_taps)`` returns the first ``n_taps`` taps (channels = d_model·(order-1)) wrapped in a
    :class:`LongFilter`; in inference it is cached until a parameter changes, so the MLP and the filter's
    spectrum are computed once per length, not once per call.
    """

    def __init__(self, d_model: int, emb_dim: int, order: int, seq_len: int, w: float, num_inner_mlps: int,
                 modulate: bool, shift: float):
        super().__init__()
        self.d_model = d_model
        self.seq_len = seq_len
        self.bias = nn.Parameter(torch.randn(d_model))
        self.pos_emb = PositionalEmbedding(emb_dim, seq_len)
        act = Sin(order, w)
        layers: list[nn.Module] = [nn.Linear(emb_dim, order), act]
        for _ in range(num_inner_mlps):
            layers += [nn.Linear(order, order), act]
        layers.append(nn.Linear(order, d_model, bias=False))
        self.implicit_filter = nn.Sequential(*layers)
        self.modulation = ExponentialModulation(d_model, modulate=modulate, shift=shift)
        # (n_taps, freq_keep, version) -> LongFilter with its spectra, most recently used last; what they hold together
        # stays within the per-layer budget. One entry per filter length in use: a batch of 3 kbp genes (4096 taps)
        # after one of 20 kbp (16K) must not rebuild the spectra of either (a single entry did, 704 builds per
        # demo-set run, ~0.8 s of a 7 s run on an H100).
        self._cache: OrderedDict[tuple, LongFilter] = OrderedDict()
        self._taps: tuple[tuple, torch.Tensor] | None = None
        self.cache_bytes: int | None = None  # per-layer cap on cached taps + spectra (None: the device default)

    def _cache_budget(self) -> int:
        if self.cache_bytes is not None and "GENOCONV_FILTER_CACHE_MB" not in os.environ:
            return self.cache_bytes
        return default_filter_cache_bytes(self.bias.device)

    def taps(self, n_taps: int) -> torch.Tensor:
        """(d_model·(order-1), n_taps) fp32 taps: h = modulation(t, MLP(z)) at positions 0..n_taps-1.

        In inference the MLP runs over blocks of :meth:`tap_block` positions written into the output, so generating
        a filter costs its taps plus one block's activations: over all 1M positions at once the MLP's hidden layers
        and the modulated, transposed copies took 6x the taps (0.73 GB transient for 122 MB of 32-channel taps, the
        CPU's streamed records 29% past their memory budget). Training keeps one graph over all positions."""
        if n_taps > self.seq_len:
            raise ValueError(f"the implicit filter is defined for {self.seq_len} positions, asked for {n_taps}")
        z, t = self.pos_emb(n_taps)
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            h = self.modulation(t, self.implicit_filter(z))
            return h[0].transpose(0, 1).to(_at_least_fp32(h.dtype))
        block = self.tap_block(z.device)
        out = None
        for a in range(0, n_taps, block):
            h = self.modulation(t[:, a:a + block], self.implicit_filter(z[:, a:a + block]))[0]
            if out is None:
                out = torch.empty(h.shape[1], n_taps, dtype=_at_least_fp32(h.dtype), device=h.device)
            out[:, a:a + h.shape[0]] = h.transpose(0, 1)
        return out

    @property
    def _activation_bytes_per_tap(self) -> int:
        """fp32 activations one position holds while :meth:`taps` runs: two hidden layers of the MLP, its output and
        the modulated output."""
        return 4 * (2 * self.implicit_filter[0].out_features + 2 * self.d_model)

    def tap_block(self, device: torch.device) -> int:
        """Positions per MLP evaluation in :meth:`taps`: ~32 MiB of activations on the CPU (8K positions at
        d_model 256), 8x that on a GPU, where each block is a handful of kernel launches (1M taps: 16 blocks)."""
        target = (256 << 20) if device.type == "cuda" else (32 << 20)
        return 1 << max(10, (target // self._activation_bytes_per_tap).bit_length() - 1)

    def taps_transient_bytes(self, n_taps: int, device: torch.device) -> int:
        """What generating ``n_taps`` taps allocates beside the taps themselves (the planner's filter build)."""
        return min(n_taps, self.tap_block(device)) * self._activation_bytes_per_tap

    def long_filter(self, n_taps: int, freq_keep: float = 1.0) -> LongFilter:
        """The first ``n_taps`` taps as a :class:`LongFilter` (its spectra cached inside it).

        In inference all l_max taps are generated once (when they fit the per-layer cache budget, ``cache_bytes``)
        and sliced: taps(L) is a prefix of taps(l_max) because positions are normalised by l_max,
        so records of many lengths share one MLP evaluation. Always the same slice of the same tensor, whatever
        came before: a resumed run computes bit for bit what an uninterrupted one does.
        """
        params = tuple(self.parameters()) + tuple(self.buffers())
        # Inference tensors (a model built under torch.inference_mode) have no version counter; they cannot change.
        version = tuple(0 if p.is_inference() else p._version for p in params) + \
            tuple(p.data_ptr() for p in params) + (str(self.bias.device),)
        cacheable = not torch.is_grad_enabled() or not any(p.requires_grad for p in params)
        budget = self._cache_budget()
        if not cacheable or budget == 0:  # training, or caching switched off
            return LongFilter(self.taps(n_taps), self.bias, freq_keep=freq_keep)
        key = (n_taps, freq_keep, version)
        filt = self._cache.get(key)
        if filt is not None:
            self._cache.move_to_end(key)
            return filt
        for old in [k for k in self._cache if k[2] != version]:  # a parameter changed: those filters are stale
            del self._cache[old]
        with torch.no_grad():
            taps = self._cached_taps(n_taps, version)
            filt = LongFilter(taps[:, :n_taps], self.bias, freq_keep=freq_keep)
        # Keep it (with the spectra it will cache) only if that fits the per-layer budget; release() checks again
        # once the call has added its spectrum: a 1M-tap filter of 256 channels is 1 GB of taps and, at the 4M FFT
        # a streamed chromosome uses, 4 GB of kernel-ordered spectrum.
        if 3 * n_taps * self.d_model * 4 <= budget:
            self._cache[key] = filt
            self._trim(budget, keep=filt)
        return filt

    def release(self, filt: LongFilter) -> None:
        """After a call: evict the least recently used filters while the cache is past the per-layer budget, this
        call's own filter last (dropped too if its spectra alone took it past)."""
        self._trim(self._cache_budget(), keep=filt)

    _MAX_CACHED_FILTERS = 8

    def _trim(self, budget: int, keep: LongFilter) -> None:
        """Evict filters, least recently used first and ``keep`` last, while the cache holds more than ``budget`` bytes
        or _MAX_CACHED_FILTERS entries: ``keep`` goes only when it alone is past the budget."""
        total = sum(f.nbytes for f in self._cache.values())
        order = sorted(self._cache, key=lambda k: self._cache[k] is keep)  # stable: LRU order, keep's entry last
        for k in order:
            if len(self._cache) <= self._MAX_CACHED_FILTERS and total <= budget:
                break
            total -= self._cache.pop(k).nbytes

    def cached_filter(self) -> LongFilter | None:
        """The most recently used cached filter (for inspection and tests), or None."""
        return next(reversed(self._cache.values()), None)

    def _cached_taps(self, n_taps: int, version: tuple) -> torch.Tensor:
        if self._taps is not None and self._taps[0] == version and self._taps[1].shape[1] >= n_taps:
            return self._taps[1]
        if self.seq_len * self.d_model * 4 > self._cache_budget() // 4:
            # Too large to keep beside the spectra (1 GB per layer for a 1M-tap, 256-channel model; regenerating
            # it costs ~25 GFLOP, a millisecond on a GPU): generate exactly what this call needs.
            self._taps = None
            return self.taps(n_taps)
        taps = self.taps(self.seq_len)
        self._taps = (version, taps)
        return taps

    def clear_cache(self) -> None:
        self._cache = OrderedDict()
        self._taps = None


@dataclass
class LayerStream:
    """What one Hyena layer carries from chunk to chunk: exactly the inputs its causal convolutions look back on."""

    short: torch.Tensor | None = None  # (B, (order+1)·d, width-1): last inputs of the short conv
    long: list[torch.Tensor] = field(default_factory=list)  # per gated conv: (B, d, <= K-1) last gated inputs


@dataclass
class StreamState:
    """Carried state of a record processed chunk by chunk (see :meth:`HyenaDNA.hidden_states`)."""

    layers: list[LayerStream]
    position: int = 0

    @classmethod
    def empty(cls, n_layer: int) -> "StreamState":
        return cls([LayerStream() for _ in range(n_layer)])

    def nbytes(self) -> int:
        tensors = [t for ls in self.layers for t in ([ls.short] if ls.short is not None else []) + ls.long]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to_arrays(self, prefix: str = "stream/") -> dict[str, "np.ndarray"]:
        """The carried state as host arrays (for a checkpoint): ``<prefix>i/short``, ``<prefix>i/long/o``; dtypes
        numpy lacks (bfloat16) travel as their bits, the dtype in the key after ``#``."""
        out = {f"{prefix}position": np.asarray(self.position, dtype=np.int64)}

        def put(key: str, tensor: torch.Tensor) -> None:
            name = str(tensor.dtype).replace("torch.", "")
            bits = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
            out[f"{key}#{name}"] = bits.detach().cpu().numpy()

        for i, layer in enumerate(self.layers):
            if layer.short is not None:
                put(f"{prefix}{i}/short", layer.short)
            for o, hist in enumerate(layer.long):
                put(f"{prefix}{i}/long/{o}", hist)
        return out

    @classmethod
    def from_arrays(cls, arrays: "dict[str, np.ndarray]", n_layer: int, device: torch.device,
                    prefix: str = "stream/") -> "StreamState":
        """Inverse of :meth:`to_arrays`, onto ``device``."""
        state = cls.empty(n_layer)
        state.position = int(arrays[f"{prefix}position"])
        longs: dict[tuple[int, int], torch.Tensor] = {}
        for key, value in arrays.items():
            if not key.startswith(prefix) or "#" not in key:
                continue
            path, dtype = key[len(prefix):].split("#")
            tensor = torch.from_numpy(np.array(value))
            tensor = (tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor).to(device)
            parts = path.split("/")
            if parts[1] == "short":
                state.layers[int(parts[0])].short = tensor
            else:
                longs[(int(parts[0]), int(parts[2]))] = tensor
        for (i, o), tensor in sorted(longs.items()):
            state.layers[i].long.append(tensor)
        return state


def _tail(x: torch.Tensor, keep: int) -> torch.Tensor:
    """Last ``keep`` time steps (none when keep == 0; ``x[..., -0:]`` would be all of them)."""
    return x[..., max(0, x.shape[-1] - keep):] if keep > 0 else x[..., :0]


class HyenaOperator(nn.Module):
    """Order-N Hyena: in_proj -> causal short conv -> split x0..x_{N-2}, v -> gated long convs -> out_proj.

    For order 2: y = out_proj(x0 ⊙ (h * (x1 ⊙ v) + D ⊙ (x1 ⊙ v))).
    """

    def __init__(self, cfg: HyenaConfig):
        super().__init__()
        d, order = cfg.d_model, cfg.hyena_order
        self.d_model, self.order, self.l_max = d, order, cfg.max_seq_len
        inner = d * (order + 1)
        self.in_proj = nn.Linear(d, inner)
        self.out_proj = nn.Linear(d, d)
        self.short_filter = nn.Conv1d(inner, inner, kernel_size=cfg.short_filter_order,
                                      padding=cfg.short_filter_order - 1, groups=inner)
        self.filter_fn = HyenaFilter(d * (order - 1), cfg.emb_dim, cfg.filter_order, cfg.max_seq_len,
                                     cfg.activation_freq, cfg.num_inner_mlps, cfg.modulate, cfg.shift)

    def forward(self, u: torch.Tensor, stream: LayerStream | None = None, conv: ConvSettings = EXACT) -> torch.Tensor:
        seq_len = u.shape[1]
        if stream is None and conv.filter_len is None and seq_len > self.l_max:
            raise ValueError(f"sequence of {seq_len} bases is longer than the model's max_seq_len {self.l_max}")
        n_taps = conv.taps_needed(seq_len, self.l_max, stream is not None)
        keep = carried_inputs(conv.taps(self.l_max))  # gated inputs a stream carries on: K - 1, rounded up to 8
        history = stream.long[0] if stream is not None and stream.long else None  # (B, d, past) carried gated inputs
        past = 0 if history is None else history.shape[-1]
        if stream is None and n_taps == seq_len:
            n_taps = shared_taps(seq_len, conv.taps(self.l_max), u.device, u.dtype)
        elif stream is not None:
            # Taps past [history | chunk] multiply nothing: a streamed record shorter than K never reaches them, and
            # generating all K per chunk (the implicit filter's MLP over 1M positions on large-1m) was most of such a
            # record's time and memory on the CPU (BENCHMARKS.md, thirteenth session).
            n_taps = min(n_taps, past + seq_len)
        # in_proj written straight into the convolution layout (B, C, L): W @ u^T. The GEMM takes the transposed
        # operand for free, where a Linear followed by a transpose made a strided copy of the largest activation
        # (~18 ms per layer at 1 Mbp on an H200, half the forward time; benchmarks/results/profile_1m_*.txt).
        batch = u.shape[0]
        # Fused path (order 2, ops.fused): the short-conv kernel adds in_proj's bias as it reads p, so the GEMM
        # writes p once instead of after a pass that broadcasts the bias into it.
        # On the CPU (fp32 inference) the short conv folds the bias into its constant term instead.
        bias_in_kernel = self.order == 2 and (fused_available(u) or (not torch.is_grad_enabled()
                                                                     and onednn_enabled(u.device, u.dtype)))
        # On the CUDA path p's rows are 16-byte aligned whatever L is: the GEMM writes into a padded view (ops.layout).
        on_cuda = planned_backend(u.device, u.dtype) == "cuda"
        p = padded_rows((batch, self.in_proj.weight.shape[0], seq_len), u) if on_cuda else None
        if bias_in_kernel:  # bmm reads the transposed operand in place (matmul first copied u^T: 18 ms a layer)
            p = torch.bmm(self.in_proj.weight.expand(batch, -1, -1), u.transpose(1, 2), out=p)
        else:
            p = torch.baddbmm(self.in_proj.bias[:, None], self.in_proj.weight.expand(batch, -1, -1),
                              u.transpose(1, 2), out=p)
        width = self.short_filter.kernel_size[0]
        past_short = None  # the short conv's carried inputs (width - 1 of p)
        if stream is not None:
            past_short = (stream.short if stream.short is not None
                          else p.new_zeros(p.shape[0], p.shape[1], width - 1))
            tail = _tail(p, width - 1)
            if bias_in_kernel:
                tail = tail + self.in_proj.bias[:, None].to(p.dtype)
            stream.short = _tail(torch.cat([past_short.to(p.dtype), tail], dim=-1), width - 1).clone()
        filt = self.filter_fn.long_filter(n_taps, conv.freq_keep)
        d = self.d_model
        if self.order == 2 and stream is not None and past <= seq_len and backend_for(p[:, :d], filt) == "cuda":
            # A streamed chunk on the kernels: the gated chunk is written straight behind its carried history, so
            # the convolution's [history | chunk] input needs no copy of it. x0 shares its row stride (the fused
            # kernel indexes both outputs alike), which leaves `past` columns of x0's buffer unused: a saving only
            # while the chunk is at least as long as its history (not for small out-of-memory fallback chunks).
            # Rows padded to 16 bytes: with `past` a multiple of 8 (ops.layout.carried_inputs) both outputs start
            # 16-byte aligned too. `beside` indexed like `joined` is the post-gate the kernel multiplies as it writes
            # (its first `past` columns, never written, gate only outputs that are dropped).
            joined = padded_rows((batch, d, past + seq_len), p)
            beside = padded_rows((batch, d, past + seq_len), p)  # x0: the gated rows' stride, first `past` unused
            if past:
                joined[..., :past].copy_(history)
            _, gated = short_conv_gate(p, self.short_filter.weight, self.short_filter.bias, past_short,
                                       self.in_proj.bias if bias_in_kernel else None,
                                       out=(beside[..., past:], joined[..., past:]))
            del p
            self._history(stream, 0, gated, keep)  # carried on: the last K - 1 gated inputs
            v = causal_conv_joined(joined, past, filt, postgate=beside)
            del joined, beside
        elif self.order == 2:
            # The short conv, the split and the gate x1 * v in one pass (ops.fused); then y = x0 * (h * (x1 v)).
            x0, gated = short_conv_gate(p, self.short_filter.weight, self.short_filter.bias, past_short,
                                        self.in_proj.bias if bias_in_kernel else None)
            del p  # (B, 3d, L): the largest activation of the block, not needed past this point
            v = causal_conv(gated, filt, postgate=x0, history=self._history(stream, 0, gated, keep))
        else:
            p = causal_short_conv(p, self.short_filter.weight, self.short_filter.bias, past_short)
            *x, v = p.split(d, dim=1)
            for o, x_i in enumerate(reversed(x[1:])):
                sub = LongFilter(filt.taps[o * d:(o + 1) * d], filt.bias[o * d:(o + 1) * d], freq_keep=filt.freq_keep)
                post = x[0] if o == self.order - 2 else None  # fuse the final x0 gate into the last convolution
                history = self._history(stream, o, v * x_i, keep) if stream is not None else None
                v = causal_conv(v.contiguous(), sub, pregate=x_i.contiguous(),
                                postgate=None if post is None else post.contiguous(), history=history)
        self.filter_fn.release(filt)
        if on_cuda and not aligned_rows(v):  # one pass over v, against a GEMM ~3.5x slower on unaligned rows
            v = padded_rows(v.shape, v).copy_(v)
        # out_proj back to (B, L, d) as y^T @ W^T: the GEMM takes both transposed operands as they are; for one row
        # addmm, which on CUDA puts the bias in the GEMM's epilogue (baddbmm first broadcasts it into the output).
        if batch == 1 and bias_in_kernel:
            wide = over_padding(v[0]) if on_cuda else None  # L a multiple of 8 as well: the fast kernel (ops.layout)
            if wide is not None:
                return torch.addmm(self.out_proj.bias, wide.t(), self.out_proj.weight.t())[:seq_len].unsqueeze(0)
            return torch.addmm(self.out_proj.bias, v[0].t(), self.out_proj.weight.t()).unsqueeze(0)
        return torch.baddbmm(self.out_proj.bias, v.transpose(1, 2), self.out_proj.weight.t().expand(batch, -1, -1))

    @staticmethod
    def _history(stream: LayerStream | None, o: int, gated: torch.Tensor, keep: int) -> torch.Tensor | None:
        """The gated inputs that precede this chunk for convolution ``o`` (None when not streaming); the carried
        state moves on to the last ``keep`` gated inputs of [history | gated]."""
        if stream is None:
            return None
        if len(stream.long) <= o:
            stream.long.append(gated.new_zeros(gated.shape[0], gated.shape[1], 0, dtype=_history_dtype(gated)))
        history = stream.long[o]
        stream.long[o] = _next_history(history, gated, keep)
        return history


def _next_history(history: torch.Tensor, gated: torch.Tensor, keep: int) -> torch.Tensor:
    """The last ``keep`` gated inputs of [history | gated] (a fresh tensor: never a view of this chunk's buffers)."""
    length = gated.shape[-1]
    take = min(keep, length)
    tail = gated[..., length - take:].to(history.dtype)
    if take == keep:
        return tail.clone() if tail.dtype == gated.dtype else tail
    return torch.cat([_tail(history, keep - take), tail], dim=-1)


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    """fp32 for the residual stream and filters, or fp64 when the model is evaluated in float64 (the test oracle)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _history_dtype(v: torch.Tensor) -> torch.dtype:
    # fp32 compute keeps an fp32 history (streamed == unstreamed to rounding); 16-bit compute halves its memory.
    return torch.float32 if v.dtype == torch.float32 else v.dtype


class Mlp(nn.Module):
    def __init__(self, d_model: int, d_inner: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_inner)
        self.fc2 = nn.Linear(d_inner, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(gelu_linear(x, self.fc1), self.fc2)


class Block(nn.Module):
    """Pre-norm block, residual in fp32: r <- r + Hyena(LN1(r)); r <- r + MLP(LN2(r))."""

    def __init__(self, cfg: HyenaConfig):
        super().__init__()
        self.mixer = HyenaOperator(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon)
        self.mlp = Mlp(cfg.d_model, cfg.d_inner)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon)

    def forward(self, residual: torch.Tensor, compute_dtype: torch.dtype, stream: LayerStream | None = None,
                conv: ConvSettings = EXACT) -> torch.Tensor:
        if torch.is_grad_enabled():  # training: out-of-place, autograd keeps what it needs
            residual = residual + self.mixer(self.norm1(residual).to(compute_dtype), stream, conv).to(residual.dtype)
            return residual + self.mlp(self.norm2(residual).to(compute_dtype)).to(residual.dtype)
        residual += self.forward_pending(residual, compute_dtype, stream, conv)
        return residual

    def forward_pending(self, residual: torch.Tensor, compute_dtype: torch.dtype, stream: LayerStream | None = None,
                        conv: ConvSettings = EXACT, pending: torch.Tensor | None = None) -> torch.Tensor:
        """Inference: the block with its last residual add left to the caller, who fuses it into the next
        LayerNorm. ``pending``: the previous block's MLP output, added to ``residual`` (in place) here first.

        Each LayerNorm is fused with the add before it and the cast after it (ops.fused): the arithmetic of
        :meth:`forward` in fewer passes over (B, L, d). Returns this block's MLP output (to add to ``residual``)."""
        x = (layer_norm_cast(residual, self.norm1, compute_dtype) if pending is None
             else add_layer_norm_cast(residual, pending, self.norm1, compute_dtype))
        y = self.mixer(x, stream, conv)
        return self.mlp(add_layer_norm_cast(residual, y, self.norm2, compute_dtype))


class Embeddings(nn.Module):
    def __init__(self, cfg: HyenaConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(input_ids)


class Backbone(nn.Module):
    def __init__(self, cfg: HyenaConfig):
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon)


class HyenaDNA(nn.Module):
    """Backbone (+ optional LM head). Hidden-state index: 0 = embeddings, i = after block i, n_layer+1 = ln_f."""

    def __init__(self, cfg: HyenaConfig, *, lm_head: bool = False):
        super().__init__()
        self.config = cfg
        self.backbone = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False) if lm_head else None
        self.compute_dtype = torch.float32

    # ---- layer indexing ----------------------------------------------------------------------------------
    @property
    def num_hidden_states(self) -> int:
        return self.config.n_layer + 2

    def resolve_layer(self, layer: int) -> int:
        """Map a (possibly negative) layer index onto 0..n_layer+1; -1 is the final LayerNorm output."""
        n = self.num_hidden_states
        if not -n <= layer < n:
            raise IndexError(f"layer {layer} out of range for a model with {n} hidden states "
                             f"(-{n}..{n - 1}: 0 = embeddings, {n - 1} = final LayerNorm)")
        return layer % n

    # ---- numerics -------------------------------------------------------------------------------------------
    def set_compute_dtype(self, dtype: torch.dtype) -> "HyenaDNA":
        """Run projections/convs in ``dtype``; norms, residual, filters and embeddings' output stay fp32."""
        self.compute_dtype = dtype
        for block in self.backbone.layers:
            for mod in (block.mixer.in_proj, block.mixer.out_proj, block.mixer.short_filter, block.mlp):
                mod.to(dtype)
        return self

    def set_filter_cache_bytes(self, nbytes: int | None) -> "HyenaDNA":
        """Per-layer cap on the filter taps + spectra each layer keeps between calls (None: the device default)."""
        for block in self.backbone.layers:
            block.mixer.filter_fn.cache_bytes = None if nbytes is None else int(nbytes)
        return self

    def clear_filter_cache(self) -> "HyenaDNA":
        """Drop every filter the layers keep between calls (they are rebuilt on the next call)."""
        for block in self.backbone.layers:
            block.mixer.filter_fn.clear_cache()
        return self

    def filter_cache_bytes(self) -> int:
        """The per-layer cap in force (GENOCONV_FILTER_CACHE_MB wins over the set value; 0: no caching)."""
        return self.backbone.layers[0].mixer.filter_fn._cache_budget() if self.backbone.layers else 0

    def filter_build_bytes(self, n_taps: int, device: torch.device) -> int:
        """What one layer's filter generation allocates beside its taps (:meth:`HyenaFilter.taps`)."""
        if not self.backbone.layers:
            return 0
        return self.backbone.layers[0].mixer.filter_fn.taps_transient_bytes(n_taps, device)

    # ---- forward --------------------------------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, layers: Sequence[int] = (-1,),
                      stream: StreamState | None = None, conv: ConvSettings = EXACT) -> dict[int, torch.Tensor]:
        """Hidden states (B, L, d_model) fp32 for the requested layers; stops after the deepest one needed.

        With ``stream``, ``input_ids`` is the next chunk of a longer record: each layer's convolutions continue
        from the carried state, so the chunks' outputs equal one call over the whole record (exact streaming).
        ``conv`` selects partial / frequency-sparse long convolutions for this call.
        """
        if conv.filter_len is not None and conv.filter_len > self.config.max_seq_len:
            raise ValueError(f"filter_len must be in 1..max_seq_len={self.config.max_seq_len}, got {conv.filter_len}")
        wanted = sorted({self.resolve_layer(i) for i in layers})
        out: dict[int, torch.Tensor] = {}
        residual = self.backbone.embeddings(input_ids).to(_at_least_fp32(self.compute_dtype))
        if 0 in wanted:
            out[0] = residual.clone()
        pending = None  # inference: a block's MLP output, added to the residual by the next block's LayerNorm kernel
        for i, block in enumerate(self.backbone.layers, start=1):
            if i > wanted[-1]:
                break
            layer_stream = None if stream is None else stream.layers[i - 1]
            if torch.is_grad_enabled():
                residual = block(residual, self.compute_dtype, layer_stream, conv)
            else:
                pending = block.forward_pending(residual, self.compute_dtype, layer_stream, conv, pending)
                if i in wanted or i == len(self.backbone.layers):
                    residual += pending
                    pending = None
            if i in wanted:
                out[i] = residual if i == wanted[-1] else residual.clone()  # blocks update it in place
        last = self.num_hidden_states - 1
        if last in wanted:
            out[last] = self.backbone.ln_f(residual)
        if stream is not None:
            stream.position += input_ids.shape[1]
        return out

    def forward(self, input_ids: torch.Tensor, conv: ConvSettings = EXACT) -> torch.Tensor:
        """Final LayerNorm output (B, L, d_model), fp32."""
        return self.hidden_states(input_ids, (-1,), conv=conv)[self.num_hidden_states - 1]

    def logits(self, input_ids: torch.Tensor, conv: ConvSettings = EXACT) -> torch.Tensor:
        """Next-token logits (B, L, padded_vocab); the head is tied to the input embedding when absent."""
        hidden = self.forward(input_ids, conv)
        weight = self.lm_head.weight if self.lm_head is not None else self.backbone.embeddings.word_embeddings.weight
        return hidden @ weight.to(hidden.dtype).t()

    # ---- initialisation (training from scratch) -------------------------------------------------------------
    def init_weights(self, seed: int = 0, initializer_range: float = 0.02) -> "HyenaDNA":
        """Official init: N(0, 0.02) for Linear/Embedding weights, zero biases, out_proj/fc2 scaled by 1/sqrt(2n)."""
        gen = torch.Generator().manual_seed(seed)
        n_layer = self.config.n_layer
        with torch.no_grad():
            for name, mod in self.named_modules():
                if isinstance(mod, (nn.Linear, nn.Embedding)):
                    std = initializer_range
                    if name.endswith("out_proj") or name.endswith("fc2"):
                        std = initializer_range / math.sqrt(2 * n_layer)
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * std)
                    if getattr(mod, "bias", None) is not None:
                        mod.bias.zero_()
                elif isinstance(mod, nn.Conv1d):
                    bound = 1.0 / math.sqrt(mod.weight.shape[1] * mod.weight.shape[2])
                    mod.weight.copy_((torch.rand(mod.weight.shape, generator=gen) * 2 - 1) * bound)
                    mod.bias.copy_((torch.rand(mod.bias.shape, generator=gen) * 2 - 1) * bound)
                elif isinstance(mod, HyenaFilter):
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen))
        return self
