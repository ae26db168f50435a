"""The Hyena block's two projections at a streamed chunk's length, in the layouts the model could call, on the device.

in_proj writes p = W u^T (C = 3d rows, L columns: the convolution layout) from u (L, d); out_proj writes v^T W^T (L, d)
from v (d, L). The CLI's chrX profile (NOTES.md v18) found cuBLAS running an sm75 kernel for the model's bmm form;
this times the alternatives and names the kernel each one runs. Column blocks keep the large stride (and the slow
kernel); through a buffer they get the fast kernel but pay a strided copy each (NOTES.md v18).

    python tools/kernels/gemm_layouts.py [L ...]
"""

from __future__ import annotations

import statistics
import sys

import torch

from genoconv.ops.layout import padded_rows


def ms(fn, reps=10):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in ev:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in ev)


def kernel(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = [e.key for e in prof.key_averages() if e.device_time_total > 0 and not e.key.startswith("aten::")]
    return " + ".join(n[:60] for n in names[:2])


def via_buffer_in(w, u, cols=1 << 19):
    """Column blocks of W u^T through a (C, cols) buffer (leading dimension cols), each copied into place."""
    seq_len = u.shape[1]
    out, buf = u.new_empty(1, w.shape[0], seq_len), u.new_empty(w.shape[0], cols)
    for i in range(0, seq_len, cols):
        j = min(seq_len, i + cols)
        part = buf if j - i == cols else buf[:, :j - i].contiguous()
        torch.mm(w, u[0, i:j].t(), out=part)
        out[0, :, i:j].copy_(part)
    return out


def via_buffer_out(w, b, v, cols=1 << 19):
    """Column blocks of v copied to a (d, cols) buffer first, then v^T W^T + b into place."""
    seq_len = v.shape[-1]
    out, buf = v.new_empty(seq_len, w.shape[0]), v.new_empty(v.shape[1], cols)
    for i in range(0, seq_len, cols):
        j = min(seq_len, i + cols)
        part = buf[:, :j - i]
        part.copy_(v[0, :, i:j])
        torch.addmm(b, part.t(), w.t(), out=out[i:j])
    return out


def run_length(seq_len: int) -> None:
    dev = torch.device("cuda")
    d, c = 256, 768
    u = torch.randn(1, seq_len, d, device=dev, dtype=torch.bfloat16)
    w_in = torch.randn(c, d, device=dev, dtype=torch.bfloat16) / 16
    v = torch.randn(1, d, seq_len, device=dev, dtype=torch.bfloat16)
    w_out = torch.randn(d, d, device=dev, dtype=torch.bfloat16) / 16
    b_out = torch.randn(d, device=dev, dtype=torch.bfloat16)
    zero_in = torch.zeros(c, device=dev, dtype=torch.bfloat16)
    ref_in = torch.bmm(w_in.expand(1, -1, -1), u.transpose(1, 2))
    ref_out = torch.addmm(b_out, v[0].t(), w_out.t())
    # The alignment hypothesis (NOTES.md v18): cuBLAS's fast kernels need 16-byte aligned rows, and L = 2,220,382 or
    # 3,194,303 makes every row of a (C, L) bf16 tensor 4- or 2-byte aligned. Rows padded to 8 elements, and v as the
    # view a streamed chunk's convolution output is (after an odd history), test it.
    # (the package's own layout: genoconv.ops.layout)
    p_pad = padded_rows((1, c, seq_len), u)
    v_pad = padded_rows((1, d, seq_len), v).copy_(v)
    v_odd = torch.empty(1, d, seq_len + 1, device=dev, dtype=torch.bfloat16)
    v_odd[..., 1:] = v
    cases = {
        "in  bmm(W, u^T) [one GEMM]": (lambda: torch.bmm(w_in.expand(1, -1, -1), u.transpose(1, 2)), ref_in),
        "in  mm(W, u[0]^T)": (lambda: torch.mm(w_in, u[0].t()).unsqueeze(0), ref_in),
        "in  matmul(W, u^T)": (lambda: torch.matmul(w_in, u.transpose(1, 2)), ref_in),
        "in  linear(u, W)^T contiguous": (lambda: torch.nn.functional.linear(u, w_in).transpose(1, 2).contiguous(),
                                           ref_in),
        "in  mm(u[0], W^T)^T (view)": (lambda: torch.mm(u[0], w_in.t()).t().unsqueeze(0), ref_in),
        "in  addmm(0[:, None], W, u[0]^T)": (lambda: torch.addmm(zero_in[:, None], w_in, u[0].t()).unsqueeze(0),
                                             ref_in),
        "in  blocks of 2^19 via a buffer, copied": (lambda: via_buffer_in(w_in, u), ref_in),
        "in  bmm into rows padded to 8 (out= view)": (
            lambda: torch.bmm(w_in.expand(1, -1, -1), u.transpose(1, 2), out=p_pad), ref_in),
        "out addmm(b, v[0]^T, W^T) [one GEMM]": (lambda: torch.addmm(b_out, v[0].t(), w_out.t()), ref_out),
        "out addmm, v rows padded to 8": (lambda: torch.addmm(b_out, v_pad[0].t(), w_out.t()), ref_out),
        "out addmm, v after one odd column": (lambda: torch.addmm(b_out, v_odd[0, :, 1:].t(), w_out.t()), ref_out),
        "out blocks of 2^19 copied to a buffer": (lambda: via_buffer_out(w_out, b_out, v), ref_out),
        "out linear(v[0]^T, W, b)": (lambda: torch.nn.functional.linear(v[0].t(), w_out, b_out), ref_out),
        "out (W v[0])^T + b, contiguous": (lambda: (torch.mm(w_out, v[0]).t() + b_out).contiguous(), ref_out),
        "out addmm(b, v[0]^T contiguous, W^T)": (lambda: torch.addmm(b_out, v[0].t().contiguous(), w_out.t()),
                                                ref_out),
    }
    flops_in, flops_out = 2 * c * d * seq_len, 2 * d * d * seq_len
    print(f"L = {seq_len:,}: in_proj {flops_in / 1e12:.2f} TFLOP, out_proj {flops_out / 1e12:.2f} TFLOP")
    for name, (fn, ref) in cases.items():
        t = ms(fn)
        out = fn()
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        fl = flops_in if name.startswith("in") else flops_out
        print(f"  {name:40s} {t:8.3f} ms {fl / t / 1e9:6.0f} TFLOP/s  err {err:.1e}  {kernel(fn)}", flush=True)



def main() -> None:
    for seq_len in [int(a) for a in sys.argv[1:]] or [1_000_000, 2_220_382, 3_194_303, 3_194_296]:
        run_length(seq_len)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
