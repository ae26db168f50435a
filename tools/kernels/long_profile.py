"""Per-kernel CUDA times of the long path against the three-pass scalar kernels (torch.profiler), on the device.

    python tools/kernels/long_profile.py [B,H,L,K ...]
"""

from __future__ import annotations

import os
import sys

import torch

from genoconv.ops import LongFilter
from genoconv.ops import cuda as gcuda


def profile(batch: int, channels: int, seq_len: int, k: int, scalar: bool) -> None:
    os.environ["GENOCONV_FFTCONV_PATH"] = "scalar" if scalar else "auto"
    dev = torch.device("cuda")
    u = torch.randn(batch, channels, seq_len, device=dev).to(torch.bfloat16)
    filt = LongFilter(torch.randn(channels, k, device=dev) / k**0.5, torch.randn(channels, device=dev))
    for _ in range(3):
        gcuda.causal_conv_cuda(u, filt)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            gcuda.causal_conv_cuda(u, filt)
        torch.cuda.synchronize()
    plan = gcuda.long_plan(seq_len, k, smem_per_block=gcuda._smem_per_block(dev))
    print(f"--- B={batch} H={channels} L={seq_len} K={k} {'scalar' if scalar else 'long ' + str(plan)}")
    rows = {}
    for e in prof.key_averages():
        if e.device_time_total > 0:
            rows[e.key[:90]] = (e.device_time_total / 5 / 1e3, e.count // 5)
    for key, (ms, n) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
        print(f"{ms:8.3f} ms  x{n:<3} {key}")


def main() -> None:
    cases = [tuple(int(x) for x in a.split(",")) for a in sys.argv[1:]] or [
        (1, 64, 1 << 21, 1 << 21), (2, 64, 1 << 20, 1 << 20), (1, 256, 2_220_382, 1_000_000)]
    for case in cases:
        for scalar in (False, True):
            profile(*case, scalar=scalar)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
