"""The memory model against the device: predicted peak (engine.plan) vs torch.cuda.max_memory_allocated.

For each (length, filter length, chunk, dtype) the large-1m shape embeds a record through ``Embedder.embed_many``
(pooled output), with filter caching off (GENOCONV_FILTER_CACHE_MB=0, so every filter is built per call and counted
by the model) and on; prints predicted, measured and their ratio. tests/test_gpu.py holds the model to 25%.

    python benchmarks/memory_plan.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_e2e import LARGE_1M  # noqa: E402

from genoconv import Embedder  # noqa: E402
from genoconv.engine import Engine  # noqa: E402
from genoconv.model import HyenaConfig, HyenaDNA  # noqa: E402
from genoconv.options import EmbedOptions  # noqa: E402


def measure(emb, length, filter_len, chunk, max_memory):
    seq = "".join("ACGT"[i] for i in torch.randint(0, 4, (length,)).tolist())
    opts = dict(per_nucleotide=False, pools=("mean",), filter_len=filter_len, chunk_size=chunk, max_memory=max_memory)
    plan = Engine(emb, EmbedOptions(**opts)).plan(length)
    emb.model.clear_filter_cache()  # the prediction includes what the layers cache during this call
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    list(emb.embed_many([("x", seq)], **opts))
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    return plan, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cases = [(100_000, None, None), (1_000_000, None, None), (300_000, 65_536, None), (2_000_000, 262_144, 524_288),
             (3_000_000, 1_000_002, 2_097_152), (500_000, 16_384, 65_536)]
    if args.quick:
        cases = cases[:3]
    model = HyenaDNA(HyenaConfig(**LARGE_1M)).init_weights(seed=0)
    print("| cache | dtype | length | K | chunk | plan | predicted GiB | measured GiB | measured/predicted |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for cache in ("off", "on"):
        if cache == "off":
            os.environ["GENOCONV_FILTER_CACHE_MB"] = "0"
        else:
            os.environ.pop("GENOCONV_FILTER_CACHE_MB", None)
        for dtype in ("bfloat16", "float32"):
            emb = Embedder(model, device="cuda", dtype=dtype, max_memory=100 << 30)
            for length, k, chunk in cases:
                try:
                    plan, peak = measure(emb, length, k, chunk, 100 << 30)
                    print(f"| {cache} | {dtype} | {length:,} | {k or '-'} | {chunk or '-'} | {plan.mode} | "
                          f"{plan.peak_bytes / 2**30:.2f} | {peak / 2**30:.2f} | {peak / max(plan.peak_bytes, 1):.2f} |",
                          flush=True)
                except torch.OutOfMemoryError:
                    print(f"| {cache} | {dtype} | {length:,} | {k} | {chunk} | OOM | | | |", flush=True)
            del emb
            gc.collect()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
