"""Where the time goes in ``Embedder.embed`` of the HyenaDNA-large-1m shape on the GPU (torch.profiler).

Prints the CUDA kernels with the most self time for warm calls at L bases (numpy out, so the host copy counts), and
the per-call wall time with the fused block steps on and off (GENOCONV_FUSED=0). Used to decide what to fuse next.

    python benchmarks/profile_model.py --length 1000000 --dtype bfloat16 [--out profile.txt]
    python benchmarks/profile_model.py --length 9000000 --stream 2194302,3194303   # a streamed record, per chunk size

``--stream`` times ``embed_many`` of one record (pooled mean + 1 kbp windows, as ``genoconv embed`` stores them) at
each chunk size and profiles the last: which kernels grow with the chunk.
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


def stream_profile(emb, seq: str, chunks: list[int], lines: list[str], out: Path | None) -> None:
    def run(chunk):
        (_, arrays), = emb.embed_many([("x", seq)], per_nucleotide=False, pools=("mean",), window=1000,
                                      chunk_size=chunk)
        torch.cuda.synchronize()
        return arrays["mode"]

    for chunk in chunks:
        run(chunk)  # warm-up: spectra, Triton
        t = time.perf_counter()
        mode = run(chunk)
        t = time.perf_counter() - t
        n = -(-len(seq) // chunk)
        lines.append(f"chunk {chunk}: {t * 1e3:.0f} ms for {len(seq)} bases in {n} chunks = {t * 1e3 / n:.0f} ms per "
                     f"chunk, {len(seq) / t / 1e6:.2f} Mbp/s, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB "
                     f"({mode})")
        print(lines[-1], flush=True)
    tables = []
    for chunk in chunks:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            run(chunk)
        tables.append(f"--- chunk {chunk}\n" + prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25,
                                                                          max_name_column_width=60))
        print(tables[-1], flush=True)
    if out:
        out.write_text("\n".join(lines) + "\n\n" + "\n".join(tables))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=int, default=1_000_000)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--stream", default="", help="comma-separated chunk sizes: profile a streamed record instead")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = HyenaDNA(HyenaConfig(**LARGE_1M)).init_weights(seed=0)
    emb = Embedder(model, name="large-1m-random", device="cuda", dtype=args.dtype)
    seq = "".join("ACGT"[i] for i in torch.randint(0, 4, (args.length,)).tolist())
    lines = []
    if args.stream:
        stream_profile(emb, seq, [int(c) for c in args.stream.split(",")], lines, args.out)
        return
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
