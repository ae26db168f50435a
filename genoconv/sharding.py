"""Deterministic split of a run's records into n shards, balanced by bases (not by count).

Greedy longest-first: records sorted by length (descending, ties by input order) each go to the shard with the
fewest bases so far (ties: lowest shard). The same inputs always give the same split, so every shard job can
compute its own part independently, and one 2 Mbp gene does not land beside thousands of others.
Shards are numbered 1..n (``--shard 2/3`` is the second of three).
"""

from __future__ import annotations

import heapq
import os

from .errors import InputError


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1 <= i <= n), ``"slurm"`` (SLURM_ARRAY_TASK_ID/_MIN/_COUNT) or ``"torchrun"`` (RANK, WORLD_SIZE:
    shard RANK + 1 of WORLD_SIZE) -> (i, n)."""
    if text is None:
        return None
    if text == "slurm":
        try:
            task = int(os.environ["SLURM_ARRAY_TASK_ID"])
            count = int(os.environ["SLURM_ARRAY_TASK_COUNT"])
            first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
            step = max(1, int(os.environ.get("SLURM_ARRAY_TASK_STEP", "1") or 1))  # --array=0-30:10
        except (KeyError, ValueError):
            raise InputError("--shard slurm: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT must be set "
                             "(run inside a job array, e.g. sbatch --array=0-3)") from None
        index, off_step = divmod(task - first, step)
        if off_step or not 0 <= index < count:
            raise InputError(f"--shard slurm: array task {task} (min {first}, step {step}, {count} tasks) is not one "
                             "of an evenly spaced range; use --array=A-B or A-B:S, or --shard i/n")
        return _check(index + 1, count, text)
    if text == "torchrun":
        rank, world, _ = _torchrun_env()
        return _check(rank + 1, world, text)
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r}: expected i/n (e.g. 2/8), slurm or torchrun") from None
    return _check(index, count, text)


def _torchrun_env() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them for each process it starts."""
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        raise InputError("--shard torchrun: RANK and WORLD_SIZE must be set (start genoconv with "
                         "`torchrun --nproc-per-node N -m genoconv embed ... --shard torchrun`)") from None
    return rank, world, local


def shard_device(text: str | None, device: str) -> str:
    """The device a shard runs on: under ``--shard torchrun`` with device auto/cuda, cuda:LOCAL_RANK (process i of a
    node on GPU i, as torchrun's one-process-per-GPU convention has it); otherwise ``device`` unchanged."""
    if text == "torchrun" and device in ("auto", "cuda"):
        return f"cuda:{_torchrun_env()[2]}"
    return device


def shard_output(path, shard: tuple[int, int] | None, text: str | None):
    """Where a shard writes: ``{i}`` and ``{n}`` in the file name are filled in (``-o 'out_{i}_of_{n}.h5'``); under
    ``--shard torchrun``, where every process has the same command line, ``out.h5`` becomes ``out.shard_i_of_n.h5``."""
    from pathlib import Path

    path = Path(path)
    if shard is None:
        return path
    i, n = shard
    if "{i}" in path.name or "{n}" in path.name:
        return path.with_name(path.name.replace("{i}", str(i)).replace("{n}", str(n)))
    if text == "torchrun":
        return path.with_name(f"{path.stem}.shard_{i}_of_{n}{path.suffix}")
    return path


def _check(index: int, count: int, text: str) -> tuple[int, int]:
    if count < 1 or not 1 <= index <= count:
        raise InputError(f"--shard {text!r}: need 1 <= i <= n")
    return index, count


def assign_shards(lengths: list[tuple[str, int]], count: int) -> list[int]:
    """Shard number (1..count) of each record, in input order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i][1], i))
    heap = [(0, s) for s in range(1, count + 1)]
    out = [0] * len(lengths)
    for i in order:
        bases, shard = heapq.heappop(heap)
        out[i] = shard
        heapq.heappush(heap, (bases + lengths[i][1], shard))
    return out


def select_shard(lengths: list[tuple[str, int]], index: int, count: int) -> set[str]:
    """Ids of the records that shard ``index`` of ``count`` embeds."""
    return {rid for (rid, _), s in zip(lengths, assign_shards(lengths, count)) if s == index}
