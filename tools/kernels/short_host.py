"""The host's own work in one short convolution call (the part of a synchronised call the GPU waits through).

host_share.py measured 0.07-0.14 ms of host start per call at 512-16K; this names it: cProfile over N calls of
`causal_conv` at the sweep's shape for each L, plain and gated, by own time per call.

    python tools/kernels/short_host.py [L ...]   (default 512 2048 16384)
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_fftconv import shapes

from genoconv.ops.fftconv import LongFilter, causal_conv

CALLS = 300


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [512, 2048, 16384]
    for name, batch, channels, seq_len in shapes(sizes=sizes):
        u = torch.randn(batch, channels, seq_len, device="cuda", dtype=torch.bfloat16)
        g = torch.randn_like(u)
        filt = LongFilter(torch.randn(channels, seq_len, device="cuda") / seq_len, torch.randn(channels, device="cuda"))
        for label, args in (("plain", (u, filt)), ("gated", (u, filt, g, g))):
            causal_conv(*args)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(CALLS):
                causal_conv(*args)
            host = (time.perf_counter() - t) / CALLS * 1e6
            torch.cuda.synchronize()
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(CALLS):
                causal_conv(*args)
            prof.disable()
            torch.cuda.synchronize()
            print(f"\n### L = {name} {label} (B {batch} x H {channels}): host {host:.1f} us per call (queue not full)")
            st = pstats.Stats(prof)
            st.sort_stats("tottime")
            for (file, line, func), (_, ncalls, tottime, cum, _) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:14]:
                print(f"{tottime / CALLS * 1e6:8.1f} us own {cum / CALLS * 1e6:8.1f} us cum  x{ncalls // CALLS:<3}"
                      f" {Path(file).name}:{line} {func}")


if __name__ == "__main__":
    main()
