"""Fused path: scalar kernel vs tensor-core kernel (fp16, split fp16) per L, in one process.

Needs the tensor-core kernel built and selectable: `patch -p1 < csrc/fftconv/tc_enable.patch` first (NOTES.md v7);
without it every mode runs the scalar kernel.

    python3 csrc/fftconv/tc_compare.py [L ...]     (B*H*L = 2^27, H = 256; GENOCONV_FFTCONV_TC selects the kernel)
Prints ms, % of the 4 B/elem floor (measured copy bandwidth), and rel. L2 error vs float64 (bf16, plain and gated,
plus inputs scaled by 1e4 / 1e-4 for the range handling).
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_fftconv import copy_bandwidth, long_filter, oracle_error, time_ms  # noqa: E402

from genoconv.ops import LongFilter  # noqa: E402
from genoconv.ops import cuda as gcuda  # noqa: E402

sizes = [int(a) for a in sys.argv[1:]] or [128, 512, 2048, 8192, 16384]
dev = torch.device("cuda")
bw = copy_bandwidth()
print(f"copy bandwidth {bw / 1e12:.2f} TB/s")
for seq_len in sizes:
    h = 256
    b = max(1, (1 << 27) // (h * seq_len))
    taps = long_filter(h, seq_len, dev)
    bias = torch.randn(h, device=dev)
    filt = LongFilter(taps, bias)
    u = torch.randn(b, h, seq_len, device=dev).to(torch.bfloat16)
    pre = torch.randn(b, h, seq_len, device=dev).to(torch.bfloat16)
    post = torch.randn(b, h, seq_len, device=dev).to(torch.bfloat16)
    floor = 4 * b * h * seq_len / bw * 1e3
    for mode, spw in (("0", "4"), ("1", "4"), ("2", "4")):
        os.environ["GENOCONV_FFTCONV_TC"] = mode
        os.environ["GENOCONV_FFTCONV_TC_SETS"] = spw
        t = time_ms(lambda: gcuda.causal_conv_cuda(u, filt), reps=20)
        tg = time_ms(lambda: gcuda.causal_conv_cuda(u, filt, pre, post), reps=20)
        e = oracle_error(gcuda.causal_conv_cuda(u, filt), u, taps, bias)
        eg = oracle_error(gcuda.causal_conv_cuda(u, filt, pre, post), u, taps, bias, pre, post)
        ex = []
        for sc in (1e4, 1e-4):
            us = (u[:1, :4].float() * sc).to(torch.bfloat16)
            f2 = LongFilter(taps[:4] / sc, bias[:4] / sc)
            ex.append(oracle_error(gcuda.causal_conv_cuda(us, f2), us, taps[:4] / sc, bias[:4] / sc))
        print(f"L={seq_len:6d} B={b:5d} mode {mode} sets/warp {spw}: plain {t:7.3f} ms ({floor / t:6.1%} floor)  gated {tg:7.3f} ms "
              f"({2 * floor / tg:6.1%})  err {e:.2e} / {eg:.2e}  scaled {ex[0]:.2e} {ex[1]:.2e}", flush=True)
    del u, pre, post, filt, taps
os.environ.pop("GENOCONV_FFTCONV_TC", None)
os.environ.pop("GENOCONV_FFTCONV_TC_SETS", None)
