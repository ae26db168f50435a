"""HyenaDNA, computed exactly as the official inference code computes it.

Module and parameter names reproduce the official state dicts (``backbone.layers.{i}.mixer.filter_fn...``), so a
checkpoint maps onto this tree key for key. Dropout is omitted: every released model is used in eval mode, where
it is the identity. Long convolutions go through :func:`genoconv.ops.causal_conv`, the one dispatch point.

Numerics: the residual stream, LayerNorms, the implicit filter and the filter's spectrum stay in fp32 whatever
the compute dtype; projections, the short conv and the gated long conv run in the compute dtype.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import LongFilter, causal_conv
from .config import HyenaConfig


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
        self._cache: tuple[tuple, LongFilter] | None = None

    def taps(self, n_taps: int) -> torch.Tensor:
        """(d_model·(order-1), n_taps) fp32 taps: h = modulation(t, MLP(z)) at positions 0..n_taps-1."""
        if n_taps > self.seq_len:
            raise ValueError(f"the implicit filter is defined for {self.seq_len} positions, asked for {n_taps}")
        z, t = self.pos_emb(n_taps)
        h = self.modulation(t, self.implicit_filter(z))
        return h[0].transpose(0, 1).float()

    def long_filter(self, n_taps: int, freq_keep: float = 1.0) -> LongFilter:
        params = tuple(self.parameters()) + tuple(self.buffers())
        key = (n_taps, freq_keep, str(self.bias.device)) + tuple(p._version for p in params) + tuple(
            p.data_ptr() for p in params)
        cacheable = not torch.is_grad_enabled() or not any(p.requires_grad for p in params)
        if cacheable and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        with torch.no_grad() if cacheable else torch.enable_grad():
            filt = LongFilter(self.taps(n_taps), self.bias, freq_keep=freq_keep)
        if cacheable:
            self._cache = (key, filt)
        return filt

    def clear_cache(self) -> None:
        self._cache = None


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
        # Partial / frequency-sparse settings (None = the exact full-length convolution).
        self.filter_len: int | None = None
        self.freq_keep: float = 1.0

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        seq_len = u.shape[1]
        n_taps = min(seq_len, self.l_max if self.filter_len is None else min(self.filter_len, self.l_max))
        if self.filter_len is None and seq_len > self.l_max:
            raise ValueError(f"sequence of {seq_len} bases is longer than the model's max_seq_len {self.l_max}")
        p = self.in_proj(u).transpose(1, 2)  # (B, (order+1)·d, L)
        width = self.short_filter.kernel_size[0]
        p = F.conv1d(F.pad(p, (width - 1, 0)), self.short_filter.weight, self.short_filter.bias,
                     groups=p.shape[1])  # causal: p[t] = w0 p[t-2] + w1 p[t-1] + w2 p[t] + b
        *x, v = p.split(self.d_model, dim=1)
        filt = self.filter_fn.long_filter(n_taps, self.freq_keep)
        d = self.d_model
        for o, x_i in enumerate(reversed(x[1:])):
            sub = filt if self.order == 2 else LongFilter(filt.taps[o * d:(o + 1) * d], filt.bias[o * d:(o + 1) * d],
                                                          freq_keep=filt.freq_keep)
            post = x[0] if o == self.order - 2 else None  # fuse the final x0 gate into the last convolution
            v = causal_conv(v.contiguous(), sub, pregate=x_i.contiguous(),
                            postgate=None if post is None else post.contiguous())
        return self.out_proj(v.transpose(1, 2))


class Mlp(nn.Module):
    def __init__(self, d_model: int, d_inner: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_inner)
        self.fc2 = nn.Linear(d_inner, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm block, residual in fp32: r <- r + Hyena(LN1(r)); r <- r + MLP(LN2(r))."""

    def __init__(self, cfg: HyenaConfig):
        super().__init__()
        self.mixer = HyenaOperator(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon)
        self.mlp = Mlp(cfg.d_model, cfg.d_inner)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon)

    def forward(self, residual: torch.Tensor, compute_dtype: torch.dtype) -> torch.Tensor:
        residual = residual + self.mixer(self.norm1(residual).to(compute_dtype)).float()
        return residual + self.mlp(self.norm2(residual).to(compute_dtype)).float()


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

    def set_convolution(self, filter_len: int | None = None, freq_keep: float = 1.0) -> None:
        """Partial (first ``filter_len`` taps) and/or frequency-sparse long convolutions in every layer."""
        if filter_len is not None and not 1 <= filter_len <= self.config.max_seq_len:
            raise ValueError(f"filter_len must be in 1..max_seq_len={self.config.max_seq_len}, got {filter_len}")
        for block in self.backbone.layers:
            block.mixer.filter_len = filter_len
            block.mixer.freq_keep = freq_keep

    # ---- forward --------------------------------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, layers: Sequence[int] = (-1,)) -> dict[int, torch.Tensor]:
        """Hidden states (B, L, d_model) fp32 for the requested layers; stops after the deepest one needed."""
        wanted = sorted({self.resolve_layer(i) for i in layers})
        out: dict[int, torch.Tensor] = {}
        residual = self.backbone.embeddings(input_ids).float()
        if 0 in wanted:
            out[0] = residual
        for i, block in enumerate(self.backbone.layers, start=1):
            if i > wanted[-1]:
                break
            residual = block(residual, self.compute_dtype)
            if i in wanted:
                out[i] = residual
        last = self.num_hidden_states - 1
        if last in wanted:
            out[last] = self.backbone.ln_f(residual)
        return out

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm output (B, L, d_model), fp32."""
        return self.hidden_states(input_ids, (-1,))[self.num_hidden_states - 1]

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, L, padded_vocab); the head is tied to the input embedding when absent."""
        hidden = self.forward(input_ids)
        weight = self.lm_head.weight if self.lm_head is not None else self.backbone.embeddings.word_embeddings.weight
        return hidden @ weight.float().t()

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
