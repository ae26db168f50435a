"""The notebook pattern on the CPU: ``Embedder.embed`` called once per 16,384-bp window, beside the official code's
forward on the same window, in the same run.

Case: bench_cpu.py's (HyenaDNA tiny-16k shape, random weights, seed 0; windows of the first 1 Mbp of E. coli), fp32,
per-nucleotide numpy output (``Embedder.embed``'s default). Rows:
  - genoconv as shipped: after each call (one engine run) the heap is trimmed only past ``cpu_alloc.KEEP_FREE_BYTES``
    free, so the next call reuses the temporaries;
  - genoconv trimming after every call (``release_freed_memory(keep=0)``: the behaviour before, 2026-12-05);
  - the official standalone code: ``model(ids)`` of the first window, median of --reps (forward only: no tokenizer, no
    output copy), from run_official.py in a scratch folder (bench_cpu.find_official), when present.
Per call: median wall ms over --calls windows, minor page faults (getrusage).

    python benchmarks/bench_cpu_api.py [--calls 20] [--official DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from Bio import SeqIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cpu

ROOT = Path(__file__).resolve().parents[1]


def per_call(emb, seqs: list[str]) -> tuple[float, float | None]:
    """Median ms per ``embed`` call and minor faults per call."""
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for s in seqs:
        t = time.perf_counter()
        emb.embed(s)
        times.append((time.perf_counter() - t) * 1e3)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return statistics.median(times), faults / len(seqs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--official", type=Path)
    ap.add_argument("--genome", type=Path, default=ROOT.parent / "shared" / "data" / "ecoli_K12_MG1655.fa.gz")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from genoconv import Embedder
    from genoconv.engine import engine
    from genoconv.ops import cpu_alloc

    work = Path(tempfile.mkdtemp(prefix="bench_cpu_api_"))
    ckpt, windows = work / "ckpt_tiny16k_seed0", work / "ecoli_1M_w16k.fa"
    bench_cpu.write_windows(args.genome, windows)
    subprocess.run([sys.executable, "-c", bench_cpu.MAKE_CKPT, json.dumps(bench_cpu.SHAPE), str(ckpt)], check=True,
                   capture_output=True, text=True)
    seqs = [str(r.seq) for r in SeqIO.parse(windows, "fasta")][: args.calls + 2]
    emb = Embedder.from_pretrained(str(ckpt), device="cpu", dtype="float32")
    for s in seqs[:2]:
        emb.embed(s)
    rows = {}
    rows["genoconv, as shipped"] = per_call(emb, seqs[2:])
    shipped = engine.release_freed_memory
    engine.release_freed_memory = lambda: cpu_alloc.release_freed_memory(keep=0)
    try:
        rows["genoconv, trimming after every call (before)"] = per_call(emb, seqs[2:])
    finally:
        engine.release_freed_memory = shipped
    rows["genoconv, as shipped (again)"] = per_call(emb, seqs[2:])

    official, why = bench_cpu.find_official(args.official)
    if official is not None:
        proc = subprocess.run([sys.executable, str(official / "run_official.py"), "--ckpt", str(ckpt), "--fasta",
                               str(windows), "--bases", str(bench_cpu.WINDOW), "--device", "cpu", "--dtype", "float32",
                               "--warmup", "2", "--reps", str(args.calls)], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            rows["official standalone, forward only"] = (res["seconds"] * 1e3, None)
        else:
            print(f"official run failed: {proc.stderr.strip()[-500:]}", file=sys.stderr)
    else:
        print(why, file=sys.stderr)

    print(f"CPU: {torch.get_num_threads()} threads, torch {torch.__version__}; {args.calls} calls of one "
          f"{bench_cpu.WINDOW:,}-bp window each (tiny-16k shape, fp32, per-nucleotide numpy out)")
    print("| | ms per call (median) | minor faults per call |")
    print("| --- | --- | --- |")
    for name, (ms, faults) in rows.items():
        print(f"| {name} | {ms:.1f} | {'-' if faults is None else f'{faults:,.0f}'} |")
    if args.json:
        args.json.write_text(json.dumps({k: {"ms": v[0], "faults": v[1]} for k, v in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
