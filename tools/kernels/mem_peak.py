"""What is alive at the peak of one `Embedder.embed_many` call on the GPU (the large-1m shape, random weights, bf16).

Why: the memory plan (engine) must bound what a record takes; when `tests/test_gpu.py::test_memory_plan_predicts_the_peak`
finds more, this names the tensors alive at the peak and the genoconv line that made each.
Usage: python tools/kernels/mem_peak.py LENGTH [FILTER_LEN]   (GPU only)
"""
import sys

import numpy as np
import torch


def main():
    from genoconv import Embedder
    from genoconv.model import HyenaConfig, HyenaDNA

    length = int(sys.argv[1])
    filter_len = int(sys.argv[2]) if len(sys.argv) > 2 else None
    model = HyenaDNA(HyenaConfig(d_model=256, n_layer=8, d_inner=1024, max_seq_len=1_000_002)).init_weights(seed=0)
    emb = Embedder(model, device="cuda", dtype="bfloat16", max_memory=100 << 30)
    seq = "".join(np.random.default_rng(length).choice(list("ACGT"), size=length))
    opts = {"per_nucleotide": False, "pools": ("mean",), "filter_len": filter_len}
    list(emb.embed_many([("x", seq[:5000])], **opts))  # warm: kernels, tables (embed_many is lazy)
    emb.model.clear_filter_cache()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=200_000)
    list(emb.embed_many([("x", seq)], **opts))
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    print(f"L = {length:,}, filter {filter_len}: peak {(torch.cuda.max_memory_allocated() - base) / 2**30:.2f} GiB "
          f"over {base / 2**30:.2f} GiB at the start")
    live, total, best, at_peak = {}, 0, -1, {}
    for ev in snap["device_traces"][0]:
        if ev["action"] == "alloc":
            live[ev["addr"]] = ev
            total += ev["size"]
            if total > best:
                best, at_peak = total, dict(live)
        elif ev["action"] in ("free_requested",) and ev["addr"] in live:
            total -= live.pop(ev["addr"])["size"]
    print(f"traced peak {best / 2**30:.2f} GiB (allocations made during the call); alive then, >= 32 MiB:")

    def where(ev):
        frames = [f for f in ev.get("frames", []) if "genoconv" in f["filename"]]
        return "; ".join(f"{f['filename'].split('genoconv/')[-1]}:{f['line']} {f['name']}" for f in frames[:3])

    for ev in sorted(at_peak.values(), key=lambda e: -e["size"]):
        if ev["size"] >= 32 << 20:
            print(f"  {ev['size'] / 2**20:9.1f} MiB  {where(ev)}")


if __name__ == "__main__":
    main()
