"""A record past the activation budget on the GPU: one pass with the filter caches emptied (Plan.clear_caches) against
the stream the planner chose before (Planner.clear_caches_on empty), on the random large-1m
checkpoint in bf16, after a 1 Mbp record has filled the layers' caches. Prints each plan, time, peak and the pooled
means' agreement. Usage: python tools/kernels/one_pass_ab.py CKPT [LENGTH ...]"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch

from genoconv import Embedder
from genoconv.engine import Engine
from genoconv.engine.plan import Planner
from genoconv.options import EmbedOptions


def main() -> None:
    ckpt, lengths = sys.argv[1], [int(v) for v in sys.argv[2:]] or [2_600_000, 3_100_000]
    cuda = os.environ.get("DEVICE", "cuda") == "cuda"  # DEVICE=cpu: a smoke run of the script (float32)
    emb = Embedder.from_pretrained(ckpt, device="cuda" if cuda else "cpu", dtype="bfloat16" if cuda else "float32")
    opts = {"per_nucleotide": False, "pools": ("mean",)}
    rng = np.random.default_rng(0)
    devices = Planner.clear_caches_on
    for n in lengths:
        seq = "".join(rng.choice(list("ACGT"), size=n))
        means = {}
        for variant in ("stream", "one pass", "stream", "one pass"):
            Planner.clear_caches_on = ("cpu", "cuda") if variant == "one pass" else ()  # the GPU as well
            emb.embed_many([("warm", seq[:1_000_000])], **opts)  # the 1M-tap filters cached, as in a run
            plan = Engine(emb, EmbedOptions(**opts)).plan(n)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            (_, out), = emb.embed_many([("x", seq)], **opts)
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            means[variant] = next(iter(out["pooled"].values())).astype(np.float64)
            print(f"L={n:,} {variant:8s} mode={out['mode']:40s} clear={plan.clear_caches!s:5s} "
                  f"plan={plan.peak_bytes / 2**30:6.2f} GiB peak={peak:6.2f} GiB  {dt:6.2f} s", flush=True)
        a, b = means["stream"], means["one pass"]
        print(f"L={n:,} pooled mean, one pass vs stream: rel diff {np.linalg.norm(a - b) / np.linalg.norm(a):.2e}")
    Planner.clear_caches_on = devices


if __name__ == "__main__":
    main()
