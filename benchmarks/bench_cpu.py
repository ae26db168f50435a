"""CPU end to end, side by side (issue 18): the official HyenaDNA standalone code and `genoconv embed`, same weights,
same windows, whole processes in turns on a quiet machine.

Case: the HyenaDNA tiny-16k shape (2 layers, d_model 128, d_inner 512, l_max 16,386) with random weights (seed 0,
written by genoconv's save_checkpoint in the -hf layout, which the official side loads), the first 1,000,000 bases
of E. coli K-12 (../shared/data/ecoli_K12_MG1655.fa.gz) cut into 62 windows of 16,384 bp, fp32, pooled means:
  A  official:  python DIR/run_official.py --ckpt CKPT --fasta WINDOWS --window 16384 --save A.npz   (batch 1 each)
  B  genoconv:  python -m genoconv embed WINDOWS -o B.h5 --model CKPT --no-per-nucleotide --pool mean
                --device cpu --dtype float32 --overwrite
A warm-up pair (not counted), then A B A B ... until --pairs clean pairs. Before every run the script waits until
the whole machine is idle (/proc/stat over 2 s below --quiet); during it, it records the machine's busy time and
subtracts the run's own CPU time (wait4 rusage): what is left is other processes (or the hypervisor's steal). A pair
in which either run saw others use more than --max-others of the machine is discarded and redone (the discarded
runs are kept in --json, marked). Per run: wall, user / sys CPU, peak RSS, minor page faults, context switches.

Then --demo-runs runs of the shipped model on the whole genome (4,639,675 bp, one record: partial convolution,
streamed): genoconv embed ECOLI -o demo.h5 --window 1000 --no-per-nucleotide --device cpu --overwrite.
Under the table: the fp32 agreement of the two sides' pooled means on the 62 windows (last counted pair).

The official side comes from a scratch copy outside the repository (run_official.py + standalone_hyenadna.py from
HazyResearch/hyena-dna; never committed): --official DIR, by default the first of ../.devdata/official,
.devdata/official and ../scratch/official that exists. Without it that side is skipped with a message and
genoconv runs alone.

    python benchmarks/bench_cpu.py [--official DIR] [--pairs 3] [--demo-runs 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ECOLI = ROOT.parent / "shared" / "data" / "ecoli_K12_MG1655.fa.gz"
OFFICIAL_DEFAULTS = (ROOT.parent / ".devdata" / "official", ROOT / ".devdata" / "official",
                     ROOT.parent / "scratch" / "official")
WINDOW, BASES = 16_384, 1_000_000
SHAPE = {"d_model": 128, "n_layer": 2, "d_inner": 512, "max_seq_len": 16_386}

MAKE_CKPT = r"""
import json, sys, torch, genoconv
from genoconv.model import HyenaConfig, HyenaDNA
from genoconv.model.checkpoint import save_checkpoint
shape, out = json.loads(sys.argv[1]), sys.argv[2]
save_checkpoint(HyenaDNA(HyenaConfig(**shape)).init_weights(seed=0), out)
print(json.dumps({"torch": torch.__version__, "genoconv": genoconv.__version__, "threads": torch.get_num_threads()}))
"""


# ---- the machine ----------------------------------------------------------------------------------------------
def cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot; steal counts as busy, iowait as idle."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(v[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (total - v[3] - v[4]) / hz, total / hz


def machine_busy(seconds: float = 2.0) -> float:
    b0, t0 = cpu_times()
    time.sleep(seconds)
    b1, t1 = cpu_times()
    return (b1 - b0) / max(t1 - t0, 1e-9)


def wait_quiet(limit: float, max_wait: float) -> tuple[float, float]:
    """Wait until the machine is below ``limit`` busy (fraction of all cores); returns (busy, seconds waited)."""
    start, said = time.time(), 0.0
    while True:
        busy = machine_busy()
        waited = time.time() - start
        if busy < limit or waited > max_wait:
            return busy, waited
        if waited - said >= 60:
            said = waited
            print(f"  waiting for a quiet machine: {busy:.0%} busy, {waited:.0f} s so far", file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return re.search(r"Model name:\s*(.+)", out).group(1).strip()
    except Exception:  # noqa: BLE001 - descriptive only
        return platform.processor() or "unknown"


# ---- one run --------------------------------------------------------------------------------------------------
def measure(name: str, cmd: list[str], work: Path, args) -> dict:
    """One whole process after a quiet wait: wall, rusage (peak RSS, CPU, faults), others' share of the machine."""
    quiet, waited = wait_quiet(args.quiet, args.max_wait)
    log = work / f"{name}.log"
    b0, t0 = cpu_times()
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=work)
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    b1, t1 = cpu_times()
    proc.returncode = os.waitstatus_to_exitcode(status)
    own = ru.ru_utime + ru.ru_stime
    row = {"name": name, "rc": proc.returncode, "wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
           "peak_rss_gib": ru.ru_maxrss / 2**20, "minor_faults": ru.ru_minflt, "major_faults": ru.ru_majflt,
           "vol_ctx": ru.ru_nvcsw, "invol_ctx": ru.ru_nivcsw, "cores_used": own / wall,
           "machine_busy": (b1 - b0) / max(t1 - t0, 1e-9),
           "others_share": max(0.0, (b1 - b0) - own) / max(t1 - t0, 1e-9),
           "busy_before": quiet, "waited_s": waited, "time": time.strftime("%H:%M:%S")}
    text = log.read_text(errors="replace")
    if proc.returncode:
        row["error"] = text[-1500:]
    m = re.search(r"computed in ([\d.]+) s", text)  # genoconv's own count (model load and file setup excluded)
    if m:
        row["compute_s"] = float(m.group(1))
    for line in reversed(text.splitlines()):  # run_official.py ends with one JSON line
        if line.startswith("{"):
            try:
                child = json.loads(line)
                row["compute_s"] = child.get("compute_s")
                row["child"] = {k: child.get(k) for k in ("windows", "bases", "threads", "torch", "stand_ins")}
            except json.JSONDecodeError:
                pass
            break
    return row


