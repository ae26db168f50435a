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
    """``"i/n"`` (1 <= i <= n) or ``"slurm"`` (from SLURM_ARRAY_TASK_ID/_MIN/_COUNT) -> (i, n)."""
    if text is None:
        return None
    if text == "slurm":
        try:
            task = int(os.environ["SLURM_ARRAY_TASK_ID"])
            count = int(os.environ["SLURM_ARRAY_TASK_COUNT"])
            first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        except (KeyError, ValueError):
            raise InputError("--shard slurm: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT must be set "
                             "(run inside a job array, e.g. sbatch --array=0-3)") from None
        return _check(task - first + 1, count, text)
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r}: expected i/n (e.g. 2/8) or slurm") from None
    return _check(index, count, text)


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
