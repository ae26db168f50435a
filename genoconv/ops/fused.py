"""Fused elementwise steps of the Hyena block, each a CUDA kernel of the library (csrc/fftconv/block_ops.cu, built at
install time) and a Triton kernel (its fallback) beside its pure-PyTorch reference.

Why: at 1 Mbp on an H200 the block's elementwise passes (LayerNorm then a cast, the short conv's three
multiply-adds, the gate product, the residual adds) moved more bytes than its GEMMs and convolutions together
(benchmarks/results/profile_kernel.txt: addcmul 18%, copies 12%, LayerNorm 12% of CUDA time). Each kernel here reads
its inputs once and writes its outputs once.

- :func:`layer_norm_cast`: LayerNorm of the fp32 residual stream, written in the compute dtype.
- :func:`add_layer_norm_cast`: ``residual += y`` (in place, fp32) and LayerNorm of the result in the compute dtype.
- :func:`short_conv_gate`: HyenaDNA's causal depthwise short conv over the in_proj output ``(B, 3d, L)`` (three
  channel groups x0, x1, v), returning ``x0`` and the gated ``x1 * v``.

:func:`fused_impl` says which kernels run on a device (the library's where it is loaded: Triton compiled its kernels on
a process's first use, 4.1 s of a first embed on a node with an empty kernel cache, and needs a C compiler there;
Triton where the library is not; ``GENOCONV_FUSED=0`` neither); otherwise the ``_ref`` functions run. The references
compute exactly what the model computed before these kernels existed. The MLP's GEMMs take their bias (and GELU) in the GEMM's epilogue on both
devices (cuBLASLt; oneDNN for fp32 on the CPU), which changes fp32 rounding only (~4e-7 relative on the CPU);
``GENOCONV_FUSED=0`` turns all of it off.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from . import layout

__all__ = ["add_layer_norm_cast", "add_layer_norm_cast_ref", "fused_available", "fused_enabled", "fused_impl",
           "layer_norm_cast", "layer_norm_cast_ref", "short_conv_gate", "short_conv_gate_ref", "causal_short_conv",
           "csrc_layer_norm", "csrc_short_conv_gate", "gelu_linear", "linear", "onednn_enabled"]


@functools.lru_cache(maxsize=1)
def _triton():
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "no Triton"
        return None
    return _build_kernels()


def fused_impl(device: torch.device | str) -> str:
    """Which implementation of the fused steps inference on ``device`` runs (what a run records: the rounding differs
    between them): ``"csrc"`` the kernel library's (built at install time); ``"triton"`` the Triton kernels (where the
    library is not loaded, or ``GENOCONV_FUSED_IMPL=triton``; on the CPU only in Triton's interpreter,
    ``TRITON_INTERPRET=1``); ``""`` none (the references; ``GENOCONV_FUSED=0``)."""
    env = os.environ.get
    return _fused_impl(torch.device(device).type, env("GENOCONV_FUSED", "1"), env("GENOCONV_FUSED_IMPL", "auto"),
                       env("TRITON_INTERPRET", "0"))


def _fused_impl(device_type: str, fused: str, impl: str, interpret: str) -> str:
    if fused == "0":
        return ""
    if device_type == "cuda":
        if impl != "triton" and _csrc_loaded():
            return "csrc"
        return "triton" if _triton() is not None else ""
    return "triton" if interpret == "1" and _triton() is not None else ""


def _csrc_loaded() -> bool:
    from . import cuda as _cuda

    return _cuda._load()[0] is not None


def fused_enabled(device: torch.device) -> bool:
    """Whether inference on ``device`` runs fused kernels (:func:`fused_impl` names which)."""
    return fused_impl(device) != ""


def fused_available(x: torch.Tensor) -> bool:
    """True when fused kernels run for ``x``: not under autograd, and :func:`fused_impl` names one for its device."""
    return _impl_for(x) != ""


# What the fused kernels take: an fp32 residual stream and 16-bit or fp32 activations. float64 (the model's exact mode,
# `doctor --check`'s yardstick) runs the references: the library's LayerNorm refuses it, and Triton's would sum in fp32.
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _impl_for(x: torch.Tensor) -> str:
    """:func:`fused_impl` for ``x``'s device, or ``""`` under autograd (the kernels have no backward) and for a dtype
    they do not take (:data:`KERNEL_DTYPES`); the dispatchers below ask it once and take both the yes/no and the name
    from it."""
    return "" if torch.is_grad_enabled() or x.dtype not in KERNEL_DTYPES else fused_impl(x.device)


# ---- references -------------------------------------------------------------------------------------------------
def causal_short_conv(p: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      past: torch.Tensor | None = None, in_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Causal depthwise conv, out[t] = sum_j weight[c, 0, W-1-j] * p[t-j] + bias: HyenaDNA's short filter.

    p: (B, C, L); weight: (C, 1, W) (nn.Conv1d layout); past: (B, C, W-1) inputs before p (zeros if None);
    in_bias: (C,) a bias p lacks (in_proj's, left out of its GEMM), folded into the conv's constant term.
    Written as W shifted multiply-adds: twice as fast as a depthwise conv1d on the CPU, and on the GPU it skips the
    padded copy and the depthwise kernel (126 ms of a 583 ms forward at 1 Mbp on an H200).
    """
    width, length = weight.shape[-1], p.shape[-1]
    const = bias[:, None]
    if in_bias is not None:  # conv(p + b) = conv(p) + b * sum(w), less b * w_j where tap j reads before p's start
        const = const + (in_bias.to(weight.dtype) * weight[:, 0].sum(-1))[:, None]
    out = torch.addcmul(const.to(p.dtype), p, weight[:, 0, width - 1, None])
    for j in range(1, width):  # tap looking back j steps
        w = weight[:, 0, width - 1 - j, None]
        if length > j:
            out[..., j:].addcmul_(p[..., :-j], w)
        n = min(j, length)
        if past is not None:
            out[..., :n].addcmul_(past[..., past.shape[-1] - j:past.shape[-1] - j + n], w)
        if in_bias is not None:  # those taps read zero padding or `past`, which holds biased values already
            out[..., :n] -= (in_bias.to(weight.dtype)[:, None] * w).to(out.dtype)
    return out


