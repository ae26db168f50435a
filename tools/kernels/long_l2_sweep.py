"""Long path: launch blocks sized to L2 (GENOCONV_LONG_WORK_BYTES), on the device (NOTES.md v18: they lost).

For each shape (B * H * L = 2^27 as the sweep's, plus the DMD row) and each workspace budget, the op's time per call
(median of events around one call each, synchronised after each, as bench_fftconv.time_ms; and back to back, as
triton's do_bench, where the host runs ahead), the host's own time per call, and whether y is bitwise the default's.

    python tools/kernels/long_l2_sweep.py [--budgets 1073741824,50331648,...] [--shapes 1x64x2097152,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_fftconv import copy_bandwidth, long_filter, oracle_error, time_ms

from genoconv.ops import LongFilter
from genoconv.ops import cuda as gcuda

SHAPES = [(8, 256, 1 << 16), (2, 256, 1 << 18), (1, 128, 1 << 20), (1, 64, 1 << 21), (1, 32, 1 << 22),
          (1, 256, 2_220_382)]


def b2b_ms(fn, reps=15):
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    host = []
    for a, b in events:
        a.record()
        t = time.perf_counter()
        fn()
        host.append((time.perf_counter() - t) * 1e3)
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in events), statistics.median(host)


def sweep(batch: int, channels: int, seq_len: int, budgets: list[int], bw: float) -> None:
    """One shape at every budget: both timings, the host's time per call, and whether y is the first budget's."""
    dev = torch.device("cuda")
    u = torch.randn(batch, channels, seq_len, device=dev).to(torch.bfloat16)
    taps = long_filter(channels, seq_len, dev)
    bias = torch.randn(channels, device=dev)
    filt = LongFilter(taps, bias)
    floor_ms = 4 * u.numel() / bw * 1e3
    plan = gcuda.path_plan(seq_len, seq_len, dev)
    ref = None

    def fn():
        return gcuda.causal_conv_cuda(u, filt)

    for budget in budgets:
        os.environ["GENOCONV_LONG_WORK_BYTES"] = str(budget)
        y = fn()
        torch.cuda.synchronize()
        if ref is None:
            ref = y
            print(f"(error vs float64 at the first budget: {oracle_error(y, u, taps, bias, rows=2):.2e})")
        same = torch.equal(y, ref)
        del y
        s = time_ms(fn, reps=15)  # one call between events, synchronised after each (the sweep's timing)
        b, host = b2b_ms(fn)
        print(f"| {batch} x {channels} x {seq_len} | {plan[0]} | {budget / 2**20:.0f} | {s:.3f} | "
              f"{100 * floor_ms / s:.1f}% | {b:.3f} | {100 * floor_ms / b:.1f}% | {host:.3f} | {same} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default=f"{1 << 30},{48 << 20},{24 << 20},{12 << 20},{6 << 20}")
    ap.add_argument("--shapes", default="")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    dev = torch.device("cuda")
    bw = copy_bandwidth()
    props = torch.cuda.get_device_properties(dev)
    print(f"{props.name}, L2 {props.L2_cache_size >> 20} MiB, copy bandwidth {bw / 1e12:.2f} TB/s")
    print("| B x H x L | plan | budget MiB | synced ms | % floor | back-to-back ms | % floor | host ms | same y |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for batch, channels, seq_len in shapes:
        sweep(batch, channels, seq_len, budgets, bw)
        torch.cuda.empty_cache()



if __name__ == "__main__":
    main()
