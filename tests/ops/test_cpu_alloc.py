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


_KEEP_CHILD = r"""
import json
import torch
from genoconv.ops import cpu_alloc

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

assert cpu_alloc.keep_freed_memory()
x = torch.ones(256 << 20, dtype=torch.uint8)  # from the heap (below the raised mmap threshold), pages touched
del x
before = rss()
cpu_alloc.release_freed_memory()  # 256 MiB free, under KEEP_FREE_BYTES: kept for the next call
kept = rss()
cpu_alloc.release_freed_memory(keep=0)
print(json.dumps([before, kept, rss()]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and mallinfo2")
def test_a_run_keeps_a_calls_worth_of_freed_memory_and_returns_more():
    # A notebook embedding one window per call reuses the last call's freed temporaries (trimming them after every
    # call made each call page-fault them back: 126 vs 92 ms per 16K window); past KEEP_FREE_BYTES they go back.
    import json
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", _KEEP_CHILD], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(ROOT)}, timeout=120, check=False)
    if proc.returncode != 0 and "mallinfo2" in proc.stderr:
        pytest.skip("glibc without mallinfo2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, kept, released = json.loads(proc.stdout)
    assert kept > before - (64 << 20)  # still resident
    assert released < kept - (128 << 20)  # handed back
