"""What a frequency-sparse pattern chosen in the kernels' order would cost in quality (NOTES.md v29; issue 13).

The long path's four-step order writes bin k = k1 + R k2 (R = 256) into workspace row k1, and the tensor-core kernel's
k = k1 + r k2 into row k1 of its r rows. The only cut that lets a pass skip whole rows (and their bytes) keeps the
bins whose k1 = k mod P lies in a set: a *comb* in frequency. ``--freq-keep`` keeps the lowest bins instead (a
low-pass cut), which no pass can skip (NOTES.md v12, v28). This script measures the comb's cost the way
``benchmarks/bench_quality.py`` measures the low-pass one, on the same windows of the shipped demo model:
comb(P, F) keeps the bins with min(k mod P, P - k mod P) < F P / 2 (conjugate-symmetric, so the filter stays real;
the rows nearest k1 = 0, which hold the most of a smooth filter's energy).

It changes nothing in the library: the comb is applied by wrapping ``LongFilter.spectrum`` in this process only, at
power-of-two transform sizes (GENOCONV_FFT_SIZES=pow2, the GPU paths' N; P must divide N).

    GENOCONV_FFT_SIZES=pow2 python tools/kernels/comb_quality.py [--windows 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_quality as bq  # noqa: E402

from genoconv.model.checkpoint import load_checkpoint  # noqa: E402
from genoconv.model.registry import DEFAULT_MODEL, resolve_model  # noqa: E402
from genoconv.ops.fftconv import LongFilter  # noqa: E402

# freq_keep values that stand for a comb (P, F) in this process: ConvSettings carries one float per variant, and the
# model caches filters per setting, so each comb needs its own value (all within (0, 1], none a real cut here).
COMBS = {0.9993: (256, 0.5), 0.9994: (256, 0.25), 0.9992: (128, 0.25)}


def install_combs() -> None:
    kept_bins, spectrum = LongFilter.kept_bins, LongFilter.spectrum

    def comb_kept_bins(self, n_fft):
        return n_fft // 2 + 1 if self.freq_keep in COMBS else kept_bins(self, n_fft)

    def comb_spectrum(self, n_fft):
        s = spectrum(self, n_fft)
        if self.freq_keep not in COMBS:
            return s
        period, keep = COMBS[self.freq_keep]
        if n_fft % period:
            raise SystemExit(f"comb period {period} does not divide the transform size {n_fft}: run with "
                             "GENOCONV_FFT_SIZES=pow2")
        k1 = torch.arange(s.shape[-1], device=s.device) % period
        return s * (torch.minimum(k1, period - k1) < keep * period / 2)

    LongFilter.kept_bins, LongFilter.spectrum = comb_kept_bins, comb_spectrum


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--windows", type=int, default=2, help="windows per genome")
    args = ap.parse_args()
    if os.environ.get("GENOCONV_FFT_SIZES") != "pow2":
        raise SystemExit("set GENOCONV_FFT_SIZES=pow2 (the comb's period must divide the transform size)")
    install_combs()
    model, _ = load_checkpoint(resolve_model(DEFAULT_MODEL))
    model = model.eval()
    n = model.config.max_seq_len
    records = bq.demo_windows(args.data, n, args.windows)
    variants = [(f"K={n:,} (reference)", n, 1.0), ("low-pass F=0.5", n, 0.5), ("low-pass F=0.25", n, 0.25)]
    variants += [(f"comb P={p} F={f}", n, key) for key, (p, f) in COMBS.items()]
    rows = bq.evaluate(model, records, variants, chunk=None, with_bits=True)
    print(f"\ngenoconv-demo (l_max {n:,}), fp32, CPU, {args.windows} windows of {n:,} bases per genome, N = 2^15\n")
    bq.print_table(rows, [label for label, _, _ in variants], with_bits=True)


if __name__ == "__main__":
    main()
