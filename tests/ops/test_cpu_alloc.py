"""glibc allocator settings for CPU inference (genoconv/ops/cpu_alloc.py): applied once, and never over a user's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_CHILD = ("from genoconv.ops import cpu_alloc; import torch; a = cpu_alloc.keep_freed_memory(); "
          "x = torch.empty(64 << 20, dtype=torch.uint8); del x; cpu_alloc.release_freed_memory(); print(a)")


def _run(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update({"PYTHONPATH": str(ROOT), **env_extra})
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_applied_on_glibc_unless_the_user_chose():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _run({}) == "True"
    assert _run({"GENOCONV_MALLOC_TUNE": "0"}) == "False"
    assert _run({"MALLOC_MMAP_THRESHOLD_": "65536"}) == "False"
    assert _run({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000"}) == "False"
