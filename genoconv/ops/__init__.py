"""Operators: each kernel beside its pure-PyTorch reference; :func:`causal_conv` is the one dispatch point."""

from .fftconv import (LongFilter, arithmetic, backend_for, causal_conv, causal_conv_direct, causal_conv_ref, conv_bytes,
                      fft_size, max_conv_length, planned_backend)

__all__ = ["LongFilter", "arithmetic", "backend_for", "causal_conv", "causal_conv_direct", "causal_conv_ref",
           "conv_bytes", "fft_size", "max_conv_length", "planned_backend"]
