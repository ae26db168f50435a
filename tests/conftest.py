"""Shared test fixtures. Append new fixtures below; do not rewrite the ones here."""

from __future__ import annotations

from pathlib import Path

import pytest

# Real data for tests lives beside the repository (../shared/data, read-only); tests skip without it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``../shared/data`` folder (read-only: copy into ``tmp_path`` before writing anything)."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """A small seeded HyenaDNA checkpoint (-hf layout) for engine/CLI tests: d_model 16, 2 layers, l_max 4098."""
    from genoconv.model import HyenaConfig, HyenaDNA
    from genoconv.model.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("small_model")
    save_checkpoint(HyenaDNA(HyenaConfig(d_model=16, n_layer=2, max_seq_len=4098)).init_weights(seed=11), path)
    return path


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``genoconv ARGS...`` in this process: returns (exit code, stdout, stderr)."""
    import sys

    from genoconv.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["genoconv", *map(str, args)])
        with pytest.raises(SystemExit) as exc:
            main()
        captured = capsys.readouterr()
        return exc.value.code, captured.out, captured.err

    return run


@pytest.fixture
def stop_after_batches(monkeypatch):
    """``stop_after_batches(n)``: the next ``genoconv embed`` in this process receives SIGTERM after ``n`` progress
    reports (a real signal through the run's handler: it stops at a commit boundary and exits 3)."""
    import os
    import signal

    from genoconv.cli import embed as embed_cmd

    def arm(n: int) -> None:
        calls = {"n": 0}
        original = embed_cmd.ProgressReporter.update

        def update(self, progress):
            original(self, progress)
            calls["n"] += 1
            if calls["n"] == n:
                os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(embed_cmd.ProgressReporter, "update", update)

    return arm
