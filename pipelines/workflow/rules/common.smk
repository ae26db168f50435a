# Config checks and helpers shared by the rules (Snakemake's lint: keep functions apart from rules).

import os
import shlex
import sys

from snakemake.exceptions import WorkflowError


def _setting(key, kind, check=None, why=""):
    """config[key] as ``kind``, or a WorkflowError naming the key (a typo should fail the dry run, not a job)."""
    value = config.get(key)
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise WorkflowError(f"config: {key}: {value!r} is not a valid {kind.__name__}") from None
    if check is not None and not check(value):
        raise WorkflowError(f"config: {key}: {value!r} {why}")
    return value


_KNOWN = {"inputs", "outdir", "shards", "model", "device", "gpu_slots", "pool", "per_nucleotide", "window", "dtype",
          "extra_args", "threads", "walltime_margin_s", "merge_virtual", "genoconv"}
_unknown = sorted(set(config) - _KNOWN)
if _unknown:
    import difflib

    _near = {k: difflib.get_close_matches(k, sorted(_KNOWN), n=1) for k in _unknown}
    raise WorkflowError("config: unknown key(s) " + ", ".join(
        f"{k!r}" + (f" (did you mean {_near[k][0]!r}?)" if _near[k] else "") for k in _unknown)
        + f"; the keys are: {', '.join(sorted(_KNOWN))}")


def _flag(key):
    """A yes/no setting: YAML's true/false, or the text `--config key=false` gives (Snakemake turns only True and
    False into booleans, so a plain truth test took "false" for yes)."""
    value = config.get(key)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise WorkflowError(f"config: {key}: {value!r} is not true or false")


def _window():
    value = config.get("window")
    if value is None or str(value).strip().lower() in ("", "null", "none"):
        return None
    return _setting("window", int, lambda w: w >= 1, "must be at least 1 (or null: no windows)")


INPUTS = config.get("inputs") or []
INPUTS = [INPUTS] if isinstance(INPUTS, str) else [str(p) for p in INPUTS]
if not INPUTS:
    raise WorkflowError("config: inputs: give at least one FASTA/FASTQ/BAM file")
OUT = os.path.normpath(_setting("outdir", str))
N = _setting("shards", int, lambda n: n >= 1, "must be at least 1")
GENOCONV = shlex.split(_setting("genoconv", str))
EXTRA_ARGS = shlex.split(config.get("extra_args") or "")
_OWNED = {"-o", "--output", "--shard", "--model", "--device", "--overwrite", "--no-overwrite"}
_clash = sorted(a.split("=")[0] for a in EXTRA_ARGS if a.split("=")[0] in _OWNED)
if _clash:
    raise WorkflowError(f"config: extra_args: {', '.join(_clash)} are set by the workflow; use the config keys")


def _count_gpus():
    """GPUs this machine shows: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L`, else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _gpu_slots():
    """How many GPUs of this machine the shards are spread over (`gpu_slots`; the local profile sets `auto`).

    0 (the default, and what SLURM jobs need: each gets its own GPU as cuda:0) leaves `device` as configured.
    With n > 0 and device auto/cuda, shard i runs on cuda:((i-1) mod n) and holds the resource gpu_slot_((i-1) mod n),
    of which the workflow provides exactly one unit each: two jobs on one GPU can never run at the same time.
    """
    value = str(config.get("gpu_slots", 0)).strip().lower()
    if value == "auto":
        return _count_gpus()
    return _setting("gpu_slots", int, lambda n: n >= 0, "must be a number >= 0 or auto")


DEVICE = _setting("device", str, lambda d: d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit()),
                  "is not auto, cpu, cuda or cuda:N")
PER_NUCLEOTIDE = _flag("per_nucleotide")
MERGE_VIRTUAL = _flag("merge_virtual")
WINDOW = _window()
_POOLS = ("mean", "max", "last")
POOL = _setting("pool", str, lambda v: v and all(m.strip() in _POOLS for m in v.split(",")),
                f"is not a comma list of {', '.join(_POOLS)}")
GPU_SLOTS = _gpu_slots() if DEVICE in ("auto", "cuda") else 0
for _k in range(GPU_SLOTS):
    workflow.resource_settings.resources.setdefault(f"gpu_slot_{_k}", 1)


def gpu_slot(wildcards):
    return (int(wildcards.i) - 1) % GPU_SLOTS


def slot_resources():
    """The rule's resources: one unit of its shard's GPU slot (none without slots)."""
    return {f"gpu_slot_{k}": (lambda wildcards, k=k: int(gpu_slot(wildcards) == k)) for k in range(GPU_SLOTS)}


def shard_device(wildcards):
    return f"cuda:{gpu_slot(wildcards)}" if GPU_SLOTS else DEVICE


def embed_options():
    """The `genoconv embed` options every shard shares (the shard's own -o, --shard and --device come from the
    rule)."""
    opts = []
    if config.get("model"):
        opts += ["--model", str(config["model"])]  # none: genoconv's default model
    opts += ["--pool", POOL]
    if not PER_NUCLEOTIDE:
        opts.append("--no-per-nucleotide")
    if WINDOW is not None:
        opts += ["--window", str(WINDOW)]
    opts += ["--dtype", _setting("dtype", str)]
    return opts + EXTRA_ARGS


def _check_embed_options():
    """Parse the shared options as `genoconv embed` will (when genoconv imports here), so a bad dtype or an
    unknown option in extra_args fails the dry run instead of every job (which the profiles would also retry)."""
    try:
        import typer

        from genoconv.cli import app
    except ImportError:
        return
    command = typer.main.get_command(app).commands["embed"]
    try:
        command.make_context("embed", ["in.fa", "-o", "out.h5", *embed_options()])
    except Exception as err:  # click's usage errors (its own vendored classes in recent typer)
        message = getattr(err, "format_message", lambda: str(err))()
        raise WorkflowError(f"config: the genoconv embed options {shlex.join(embed_options())!r}: {message}") from None


_check_embed_options()


def shard_path(i):
    return f"{OUT}/shards/shard_{i}_of_{N}.h5"


def partial_path(name):
    """Where a resumable command writes before its result is complete (not a Snakemake output)."""
    return f"{OUT}/partial/{name}"


def stop_options(wildcards, resources):
    """`resumable.sh --stop-after`: ask genoconv to save and stop `walltime_margin_s` before the walltime.

    The job's `runtime` resource (minutes) is its walltime on SLURM; without one (a local run) nothing is
    stopped. The grace period before a SIGKILL is half the time left after the signal.
    """
    runtime = getattr(resources, "runtime", None)
    if not isinstance(runtime, (int, float)) or runtime <= 0:
        return ""
    walltime = int(runtime * 60)
    margin = _setting("walltime_margin_s", int, lambda m: m >= 0, "must be >= 0")
    stop = walltime - margin if walltime > 2 * margin else walltime // 2
    return f"--stop-after {stop} --grace {max(5, min(margin, walltime - stop) // 2)}"


RESUMABLE = ["bash", os.path.join(workflow.basedir, "scripts", "resumable.sh"), "--python", sys.executable]
