"""Where a cold run of one long record spends its time: the phases a user waits through before and after the compute.

`bench_e2e`'s `cli_dmd` counts 1.4-1.9 s of compute in a process of 7.5-8.2 s, and `embed_1m`'s first call takes
2.4-2.6 s where later calls take 0.23 s. This splits both, in a fresh process (import torch, import genoconv, CUDA
context, kernel library, checkpoint, first call, second call), then profiles a first call twice: cProfile (where the
host waits: genoconv, Triton and torch functions by cumulative time) of the first call, with Triton's kernel cache
empty, then filled, then without Triton; ``--detail`` adds the torch profiler of a call with the filters' caches
cleared (which CUDA kernels a filter-cold call adds to a warm one).

    python tools/cold_start.py --data .devdata --work /tmp/e2e [--record dmd|seq_1m] [--top 25] [--ckpt NAME]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()


def child(ckpt: str, seq_path: str, top: int, device: str, detail: bool) -> None:
    phases = []

    def mark(name: str, t: float) -> float:
        now = time.perf_counter()
        phases.append((name, now - t))
        return now

    t = T0
    import torch

    t = mark("import torch", t)
    import genoconv.cli  # noqa: F401  (what `genoconv embed` imports before it parses its arguments)
    from genoconv import Embedder

    t = mark("import genoconv (cli, api)", t)
    cuda = device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    torch.zeros(1, device=device)
    sync()
    t = mark(f"{device} context", t)
    from genoconv.ops import cuda as kernels

    mod, why = kernels._load()
    t = mark(f"kernel library ({'loaded' if mod is not None else why})", t)
    emb = Embedder.from_pretrained(ckpt, device=device, dtype="bfloat16" if cuda else "float32")
    sync()
    t = mark("Embedder.from_pretrained", t)
    seq = _read(seq_path)
    t = mark(f"read the record ({len(seq):,} bases)", t)
    import cProfile
    import pstats

    first = cProfile.Profile()
    first.enable()
    emb.embed(seq)
    sync()
    first.disable()
    t = mark("first embed (under cProfile)", t)
    emb.embed(seq)
    sync()
    t = mark("second embed", t)
    emb.model.clear_filter_cache()
    emb.embed(seq)
    sync()
    t = mark("embed after clear_filter_cache()", t)
    print("| phase | s |\n| --- | --- |")
    for name, s in phases:
        print(f"| {name} | {s:.3f} |")
    print(f"| total since interpreter start (this script's imports included) | {time.perf_counter() - T0:.3f} |")
    print("\n## cProfile of the first embed, by cumulative time (genoconv, triton, torch's compile and FFT plans)")
    stats = pstats.Stats(first)
    stats.sort_stats("cumulative").print_stats(r"genoconv|triton|compile|fft|cublas|linear|synchron|_ops", top)
    print("## the same, by own time")
    stats.sort_stats("tottime").print_stats(top)
    if not detail:
        return

    emb.model.clear_filter_cache()
    acts = [torch.profiler.ProfilerActivity.CPU] + [torch.profiler.ProfilerActivity.CUDA] * cuda
    with torch.profiler.profile(activities=acts) as tp:
        emb.embed(seq)
        sync()
    warm = torch.profiler.profile(activities=acts)
    with warm:
        emb.embed(seq)
        sync()
    for title, p in (("filter-cold", tp), ("warm", warm)):
        ev = p.key_averages()
        gpu = sum(e.self_device_time_total for e in ev) / 1e3
        print(f"\n## torch profiler, {title} embed: CUDA kernel time {gpu:.1f} ms")
        print(ev.table(sort_by="self_device_time_total", row_limit=top, max_name_column_width=60))
    print(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=60))


def _read(path: str) -> str:
    if path.endswith((".fa.gz", ".fa", ".fasta")):
        from genoconv.io import open_records

        with open_records([path]) as records:
            record = next(iter(records))
            return record.sequence(0, record.length)
    return Path(path).read_text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=".devdata")
    ap.add_argument("--work", default="/tmp/e2e")
    ap.add_argument("--record", default="dmd", help="a key of bench_e2e.prepare's files (dmd, seq_1m, ...)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--ckpt", default="ckpt", help="a checkpoint key of bench_e2e.prepare's files (ckpt: large-1m shape)")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of the script itself")
    ap.add_argument("--detail", action="store_true", help="also the torch profiler of a filter-cold and a warm call")
    ap.add_argument("--child", nargs=2, metavar=("CKPT", "SEQ"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.top, args.device, args.detail)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_e2e

    files = bench_e2e.prepare(Path(args.work), Path(args.data))
    cmd = [sys.executable, __file__, "--child", files[args.ckpt], files[args.record], "--top", str(args.top),
           "--device", args.device] + ["--detail"] * args.detail
    # Triton compiles its kernels on first use into TRITON_CACHE_DIR (default ~/.triton/cache): a fresh directory is
    # a user's first run on a node, the same one again every later run; GENOCONV_FUSED=0 runs no Triton kernel.
    cache = tempfile.mkdtemp(prefix="triton_cache_")
    for title, env in (("Triton cache empty", {"TRITON_CACHE_DIR": cache}),
                       ("Triton cache filled by the run above", {"TRITON_CACHE_DIR": cache}),
                       ("GENOCONV_FUSED=0 (no Triton kernels)", {"TRITON_CACHE_DIR": cache, "GENOCONV_FUSED": "0"})):
        print(f"\n# child process: {title}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call(cmd, env={**os.environ, **env})
        print(f"\nchild process wall {time.perf_counter() - t:.2f} s, rc {rc}", flush=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import genoconv.cli"], capture_output=True,
                          text=True, check=False)
    rows = [line.split("|") for line in proc.stderr.splitlines() if line.startswith("import time:")][1:]
    rows = sorted(((int(r[1]), r[2].rstrip()) for r in rows if r[1].strip().isdigit()), reverse=True)[:15]
    print(f"\n## python -X importtime -c 'import genoconv.cli' (warm disk cache; {time.perf_counter() - t:.2f} s wall),"
          " largest cumulative (us)")
    for us, name in rows:
        print(f"{us:>10} {name}")


if __name__ == "__main__":
    main()
