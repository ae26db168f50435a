"""A few long-path calls for compute-sanitizer (memcheck / racecheck): the scalar outer passes (R = 16) and the
tensor-core ones (R = 256 around inner sizes 2^9 .. 2^14, R = 512), a row split into overlap-save blocks (strided
views: head, middle blocks per batch row, a tail of its own size), rows split by filter taps (70,001, 300,001 and
2,100,001 with full-length filters: a long head and a rest on the tensor-core kernel or the long path), and reads-sized
rows on the scalar fused kernel, plain and gated, against float64.

    compute-sanitizer --tool memcheck python tools/kernels/long_check.py
"""

from __future__ import annotations

import torch

from genoconv.ops import LongFilter, causal_conv_ref
from genoconv.ops import cuda as gcuda


def main() -> None:
    dev = torch.device("cuda")
    for batch, channels, seq_len, k in ((2, 3, 40_001, 20_000), (2, 3, 50_001, 50_001), (2, 3, 70_001, 70_001),
                                        (2, 3, 300_001, 300_001), (2, 3, 400_001, 100_000),
                                        (2, 3, 600_001, 12_000), (1, 2, 2_100_001, 2_100_001),
                                        (2, 3, 400_001, 400_001), (1, 1, 3_000_000, 3_000_000), (4, 3, 152, 152)):
        gen = torch.Generator().manual_seed(seq_len)
        taps = torch.randn(channels, k, generator=gen) / k**0.5
        bias = torch.randn(channels, generator=gen)
        u = torch.randn(batch, channels, seq_len, generator=gen).to(dev, torch.bfloat16)
        pre = torch.randn(batch, channels, seq_len, generator=gen).to(dev, torch.bfloat16)
        filt = LongFilter(taps.to(dev), bias.to(dev))
        for gate in (None, pre):
            y = gcuda.causal_conv_cuda(u, filt, gate, gate)
            g = None if gate is None else gate.double()  # the reference in float64: the project's oracle
            ref = causal_conv_ref(u.double(), LongFilter(taps.to(dev).double(), bias.to(dev).double()), g, g)
            err = ((y.double() - ref).norm() / ref.norm()).item()
            plan = gcuda.path_plan(seq_len, k, dev)
            print(f"L={seq_len} K={k} plan={plan} gated={gate is not None} err={err:.2e}", flush=True)
            assert err < 6e-3


if __name__ == "__main__":
    main()
