"""The kernels' memcheck on the CPU: every dispatch path through the emulated kernels built with AddressSanitizer.

A read or write outside a tensor, the block's dynamic shared memory or a static shared array stops the process with
AddressSanitizer's report (a kernel reading 64 samples past its row's end was caught in long_fwd_tc_kernel). Rows are
B = 1 so the last row's end is its allocation's end. Run it in a process that preloads the runtime::

    LD_PRELOAD=$(c++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 python tools/kernels/emu/memcheck.py

Exit 0 with one line per case when clean; 1 when a result is off; AddressSanitizer's own exit code on a bad access.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch


def _build_module():
    spec = importlib.util.spec_from_file_location("genoconv_emu_build", Path(__file__).with_name("build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=None, help="where to build (default: the emulator's cache)")
    args = parser.parse_args(argv)
    module = _build_module().load(args.build_dir, sanitize=True)

    from genoconv.ops import LongFilter, causal_conv_ref, cuda
    from genoconv.ops.selfcheck import CASES, TOLERANCE

    smem = 232448
    bad = 0
    for name, seq_len, filter_len, history in CASES:
        for gated in (False, True):
            gen = torch.Generator().manual_seed(seq_len + gated)
            total = seq_len + history
            taps = torch.randn(2, filter_len, generator=gen, dtype=torch.float64) / filter_len ** 0.5
            bias = torch.randn(2, generator=gen, dtype=torch.float64)
            sig = [torch.randn(1, 2, total, generator=gen).to(torch.bfloat16) for _ in range(3)]
            u, pre, post = sig[0], (sig[1] if gated else None), (sig[2] if gated else None)
            path, how = cuda._path_plan(total, filter_len, smem, history, pre=gated, post=gated)
            if how is None:
                planned = cuda._planned_taps(total, filter_len, history)
                how = (*cuda.scalar_plan(total, planned, module.max_fused_points(0)), planned)
            y = cuda._run_path(u, LongFilter(taps.float(), bias.float()), pre, post, path, how)
            want = causal_conv_ref((u if pre is None else u * pre).double(), LongFilter(taps, bias))
            if post is not None:
                want = want * post.double()
            err = ((y[..., history:].double() - want[..., history:]).norm() / want[..., history:].norm()).item()
            ok = err <= TOLERANCE[torch.bfloat16]
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {name:20s} {'gated' if gated else 'plain'} {path:12s} {err:.2e}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
