"""The kernels' memcheck on the CPU: `genoconv doctor --check`'s cases on the emulated kernels built with
AddressSanitizer.

A read or write outside a tensor, the block's dynamic shared memory or a static shared array stops the process with
AddressSanitizer's report (a kernel reading 64 samples past its row's end was caught in long_fwd_tc_kernel). The cases
(genoconv.ops.selfcheck: every dispatch path, plain and gated, bf16, against float64) run through the public
``causal_conv`` with the dispatch routed to the emulator (dispatch.emulate_device). Run it in a process that preloads
the runtime::

    LD_PRELOAD=$(c++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 python tools/kernels/emu/memcheck.py

Exit 0 with one line per case when clean; 1 when a result is off; AddressSanitizer's own exit code on a bad access.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch


def _emu_module(name: str):
    spec = importlib.util.spec_from_file_location(f"genoconv_emu_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=None, help="where to build (default: the emulator's cache)")
    args = parser.parse_args(argv)
    module = _emu_module("build").load(args.build_dir, sanitize=True)

    from genoconv.ops.selfcheck import run_checks

    with pytest.MonkeyPatch.context() as patch:
        _emu_module("dispatch").emulate_device(module, patch)
        results = run_checks(torch.device("cpu"), (torch.bfloat16,))
    for r in results:
        print(f"{'ok ' if r.ok else 'BAD'} {r.name:20s} {'gated' if r.gated else 'plain'} {r.path:12s} {r.error:.2e}",
              flush=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
