"""Interleaved A/B of compile-time variants of the tensor-core kernel built into *one* library, picked per launch by
GENOCONV_MONARCH_VAR. One build and one process instead of one build per variant (~2 min each on the device) and a
process per side; the same inputs for every variant, rounds in alternating order, medians per (size, variant); plain
and gated, % of the memory floor (4 / 8 B per element at the measured copy bandwidth), error against the float64
oracle; ``--once`` makes one call per size and variant, for ncu (device_variants.sh).

The shipped kernel has no variants. An experiment adds them on a branch (NOTES.md v27 has the pattern): a template
parameter ``int kVar`` on ``monarch_conv_kernel`` / ``launch_t`` whose bits switch the code under test, and a
``launch_var`` between ``Launch::run`` and ``launch_t`` that reads the variable at every launch (so one process can
interleave them) and instantiates the variants only for the sizes and forms measured. The long path's launches
(fftconv_long.cu) can read the same bits through a `monarch_var()` (NOTES.md v28); ``--gene`` adds the DMD shape.
Without such a branch every variant is the shipped kernel and the table shows noise. ``--env`` names another variable
an experiment reads at every call (branch s23-fused: GENOCONV_LONG_SLOTS, the long path's single launch; NOTES v30).

    python tools/kernels/variant_ab.py --sizes 2048,8192,16384 --variants 0,1,3,4,5,7 --rounds 3
"""
import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_fftconv as bf  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2048,8192,16384")
    ap.add_argument("--variants", default="0,1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gene", action="store_true", help="add the DMD shape (B 1, H 256, L 2,220,382)")
    ap.add_argument("--once", action="store_true", help="one plain and one gated call per size and variant (for ncu)")
    ap.add_argument("--env", default="GENOCONV_MONARCH_VAR",
                    help="the variable the variants set (default: the tensor-core kernel's variant bits)")
    args = ap.parse_args()
    from genoconv.ops import LongFilter
    from genoconv.ops import cuda as gcuda

    dev = torch.device("cuda")
    bw = bf.copy_bandwidth()
    variants = [int(v) for v in args.variants.split(",")]
    print(f"# {torch.cuda.get_device_name()}, copy bandwidth {bw / 1e12:.2f} TB/s, variants {variants}")
    for name, batch, channels, seq_len in bf.shapes(sizes=[int(s) for s in args.sizes.split(",")], gene=args.gene):
        elems = batch * channels * seq_len
        taps = bf.long_filter(channels, seq_len, dev)
        bias = torch.randn(channels, device=dev)
        filt = LongFilter(taps, bias)
        u, pre, post = (torch.randn(batch, channels, seq_len, device=dev).to(torch.bfloat16) for _ in range(3))
        if args.once:
            for v in variants:
                os.environ[args.env] = str(v)
                gcuda.causal_conv_cuda(u, filt)
                gcuda.causal_conv_cuda(u, filt, pre, post)
            torch.cuda.synchronize()
            continue
        times = {(v, g): [] for v in variants for g in (False, True)}
        errs = {}
        for r in range(args.rounds):
            for v in variants if r % 2 == 0 else variants[::-1]:
                os.environ[args.env] = str(v)
                times[v, False].append(bf.time_ms(lambda: gcuda.causal_conv_cuda(u, filt), reps=20))
                times[v, True].append(bf.time_ms(lambda: gcuda.causal_conv_cuda(u, filt, pre, post), reps=20))
                if r == 0:
                    errs[v] = (bf.oracle_error(gcuda.causal_conv_cuda(u, filt), u, taps, bias),
                               bf.oracle_error(gcuda.causal_conv_cuda(u, filt, pre, post), u, taps, bias, pre, post))
        floor = 4 * elems / bw * 1e3
        print(f"\n## {name} (B {batch}, H {channels}, L {seq_len}), floor {floor:.3f} ms plain")
        print("| variant | plain ms (rounds) | plain % floor | gated ms (rounds) | gated % floor | err plain / gated |")
        print("| --- | --- | --- | --- | --- | --- |")
        for v in variants:
            tp, tg = times[v, False], times[v, True]
            mp, mg = statistics.median(tp), statistics.median(tg)
            print(f"| {v} | {mp:.4f} ({', '.join(f'{x:.4f}' for x in tp)}) | {floor / mp:.1%} | "
                  f"{mg:.4f} ({', '.join(f'{x:.4f}' for x in tg)}) | {2 * floor / mg:.1%} | "
                  f"{errs[v][0]:.2e} / {errs[v][1]:.2e} |", flush=True)
    os.environ.pop(args.env, None)


if __name__ == "__main__":
    main()
