"""Where the time goes in ``Embedder.embed`` of the HyenaDNA-large-1m shape on the GPU (torch.profiler).

Prints the CUDA kernels with the most self time for warm calls at L bases (numpy out, so the host copy counts), and
the per-call wall time with the fused block steps on and off (GENOCONV_FUSED=0). Used to decide what to fuse next.

    python benchmarks/profile_model.py --length 1000000 --dtype bfloat16 [--out profile.txt]
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

from genoconv import Embedder  # noqa: E402
from genoconv.model import HyenaConfig, HyenaDNA  # noqa: E402


def timed(emb, seq, reps=3, **kw):
    emb.embed(seq, **kw)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        emb.embed(seq, **kw)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=int, default=1_000_000)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = HyenaDNA(HyenaConfig(**LARGE_1M)).init_weights(seed=0)
    emb = Embedder(model, name="large-1m-random", device="cuda", dtype=args.dtype)
    seq = "".join("ACGT"[i] for i in torch.randint(0, 4, (args.length,)).tolist())
    lines = []
    for fused in ("1", "0"):
        os.environ["GENOCONV_FUSED"] = fused
        for as_tensor in (False, True):
            t = timed(emb, seq, as_tensor=as_tensor)
            lines.append(f"GENOCONV_FUSED={fused} as_tensor={as_tensor}: {t * 1e3:.1f} ms = {args.length / t / 1e6:.2f} "
                         f"Mbp/s, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
            print(lines[-1], flush=True)
    os.environ["GENOCONV_FUSED"] = "1"
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            emb.embed(seq)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=70)
    print(table)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n\n" + table)


if __name__ == "__main__":
    main()
