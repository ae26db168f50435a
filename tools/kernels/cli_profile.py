"""The torch profiler around `genoconv embed` itself (the CLI's own chunk loop, in process), on the device.

Prints the CUDA kernels by total device time and the host ops by self CPU time, so a streamed record's per-chunk
time through the CLI can be set beside `Embedder.embed_many`'s (benchmarks/profile_model.py --stream); then the ops by
device time grouped by their input shapes, which tells apart the PyTorch element-wise kernels that share one name
(a copy of which tensor, a product of which operands).

    python tools/kernels/cli_profile.py INPUT MODEL [extra `genoconv embed` options]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    inp, model, *extra = sys.argv[1:]
    from genoconv.cli import app

    with tempfile.TemporaryDirectory() as tmp:
        args = ["embed", inp, "-o", str(Path(tmp) / "out.h5"), "--model", model, "--device", "cuda",
                "--dtype", "bfloat16", "--no-per-nucleotide", "--pool", "mean", "--window", "1000", *extra]
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        t = time.perf_counter()
        with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
            app(args, standalone_mode=False)
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    events = prof.key_averages()
    gpu = sum(e.self_device_time_total for e in events) / 1e6
    print(f"wall {wall:.2f} s (profiled), CUDA kernel time {gpu:.2f} s")
    print(events.table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=150))
    print(events.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=70))
    shaped = [e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("aten::")]
    shaped.sort(key=lambda e: e.device_time_total, reverse=True)
    print("ops by device time (own kernels and their callees'), grouped by input shapes")
    for e in shaped[:25]:
        print(f"{e.device_time_total / 1e3:10.1f} ms {e.count:6d} x  {e.key:28s} {str(e.input_shapes)[:150]}")


if __name__ == "__main__":
    main()
