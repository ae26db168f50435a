"""Shards: the base-balanced split, and where a shard comes from (i/n, a SLURM job array, torchrun's processes)."""

from pathlib import Path

import pytest

from genoconv.errors import InputError
from genoconv.sharding import assign_shards, parse_shard, select_shard, shard_device, shard_output


def test_torchrun_environment_maps_to_shard_device_and_output(monkeypatch):
    # torchrun --nnodes 2 --nproc-per-node 4: the 7th process (global rank 6) is the 3rd on its node.
    monkeypatch.setenv("RANK", "6")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert parse_shard("torchrun") == (7, 8)
    assert shard_device("torchrun", "auto") == "cuda:2" and shard_device("torchrun", "cuda") == "cuda:2"
    assert shard_device("torchrun", "cpu") == "cpu" and shard_device("3/8", "auto") == "auto"
    assert shard_output(Path("out/genes.h5"), (7, 8), "torchrun") == Path("out/genes.shard_7_of_8.h5")
    assert shard_output(Path("run_{i}_of_{n}.h5"), (7, 8), "torchrun") == Path("run_7_of_8.h5")
    assert shard_output(Path("out.h5"), (7, 8), "7/8") == Path("out.h5")  # an explicit shard keeps -o as given


def test_torchrun_without_its_environment_is_a_clear_error(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(InputError, match="RANK and WORLD_SIZE must be set.*torchrun --nproc-per-node"):
        parse_shard("torchrun")
    monkeypatch.setenv("RANK", "8")
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(InputError, match="need 1 <= i <= n"):
        parse_shard("torchrun")


def test_slurm_array_and_explicit_shards(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "2")
    assert parse_shard("slurm") == (4, 4)
    # sbatch --array=0-30:10: tasks 0, 10, 20, 30 are shards 1..4 (it read task 10 as shard 11 of 4 before)
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_STEP", "10")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "20")
    assert parse_shard("slurm") == (3, 4)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "15")  # --array=0,15,... lists: not evenly spaced
    with pytest.raises(InputError, match="array task 15 .* is not one of an evenly spaced range"):
        parse_shard("slurm")
    assert parse_shard("2/3") == (2, 3)
    with pytest.raises(InputError, match="expected i/n"):
        parse_shard("two")


def test_balanced_by_bases_with_whole_records():
    # A human-genome-like set: one record is 8% of the bases; 8 shards cannot be better balanced than its share.
    lengths = [("chr1", 248)] + [(f"c{i}", 100) for i in range(27)]
    shards = assign_shards(lengths, 8)
    per_shard = [sum(n for (_, n), s in zip(lengths, shards) if s == k) for k in range(1, 9)]
    assert sum(per_shard) == 2948 and max(per_shard) <= 400 and min(per_shard) >= 300
    assert select_shard(lengths, 1, 8) == {rid for (rid, _), s in zip(lengths, shards) if s == 1}