def short_conv_gate_ref(p: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                        past: torch.Tensor | None = None,
                        in_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, x1 * v) from the in_proj output p (B, 3d, L) after the causal short conv; shapes (B, d, L).
    ``in_bias`` (3d,): in_proj's bias when p was computed without it (``past`` holds biased values)."""
    x0, x1, v = causal_short_conv(p, weight, bias, past, in_bias).chunk(3, dim=1)
    return x0, x1 * v


def layer_norm_cast_ref(x: torch.Tensor, norm: torch.nn.LayerNorm, dtype: torch.dtype) -> torch.Tensor:
    return norm(x).to(dtype)


def add_layer_norm_cast_ref(residual: torch.Tensor, y: torch.Tensor, norm: torch.nn.LayerNorm,
                            dtype: torch.dtype) -> torch.Tensor:
    residual += y.to(residual.dtype)
    return norm(residual).to(dtype)


# ---- dispatch -----------------------------------------------------------------------------------------------------
def layer_norm_cast(x: torch.Tensor, norm: torch.nn.LayerNorm, dtype: torch.dtype) -> torch.Tensor:
    """LayerNorm(x) in ``dtype``; x: (..., d) fp32 contiguous."""
    impl = _impl_for(x)
    if not impl or not x.is_contiguous():
        return layer_norm_cast_ref(x, norm, dtype)
    if impl == "csrc":
        return csrc_layer_norm(x, None, norm, dtype)
    return _triton().layer_norm(x, None, norm.weight, norm.bias, norm.eps, dtype)