def contended(row: dict, args) -> str | None:
    if row["rc"]:
        raise SystemExit(f"{row['name']} failed (exit {row['rc']}):\n{row.get('error', '')}")
    if row["others_share"] > args.max_others:
        return f"others used {row['others_share']:.0%} of the machine"
    return None


def say(row: dict, note: str = "") -> None:
    print(f"  {row['time']} {row['name']:9s} {row['wall_s']:7.2f} s  user {row['user_s']:6.2f}  sys "
          f"{row['sys_s']:5.2f}  RSS {row['peak_rss_gib']:.2f} GiB  faults {row['minor_faults']:>9,}  cores "
          f"{row['cores_used']:.2f}  others {row['others_share']:.0%}  (waited {row['waited_s']:.0f} s){note}",
          file=sys.stderr, flush=True)


# ---- inputs ---------------------------------------------------------------------------------------------------
def write_windows(genome: Path, out: Path) -> int:
    """The first BASES bases of the first record, upper-cased, as WINDOW-bp records w000_0, w001_16384, ..."""
    seq, n = [], 0
    with gzip.open(genome, "rt") as fh:
        if not fh.readline().startswith(">"):
            raise SystemExit(f"{genome}: not a FASTA")
        for line in fh:
            if line.startswith(">") or n >= BASES:
                break
            seq.append(line.strip())
            n += len(seq[-1])
    s = "".join(seq)[:BASES].upper()
    with open(out, "w") as fh:
        for k, i in enumerate(range(0, len(s), WINDOW)):
            w = s[i:i + WINDOW]
            fh.write(f">w{k:03d}_{i}\n" + "".join(w[j:j + 80] + "\n" for j in range(0, len(w), 80)))
    return len(s)


def find_official(arg: Path | None) -> tuple[Path | None, str]:
    cands = [arg] if arg else list(OFFICIAL_DEFAULTS)
    for d in cands:
        if (d / "run_official.py").is_file() and (d / "standalone_hyenadna.py").is_file():
            return d.resolve(), ""
    return None, ("official side skipped: no run_official.py + standalone_hyenadna.py in "
                  + " or ".join(str(d) for d in cands)
                  + " (a scratch copy of HazyResearch/hyena-dna's standalone code and its harness; never committed)")


