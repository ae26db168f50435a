"""The Snakemake workflow in pipelines/: end to end on the local executor, resume after an interruption, and
the SLURM profile as far as a dry run shows it. CPU only; skipped without ../shared/data or Snakemake."""

import csv
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("snakemake")

from genoconv import open_embeddings  # noqa: E402

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
SNAKEFILE = PIPELINES / "workflow" / "Snakefile"
SHARDS = 3
# ~60 kbp of E. coli cut into 12 records of uneven length: the base-balanced split gives every shard several.
RECORD_LENGTHS = [900, 2300, 7100, 3300, 12000, 1500, 5200, 800, 9700, 4100, 6400, 6700]

pytestmark = pytest.mark.slow


def _env() -> dict:
    """This interpreter's environment first on PATH, so the rules' `genoconv` is the one under test."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def _snakemake(workdir: Path, config: Path, *args: str, timeout: int = 150) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--configfile", str(config),
           "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    return proc


def _write_config(path: Path, fasta: Path, **extra) -> Path:
    # No `model` key: the workflow's default (null) leaves --model out, so genoconv's default model runs.
    lines = [f"inputs: [{fasta}]", "outdir: results", f"shards: {SHARDS}", "device: cpu", "threads: 1"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def ecoli_fasta(shared_data, tmp_path_factory) -> Path:
    import pysam

    with pysam.FastaFile(str(shared_data / "ecoli_K12_MG1655.fa.gz")) as fa:
        seq = fa.fetch(fa.references[0], 0, sum(RECORD_LENGTHS))
    path = tmp_path_factory.mktemp("pipeline_data") / "ecoli_60k.fa"
    with open(path, "w") as fh:
        start = 0
        for n in RECORD_LENGTHS:
            fh.write(f">ecoli_{start}_{start + n}\n")
            fh.writelines(seq[i:min(i + 70, start + n)] + "\n" for i in range(start, start + n, 70))
            start += n
    return path


@pytest.fixture(scope="module")
def unsharded(ecoli_fasta, tmp_path_factory) -> Path:
    """One plain `genoconv embed` of all records, with the options the workflow's config gives."""
    out = tmp_path_factory.mktemp("pipeline_single") / "single.h5"
    cmd = ["genoconv", "embed", str(ecoli_fasta), "-o", str(out), "--device", "cpu", "--pool", "mean",
           "--dtype", "float32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**_env(), "OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


def _assert_same_records(path: Path, reference: Path, ids=None) -> None:
    """Same records, rows and pooled vectors as ``reference`` (all of them, or ``ids``), matched by id.

    Order is not compared: `genoconv merge` writes shard 1's records, then shard 2's, ..., while the unsharded
    run keeps input order, and the base-balanced split interleaves records. The values agree to float16
    rounding, not bit for bit: records are batched with their neighbours of similar length, and a shard has
    other neighbours than the full input, so the fp32 arithmetic can differ in the last bits (measured: 11
    of 12 records identical, the other 2 float16 ulps apart).
    """
    with open_embeddings(path) as got, open_embeddings(reference) as want:
        assert got.complete
        assert got.provenance["model"] == want.provenance["model"] == "genoconv-demo"
        want_ids = list(want.ids) if ids is None else list(ids)
        assert sorted(got.ids) == sorted(want_ids)
        got_len = dict(zip(got.ids, got.lengths.tolist()))
        want_len = dict(zip(want.ids, want.lengths.tolist()))
        got_pool = dict(zip(got.ids, got.pooled("mean")))
        want_pool = dict(zip(want.ids, want.pooled("mean")))
        for rid in want_ids:
            assert got_len[rid] == want_len[rid], rid
            rows, ref = np.asarray(got[rid], np.float32), np.asarray(want[rid], np.float32)
            assert rows.shape == ref.shape == (want_len[rid], ref.shape[1]), rid
            np.testing.assert_allclose(rows, ref, rtol=4e-3, atol=1e-3, err_msg=rid)
            np.testing.assert_allclose(got_pool[rid], want_pool[rid], rtol=1e-5, atol=1e-5, err_msg=rid)


def test_workflow_local_three_shards_equals_unsharded(ecoli_fasta, unsharded, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = _write_config(tmp_path / "config.yaml", ecoli_fasta)
    # 2 cores, 1 thread per job: two shards at a time. `gpu=3` lifts the local profile's one-GPU limit
    # (there is no GPU here; device: cpu).
    _snakemake(workdir, config, "--workflow-profile", str(PIPELINES / "profiles" / "local"), "--cores", "2",
               "--resources", "gpu=3")

    results = workdir / "results"
    shards = sorted((results / "shards").glob("shard_*_of_3.h5"))
    assert [p.name for p in shards] == [f"shard_{i}_of_3.h5" for i in (1, 2, 3)]
    assert not any((results / "partial").iterdir()), "finished shards are moved out of partial/"
    _assert_same_records(results / "all.h5", unsharded)

    with open(results / "report.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [r["shard"] for r in rows] == ["1/3", "2/3", "3/3", "total"]
    shard_rows, total = rows[:3], rows[3]
    assert all(int(r["records"]) >= 1 and float(r["wall_s"]) >= 0 for r in shard_rows)
    assert sum(int(r["records"]) for r in shard_rows) == int(total["records"]) == len(RECORD_LENGTHS)
    assert sum(int(r["bases"]) for r in shard_rows) == int(total["bases"]) == sum(RECORD_LENGTHS)
    for r in rows:  # bases/s is bases over the provenance time (milliseconds), or NA for a zero-length one
        assert r["bases_per_s"] == "NA" or float(r["bases_per_s"]) == pytest.approx(
            int(r["bases"]) / float(r["wall_s"]), rel=1e-3)


INTERRUPT_ONCE = textwrap.dedent('''\
    """Stand-in for `genoconv`: the first `embed --shard 3/3` is sent SIGUSR1 once its first record is
    committed (as the workflow's walltime timer would), and its exit code is saved; everything else runs as is."""
    import os, signal, subprocess, sys
    state, args = sys.argv[1], sys.argv[2:]
    first = args[:1] == ["embed"] and "3/3" in args and not os.path.exists(state)
    if not first:
        os.execvp("genoconv", ["genoconv", *args])
    env = dict(os.environ, GENOCONV_LOG_INTERVAL="0")  # one progress line per committed batch
    proc = subprocess.Popen(["genoconv", *args], stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        sys.stderr.write(line)
        if "progress:" in line:
            proc.send_signal(signal.SIGUSR1)
            break
    sys.stderr.write(proc.stderr.read())
    code = proc.wait()
    with open(state, "w") as fh:
        fh.write(str(code))
    sys.exit(code)
''')


def test_workflow_resumes_an_interrupted_shard(ecoli_fasta, unsharded, tmp_path):
    """Exit 3 -> Snakemake retries -> the retry resumes the partial shard instead of starting over."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    wrapper, state = tmp_path / "interrupt_once.py", tmp_path / "first_exit_code"
    wrapper.write_text(INTERRUPT_ONCE)
    config = _write_config(tmp_path / "config.yaml", ecoli_fasta,
                           genoconv=f"'{shlex.join([sys.executable, str(wrapper), str(state)])}'")
    target = "results/shards/shard_3_of_3.h5"
    _snakemake(workdir, config, target, "--workflow-profile", str(PIPELINES / "profiles" / "local"),
               "--cores", "1", "--retries", "1")

    assert state.read_text() == "3", "the first attempt should stop early with the resumable exit code"
    log = (workdir / "results" / "logs" / "embed_shard_3_of_3.log").read_text()  # the retry's log
    assert "records already committed" in log, log
    with open_embeddings(workdir / target) as shard:
        ids = list(shard.ids)
    assert len(ids) >= 3
    _assert_same_records(workdir / target, unsharded, ids=ids)


SLURM_STUB = """#!/bin/sh
# Stand-in for a SLURM client command: record the call; sbatch refuses the job, so nothing runs.
printf '%s\\n' "$(basename "$0") $*" >> "{log}"
[ "$(basename "$0")" != sbatch ]
"""


def test_slurm_profile_requests_gpus(ecoli_fasta, tmp_path):
    """The SLURM profile without a cluster: the dry-run plan, then the real sbatch lines, captured by stubs."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = _write_config(tmp_path / "config.yaml", ecoli_fasta)
    profile = ["--workflow-profile", str(PIPELINES / "profiles" / "slurm")]
    proc = _snakemake(workdir, config, *profile, "--dry-run", "--printshellcmds", timeout=60)
    out = proc.stdout + proc.stderr
    blocks = [b for b in out.split("\n\n") if "rule embed:" in b]
    assert len(blocks) == SHARDS, out
    for block in blocks:
        resources = next(line for line in block.splitlines() if line.strip().startswith("resources:"))
        for request in ("gpu=1", "slurm_partition=gpu", "runtime=720", "mem_mb=32000"):
            assert request in resources, block
        # walltime 720 min, minus walltime_margin_s 300: genoconv is asked to save and stop at 42900 s
        assert "--stop-after 42900" in block and "genoconv embed" in block, block
    assert sorted(int(b.split("--shard ")[1].split("/")[0]) for b in blocks) == [1, 2, 3]
    merge = next(b for b in out.split("\n\n") if "rule merge:" in b)
    assert "gpu=" not in merge and "slurm_partition=cpu" in merge, merge
    assert "This was a dry-run" in out

    # A real (not dry) run with the SLURM client commands stubbed: the plugin builds and "submits" one
    # sbatch per shard; the stub records it and refuses, so the run fails without anything running.
    bin_dir, calls = tmp_path / "slurm_bin", tmp_path / "slurm_calls.log"
    bin_dir.mkdir()
    for name in ("sbatch", "scontrol", "sacct", "sacctmgr", "sinfo", "squeue", "scancel", "srun"):
        (bin_dir / name).write_text(SLURM_STUB.format(log=calls))
        (bin_dir / name).chmod(0o755)
    env = {**_env(), "PATH": f"{bin_dir}{os.pathsep}{_env()['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--configfile", str(config),
           "--directory", str(workdir), *profile, "--retries", "0", "--slurm-init-seconds-before-status-checks", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0 and "SLURM sbatch failed" in proc.stderr, proc.stderr[-4000:]
    sbatch = [line for line in calls.read_text().splitlines() if line.startswith("sbatch ")]
    assert len(sbatch) == SHARDS, calls.read_text()
    for line in sbatch:
        args = line.split(" --wrap")[0].split()
        for flag in ("--gpus=1", "--cpus-per-task=1", "--export=ALL"):
            assert flag in args, line
        for flag, value in (("-p", "gpu"), ("-t", "720"), ("--mem", "32000")):
            assert args[args.index(flag) + 1] == value, line
    assert sorted(line.split("--target-jobs 'embed:i=")[1][0] for line in sbatch) == ["1", "2", "3"]


def test_local_profile_puts_one_shard_per_gpu(ecoli_fasta, tmp_path):
    """On one machine with 3 GPUs (CUDA_VISIBLE_DEVICES), 7 shards: shard i runs on cuda:((i-1) mod 3) and holds that
    GPU's slot, of which there is one unit each, so jobs on the same GPU never run at the same time."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = _write_config(tmp_path / "config.yaml", ecoli_fasta, shards=7)
    config.write_text(config.read_text().replace("device: cpu", "device: auto"))
    profile = ["--workflow-profile", str(PIPELINES / "profiles" / "local")]
    env = {**_env(), "CUDA_VISIBLE_DEVICES": "0,1,2"}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--configfile", str(config),
           "--directory", str(workdir), *profile, "--dry-run", "--printshellcmds"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    blocks = [b for b in out.split("\n\n") if "rule embed:" in b]
    assert len(blocks) == 7, out
    devices = {}
    for block in blocks:
        shard = int(block.split("--shard ")[1].split("/")[0])
        device = block.split("--device ")[1].split()[0]
        resources = next(line for line in block.splitlines() if line.strip().startswith("resources:"))
        slot = (shard - 1) % 3
        assert device == f"cuda:{slot}", block
        assert f"gpu_slot_{slot}=1" in resources and sum(f"gpu_slot_{k}=1" in resources for k in range(3)) == 1
        devices.setdefault(device, []).append(shard)
    assert devices == {"cuda:0": [1, 4, 7], "cuda:1": [2, 5], "cuda:2": [3, 6]} or \
        {k: sorted(v) for k, v in devices.items()} == {"cuda:0": [1, 4, 7], "cuda:1": [2, 5], "cuda:2": [3, 6]}

    # The same profile without GPUs: the configured device, no slots.
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-4000:]
    blocks = [b for b in (proc.stdout + proc.stderr).split("\n\n") if "rule embed:" in b]
    assert all("--device auto" in b and "gpu_slot" not in b for b in blocks)


def test_config_mistakes_fail_the_dry_run(ecoli_fasta, tmp_path):
    """`--config per_nucleotide=false` arrives as the text "false", which a truth test took for yes (rows stored, a
    virtual merge made, exit 0); a misspelt key or a bad value passed the dry run and failed every job."""
    config = _write_config(tmp_path / "config.yaml", ecoli_fasta)

    def dry(*overrides):
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--configfile", str(config),
               "--directory", str(tmp_path), "--dry-run", "--printshellcmds", "--config", *overrides]
        return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=60)

    proc = dry("per_nucleotide=false", "merge_virtual=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("--no-per-nucleotide") == SHARDS and "--virtual" not in proc.stdout
    proc = dry("per_nucleotide=no", "merge_virtual=True")
    assert proc.stdout.count("--no-per-nucleotide") == SHARDS and " --virtual" in proc.stdout
    for override, message in (("shard=2", "unknown key(s) 'shard' (did you mean 'shards'?)"),
                              ("window=0", "window: 0 must be at least 1"),
                              ("pool=median", "pool: 'median' is not a comma list of mean, max, last"),
                              ("per_nucleotide=maybe", "per_nucleotide: 'maybe' is not true or false"),
                              ("device=gpu", "device: 'gpu' is not auto, cpu, cuda or cuda:N"),
                              ("extra_args=--bogus", "No such option: --bogus")):
        proc = dry(override)
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr, (override, proc.stderr[-2000:])