def add_layer_norm_cast(residual: torch.Tensor, y: torch.Tensor, norm: torch.nn.LayerNorm,
                        dtype: torch.dtype) -> torch.Tensor:
    """``residual += y`` in place (fp32), then LayerNorm(residual) in ``dtype``."""
    impl = _impl_for(residual)
    if not impl or not (residual.is_contiguous() and y.is_contiguous()):
        return add_layer_norm_cast_ref(residual, y, norm, dtype)
    if impl == "csrc" and y.dtype == dtype:
        return csrc_layer_norm(residual, y, norm, dtype)
    if _triton() is None:  # y in a dtype the library's kernel does not take, and no Triton
        return add_layer_norm_cast_ref(residual, y, norm, dtype)
    return _triton().layer_norm(residual, y, norm.weight, norm.bias, norm.eps, dtype)


def short_conv_gate(p: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                    past: torch.Tensor | None = None, in_bias: torch.Tensor | None = None,
                    out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, x1 * v), each (B, d, L) in p's dtype, from p (B, 3d, L) through the causal short conv (fp32 sums).
    ``in_bias``: in_proj's bias, when the GEMM left it out (then no pass over p writes a broadcast bias first).
    ``out``: (x0, gated) views to write into (unit stride along L): a streamed chunk's gated input goes straight
    behind its carried history this way. The kernel writes them directly when their batch and channel strides agree."""
    if out is not None and any(t.shape != (p.shape[0], p.shape[1] // 3, p.shape[2]) or t.stride(-1) != 1
                               for t in out):
        raise ValueError("short_conv_gate: out must be two (B, d, L) views with unit stride along L")
    impl = _impl_for(p)
    if not impl or p.stride(-1) != 1 or (out is not None and out[0].stride() != out[1].stride()):
        x0, gated = short_conv_gate_ref(p, weight, bias, past, in_bias)
        if out is None:
            return x0, gated
        out[0].copy_(x0)
        out[1].copy_(gated)
        return out
    # The library's kernel reads and writes 16 bytes at a time at any alignment of p and of the outputs (82-84% of the
    # copy bandwidth, H100; Triton's 65% where the rows are not aligned): its own outputs start 16-byte aligned, which
    # is what the convolution and the out_proj GEMM after it want too (ops.layout).
    if impl == "csrc" and weight.shape[-1] <= CSRC_MAX_WIDTH:
        if out is None:
            shape = (p.shape[0], p.shape[1] // 3, p.shape[2])
            out = (layout.padded_rows(shape, p), layout.padded_rows(shape, p))
        return csrc_short_conv_gate(p, weight, bias, past, in_bias, out)
    if _triton() is None:  # a width the library's kernel is not built for, and no Triton
        x0, gated = short_conv_gate_ref(p, weight, bias, past, in_bias)
        return (x0, gated) if out is None else (out[0].copy_(x0), out[1].copy_(gated))
    return _triton().short_conv_gate(p, weight, bias, past, in_bias, out)


# ---- the kernel library's kernels (csrc/fftconv/block_ops.cu) ---------------------------------------------------
CSRC_MAX_WIDTH = 4  # short filters up to this many taps (HyenaDNA's have 3)


def csrc_layer_norm(x: torch.Tensor, y: torch.Tensor | None, norm: torch.nn.LayerNorm,
                    dtype: torch.dtype) -> torch.Tensor:
    """LayerNorm(x) in ``dtype`` by the kernel library (``x += y`` in place first when y is given; y in ``dtype``)."""
    return torch.ops.genoconv_fftconv.block_layer_norm(x, y, norm.weight.float().contiguous(),
                                                      norm.bias.float().contiguous(), float(norm.eps), dtype)


def csrc_short_conv_gate(p, weight, bias, past, in_bias, out) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`short_conv_gate` by the kernel library into ``out`` (two (B, d, L) views sharing strides; p and they with
    unit stride along L)."""
    torch.ops.genoconv_fftconv.block_short_conv_gate(
        p, weight.reshape(p.shape[1], -1).float().contiguous(), bias.float().contiguous(),
        past.to(p.dtype) if past is not None else None, in_bias.float().contiguous() if in_bias is not None else None,
        out[0], out[1])
    return out


