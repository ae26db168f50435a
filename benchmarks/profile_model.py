"""Where the time goes in one forward pass of the HyenaDNA-large-1m shape on the GPU (torch.profiler).

Prints the CUDA kernels with the most self time for a one-pass forward at L bases, and the wall time under each
``GENOCONV_FFT_SIZES`` choice. Used to decide what to fuse next (see BENCHMARKS.md).

    python benchmarks/profile_model.py --length 1000000 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_e2e import LARGE_1M  # noqa: E402

from genoconv.model import HyenaDNA  # noqa: E402


def timed(model, ids, reps=3):
    last = model.num_hidden_states - 1
    with torch.inference_mode():
        model.hidden_states(ids, [last])
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            model.hidden_states(ids, [last])
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=int, default=1_000_000)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    model = HyenaDNA(LARGE_1M).init_weights(seed=0).cuda().eval().set_compute_dtype(dtype)
    ids = torch.randint(7, 11, (1, args.length), device="cuda")
    for sizes in ("smooth", "pow2"):
        os.environ["GENOCONV_FFT_SIZES"] = sizes
        dt = timed(model, ids)
        print(f"FFT sizes {sizes}: {dt * 1e3:.1f} ms = {args.length / dt / 1e6:.2f} Mbp/s, "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        timed(model, ids, reps=1)
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=70))


if __name__ == "__main__":
    main()
