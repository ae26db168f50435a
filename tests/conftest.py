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