def agreement(npz: Path, h5: Path) -> dict:
    """Relative L2 of genoconv's pooled means against the official code's, per window (fp64 arithmetic)."""
    import numpy as np

    from genoconv import open_embeddings  # numpy + h5py only
    ref = np.load(npz)
    off = {str(i).rsplit(":", 1)[0]: v for i, v in zip(ref["ids"], ref["pooled_mean"].astype(np.float64))}
    with open_embeddings(h5) as f:
        got = dict(zip(f.ids, f.pooled("mean").astype(np.float64)))
    if set(off) != set(got):
        return {"error": f"different windows: {len(off)} official, {len(got)} genoconv"}
    errs = [float(np.linalg.norm(got[k] - off[k]) / np.linalg.norm(off[k])) for k in off]
    return {"windows": len(errs), "max_rel_l2": max(errs), "median_rel_l2": statistics.median(errs)}


def stored_plan(h5: Path) -> dict:
    """What a genoconv output holds: its bases and the plan each record ran under (/modes, e.g. partial:K=...)."""
    from genoconv import open_embeddings  # numpy + h5py only

    with open_embeddings(h5) as f:
        return {"bases": int(f.lengths.sum()), "mode": ", ".join(sorted(set(f.modes)))}


# ---- report -------------------------------------------------------------------------------------------------
def med(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def table(a: list[dict], b: list[dict], demo: list[dict], bases: int, genome_bases: int, demo_mode: str) -> list[str]:
    """Markdown: the two sides' medians and ratios; the demo model's whole-genome row below."""
    def cell(rows, fmt, *keys):
        vals = [med(rows, k) for k in keys]
        return " / ".join("-" if v is None else fmt.format(v) for v in vals)

    def wall(rows, bold=False):
        if not rows:
            return "-"
        w = f"{med(rows, 'wall_s'):.2f}"
        return f"{'**' + w + '**' if bold else w} ({min(r['wall_s'] for r in rows):.2f}-" \
               f"{max(r['wall_s'] for r in rows):.2f})"

    def ratio(x, y):
        return f"{x / y:.2f}x" if x and y else "-"

    def rate(rows):
        return f"{bases / med(rows, 'wall_s') / 1e3:.1f}" if rows else "-"

    def others(rows):
        return f"{max(r['others_share'] for r in rows):.1%}" if rows else "-"

    lines = ["| | official standalone code | `genoconv embed` | ratio |", "| --- | --- | --- | --- |",
             (f"| wall (s), median of {len(b)} (min-max) | {wall(a)} | {wall(b, True)} | "
             f"**{ratio(med(a, 'wall_s'), med(b, 'wall_s'))}** (official / genoconv) |"),
             f"| kbp/s (wall) | {rate(a)} | {rate(b)} | |",
             (f"| compute as each side counts it (s) | {cell(a, '{:.2f}', 'compute_s')} | "
             f"{cell(b, '{:.2f}', 'compute_s')} | {ratio(med(a, 'compute_s'), med(b, 'compute_s'))} |"),
             (f"| user / sys CPU (s) | {cell(a, '{:.2f}', 'user_s', 'sys_s')} | "
              f"{cell(b, '{:.2f}', 'user_s', 'sys_s')} | |"),
             f"| minor page faults | {cell(a, '{:,.0f}', 'minor_faults')} | {cell(b, '{:,.0f}', 'minor_faults')} | |",
             (f"| peak RSS (GiB) | {cell(a, '{:.2f}', 'peak_rss_gib')} | {cell(b, '{:.2f}', 'peak_rss_gib')} | "
             f"{ratio(med(b, 'peak_rss_gib'), med(a, 'peak_rss_gib'))} (genoconv / official) |"),
             f"| others' share of the machine during a counted run (max) | {others(a)} | {others(b)} | |"]
    if demo:
        w = med(demo, "wall_s")
        lines += ["", (f"| shipped `genoconv-demo` (4 layers, d_model 128) on E. coli, {genome_bases:,} bp, one record "
                      f"(`{demo_mode}`) | median of {len(demo)} (min-max) |"), "| --- | --- |",
                  f"| wall (s) | {wall(demo, True)} = {genome_bases / w / 1e3:.1f} kbp/s |",
                  f"| compute as genoconv counts it (s) | {cell(demo, '{:.2f}', 'compute_s')} |",
                  f"| user / sys CPU (s) | {cell(demo, '{:.2f}', 'user_s', 'sys_s')} |",
                  f"| peak RSS (GiB) | {cell(demo, '{:.2f}', 'peak_rss_gib')} |",
                  f"| minor page faults | {cell(demo, '{:,.0f}', 'minor_faults')} |",
                  f"| others' share of the machine during a counted run (max) | {others(demo)} |"]
    return lines


# ---- main ---------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, help="scratch copy with run_official.py + standalone_hyenadna.py "
                    "(default: ../.devdata/official, .devdata/official or ../scratch/official)")
    ap.add_argument("--genome", type=Path, default=ECOLI, help="E. coli FASTA (default: %(default)s)")
    ap.add_argument("--pairs", type=int, default=3, help="counted clean pairs after the warm-up pair (default 3)")
    ap.add_argument("--max-pairs", type=int, default=12, help="give up after this many counted-pair attempts")
    ap.add_argument("--demo-runs", type=int, default=3, help="runs of genoconv-demo on the whole genome (0: none)")
    ap.add_argument("--quiet", type=float, default=0.10,
                    help="start a run only when the machine is below this busy fraction (default 0.10)")
    ap.add_argument("--max-others", type=float, default=0.05,
                    help="discard a run in which other processes used more than this share of the machine")
    ap.add_argument("--max-wait", type=float, default=3600, help="seconds to wait for quiet before running anyway")
    ap.add_argument("--workdir", type=Path, help="keep checkpoint, windows and outputs here (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="write every run (discarded ones marked) and the summary here")
    args = ap.parse_args()

    official, why = find_official(args.official)
    if official is None:
        print(why, file=sys.stderr)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_cpu_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt, windows = work / "ckpt_tiny16k_seed0", work / "ecoli_1M_w16k.fa"
    bases = write_windows(args.genome, windows)
    made = subprocess.run([sys.executable, "-c", MAKE_CKPT, json.dumps(SHAPE), str(ckpt)], capture_output=True,
                          text=True, check=True)
    versions = json.loads(made.stdout.strip().splitlines()[-1])
    py = sys.executable
    cmd_a = [py, str(official / "run_official.py"), "--ckpt", str(ckpt), "--fasta", str(windows),
             "--window", str(WINDOW), "--save", str(work / "official.npz")] if official else None
    cmd_b = [py, "-m", "genoconv", "embed", str(windows), "-o", str(work / "genoconv.h5"), "--model", str(ckpt),
             "--no-per-nucleotide", "--pool", "mean", "--device", "cpu", "--dtype", "float32", "--overwrite"]
    cmd_d = [py, "-m", "genoconv", "embed", str(args.genome), "-o", str(work / "demo.h5"), "--window", "1000",
             "--no-per-nucleotide", "--device", "cpu", "--overwrite"]
    sides = ([("official", cmd_a)] if cmd_a else []) + [("genoconv", cmd_b)]
    print(f"{os.cpu_count()} cores ({cpu_model()}), torch {versions['torch']}, {versions['threads']} threads; "
          f"work dir {work}", file=sys.stderr)
    for name, cmd in sides:
        print(f"  {name}: {shlex.join(cmd)}", file=sys.stderr)

    runs: list[dict] = []
    print("warm-up pair (not counted)", file=sys.stderr)
    for name, cmd in sides:
        r = measure(name, cmd, work, args)
        contended(r, args)
        r.update(phase="warm-up", counted=False)
        runs.append(r)
        say(r)
    clean, attempts = 0, 0
    while clean < args.pairs and attempts < args.max_pairs:
        attempts += 1
        pair = []
        for name, cmd in sides:
            r = measure(name, cmd, work, args)
            r.update(phase=f"pair {attempts}", reason=contended(r, args))
            pair.append(r)
            say(r, f"  DISCARDED: {r['reason']}" if r["reason"] else "")
        bad = [r["reason"] for r in pair if r["reason"]]
        for r in pair:
            r["counted"] = not bad
        runs += pair
        if bad:
            print(f"  pair {attempts} discarded ({'; '.join(bad)}): redone", file=sys.stderr)
        else:
            clean += 1
    agree = agreement(work / "official.npz", work / "genoconv.h5") if official and clean else None

    demo_clean, demo_attempts = 0, 0
    while demo_clean < args.demo_runs and demo_attempts < args.demo_runs + args.max_pairs:
        demo_attempts += 1
        r = measure("demo", cmd_d, work, args)
        r.update(phase=f"demo {demo_attempts}", reason=contended(r, args), **stored_plan(work / "demo.h5"))
        r["counted"] = not r["reason"]
        demo_clean += r["counted"]
        runs.append(r)
        say(r, f"  DISCARDED: {r['reason']}" if r["reason"] else "")
    a = [r for r in runs if r["counted"] and r["name"] == "official"]
    b = [r for r in runs if r["counted"] and r["name"] == "genoconv"]
    demo = [r for r in runs if r["counted"] and r["name"] == "demo"]
    discarded = [r for r in runs if r["phase"] != "warm-up" and not r["counted"]]
    genome_bases = demo[-1]["bases"] if demo else 0
    demo_mode = " / ".join(sorted({r["mode"] for r in demo}))
    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu_model()}), torch {versions['torch']}, "
          f"genoconv {versions['genoconv']}; tiny-16k shape, random weights (seed 0), the first {bases:,} bp of "
          f"E. coli in {WINDOW:,}-bp windows, fp32, pooled means; {len(b)} counted pairs after a warm-up pair, "
          f"{len(discarded)} contended runs discarded and redone\n")
    if not b:
        print("no clean pair: the machine never stayed quiet (see --json for the contended runs)")
    else:
        print("\n".join(table(a, b, demo, bases, genome_bases, demo_mode)))
    if official is None:
        print(f"\n{why}")
    elif agree:
        ok = "within" if agree.get("max_rel_l2", 1) <= 1e-5 else "ABOVE"
        print(f"\nfp32 agreement, pooled means of the {agree.get('windows')} windows (last counted pair): max relative "
              f"L2 {agree.get('max_rel_l2', float('nan')):.1e}, median {agree.get('median_rel_l2', float('nan')):.1e} "
              f"({ok} 1e-5)" if "error" not in agree else f"\nagreement: {agree['error']}")
    if a and b:
        wa, wb = med(a, "wall_s"), med(b, "wall_s")
        ra, rb = med(a, "peak_rss_gib"), med(b, "peak_rss_gib")
        nine = f"<= 9 s for 1 Mbp: {wb:.2f} s ({'met' if wb <= 9 else 'missed'}); " if bases == BASES else ""
        print(f"targets (issue 18): >= 2x wall: {wa / wb:.2f}x ({'met' if wa / wb >= 2 else 'missed'}); {nine}"
              f"peak RSS <= official: {rb / ra:.2f}x ({'met' if rb <= ra else 'missed'})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": {"cores": os.cpu_count(), "cpu": cpu_model(),
                                                          "kernel": platform.release()},
            "versions": {**versions, "python": platform.python_version()},
            "command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "case": {"shape": SHAPE, "seed": 0, "bases": bases, "window": WINDOW, "genome": args.genome.name,
                     "genome_bases": genome_bases, "demo_mode": demo_mode},
            "commands": {"official": shlex.join(cmd_a) if cmd_a else None, "genoconv": shlex.join(cmd_b),
                         "demo": shlex.join(cmd_d)},
            "gates": {"quiet": args.quiet, "max_others": args.max_others},
            "summary": {side: {k: med(rows, k) for k in ("wall_s", "compute_s", "user_s", "sys_s", "peak_rss_gib",
                                                         "minor_faults")} | {"n": len(rows)}
                        for side, rows in (("official", a), ("genoconv", b), ("demo", demo)) if rows},
            "agreement": agree, "runs": runs}, indent=1) + "\n")
        print(f"runs: {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
