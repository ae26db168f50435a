"""Row layout of the CUDA path's (B, C, L) activations.

cuBLAS picks its GEMM kernel by the operands' alignment: the projections on rows whose stride is not a multiple of
16 bytes (any odd L in bf16: a streamed chunk behind its K - 1 carried inputs, most genes) ran an sm75 kernel at
~90 TFLOP/s where 16-byte aligned rows get nvjet at 340-540 (tools/kernels/gemm_layouts.py; NOTES.md v18-v19). The
convolution paths therefore allocate their outputs, and the model its in_proj output, with padded rows."""
from __future__ import annotations

import torch


def aligned_rows(x: torch.Tensor) -> bool:
    """Rows (unit stride along the last dim) start on 16-byte boundaries: cuBLAS's fast (TMA) GEMM kernels need it."""
    return x.stride(-2) * x.element_size() % 16 == 0 and x.data_ptr() % 16 == 0


def _padded_length(length: int, element_size: int) -> int:
    """``length`` elements rounded up to a whole number of 16-byte units."""
    per = max(1, 16 // element_size)
    return -(-length // per) * per


def padded_rows(shape, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` (like's dtype and device) whose rows start 16-byte aligned: a view of one
    whose row length is rounded up to 16 bytes."""
    full = like.new_empty(*shape[:-1], _padded_length(shape[-1], like.element_size()))
    return full[..., :shape[-1]]


def over_padding(x: torch.Tensor) -> torch.Tensor | None:
    """``x`` (rows from :func:`padded_rows`) widened over its rows' padding to a multiple of 16 bytes, or None when
    its storage does not hold that padding. The out_proj GEMM keeps the slow kernel when L itself is not a multiple of
    8 even on aligned rows (4.4 ms at L = 3,194,303 against 1.16 ms at 3,194,296, H100): run it over the padded
    length and drop the padding's output rows, which read only their own (uninitialised) columns."""
    length = _padded_length(x.shape[-1], x.element_size())
    if length == x.shape[-1] or x.stride(-1) != 1 or x.stride(-2) < length:
        return None
    last = x.storage_offset() + sum((n - 1) * s for n, s in zip(x.shape[:-1], x.stride()[:-1])) + length
    if last * x.element_size() > x.untyped_storage().nbytes():
        return None
    return x.as_strided((*x.shape[:-1], length), x.stride())


def carried_inputs(filter_len: int) -> int:
    """How many gated inputs a streamed record carries from chunk to chunk for a filter of ``filter_len`` taps: the
    K - 1 it needs, rounded up to a multiple of 8. Inputs further back than K - 1 meet no tap, so the outputs are the
    same; what the rounding buys is layout: a chunk's outputs sit at index ``past`` of [history | chunk], and with
    ``past`` a multiple of 8 (and chunks that fill an FFT size, N - past, too) those rows start 16-byte aligned, as
    the short conv's 16-byte path, the convolution's loads and the out_proj GEMM want (large-1m: K - 1 = 1,000,001
    put every row of a chrX chunk on a 2-byte boundary; chrX 1-70 Mbp 8.2 -> 7.7 s on an H100 when the short conv's
    unaligned path still ran at 21% of the copy bandwidth, BENCHMARKS.md seventeenth session)."""
    return -(-max(filter_len - 1, 0) // 8) * 8
