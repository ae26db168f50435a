"""End-to-end speed and memory through the public entry points: ``Embedder`` and a ``genoconv embed`` subprocess.

The HyenaDNA-large-1m shape (8 layers, d_model 256, d_inner 1024, max_seq_len 1,000,002) with random weights saved as
an ``-hf`` checkpoint, real DNA, bf16 unless a row says otherwise, one process per case. Rows:

- ``Embedder.embed`` of 100 kbp and 1 Mbp of chrX (numpy out, and ``as_tensor=True``: no host copy), median of 3
  warm calls, plus the first call; the project's own fp32 reference path (GENOCONV_CONV_BACKEND=reference) at 1 Mbp;
- ``Embedder.embed_many`` on one 4 Mbp record, pooled, called twice in one process (same result, same speed);
- ``genoconv embed`` on the DMD gene (2,220,382 bp) and on chrX 1-70 Mbp, pooled + windowed (1 kbp), and DMD with
  per-nucleotide rows stored; the same with the hyenadna-tiny-1k shape (a 1,026-tap filter: the partial-convolution
  blocks), on DMD also forced onto the three-pass kernel it replaced (GENOCONV_FFTCONV_PATH=scalar); the shipped ``genoconv-demo`` on E. coli + 200 gene-sized records (6.7 Mbp), pooled,
  fp32 and bf16; the demo model on DMD (one pass, its 16,386-tap filter on a 2.2 Mbp row: the long path's
  overlap-save blocks), and the same with that block split switched off (``_whole``: one N = 2^22 transform per row,
  as before 2026-12-04's fourth session); the demo model on 10,000 real 51 bp Illumina reads from a BAM
  (``cli_reads_demo``), and the same with rows of <= 256 bases on the long path and pools accumulated record by record,
  as before 2026-12-04's fifth session (``_long``; the planner's per-length cache stays); ``Embedder.embed`` of 1.2 Mbp with the large-1m shape (a row split by filter taps: 2^21 + 2^19
  transform points per convolution instead of 2^22), and the same with that split switched off (``_nosplit``). Peak GPU memory is the child's own ``torch.cuda.max_memory_allocated`` (logged by the runner);
- the official HyenaDNA standalone code on the same weights (a scratch copy, never committed:
  ``--official DIR`` holding run_official.py + standalone_hyenadna.py), 100 kbp and 1 Mbp, fp32 and bf16 autocast;
- fidelity: genoconv fp32 against a float64 evaluation of the same weights (``dtype="float64"``), and the official
  code's fp32 output against the same float64 result, at 100 kbp and 1 Mbp.

    python benchmarks/bench_e2e.py --data .devdata [--official .devdata/official] [--cases a,b] [--json out.json]

The official figures of ../shared/BENCHMARKS.md are printed beside the rows as well (another day, same shape).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LARGE_1M = dict(d_model=256, n_layer=8, d_inner=1024, max_seq_len=1_000_002)
TINY_1K = dict(d_model=128, n_layer=2, d_inner=512, max_seq_len=1026)  # hyenadna-tiny-1k: a 1,026-tap filter
ANCHORS = {  # ../shared/BENCHMARKS.md, official standalone code, H200, same shape, random weights
    "embed_100k": "official 68 ms (1.47 Mbp/s, 2.4 GiB)",
    "embed_1m": "official 801 ms fp32 / 587 ms bf16 autocast (20-24 GiB)",
    "cli_dmd": "official: fails (longer than l_max)",
    "cli_chrx": "official: not possible; genoconv 2026-12-04: 107 s = 0.65 Mbp/s",
}
CASES = ("embed_100k", "embed_1m", "embed_1m_fp32_reference", "embed_many_4m_twice", "cli_dmd", "cli_dmd_per_nt",
         "cli_chrx", "cli_chrx_c2m", "cli_dmd_tiny1k", "cli_dmd_tiny1k_3pass", "cli_chrx_tiny1k", "cli_demo_fp32", "cli_demo_bf16", "cli_dmd_demo", "cli_dmd_demo_whole",
         "cli_reads_demo", "cli_reads_demo_long", "embed_1_2m_tensor", "embed_1_2m_tensor_nosplit", "official_100k", "official_1m", "official_1m_bf16",
         "fidelity", "accuracy_dmd")


# ---- inputs ----------------------------------------------------------------------------------------------------
def read_region(path: Path, start: int, length: int) -> str:
    import pysam

    with pysam.FastaFile(str(path)) as fa:
        return fa.fetch(fa.references[0], start, start + length).upper()


def write_fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    with open(path, "w") as fh:
        for rid, seq in records:
            fh.write(f">{rid}\n")
            for i in range(0, len(seq), 80):
                fh.write(seq[i:i + 80] + "\n")
    return path


def prepare(work: Path, data: Path) -> dict:
    """Checkpoint and input files, made once per run in ``work``."""
    import numpy as np
    import torch

    from genoconv.model import HyenaConfig, HyenaDNA
    from genoconv.model.checkpoint import save_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "large1m_random"
    if not (ckpt / "config.json").exists():
        torch.manual_seed(0)
        save_checkpoint(HyenaDNA(HyenaConfig(**LARGE_1M)).init_weights(seed=0), ckpt, fmt="hf")
    tiny = work / "tiny1k_random"
    if not (tiny / "config.json").exists():
        save_checkpoint(HyenaDNA(HyenaConfig(**TINY_1K)).init_weights(seed=0), tiny, fmt="hf")
    chrx = data / "GRCh37_chrX_1-70M.fa.gz"
    files = {"ckpt": str(ckpt), "tiny1k": str(tiny), "chrx": str(chrx), "dmd": str(data / "DMD_GRCh37_chrX.fa.gz")}
    files["reads"] = str(data / "human_NA07051_hg18_10k_reads.bam")
    for name, start, length in (("seq_100k", 40_000_000, 100_000), ("seq_1m", 40_000_000, 1_000_000),
                                ("seq_1_2m", 40_000_000, 1_200_000), ("seq_4m", 20_000_000, 4_000_000)):
        path = work / f"{name}.txt"
        if not path.exists():
            path.write_text(read_region(chrx, start, length))
        files[name] = str(path)
    demo = work / "demo_set.fa"
    if not demo.exists():  # E. coli + 200 gene-sized chrX records (log-uniform 2-30 kbp), ~6.7 Mbp
        import gzip

        with gzip.open(data / "ecoli_K12_MG1655.fa.gz", "rt") as fh:
            ecoli = "".join(line.strip() for line in fh if not line.startswith(">"))
        rng = np.random.default_rng(0)
        genes = []
        for i in range(200):
            n = int(np.exp(rng.uniform(np.log(2_000), np.log(30_000))))
            s = int(rng.integers(1_000_000, 69_000_000))
            genes.append((f"gene{i:03d}", read_region(chrx, s, n)))
        write_fasta(demo, [("NC_000913", ecoli), *genes])
    files["demo"] = str(demo)
    return files


# ---- children ----------------------------------------------------------------------------------------------------
def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def child_embed(files: dict, name: str, bases_key: str, dtype: str, as_tensor: bool, reps: int = 3) -> dict:
    import torch

    from genoconv import Embedder

    seq = Path(files[bases_key]).read_text()
    t0 = time.perf_counter()
    emb = Embedder.from_pretrained(files["ckpt"], device="cuda", dtype=dtype)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = emb.embed(seq, as_tensor=as_tensor)
    _sync()
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = emb.embed(seq, as_tensor=as_tensor)
        _sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    finite = bool(torch.isfinite(torch.as_tensor(out[:1000])).all())
    return {"case": name, "bases": len(seq), "dtype": dtype, "as_tensor": as_tensor, "load_s": load_s,
            "first_s": first, "seconds": med, "mbp_per_s": len(seq) / med / 1e6, "peak_gib": _peak_gib(),
            "finite": finite}


def child_embed_many_twice(files: dict) -> dict:
    import numpy as np

    from genoconv import Embedder

    seq = Path(files["seq_4m"]).read_text()
    emb = Embedder.from_pretrained(files["ckpt"], device="cuda", dtype="bfloat16")
    results, times = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        (_, arrays), = emb.embed_many([("chrX_20-24M", seq)], per_nucleotide=False, pools=("mean",))
        _sync()
        times.append(time.perf_counter() - t0)
        results.append(arrays)
    same = all(np.array_equal(results[0]["pooled"][k], results[1]["pooled"][k]) for k in results[0]["pooled"])
    return {"case": "embed_many_4m_twice", "bases": len(seq), "seconds": times[1], "first_s": times[0],
            "mbp_per_s": len(seq) / times[1] / 1e6, "peak_gib": _peak_gib(), "same_result": same,
            "mode": results[0]["mode"]}


def child_cli(files: dict, name: str, inputs: list[str], model: str, dtype: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.h5"
        launch = ["-m", "genoconv"]
        patch = {"_whole": "c.long_blocks_plan = lambda *a, **k: None",  # one transform per row, no overlap-save blocks
                 # rows of <= 256 bases on the long path and pooled record by record, as before
                 "_long": "c._SHORT_ROW_LOG_N = 0; import genoconv.engine.engine as e; e._POOL_BATCHES = False"}
        for suffix, change in patch.items():
            if name.endswith(suffix):
                launch = ["-c", (f"import sys; import genoconv.ops.cuda as c; {change}; "
                                 "from genoconv.cli import main; sys.argv[0] = 'genoconv'; main()")]
        cmd = [sys.executable, *launch, "embed", *inputs, "-o", str(out), "--model", model,
               "--device", "cuda", "--dtype", dtype, *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "GENOCONV_LOG_INTERVAL": "600"})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"case": name, "error": proc.stderr.strip().splitlines()[-3:]}
        m = re.search(r"wrote .*?: (\d+) records, \d+ bases; (\d+) bases computed in ([\d.]+) s .*?"
                      r"peak GPU memory ([\d.]+) GiB", proc.stderr)
        from genoconv import open_embeddings

        with open_embeddings(out) as f:
            modes = sorted(set(f.modes))
            size = out.stat().st_size
        bases, compute = int(m.group(2)), float(m.group(3))
        return {"case": name, "bases": bases, "records": int(m.group(1)), "seconds": compute, "wall_s": wall,
                "mbp_per_s": bases / compute / 1e6, "peak_gib": float(m.group(4)), "modes": modes[:3],
                "output_mb": size / 1e6, "dtype": dtype}


def child_official(files: dict, official: Path, name: str, bases_key: str, dtype: str) -> dict:
    seq_file = Path(files[bases_key])
    with tempfile.TemporaryDirectory() as tmp:
        fasta = write_fasta(Path(tmp) / "x.fa", [("x", seq_file.read_text())])
        cmd = [sys.executable, str(official / "run_official.py"), "--ckpt", files["ckpt"], "--fasta", str(fasta),
               "--bases", str(len(seq_file.read_text())), "--device", "cuda", "--dtype", dtype, "--warmup", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"case": name, "error": proc.stderr.strip().splitlines()[-3:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["case"] = name
    return res


def child_fidelity(files: dict, official: Path | None) -> dict:
    import numpy as np
    import torch

    from genoconv import Embedder

    out = {"case": "fidelity"}
    for key in ("seq_100k", "seq_1m"):
        seq = Path(files[key]).read_text()
        ref = Embedder.from_pretrained(files["ckpt"], device="cuda", dtype="float64").embed(seq, as_tensor=True)
        torch.cuda.empty_cache()
        os.environ["GENOCONV_CONV_BACKEND"] = "reference"
        got = Embedder.from_pretrained(files["ckpt"], device="cuda", dtype="float32").embed(seq, as_tensor=True)
        os.environ.pop("GENOCONV_CONV_BACKEND")
        fast = Embedder.from_pretrained(files["ckpt"], device="cuda", dtype="bfloat16").embed(seq, as_tensor=True)
        rel = lambda a: float((a.double() - ref).norm() / ref.norm())  # noqa: E731
        out[f"{key}_fp32_vs_f64"] = rel(got)
        out[f"{key}_bf16_vs_f64"] = rel(fast)
        out[f"{key}_bf16_vs_fp32"] = float((fast.double() - got.double()).norm() / got.double().norm())
        if official is not None:
            with tempfile.TemporaryDirectory() as tmp:
                fasta = write_fasta(Path(tmp) / "x.fa", [("x", seq)])
                npz = Path(tmp) / "rows.npz"
                cmd = [sys.executable, str(official / "run_official.py"), "--ckpt", files["ckpt"], "--fasta",
                       str(fasta), "--bases", str(len(seq)), "--device", "cuda", "--dtype", "float32", "--save",
                       str(npz), "--save-rows"]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode == 0:
                    data = np.load(npz)
                    rows = torch.from_numpy(data[[k for k in data.files if "row" in k][0]]).to("cuda").double()
                    out[f"{key}_official_fp32_vs_f64"] = float((rows.reshape(ref.shape) - ref).norm() / ref.norm())
                else:
                    out[f"{key}_official_error"] = proc.stderr.strip().splitlines()[-1:]
        ref = got = fast = None  # free before the next length
        torch.cuda.empty_cache()
    return out


def child_accuracy_dmd(files: dict) -> dict:
    """Per-base output of the fast path (bf16, kernels) against the fp32 reference path on the DMD gene."""
    import gzip

    import torch

    from genoconv import Embedder

    with gzip.open(files["dmd"], "rt") as fh:
        seq = "".join(line.strip() for line in fh if not line.startswith(">"))
    fast = Embedder.from_pretrained(files["ckpt"], device="cuda", dtype="bfloat16").embed(seq, as_tensor=True)
    torch.cuda.empty_cache()
    os.environ["GENOCONV_CONV_BACKEND"] = "reference"
    ref = Embedder.from_pretrained(files["ckpt"], device="cuda", dtype="float32").embed(seq, as_tensor=True)
    return {"case": "accuracy_dmd", "bases": len(seq),
            "bf16_kernel_vs_fp32_reference": float((fast.double() - ref.double()).norm() / ref.double().norm())}


def run_child(case: str, files: dict, official: Path | None) -> dict:
    demo_inputs = [files["demo"]]
    pooled = ["--no-per-nucleotide", "--pool", "mean", "--window", "1000"]
    table = {
        "embed_100k": lambda: child_embed(files, case, "seq_100k", "bfloat16", False),
        "embed_100k_tensor": lambda: child_embed(files, case, "seq_100k", "bfloat16", True),
        "embed_1m": lambda: child_embed(files, case, "seq_1m", "bfloat16", False),
        "embed_1m_tensor": lambda: child_embed(files, case, "seq_1m", "bfloat16", True),
        "embed_1m_fp32_reference": lambda: child_embed(files, case, "seq_1m", "float32", True, reps=1),
        "embed_1_2m_tensor": lambda: child_embed(files, case, "seq_1_2m", "bfloat16", True),
        "embed_1_2m_tensor_nosplit": lambda: child_embed(files, case, "seq_1_2m", "bfloat16", True),
        "embed_many_4m_twice": lambda: child_embed_many_twice(files),
        "cli_dmd": lambda: child_cli(files, case, [files["dmd"]], files["ckpt"], "bfloat16", pooled),
        "cli_dmd_per_nt": lambda: child_cli(files, case, [files["dmd"]], files["ckpt"], "bfloat16",
                                            ["--pool", "mean", "--window", "1000"]),
        "cli_chrx": lambda: child_cli(files, case, [files["chrx"]], files["ckpt"], "bfloat16", pooled),
        "cli_dmd_tiny1k": lambda: child_cli(files, case, [files["dmd"]], files["tiny1k"], "bfloat16", pooled),
        "cli_dmd_tiny1k_3pass": lambda: child_cli(files, case, [files["dmd"]], files["tiny1k"], "bfloat16", pooled),
        "cli_chrx_c2m": lambda: child_cli(files, case, [files["chrx"]], files["ckpt"], "bfloat16",
                                          [*pooled, "--chunk-size", "2194302"]),  # the chunk before overlap-save
        "cli_chrx_tiny1k": lambda: child_cli(files, case, [files["chrx"]], files["tiny1k"], "bfloat16", pooled),
        "cli_demo_fp32": lambda: child_cli(files, case, demo_inputs, "genoconv-demo", "float32", pooled),
        "cli_demo_bf16": lambda: child_cli(files, case, demo_inputs, "genoconv-demo", "bfloat16", pooled),
        "cli_dmd_demo": lambda: child_cli(files, case, [files["dmd"]], "genoconv-demo", "bfloat16", pooled),
        "cli_dmd_demo_whole": lambda: child_cli(files, case, [files["dmd"]], "genoconv-demo", "bfloat16", pooled),
        "cli_reads_demo": lambda: child_cli(files, case, [files["reads"]], "genoconv-demo", "bfloat16",
                                            ["--no-per-nucleotide", "--pool", "mean"]),
        "cli_reads_demo_long": lambda: child_cli(files, case, [files["reads"]], "genoconv-demo", "bfloat16",
                                                 ["--no-per-nucleotide", "--pool", "mean"]),
        "official_100k": lambda: child_official(files, official, case, "seq_100k", "float32"),
        "official_1m": lambda: child_official(files, official, case, "seq_1m", "float32"),
        "official_1m_bf16": lambda: child_official(files, official, case, "seq_1m", "bfloat16"),
        "fidelity": lambda: child_fidelity(files, official),
        "accuracy_dmd": lambda: child_accuracy_dmd(files),
    }
    if case.startswith("official") and official is None:
        return {"case": case, "skipped": "no --official folder (a scratch copy of the official code)"}
    if case.endswith("_3pass"):  # the long-length path before the partial-convolution blocks, for an A/B
        os.environ["GENOCONV_FFTCONV_PATH"] = "scalar"
    if case.endswith("_nosplit"):  # A/B: rows split by filter taps switched off (one transform per row)
        import genoconv.ops.cuda as gcuda

        gcuda.long_split_plan = lambda *a, **k: None
    if case == "embed_1m_fp32_reference":
        os.environ["GENOCONV_CONV_BACKEND"] = "reference"
    return table[case]()


def fmt_row(r: dict) -> str:
    if "error" in r or "skipped" in r:
        return f"| {r['case']} | {r.get('error') or r.get('skipped')} | | | |"
    if r["case"] in ("fidelity", "accuracy_dmd"):
        return "| fidelity | " + ", ".join(f"{k} {v:.2e}" for k, v in r.items() if isinstance(v, float)) + " | | | |"
    secs = r.get("seconds", r.get("compute_s", r.get("wall_s", float("nan"))))
    mbps = r.get("mbp_per_s", (r.get("bases", 0) / secs / 1e6) if secs else float("nan"))
    peak = r.get("peak_gib", r.get("peak_cuda_gib", float("nan")))
    extra = {k: v for k, v in r.items() if k in ("first_s", "modes", "same_result", "mode", "as_tensor", "wall_s")}
    anchor = ANCHORS.get(r["case"], "")
    return f"| {r['case']} | {secs * 1e3:,.0f} ms | {mbps:.2f} | {peak:.2f} | {extra} {anchor} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "genoconv_bench_e2e")
    ap.add_argument("--official", type=Path, default=None)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        files = json.loads((args.work / "files.json").read_text())
        print(json.dumps(run_child(args.child, files, args.official)))
        return
    files = prepare(args.work, args.data)
    (args.work / "files.json").write_text(json.dumps(files))
    rows = []
    print("| case | time | Mbp/s | peak GPU GiB | notes |\n| --- | --- | --- | --- | --- |", flush=True)
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--child", case, "--work", str(args.work), "--data", str(args.data)]
        if args.official:
            cmd += ["--official", str(args.official)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        try:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            row = {"case": case, "error": (proc.stderr.strip().splitlines() or ["no output"])[-3:]}
        rows.append(row)
        print(fmt_row(row), flush=True)
        if args.json:  # after every case: a run cut short by its time limit keeps the rows it finished
            args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
