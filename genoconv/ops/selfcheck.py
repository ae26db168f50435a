"""A self-check of the convolution on this machine: every path the dispatch takes, against a float64 oracle.

The kernels are tested on the GPUs the project is developed on; a user's GPU (another architecture, driver or
shared-memory size) takes the same dispatch rules to other kernels, and a wrong kernel would give wrong embeddings
without an error. ``genoconv doctor --check`` runs one small case per path (reads on the scalar fused kernel, the
tensor-core kernel and its blocks, the long path at its scalar and tensor-core sizes, its overlap-save blocks, a row
split by filter taps, a streamed chunk), plain and gated, on fresh random inputs, and compares each with the float64
convolution of the same 16-bit inputs. Without CUDA it checks the PyTorch reference path the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .fftconv import LongFilter, backend_for, causal_conv, causal_conv_ref

# (name, L, K, carried history): one case per dispatch path at the smallest size that takes it.
CASES = (
    ("reads", 51, 51, 0),
    ("gene", 3000, 3000, 0),
    ("short filter", 40_001, 1026, 0),
    ("block-Toeplitz", 20_000, 20_000, 0),
    ("long 2^16", 33_000, 20_000, 0),
    ("long 2^17", 50_001, 50_001, 0),
    ("long, K << L", 270_000, 16_001, 0),
    ("long, L + K > 2^n", 70_001, 70_001, 0),
    ("streamed chunk", 60_001, 50_000, 49_999),
)
# Relative L2 error allowed per dtype: the output's own rounding (bf16 ~2e-3, fp16 ~5e-4) with the kernels' margin.
TOLERANCE = {torch.bfloat16: 6e-3, torch.float16: 2e-3, torch.float32: 1e-4}


@dataclass(frozen=True)
class CheckResult:
    name: str
    seq_len: int
    filter_len: int
    gated: bool
    dtype: str
    path: str
    error: float
    tolerance: float
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance  # NaN fails


def _path(device: torch.device, u: torch.Tensor, filt: LongFilter, seq_len: int, filter_len: int, history: int,
          gated: bool) -> str:
    if backend_for(u, filt) != "cuda":
        return "reference"
    from . import cuda

    return cuda.path_plan(seq_len, filter_len, device, history, pre=gated and not history,
                          post=gated and not history)[0]


def check_case(name: str, seq_len: int, filter_len: int, history: int, gated: bool, dtype: torch.dtype,
               device: torch.device, seed: int = 0) -> CheckResult:
    """One case: B = 2, H = 3, fresh random inputs and a filter with energy over all its taps."""
    gen = torch.Generator().manual_seed(seed * 7919 + seq_len + 2 * gated)
    batch, channels, total = 2, 3, history + seq_len
    t = torch.arange(filter_len, dtype=torch.float64)
    taps = torch.randn(channels, filter_len, generator=gen, dtype=torch.float64) / filter_len ** 0.5
    taps = taps * torch.exp(-t * 2.0 / filter_len)
    bias = torch.randn(channels, generator=gen, dtype=torch.float64)
    u = torch.randn(batch, channels, total, generator=gen).to(device, dtype)
    pre = torch.randn(batch, channels, total, generator=gen).to(device, dtype) if gated else None
    post = torch.randn(batch, channels, total, generator=gen).to(device, dtype) if gated else None
    filt = LongFilter(taps.to(device, torch.float32), bias.to(device, torch.float32))
    x = u if pre is None else u * pre  # the gated input, rounded to the dtype as the model forms it
    path = _path(device, u, filt, total if history else seq_len, filter_len, history, gated)
    t0 = time.perf_counter()
    if history:
        y = causal_conv(u[..., history:], filt, None if pre is None else pre[..., history:],
                        None if post is None else post[..., history:], history=x[..., :history])
    else:
        y = causal_conv(u, filt, pre, post)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    # The oracle: the reference path evaluated in float64 (float64 inputs), on the whole row [history | chunk].
    want = causal_conv_ref(x.double(), LongFilter(taps.to(device), bias.to(device)))[..., history:]
    if post is not None:
        want = want * post[..., history:].double()
    err = ((y.double() - want).norm() / want.norm()).item()
    return CheckResult(name, seq_len, filter_len, gated, str(dtype).removeprefix("torch."), path, err,
                       TOLERANCE[dtype], seconds)


def run_checks(device: torch.device | str, dtypes: tuple[torch.dtype, ...] | None = None) -> list[CheckResult]:
    """Every case plain and gated in each dtype (default: bf16 and fp16 on CUDA, fp32 on the CPU)."""
    device = torch.device(device)
    if dtypes is None:
        dtypes = (torch.bfloat16, torch.float16) if device.type == "cuda" else (torch.float32,)
    out = []
    for dtype in dtypes:
        for name, seq_len, filter_len, history in CASES:
            for gated in (False, True):
                out.append(check_case(name, seq_len, filter_len, history, gated, dtype, device))
    return out
