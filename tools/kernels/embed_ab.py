"""Embedder.embed at 1 Mbp (large-1m shape) on the device: warm time with the op's own input scales against the Python
ones, spectrum builds per warm call (filter-cache misses), the host profile (cProfile) and the top CUDA kernels of one warm
call.

    python tools/kernels/embed_ab.py CHECKPOINT SEQ_FILE
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from genoconv import Embedder
from genoconv.ops import cuda


def warm(emb, seq, reps=5):
    emb.embed(seq)
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        emb.embed(seq)
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return sorted(out)[reps // 2] * 1e3


def main() -> None:
    ckpt, seq_file = sys.argv[1:3]
    seq = Path(seq_file).read_text()
    emb = Embedder.from_pretrained(ckpt, device="cuda", dtype="bfloat16")
    builds = {"long": 0, "monarch": 0}
    real_long, real_monarch, real_op = cuda._long_spectrum, cuda._monarch_spectrum, cuda._long_op

    def count(name, fn):
        def wrapped(*a, **k):
            builds[name] += 1
            return fn(*a, **k)
        return wrapped

    cuda._long_spectrum, cuda._monarch_spectrum = count("long", real_long), count("monarch", real_monarch)
    print(f"op scales: {warm(emb, seq):.1f} ms")
    before = dict(builds)
    emb.embed(seq)
    torch.cuda.synchronize()
    print(f"spectrum builds in one warm call: { {k: builds[k] - before[k] for k in builds} }")

    def python_scales(f, u, pre, post, y, in_scale, *rest, op=None):
        return real_op(f, u, pre, post, y, cuda._in_scale(u, pre) if in_scale is None else in_scale, *rest, op=op)

    cuda._long_op = python_scales
    print(f"python scales: {warm(emb, seq):.1f} ms")
    cuda._long_op = real_op
    print(f"op scales again: {warm(emb, seq):.1f} ms")
    import cProfile
    import pstats

    prof_host = cProfile.Profile()
    prof_host.enable()
    emb.embed(seq)
    torch.cuda.synchronize()
    prof_host.disable()
    pstats.Stats(prof_host).sort_stats("tottime").print_stats(25)
    pstats.Stats(prof_host).sort_stats("cumulative").print_stats(30)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        emb.embed(seq)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
