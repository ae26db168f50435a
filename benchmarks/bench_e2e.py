"""End-to-end throughput and peak memory of the HyenaDNA-large-1m shape on real DNA (random weights).

Cases (BENCHMARKS.md "End to end"): 100 kbp and 1 Mbp of chrX in one exact pass; the DMD gene (2,220,382 bp, longer
than l_max) with a partial filter of K taps, streamed in chunks of C; a streamed slice of chrX (default 20 Mbp;
``--chrx-bases 0`` for all of chrX 1-70 Mbp). Output is pooled (mean of the final layer), as the project's method
says; per-nucleotide storage is measured separately. Reports Mbp/s, peak GPU memory (max_memory_allocated, reset
per case), the carried stream state, and the process's peak RSS. On a CPU it runs the tiny-16k shape instead.

Anchors printed beside each row are the official HyenaDNA standalone figures from ../shared/BENCHMARKS.md (H200,
same shape, random weights) — not re-run here, since the official code cannot be copied into this project.

    python benchmarks/bench_e2e.py --data .devdata --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genoconv.model import HyenaConfig, HyenaDNA, Tokenizer  # noqa: E402
from genoconv.model.hyena import StreamState  # noqa: E402

LARGE_1M = HyenaConfig(d_model=256, n_layer=8, d_inner=1024, max_seq_len=1_000_002)
TINY_16K = HyenaConfig(d_model=128, n_layer=2, d_inner=512, max_seq_len=16_386)
# Official standalone code, large-1m shape, random weights, H200 (../shared/BENCHMARKS.md).
ANCHORS = {"100 kbp": "68 ms, 1.47 Mbp/s, 2.4 GiB", "1 Mbp": "587 ms bf16 (801 fp32), 1.70 Mbp/s, 20.1 GiB",
           "DMD": "fails (longer than l_max)", "chrX": "not possible"}


def read_fasta_gz(path: Path, limit: int | None = None) -> str:
    """First record of a (b)gzip FASTA as one string (BGZF is multi-member gzip; no pysam needed)."""
    parts, total = [], 0
    with gzip.open(path, "rt") as fh:
        next(fh)
        for line in fh:
            if line.startswith(">"):
                break
            parts.append(line.strip())
            total += len(parts[-1])
            if limit and total >= limit:
                break
    seq = "".join(parts)
    return seq[:limit] if limit else seq


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(model: HyenaDNA, tok: Tokenizer, seq: str, device: torch.device, *, filter_len: int | None,
             chunk: int | None) -> dict:
    """Mean-pooled final layer of one record; one pass, or streamed in chunks with carried state."""
    model.set_convolution(filter_len)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    last = model.num_hidden_states - 1
    total = torch.zeros(model.config.d_model, dtype=torch.float64, device=device)
    state_bytes = 0
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        if chunk is None:
            ids = tok.encode(seq)[None].to(device)
            total += model.hidden_states(ids, [last])[last][0].double().sum(0)
        else:
            stream = StreamState.empty(model.config.n_layer)
            for start in range(0, len(seq), chunk):
                ids = tok.encode(seq[start:start + chunk], offset=start)[None].to(device)
                total += model.hidden_states(ids, [last], stream)[last][0].double().sum(0)
                state_bytes = max(state_bytes, stream.nbytes())
    sync(device)
    seconds = time.perf_counter() - t0
    model.set_convolution(None)
    pooled = (total / len(seq)).float().cpu()
    return {"bases": len(seq), "seconds": seconds, "mbp_per_s": len(seq) / seconds / 1e6,
            "peak_gpu_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "state_gib": state_bytes / 2**30, "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "pooled_norm": float(pooled.norm()), "finite": bool(torch.isfinite(pooled).all())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--filter-lens", default="1000002,262144", help="K values for DMD and the chrX stream")
    ap.add_argument("--chunk", type=int, default=None, help="streaming chunk C (default: K)")
    ap.add_argument("--chrx-bases", type=int, default=20_000_000, help="0 = all of chrX 1-70 Mbp")
    ap.add_argument("--skip", default="", help="comma list of cases to skip: 100k,1m,dmd,chrx")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    device = torch.device(args.device)
    cfg = LARGE_1M if device.type == "cuda" else TINY_16K
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model = HyenaDNA(cfg).init_weights(seed=0).to(device).eval().set_compute_dtype(dtype)
    tok = Tokenizer()
    skip = set(filter(None, args.skip.split(",")))
    chrx_path, dmd_path = args.data / "GRCh37_chrX_1-70M.fa.gz", args.data / "DMD_GRCh37_chrX.fa.gz"
    chrx = read_fasta_gz(chrx_path, None if args.chrx_bases == 0 else max(args.chrx_bases, 1_100_000) + 40_000_000)
    start = 40_000_000 if len(chrx) > 41_100_000 else 0  # skip the leading N run of chrX for the exact cases
    rows = []
    cases = []
    if "100k" not in skip:  # one pass; a partial filter of l_max taps where the shape's context is shorter
        cases.append(("100 kbp", chrx[start:start + 100_000], None if cfg.max_seq_len >= 100_000 else cfg.max_seq_len,
                      None))
    if "1m" not in skip and cfg.max_seq_len >= 1_000_000:
        cases.append(("1 Mbp", chrx[start:start + 1_000_000], None, None))
    ks = [int(k) for k in args.filter_lens.split(",")]
    if "dmd" not in skip:
        dmd = read_fasta_gz(dmd_path)
        for k in ks:
            k = min(k, cfg.max_seq_len)
            cases.append((f"DMD K={k}", dmd, k, args.chunk or k))
    if "chrx" not in skip:
        stream = chrx if args.chrx_bases == 0 else chrx[:args.chrx_bases]
        for k in ks:
            k = min(k, cfg.max_seq_len)
            cases.append((f"chrX 1-{len(stream) / 1e6:g} Mbp K={k}", stream, k, args.chunk or k))
    run_case(model, tok, chrx[start:start + min(20_000, cfg.max_seq_len)], device, filter_len=None, chunk=None)
    for name, seq, k, chunk in cases:
        try:
            r = run_case(model, tok, seq, device, filter_len=k, chunk=chunk)
        except torch.OutOfMemoryError as exc:
            r = {"bases": len(seq), "error": f"OOM: {str(exc).splitlines()[0]}"}
        r.update(case=name, filter_len=k, chunk=chunk)
        rows.append(r)
        print(json.dumps(r), flush=True)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{cfg.n_layer} layers, d_model {cfg.d_model}, l_max {cfg.max_seq_len}, {args.dtype}, {dev_name}, "
          f"torch {torch.__version__}")
    print("| case | bases | K | C | time (s) | Mbp/s | peak GPU (GiB) | state (GiB) | peak RSS (GiB) | official anchor |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        anchor = next((v for key, v in ANCHORS.items() if r["case"].startswith(key)), "")
        if "error" in r:
            print(f"| {r['case']} | {r['bases']:,} | {r['filter_len']} | {r['chunk']} | {r['error']} | | | | | {anchor} |")
            continue
        gpu = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else "-"
        print(f"| {r['case']} | {r['bases']:,} | {r['filter_len'] or 'full'} | {r['chunk'] or '-'} | "
              f"{r['seconds']:.2f} | {r['mbp_per_s']:.2f} | {gpu} | {r['state_gib']:.2f} | {r['rss_gib']:.1f} | "
              f"{anchor} |")
    if args.json:
        args.json.write_text(json.dumps({"device": dev_name, "dtype": args.dtype, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
