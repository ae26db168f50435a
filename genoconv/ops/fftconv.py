"""Long causal convolution: the one dispatch point the model calls, its fp32 FFT reference, and a float64 oracle.

Shapes (the only convention in this module): signals are ``(batch, channels, seq_len)``, filters are
``(channels, filter_len)`` with tap 0 first. With ``x = u * pregate`` (or ``u``),

    y[b, h, t] = postgate[b, h, t] * ( sum_{s=0}^{min(t, K-1)} k[h, s] * x[b, h, t-s]  +  bias[h] * x[b, h, t] )

which is HyenaDNA's ``fftconv(u, k, D)`` with the order-2 gates around it (``pregate = x1``, ``postgate = x0``).

Only :func:`causal_conv` chooses a backend; the model never looks. A :class:`LongFilter` carries the taps and
caches what each backend derives from them (the fp32 spectrum here, a kernel-ordered spectrum for csrc/), so a
fixed filter is transformed once, not on every call.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import torch

from . import layout

__all__ = [
    "LongFilter",
    "causal_conv",
    "causal_conv_ref",
    "causal_conv_direct",
    "conv_bytes",
    "fft_size",
    "max_conv_length",
    "backend_for",
    "planned_backend",
    "arithmetic",
]


def _next_5_smooth(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: for each 3^b 5^c below the power of two above n, the least power of two that
    lifts it to n. (Stepping n up by one and factoring each candidate took ~0.7 s per 1 Mbp call on the CPU, where
    the gap to the next smooth size is up to thousands near 2M.)"""
    best = 1 << max(0, n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            q = -(-n // p35)  # ceil(n / p35): p35 * 2^k >= n  <=>  2^k >= q
            best = min(best, p35 << max(0, q - 1).bit_length())
            p35 *= 3
        p5 *= 5
    return best


def _fft_size_policy(device: torch.device | str | None) -> str:
    return os.environ.get("GENOCONV_FFT_SIZES") or ("pow2" if torch.device(device or "cpu").type == "cuda" else "smooth")


def fft_size(seq_len: int, filter_len: int, device: torch.device | str | None = None) -> int:
    """FFT size for a linear (not circular) causal convolution: >= seq_len + filter_len - 1.

    HyenaDNA uses exactly 2*seq_len; any size >= seq_len + filter_len - 1 gives the same result up to rounding.
    On the CPU the smallest 5-smooth size (pocketfft/MKL are fast on them); on CUDA the next power of two, which
    cuFFT runs fastest (``GENOCONV_FFT_SIZES=smooth|pow2`` overrides).
    """
    n = max(2, seq_len + filter_len - 1)
    if _fft_size_policy(device) == "pow2":
        return 1 << (n - 1).bit_length()
    return _next_5_smooth(n)


class LongFilter:
    """A bank of long causal filters ``taps (H, K)`` with their skip term ``bias (H,)``.

    Transforms derived from the taps are cached per key (FFT size, backend, device): the filter of a trained
    model is fixed, so its spectrum is computed once and reused for every batch and every call.

    ``freq_keep`` < 1 makes the convolution *frequency-sparse*: only the lowest ``freq_keep`` fraction of each
    filter's rFFT bins is kept (the FlashFFTConv paper zeroes up to 79% with no loss of quality), at the transform
    size of the path that runs the call (the reference's :func:`fft_size`, a CUDA path's N): a cut spectrum is a
    different filter at each size, so results agree across paths to the approximation's order, not to rounding.
    """

    def __init__(self, taps: torch.Tensor, bias: torch.Tensor | None = None, *, freq_keep: float = 1.0):
        if taps.dim() != 2:
            raise ValueError(f"taps must be (channels, filter_len), got shape {tuple(taps.shape)}")
        if not 0.0 < freq_keep <= 1.0:
            raise ValueError(f"freq_keep must be in (0, 1], got {freq_keep}")
        # fp32 (float64 when the model is evaluated in float64, as the fidelity oracle)
        real = torch.float64 if taps.dtype == torch.float64 else torch.float32
        self.taps = taps.to(real)
        self.bias = (bias if bias is not None else torch.zeros(taps.shape[0], device=taps.device)).to(real)
        if self.bias.shape != (taps.shape[0],):
            raise ValueError(f"bias must be ({taps.shape[0]},), got {tuple(self.bias.shape)}")
        self.freq_keep = float(freq_keep)
        self._cache: dict[tuple, object] = {}

    @property
    def channels(self) -> int:
        return self.taps.shape[0]

    @property
    def filter_len(self) -> int:
        return self.taps.shape[1]

    def kept_bins(self, n_fft: int) -> int:
        """Number of low-frequency rFFT bins kept at FFT size ``n_fft``."""
        n_bins = n_fft // 2 + 1
        return n_bins if self.freq_keep >= 1.0 else max(1, math.ceil(self.freq_keep * n_bins))

    @property
    def nbytes(self) -> int:
        """Device bytes this filter holds: its taps and every derived form cached so far."""
        def size(x) -> int:
            if isinstance(x, torch.Tensor):
                return x.numel() * x.element_size()
            return sum(size(y) for y in x) if isinstance(x, (tuple, list)) else 0

        return size(self.taps) + size(list(self._cache.values()))

    def cached(self, key: tuple, make: Callable[[], object]) -> object:
        """Return ``make()`` computed once per ``key`` (backends store their derived filter forms here)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def spectrum(self, n_fft: int) -> torch.Tensor:
        """The taps' rFFT at size ``n_fft``: complex64 (H, kept_bins(n_fft)), low frequencies first.

        When frequency-sparse, only the kept bins are stored (and multiplied): the dropped ones cost neither
        memory nor arithmetic, and ``irfft`` treats the missing high bins as zero.
        """

        def make() -> torch.Tensor:
            return torch.fft.rfft(self.taps, n=n_fft)[..., : self.kept_bins(n_fft)].contiguous()

        return self.cached(("spectrum", n_fft, str(self.taps.device)), make)  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> "LongFilter":
        return LongFilter(self.taps.to(device), self.bias.to(device), freq_keep=self.freq_keep)


def causal_conv_ref(
    u: torch.Tensor,
    filt: LongFilter,
    pregate: torch.Tensor | None = None,
    postgate: torch.Tensor | None = None,
    history: torch.Tensor | None = None,
) -> torch.Tensor:
    """fp32 FFT reference (and the CPU path). u, pregate, postgate: (B, H, L); returns (B, H, L) in u's dtype.

    ``history`` (B, H, P): the P gated inputs that precede u (a stream's carried state). The output is then the
    convolution's value at u's positions, computed by overlap-save with one FFT of size >= L + K - 1.
    Computes in float64 when u is float64 (the fidelity oracle), else in fp32.
    """
    seq_len = u.shape[-1]
    real = torch.float64 if u.dtype == torch.float64 else torch.float32
    past = history.shape[-1] if history is not None else 0
    if past:
        n_taps = min(filt.filter_len, past + seq_len)
        # Circular convolution of [history | x] at size n: the wrap-around only touches outputs before position
        # K-1 of the block, i.e. inside the history, as long as n >= L + K - 1 (and n >= P + L).
        n_fft = fft_size(max(seq_len + n_taps - 1, past + seq_len), 1, u.device)
    else:
        n_taps = min(filt.filter_len, seq_len)
        n_fft = fft_size(seq_len, n_taps, u.device)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, pregate, history, filt.taps)):
        # Training: the differentiable form (out= and in-place buffers have no autograd).
        x = (u * pregate if pregate is not None else u).to(real)
        buf = torch.cat([history.to(real), x], dim=-1) if past else x
    else:
        # Inference: the FFT input is built in place, [history | gated chunk | zeros]. No concatenation, no padded
        # copy inside rfft, no separate gated tensor: on two CPU cores each such pass costs as much as a GEMM.
        buf = torch.empty(*u.shape[:-1], n_fft, dtype=real, device=u.device)
        if past:
            buf[..., :past] = history
        x = buf[..., past:past + seq_len]
        if pregate is not None:
            torch.mul(u, pregate, out=x)  # the gate product in the input dtype, as the official code has v * x1
        else:
            x.copy_(u)
        buf[..., past + seq_len:].zero_()
    y = _fft_conv(buf, _spectrum_for(filt, n_taps, n_fft), n_fft)[..., past:past + seq_len]
    y.addcmul_(x, filt.bias[:, None])  # in place: each elementwise pass over (B, H, L) fp32 costs ~4 B/elem
    if postgate is not None:
        y.mul_(postgate)
    return y.to(u.dtype)


def _fft_conv(x: torch.Tensor, k_f: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Circular convolution at size n_fft with a (possibly truncated, low-bins-only) filter spectrum."""
    x_f = torch.fft.rfft(x, n=n_fft)
    keep = k_f.shape[-1]
    return torch.fft.irfft(x_f[..., :keep] * k_f if keep < x_f.shape[-1] else x_f * k_f, n=n_fft)


def _spectrum_for(filt: LongFilter, n_taps: int, n_fft: int) -> torch.Tensor:
    """Spectrum of the first ``n_taps`` taps (taps past the signal's reach are never needed)."""
    if n_taps >= filt.filter_len:
        return filt.spectrum(n_fft)
    # Only the first chunks of a stream see a shorter prefix: transform it on the fly rather than caching one
    # spectrum per prefix length.
    return LongFilter(filt.taps[:, :n_taps], filt.bias, freq_keep=filt.freq_keep).spectrum(n_fft)


def causal_conv_direct(
    u: torch.Tensor,
    taps: torch.Tensor,
    bias: torch.Tensor | None = None,
    pregate: torch.Tensor | None = None,
    postgate: torch.Tensor | None = None,
) -> torch.Tensor:
    """float64 direct (time-domain) causal convolution: the test oracle. O(L*K) work; returns float64."""
    x = u.double() if pregate is None else u.double() * pregate.double()
    k = taps.double()
    seq_len, filter_len = x.shape[-1], min(k.shape[-1], x.shape[-1])
    # conv1d is a cross-correlation: flip the taps and left-pad by K-1 to make it causal.
    weight = k[:, :filter_len].flip(-1).unsqueeze(1)
    y = torch.nn.functional.conv1d(
        torch.nn.functional.pad(x, (filter_len - 1, 0)), weight, groups=x.shape[1]
    )[..., :seq_len]
    if bias is not None:
        y = y + x * bias.double()[:, None]
    if postgate is not None:
        y = y * postgate.double()
    return y


def arithmetic(device: torch.device, dtype: torch.dtype) -> dict:
    """What decides the rounding of :func:`causal_conv` for ``dtype`` inputs on ``device``, as plain values: the
    device type, the FFT size policy, and the backend (with the CUDA kernels' facts where they run). Runs record it
    so that a resume never mixes records computed by different algorithms."""
    from .fused import fused_impl, onednn_enabled

    out = {"device_type": device.type, "fft_sizes": _fft_size_policy(device), "backend": "reference",
           "fused_block": fused_impl(device) or False, "onednn_mlp": onednn_enabled(device, dtype)}
    if planned_backend(device, dtype) == "cuda":
        from . import cuda as _cuda

        facts = _cuda.kernel_facts(device)
        if facts is not None:
            out.update(backend="cuda", **facts)
    return out


def backend_for(u: torch.Tensor, filt: LongFilter) -> str:
    """Name the backend :func:`causal_conv` will use for these inputs: ``"cuda"`` or ``"reference"``.

    ``GENOCONV_CONV_BACKEND=reference`` forces the PyTorch path (for A/B checks); ``=cuda`` makes a missing
    kernel an error instead of a silent fallback.
    """
    if _forced_reference() or not u.is_cuda:
        return "reference"
    from . import cuda as _cuda  # local import: never touch the extension on CPU-only runs

    return _checked("cuda" if _cuda.supports(u, filt) else "reference", lambda: _cuda.why_not(u, filt))


def planned_backend(device: torch.device | str, dtype: torch.dtype) -> str:
    """The backend :func:`causal_conv` will take for calls on ``device`` in ``dtype`` (the planner records it, so the
    file says what ran): ``"cuda"`` or ``"reference"``."""
    if _forced_reference() or torch.device(device).type != "cuda":
        return "reference"
    from . import cuda as _cuda

    why = _cuda.why_not_for(torch.device(device), dtype)
    return _checked("cuda" if not why else "reference", lambda: why)


def _backend_choice() -> str:
    return os.environ.get("GENOCONV_CONV_BACKEND", "auto").lower()


def _forced_reference() -> bool:
    return _backend_choice() == "reference"


def _checked(backend: str, why: Callable[[], str]) -> str:
    if backend != "cuda" and _backend_choice() == "cuda":
        raise RuntimeError(f"GENOCONV_CONV_BACKEND=cuda but the CUDA kernel cannot run: {why()}")
    return backend


def max_conv_length(backend: str) -> int | None:
    """Longest [history | chunk] one :func:`causal_conv` call takes on ``backend`` (None: no limit)."""
    if backend == "cuda":
        from . import cuda as _cuda

        return _cuda.MAX_SEQ_LEN
    return None


def conv_bytes(batch: int, channels: int, seq_len: int, filter_len: int, history: int, backend: str,
               device: torch.device | str, elt: int = 2) -> tuple[int, int]:
    """(FFT size, bytes allocated besides inputs and the (B, H, L) output) of one :func:`causal_conv` call, for the
    engine's memory plan. ``history``: carried inputs before the chunk (streaming); ``elt``: bytes per element."""
    if backend == "cuda":
        from . import cuda as _cuda

        length = history + seq_len
        n_fft, work = _cuda.conv_bytes(batch, channels, length, filter_len, torch.device(device), valid_from=history)
        # [history | gated chunk] and its full-length output, of which the chunk's part is kept (then post-gated)
        return n_fft, work + (2 * batch * channels * length * elt if history else 0)
    n_taps = min(filter_len, history + seq_len)
    n_fft = fft_size(max(seq_len + n_taps - 1, history + seq_len), 1, device)
    # fp32 input buffer, its spectrum, the product, the copy irfft makes of its input, and irfft's real output
    real = 8 if elt == 8 else 4
    return n_fft, batch * channels * (2 * real * n_fft + 3 * 2 * real * (n_fft // 2 + 1))


def causal_conv(
    u: torch.Tensor,
    filt: LongFilter,
    pregate: torch.Tensor | None = None,
    postgate: torch.Tensor | None = None,
    history: torch.Tensor | None = None,
) -> torch.Tensor:
    """The dispatch point: ``postgate * (filt * (u * pregate) + bias * (u * pregate))``, causal, per channel.

    u, pregate, postgate: (B, H, L) of one dtype; filt: H filters of length K (any K; taps past L are unused).
    Returns (B, H, L) in u's dtype, unit stride along L (on the CUDA paths for long rows, each row starts 16-byte
    aligned in a padded buffer: :mod:`genoconv.ops.layout`). ``history`` (B, H, P) holds the gated inputs that
    precede u when a long record is streamed in chunks. CUDA bf16/fp16 inputs go to the csrc/ kernel when it is
    built; everything else to :func:`causal_conv_ref`.
    """
    if u.dim() != 3 or u.shape[1] != filt.channels:
        raise ValueError(f"u must be (batch, {filt.channels}, seq_len), got {tuple(u.shape)}")
    for name, g in (("pregate", pregate), ("postgate", postgate)):
        if g is not None and g.shape != u.shape:
            raise ValueError(f"{name} must have u's shape {tuple(u.shape)}, got {tuple(g.shape)}")
    if backend_for(u, filt) == "cuda":
        from . import cuda as _cuda

        if history is None or history.shape[-1] == 0:
            return _cuda.causal_conv_cuda(u, filt, pregate, postgate, checked=True)
        # Stream: the gated chunk written straight behind its history (no separate product for torch.cat to copy)
        past = history.shape[-1]
        joined = u.new_empty(*u.shape[:-1], past + u.shape[-1])
        joined[..., :past].copy_(history)
        if pregate is not None:
            torch.mul(u, pregate, out=joined[..., past:])
        else:
            joined[..., past:].copy_(u)
        return causal_conv_joined(joined, past, filt, postgate)
    return causal_conv_ref(u, filt, pregate, postgate, history)


def causal_conv_joined(joined: torch.Tensor, past: int, filt: LongFilter,
                       postgate: torch.Tensor | None = None) -> torch.Tensor:
    """A streamed chunk on the CUDA kernels, given as ``joined`` = [history | gated chunk] (B, H, past + L): the
    chunk's L outputs, times ``postgate``. The model builds ``joined`` itself when it can write the gated chunk there
    directly (:func:`genoconv.ops.fused.short_conv_gate` with ``out``); :func:`causal_conv` builds it from ``history``
    otherwise. The kernel has no carried state: with the K - 1 carried inputs in front only the chunk's outputs are
    kept, so the transform is circular (overlap-save: N >= past + L rather than + K - 1).

    ``postgate``: (B, H, L), multiplied after the kernel (a second rounding and one more pass over the chunk); or
    (B, H, past + L) indexed like ``joined``, which the kernel multiplies as it writes (one rounding, no extra pass;
    the separate product took 2.4 ms a layer per chrX chunk on an H100, NOTES.md v25); its first ``past`` columns
    gate only outputs that are dropped, so they may hold anything."""
    from . import cuda as _cuda

    if postgate is None or postgate.shape[-1] == joined.shape[-1]:
        # No post-gate, or one the kernel can index like joined (as every post-gate of a record's first chunk, past
        # = 0, is): multiplied inside the kernel, one rounding.
        return _cuda.causal_conv_cuda(joined, filt, None, postgate, valid_from=past)[..., past:]
    y = _cuda.causal_conv_cuda(joined, filt, valid_from=past)[..., past:]
    # the gated product in rows that start 16-byte aligned (the chunk's odd length otherwise misaligns every row
    # after the first, and the out_proj GEMM that reads it runs a ~3.5x slower kernel: ops.layout)
    return torch.mul(y, postgate, out=layout.padded_rows(y.shape, y))
