"""One call per size for ncu: python3 csrc/fftconv/profile_case.py L [L ...] (B*H*L = 2^27, H = 256 where possible)."""
import sys

import torch

from genoconv.ops import LongFilter
from genoconv.ops import cuda as gcuda

for seq_len in [int(a) for a in sys.argv[1:]]:
    h = min(256, (1 << 27) // seq_len)
    b = max(1, (1 << 27) // (h * seq_len))
    u = torch.randn(b, h, seq_len, device="cuda").to(torch.bfloat16)
    filt = LongFilter(torch.randn(h, seq_len, device="cuda") / seq_len**0.5, torch.randn(h, device="cuda"))
    gcuda.causal_conv_cuda(u, filt)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push(f"L{seq_len}")
    gcuda.causal_conv_cuda(u, filt)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
