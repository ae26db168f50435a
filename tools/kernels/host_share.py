"""How much of a synchronised call (bench_fftconv.py's timing: one call between two events, synchronised after each)
is the host's start rather than the kernels: each size of the issue-13 sweep (B*H*L = 2^27, bf16) timed that way and
back to back (20 calls between two events, the way a model's forward keeps the GPU fed), plain and gated, with the
share of the memory floor each gives.

    python tools/kernels/host_share.py [L ...]      (default 512 2048 8192 16384 65536 2097152)
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_fftconv import back_to_back, copy_bandwidth, long_filter, shapes, time_ms

from genoconv.ops import LongFilter
from genoconv.ops import cuda as gcuda


def main() -> None:
    sizes = [int(x) for x in sys.argv[1:]] or [512, 2048, 8192, 16384, 65536, 2097152]
    dev = torch.device("cuda")
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    print("| L | B x H | plain synchronised | plain back to back | gated synchronised | gated back to back |")
    print("| --- | --- | --- | --- | --- | --- |")
    for _, batch, channels, seq_len in shapes(sizes=sizes):  # the sweep's B x H for each L
        u, pre, post = (torch.randn(batch, channels, seq_len, device=dev).to(torch.bfloat16) for _ in range(3))
        filt = LongFilter(long_filter(channels, seq_len, dev), torch.randn(channels, device=dev))
        floor = 4 * u.numel() / bw * 1e3
        cells = []
        for gated in (False, True):
            fn = functools.partial(gcuda.causal_conv_cuda, *((u, filt, pre, post) if gated else (u, filt)))
            f = floor * (2 if gated else 1)
            for t in (time_ms(fn), back_to_back(fn)):
                cells.append(f"{t:.3f} ms ({f / t:.1%})")
        print(f"| {seq_len} | {batch} x {channels} | " + " | ".join(cells) + " |", flush=True)
        del u, pre, post, filt
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
