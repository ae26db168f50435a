"""The Hyena block's fused steps on the GPU: the kernel library's (csrc/fftconv/block_ops.cu), Triton's and the
PyTorch references, side by side in one run, at the large-1m shape (d = 256) for a 1 Mbp record and the DMD gene.

Each step is memory-bound; its floor is the bytes it must move (below) at the copy bandwidth measured in the same run:
- LayerNorm + cast: read x (fp32), write out (bf16): 6 B per element; with the residual add: + read y (bf16) and
  write x (fp32): 12 B.
- short conv + gate: read p (B, 3d, L) bf16, write x0 and the gated product (B, d, L): 10 B per output element;
  once with contiguous rows (L = 2,220,382 leaves them unaligned) and once with rows padded to 16 bytes.
Errors are relative L2 against float64 of the same inputs.

    python benchmarks/bench_block_ops.py [--lengths 1000000,2220382]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fftconv import copy_bandwidth, time_ms

from genoconv.ops import fused, layout

D = 256


def _impls():
    """The implementations this machine runs: the reference always, the library's and Triton's where they load."""
    return {"reference": "0", **{impl: impl for impl in ("csrc", "triton")
                                 if _with(impl, lambda: fused.fused_impl("cuda"))() == impl}}


def _with(impl: str, fn):
    """Run fn under one implementation: GENOCONV_FUSED=0 for the reference, GENOCONV_FUSED_IMPL otherwise."""
    def run():
        key, value = ("GENOCONV_FUSED", "0") if impl == "0" else ("GENOCONV_FUSED_IMPL", impl)
        old = os.environ.get(key)
        os.environ[key] = value
        try:
            return fn()
        finally:
            if old is None:
                del os.environ[key]
            else:
                os.environ[key] = old
    return run


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="1000000,2220382")
    args = ap.parse_args()
    bw = copy_bandwidth()
    impls = _impls()
    print(f"{torch.cuda.get_device_name()}, copy bandwidth {bw / 1e12:.2f} TB/s; implementations {list(impls)}\n")
    print("| step | L | " + " | ".join(f"{name} ms (% floor, err)" for name in impls) + " |")
    print("| --- | --- |" + " --- |" * len(impls))
    g = torch.Generator(device="cuda").manual_seed(0)
    ln = torch.nn.LayerNorm(D).cuda()
    with torch.no_grad():
        ln.weight.normal_(generator=g)
        ln.bias.normal_(generator=g)
    for length in (int(s) for s in args.lengths.split(",")):
        with torch.inference_mode():
            x = torch.randn(1, length, D, device="cuda", generator=g)
            y = torch.randn(1, length, D, device="cuda", generator=g).bfloat16()
            p = torch.randn(1, 3 * D, length, device="cuda", generator=g).bfloat16()
            p_aligned = layout.padded_rows(p.shape, p).copy_(p)
            w = torch.randn(3 * D, 1, 3, device="cuda", generator=g).bfloat16()
            b = torch.randn(3 * D, device="cuda", generator=g).bfloat16()
            ln_want = torch.nn.functional.layer_norm(x.double(), (D,), ln.weight.double(), ln.bias.double(), ln.eps)
            _, sc_want = fused.short_conv_gate_ref(p.double(), w.double(), b.double())
            steps = [
                ("LayerNorm + cast", 6, lambda x=x: fused.layer_norm_cast(x, ln, torch.bfloat16), ln_want),
                # in place: x grows by y on every call (timed only, after the LayerNorm row's error is taken)
                ("add + LayerNorm + cast", 12, lambda x=x, y=y: fused.add_layer_norm_cast(x, y, ln, torch.bfloat16),
                 None),
                ("short conv + gate", 10, lambda p=p, w=w, b=b: fused.short_conv_gate(p, w, b)[1], sc_want),
                # rows padded to 16 bytes, as the model's in_proj writes them (ops.layout): the 16-byte path
                ("short conv + gate, aligned rows", 10, lambda p=p_aligned, w=w, b=b: fused.short_conv_gate(p, w, b)[1],
                 sc_want),
            ]
            for name, bytes_per, fn, want in steps:
                floor_ms = length * D * bytes_per / bw * 1e3
                cells = []
                for impl in impls.values():
                    run = _with(impl, fn)
                    ms = time_ms(run, reps=10)
                    err = "" if want is None else f", {rel(run(), want):.1e}"
                    cells.append(f"{ms:.3f} ({100 * floor_ms / ms:.0f}%{err})")
                print(f"| {name} | {length:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
