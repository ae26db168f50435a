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