# ---- Triton kernels -------------------------------------------------------------------------------------------------
def _build_kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def _ln_kernel(x_ptr, y_ptr, out_ptr, w_ptr, b_ptr, n_rows, d, eps,
                   HAS_Y: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr):
        row0 = tl.program_id(0) * ROWS
        rows = row0 + tl.arange(0, ROWS)[:, None]
        cols = tl.arange(0, BLOCK_D)[None, :]
        mask = (rows < n_rows) & (cols < d)
        offs = rows.to(tl.int64) * d + cols
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        if HAS_Y:
            x += tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(x_ptr + offs, x, mask=mask)
        mean = tl.sum(x, axis=1) / d
        xc = tl.where(mask, x - mean[:, None], 0.0)
        var = tl.sum(xc * xc, axis=1) / d
        rstd = 1.0 / tl.sqrt(var + eps)
        w = tl.load(w_ptr + cols, mask=cols < d, other=0.0)
        b = tl.load(b_ptr + cols, mask=cols < d, other=0.0)
        out = xc * rstd[:, None] * w + b
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _short_conv_gate_kernel(p_ptr, past_ptr, w_ptr, b_ptr, ib_ptr, x0_ptr, g_ptr, d, length,
                                p_sb, p_sc, past_sb, past_sc, o_sb, o_sc,
                                WIDTH: tl.constexpr, HAS_PAST: tl.constexpr, IN_BIAS: tl.constexpr,
                                BLOCK_T: tl.constexpr):
        bc = tl.program_id(0)
        b = bc // d
        c = bc % d
        t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
        in_range = t < length
        acc0 = tl.zeros([BLOCK_T], tl.float32) + tl.load(b_ptr + c)
        acc1 = tl.zeros([BLOCK_T], tl.float32) + tl.load(b_ptr + d + c)
        acc2 = tl.zeros([BLOCK_T], tl.float32) + tl.load(b_ptr + 2 * d + c)
        base = p_ptr + b.to(tl.int64) * p_sb
        for j in tl.static_range(WIDTH):  # tap looking back j steps: weight[c, 0, WIDTH - 1 - j]
            src = t - j
            ok = in_range & (src >= 0)
            v0 = tl.load(base + c.to(tl.int64) * p_sc + src, mask=ok, other=0.0)
            v1 = tl.load(base + (d + c).to(tl.int64) * p_sc + src, mask=ok, other=0.0)
            v2 = tl.load(base + (2 * d + c).to(tl.int64) * p_sc + src, mask=ok, other=0.0)
            if IN_BIAS:  # in_proj's bias, rounded with p as the unfused GEMM output would be; never on padding
                v0 = tl.where(ok, v0 + tl.load(ib_ptr + c).to(v0.dtype), v0)
                v1 = tl.where(ok, v1 + tl.load(ib_ptr + d + c).to(v1.dtype), v1)
                v2 = tl.where(ok, v2 + tl.load(ib_ptr + 2 * d + c).to(v2.dtype), v2)
            v0 = v0.to(tl.float32)
            v1 = v1.to(tl.float32)
            v2 = v2.to(tl.float32)
            if HAS_PAST:
                early = in_range & (src < 0)
                col = src + (WIDTH - 1)
                pbase = past_ptr + b.to(tl.int64) * past_sb
                v0 += tl.load(pbase + c.to(tl.int64) * past_sc + col, mask=early, other=0.0).to(tl.float32)
                v1 += tl.load(pbase + (d + c).to(tl.int64) * past_sc + col, mask=early, other=0.0).to(tl.float32)
                v2 += tl.load(pbase + (2 * d + c).to(tl.int64) * past_sc + col, mask=early, other=0.0).to(tl.float32)
            acc0 += v0 * tl.load(w_ptr + c * WIDTH + (WIDTH - 1 - j))
            acc1 += v1 * tl.load(w_ptr + (d + c) * WIDTH + (WIDTH - 1 - j))
            acc2 += v2 * tl.load(w_ptr + (2 * d + c) * WIDTH + (WIDTH - 1 - j))
        out = b.to(tl.int64) * o_sb + c.to(tl.int64) * o_sc + t
        tl.store(x0_ptr + out, acc0.to(x0_ptr.dtype.element_ty), mask=in_range)
        tl.store(g_ptr + out, (acc1 * acc2).to(g_ptr.dtype.element_ty), mask=in_range)

    class Kernels:
        @staticmethod
        def layer_norm(x, y, weight, bias, eps, dtype):
            d = x.shape[-1]
            n_rows = x.numel() // d
            out = torch.empty(x.shape, dtype=dtype, device=x.device)
            block_d = triton.next_power_of_2(d)
            rows = max(1, min(16, 4096 // block_d))
            _ln_kernel[(triton.cdiv(n_rows, rows),)](x, y if y is not None else x, out, weight, bias, n_rows, d,
                                                     float(eps), HAS_Y=y is not None, BLOCK_D=block_d, ROWS=rows)
            return out

        @staticmethod
        def short_conv_gate(p, weight, bias, past, in_bias=None, out=None):
            batch, channels, length = p.shape
            d = channels // 3
            if out is None:
                x0 = torch.empty(batch, d, length, dtype=p.dtype, device=p.device)
                gated = torch.empty_like(x0)
            else:  # views with one set of strides (the kernel indexes both outputs alike)
                x0, gated = out
            width = weight.shape[-1]
            w = weight.reshape(channels, width).float().contiguous()
            bias32 = bias.float().contiguous()
            if past is not None:
                past = past.to(p.dtype)
            block_t = 1024
            grid = (batch * d, triton.cdiv(length, block_t))
            _short_conv_gate_kernel[grid](
                p, past if past is not None else p, w, bias32, in_bias if in_bias is not None else bias32,
                x0, gated, d, length, p.stride(0), p.stride(1), past.stride(0) if past is not None else 0,
                past.stride(1) if past is not None else 0, x0.stride(0), x0.stride(1),
                WIDTH=width, HAS_PAST=past is not None, IN_BIAS=in_bias is not None, BLOCK_T=block_t)
            return x0, gated

    return Kernels()


@functools.lru_cache(maxsize=1)
def _onednn_linear() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_enabled(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether CPU inference runs the MLP's GEMMs through oneDNN with the bias (and GELU) in the epilogue (what a run
    records: it changes the fp32 rounding, ~4e-7 relative). On the CPU torch's addmm first copies the bias into the
    output and GELU is another pass over it: 2 of every 5 passes over the (L, d_inner) activation. fp32 only."""
    return (torch.device(device).type == "cpu" and dtype == torch.float32 and _onednn_linear()
            and os.environ.get("GENOCONV_FUSED", "1") != "0")


def _onednn(x: torch.Tensor) -> bool:
    return not torch.is_grad_enabled() and x.is_contiguous() and onednn_enabled(x.device, x.dtype)


def gelu_linear(x: torch.Tensor, linear: torch.nn.Linear) -> torch.Tensor:
    """gelu_tanh(linear(x)): one GEMM with the bias and GELU in its epilogue, saving a write and a read-write of the
    (L, d_inner) activation: cuBLASLt on CUDA (its GELU is the tanh approximation HyenaDNA uses), oneDNN on the CPU
    (fp32); elsewhere the plain two steps."""
    if (x.is_cuda and not torch.is_grad_enabled() and x.dtype in KERNEL_DTYPES
            and os.environ.get("GENOCONV_FUSED", "1") != "0"):
        flat = x.reshape(-1, x.shape[-1])
        out = torch._addmm_activation(linear.bias, flat, linear.weight.t(), use_gelu=True)
        return out.view(*x.shape[:-1], out.shape[-1])
    if _onednn(x):
        out = torch.ops.mkldnn._linear_pointwise(x.view(-1, x.shape[-1]), linear.weight, linear.bias, "gelu", [],
                                                 "tanh")
        return out.view(*x.shape[:-1], out.shape[-1])
    return F.gelu(linear(x), approximate="tanh")


def linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    """layer(x), on the CPU (fp32) through oneDNN with the bias in the GEMM's epilogue instead of copied into the
    output first."""
    if _onednn(x):
        out = torch.ops.mkldnn._linear_pointwise(x.view(-1, x.shape[-1]), layer.weight, layer.bias, "none", [], "")
        return out.view(*x.shape[:-1], out.shape[-1])
    return layer(x)
