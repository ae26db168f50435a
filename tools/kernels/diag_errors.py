"""Each bad-input case of the op in turn (run one per process: python3 diag_errors.py CASE)."""
import sys

import torch

import genoconv.ops.cuda as gcuda

gcuda._load()
u = torch.randn(1, 2, 100, device="cuda", dtype=torch.bfloat16)
tw = torch.zeros(128, 2, device="cuda")
ptw = torch.zeros(65, 2, device="cuda")
spec = torch.zeros(2, 65, 4, device="cuda")
case = sys.argv[1]
op = torch.ops.genoconv_fftconv.causal_conv
try:
    if case == "ok":
        op(u, spec, ptw, tw, None, None, 8, 0)
    elif case == "log_n":
        op(u, spec, ptw, tw, None, None, 30, 0)
    elif case == "spec":
        op(u, torch.zeros(3, 5, 4, device="cuda"), ptw, tw, None, None, 8, 0)
    elif case == "cpu":
        op(u.cpu(), spec, ptw, tw, None, None, 8, 0)
    elif case == "dtype":
        op(u.float(), spec, ptw, tw, None, None, 8, 0)
    torch.cuda.synchronize()
    print(case, "returned")
except Exception as e:  # noqa: BLE001
    print(case, "raised", type(e).__name__, str(e).splitlines()[0][:120])
