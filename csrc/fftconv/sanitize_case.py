"""Small cases for compute-sanitizer (memcheck / racecheck): tensor-core, fused and multi-pass paths, gated and plain."""
import sys

import torch

from genoconv.ops import LongFilter
from genoconv.ops import cuda as gcuda

dev = torch.device("cuda")
lengths = [int(x) for x in sys.argv[1:]] or [1, 777, 40_000]
for seq_len in lengths:
    for gated in (False, True):
        u = torch.randn(3, 3, seq_len, device=dev).to(torch.bfloat16)  # odd batch: a lone row in the tensor-core path
        g = [torch.randn_like(u) for _ in range(2)] if gated else [None, None]
        filt = LongFilter(torch.randn(3, seq_len, device=dev) / seq_len**0.5, torch.randn(3, device=dev))
        y = gcuda.causal_conv_cuda(u, filt, *g)
        torch.cuda.synchronize()
        print(seq_len, gated, "ok", float(y.float().norm()))
