"""Small cases for compute-sanitizer (memcheck / racecheck): tensor-core, fused and multi-pass paths, gated and plain.

python3 tools/kernels/sanitize_case.py L [L ...] [--taps=K] [--many]; --taps gives the filter K taps (default L: K < L
takes the partial-convolution blocks past 16K); --many adds tensor-core cases where every persistent block
serves several units (the next unit's rows staged by cp.async) with 16-byte aligned and misaligned rows; --block runs
the Hyena block's fused steps (block_ops.cu) on outputs at every misalignment, odd lengths and carried inputs.
"""
import sys

import torch

from genoconv.ops import LongFilter
from genoconv.ops import cuda as gcuda

dev = torch.device("cuda")
lengths = [int(x) for x in sys.argv[1:] if not x.startswith("--")] or [1, 777, 40_000]
n_taps = next((int(x.split("=")[1]) for x in sys.argv[1:] if x.startswith("--taps=")), None)
for seq_len in lengths:
    for gated in (False, True):
        u = torch.randn(3, 3, seq_len, device=dev).to(torch.bfloat16)  # odd batch: a lone row in the tensor-core path
        g = [torch.randn_like(u) for _ in range(2)] if gated else [None, None]
        k = n_taps or seq_len
        filt = LongFilter(torch.randn(3, k, device=dev) / k**0.5, torch.randn(3, device=dev))
        y = gcuda.causal_conv_cuda(u, filt, *g)
        torch.cuda.synchronize()
        print(seq_len, k, gated, "ok", float(y.float().norm()))
if "--many" in sys.argv:
    channels = 5 * torch.cuda.get_device_properties(0).multi_processor_count
    for seq_len in (777, 3001):
        for offset in (0, 1):
            for gated in (False, True):
                def rows():
                    return torch.randn(3, channels, seq_len + offset, device=dev).to(torch.bfloat16)[..., offset:]
                u = rows()
                g = [rows(), rows()] if gated else [None, None]
                filt = LongFilter(torch.randn(channels, seq_len, device=dev) / seq_len**0.5, torch.randn(channels, device=dev))
                y = gcuda.causal_conv_cuda(u, filt, *g)
                torch.cuda.synchronize()
                print("many", seq_len, offset, gated, "ok", float(y.float().norm()))
if "--block" in sys.argv:
    from genoconv.ops import fused

    for length in (1, 7, 1_000, 9_001):
        for offset in range(8):
            p = torch.randn(2, 3 * 5, length + 3, device=dev).to(torch.bfloat16)[..., 3:]
            w, b, ib = torch.randn(15, 1, 3, device=dev), torch.randn(15, device=dev), torch.randn(15, device=dev)
            past = torch.randn(2, 15, 2, device=dev).to(torch.bfloat16)
            bufs = [torch.empty(2, 5, length + offset, device=dev, dtype=torch.bfloat16) for _ in range(2)]
            fused.csrc_short_conv_gate(p, w, b, past, ib, (bufs[0][..., offset:], bufs[1][..., offset:]))
        ln = torch.nn.LayerNorm(256).to(dev)
        x = torch.randn(length, 256, device=dev)
        fused.csrc_layer_norm(x, torch.randn(length, 256, device=dev).to(torch.bfloat16), ln, torch.bfloat16)
        torch.cuda.synchronize()
        print("block", length, "ok")
