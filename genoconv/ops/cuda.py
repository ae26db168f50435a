"""Thin Python face of the csrc/ FlashFFTConv-style kernels (placeholder until the CUDA issue lands).

Contract with :mod:`genoconv.ops.fftconv`: ``supports(u, filt)`` says whether the kernel can run these inputs,
``why_not(u, filt)`` says why not in one line, and ``causal_conv_cuda(u, filt, pregate, postgate)`` has the exact
semantics of ``causal_conv_ref``.
"""

from __future__ import annotations

import torch


def status() -> dict:
    """What ``genoconv doctor`` reports about the kernels."""
    return {"built": False, "archs": [], "reason": "the CUDA kernels are not part of this build yet"}


def supports(u: torch.Tensor, filt) -> bool:  # noqa: ARG001
    return False


def why_not(u: torch.Tensor, filt) -> str:  # noqa: ARG001
    return status()["reason"]


def causal_conv_cuda(u, filt, pregate=None, postgate=None):
    raise RuntimeError(why_not(u, filt))
