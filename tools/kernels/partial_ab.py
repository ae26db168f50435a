"""The partial convolutions of issue 13 (L = 2M, B = 1, H = 64, bf16) with the rows' shared input scales from the
kernel library's long_row_scales op (cuda._row_scales) against cuda._in_scale's PyTorch ops, interleaved in one
process: each call timed alone (synchronised, as bench_fftconv.py does) and back to back (20 calls between two
events: what a pipeline that keeps the GPU fed sees); then torch.profiler's per-kernel times of one K = 16K call each
way and the host's own time per op (GPU busy time against the call's, and where the host spends it).

    python tools/kernels/partial_ab.py [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_fftconv import back_to_back, copy_bandwidth, long_filter, time_ms

from genoconv.ops import LongFilter
from genoconv.ops import cuda as gcuda

SEQ_LEN, CHANNELS = 2_097_152, 64
TAPS = (12_288, 16_384, 262_144)
VARIANTS = {"op": gcuda._row_scales, "python": gcuda._in_scale}


def profile(fn, label: str) -> None:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(5):
            with torch.profiler.record_function("one_call"):
                fn()
            torch.cuda.synchronize()
    rows, host = {}, {}
    for e in prof.key_averages():
        if e.device_time_total > 0 and e.self_cpu_time_total == 0:
            rows[e.key[:100]] = (e.device_time_total / 5 / 1e3, e.count // 5)
        if e.cpu_time_total > 0:
            host[e.key[:100]] = (e.cpu_time_total / 5 / 1e3, e.self_cpu_time_total / 5 / 1e3, e.count // 5)
    busy = sum(ms for ms, _ in rows.values())
    print(f"--- {label}: kernels {busy:.3f} ms per call")
    for key, (ms, n) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
        print(f"{ms:8.3f} ms  x{n:<3} {key}")
    print(f"--- {label}: host time per call (total / self ms, count), top 14")
    for key, (tot, own, n) in sorted(host.items(), key=lambda kv: -kv[1][0])[:14]:
        print(f"{tot:8.3f} / {own:7.3f} ms  x{n:<3} {key}")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    dev = torch.device("cuda")
    bw = copy_bandwidth()
    u, pre, post = (torch.randn(1, CHANNELS, SEQ_LEN, device=dev).to(torch.bfloat16) for _ in range(3))
    floor = 4 * u.numel() / bw * 1e3
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s; floor {floor:.3f} ms plain, {2 * floor:.3f} gated")
    filters = {k: LongFilter(long_filter(CHANNELS, k, dev), torch.randn(CHANNELS, device=dev)) for k in TAPS}
    for k in TAPS:
        print(f"K={k}: {gcuda.path_plan(SEQ_LEN, k, dev)}")
    times = {(k, name, g): [] for k in TAPS for name in VARIANTS for g in (False, True, "b2b")}
    for _ in range(rounds):
        for name, scales in VARIANTS.items():
            gcuda._row_scales = scales
            for k in TAPS:
                times[(k, name, False)].append(time_ms(lambda k=k: gcuda.causal_conv_cuda(u, filters[k])))
                times[(k, name, True)].append(time_ms(lambda k=k: gcuda.causal_conv_cuda(u, filters[k], pre, post)))
                times[(k, name, "b2b")].append(back_to_back(lambda k=k: gcuda.causal_conv_cuda(u, filters[k])))
    gcuda._row_scales = VARIANTS["op"]
    print("| K | scales | plain ms (rounds) | % of floor | gated ms (rounds) | % of gated floor | plain back to back |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for k in TAPS:
        for name in VARIANTS:
            p, g, bb = times[(k, name, False)], times[(k, name, True)], times[(k, name, "b2b")]
            print(f"| {k} | {name} | {' / '.join(f'{t:.3f}' for t in p)} | {floor / statistics.median(p):.1%} | "
                  f"{' / '.join(f'{t:.3f}' for t in g)} | {2 * floor / statistics.median(g):.1%} | "
                  f"{statistics.median(bb):.3f} ({floor / statistics.median(bb):.1%}) |")
    for name, scales in VARIANTS.items():
        gcuda._row_scales = scales
        profile(lambda: gcuda.causal_conv_cuda(u, filters[16_384]), f"K=16384 plain, scales by {name}")
    gcuda._row_scales = VARIANTS["op"]


if __name__ == "__main__":
    main()
