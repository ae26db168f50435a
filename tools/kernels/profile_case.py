"""One call per size for ncu: python3 tools/kernels/profile_case.py [--gated] L [L ...] (B*H*L = 2^27, H = 256 where
possible). --gated passes pre- and post-gates. Lengths up to 16,384 run the tensor-core kernel (GENOCONV_FFTCONV_PATH=scalar
profiles the scalar kernels instead)."""
import sys

import torch

from genoconv.ops import LongFilter
from genoconv.ops import cuda as gcuda

gated = "--gated" in sys.argv
for seq_len in [int(a) for a in sys.argv[1:] if not a.startswith("--")]:
    h = min(256, (1 << 27) // seq_len)
    b = max(1, (1 << 27) // (h * seq_len))
    u = torch.randn(b, h, seq_len, device="cuda").to(torch.bfloat16)
    gates = (torch.randn_like(u), torch.randn_like(u)) if gated else (None, None)
    filt = LongFilter(torch.randn(h, seq_len, device="cuda") / seq_len**0.5, torch.randn(h, device="cuda"))
    gcuda.causal_conv_cuda(u, filt, *gates)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push(f"L{seq_len}")
    gcuda.causal_conv_cuda(u, filt, *gates)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
