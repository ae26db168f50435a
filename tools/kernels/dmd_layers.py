"""Where the bf16 kernel path's error grows, hidden state by hidden state, against the fp32 reference path (DMD gene).

benchmarks/bench_e2e.py's ``accuracy_dmd`` compares ``Embedder.from_pretrained(ckpt, dtype="bfloat16").embed(seq,
as_tensor=True)`` (GENOCONV_CONV_BACKEND unset: the CUDA kernels) with the same call at dtype="float32" under
GENOCONV_CONV_BACKEND=reference (PyTorch FFT convolutions), as ||fast - ref|| / ||ref|| over the whole (L, d) output
in float64 (an inline expression there, nothing to import: replicated here as ``rel L2``). It read 9.88e-3 on DMD with
the large-1m shape (5.7e-3 once); the kernel alone at that shape is 2.58e-3. This makes the same two calls, the
reference first (every hidden state kept on the host, fp32), then the kernel path, comparing as it goes:

- rel L2 (the bench's measure), per-base (row) relative error mean / max, max abs error, of every hidden state
  (0 = embeddings, i = after block i-1 of backbone.layers, n+1 = ln_f: the bench's output);
- ``iso``: block i of the kernel path run on the reference's input of that block, against the reference's output:
  the block's own error, also relative to its increment ||out - in|| (``iso/incr``); ``own`` = iso / propagated;
- ``--check-conv``: each long-convolution call of the kernel path (genoconv.ops.cuda.causal_conv_cuda, or
  fftconv.causal_conv_ref where that runs: on the CPU) against a float64 FFT of the same inputs.

Inference runs Block.forward_pending, not Block.__call__ (the residual add is deferred into the next LayerNorm), so
module hooks on the blocks would never fire: each block's forward_pending is wrapped instead (hidden state = residual
+ returned MLP output); embeddings and ln_f get forward hooks. Chunks of a streamed record land at their offset.

    python3 tools/kernels/dmd_layers.py CKPT FASTA [--length N] [--dtype bf16] [--check-conv] [--isolate 0,3|all|none]

CKPT: bench_e2e's checkpoint (``e2e_file ckpt``, large1m_random); FASTA: .devdata/DMD_GRCh37_chrX.fa.gz (first record).
--isolate: block indices of backbone.layers (0-based; default all). Host RAM: (n_layer + 2) x L x d x 4 bytes (23 GB
for DMD, large-1m).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import os
import time

import torch

import genoconv.ops.cuda as gcuda
import genoconv.ops.fftconv as gfft
from genoconv import Embedder
from genoconv.model.hyena import EXACT, LayerStream
from genoconv.ops import planned_backend

PIECE = 1 << 17  # rows per float64 piece when comparing (bounds the device's temporaries)
# The hidden states of a record's first bases are small (on DMD with large-1m, the first ~200 are below 0.5% of the
# median norm, the first ~2,000 below 5%), so an error of fixed absolute size is large relative to them; "from 2k"
# reports rel L2 without them, "worst" the base of the largest relative error.
SKIP = 2000


def read_first(path: str, length: int | None) -> str:
    parts, seen = [], False
    with (gzip.open if path.endswith(".gz") else open)(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                if seen:
                    break
                seen = True
            else:
                parts.append(line.strip())
    seq = "".join(parts)
    return seq[:length] if length else seq


class Acc:
    """Squared error / reference sums (float64), max abs error, per-row relative errors, over a layer's chunks."""

    def __init__(self):
        self.err = self.ref = self.amax = self.rsum = self.rmax = self.err_on = self.ref_on = 0.0
        self.rows = self.worst = 0

    def add(self, a: torch.Tensor, b_host: torch.Tensor, start: int) -> None:
        """a (C, d) on the device, b_host (C, d) fp32 on the host: the rows of bases start, start + 1, ..."""
        for s in range(0, a.shape[0], PIECE):
            b = b_host[s:s + PIECE].to(a.device).double()  # fp32 over the bus, widened on the device
            d = a[s:s + PIECE].double() - b
            rn = b.norm(dim=-1)
            rel = d.norm(dim=-1) / rn.clamp_min(1e-30)
            self.err += float(d.square().sum())
            self.ref += float(rn.square().sum())
            on = max(0, SKIP - (start + s))  # rows of this piece past the first SKIP bases
            self.err_on += float(d[on:].square().sum())
            self.ref_on += float(rn[on:].square().sum())
            self.amax = max(self.amax, float(d.abs().max()))
            top = float(rel.max())
            if top > self.rmax:
                self.rmax, self.worst = top, start + s + int(rel.argmax())
            self.rsum += float(rel.sum())
            self.rows += rel.numel()

    def rel(self) -> float:
        return (self.err / self.ref) ** 0.5 if self.ref else float("nan")

    def rel_on(self) -> float:  # rel L2 without the first SKIP bases (their hidden states are small: see SKIP)
        return (self.err_on / self.ref_on) ** 0.5 if self.ref_on else float("nan")


def sqsum(x: torch.Tensor) -> float:
    return sum(float(x[s:s + PIECE].double().square().sum()) for s in range(0, x.shape[0], PIECE))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("fasta")
    ap.add_argument("--length", type=int, default=None, help="first N bases of the first record (default: all)")
    ap.add_argument("--dtype", default="bf16", help="the fast path's dtype (bf16, fp16)")
    ap.add_argument("--isolate", default="all", help="blocks (0-based, comma-separated) to run on the reference's "
                    "input: all, none, or e.g. 0,3")
    ap.add_argument("--check-conv", action="store_true", help="each kernel-path long conv against a float64 FFT")
    args = ap.parse_args()
    t0 = time.perf_counter()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    seq = read_first(args.fasta, args.length)
    print(f"{len(seq):,} bases of {args.fasta}; device {dev}; torch {torch.__version__}", flush=True)
    ctx = {"phase": "ref", "start": 0, "layer": None, "chunks": []}
    store: dict[int, torch.Tensor] = {}  # hidden index -> (L, d) fp32 host: the reference
    acc: dict[int, Acc] = {}
    iso: dict[int, Acc | str] = {}
    inc: dict[int, float] = {}  # block -> ||out - in||^2 of the reference
    conv: dict[int, list] = {}  # block -> [err^2, ref^2, max abs, calls, calls left unchecked (out of memory)]
    iso_stream: dict[int, LayerStream] = {}
    iso_blocks: set[int] | None = None

    def reset() -> None:  # a record's first chunk (again, after an out-of-memory retry of the engine)
        ctx["chunks"] = []
        if ctx["phase"] == "ref":
            inc.clear()
        else:
            for d in (acc, iso, conv, iso_stream):
                d.clear()

    def record(k: int, t: torch.Tensor) -> None:  # hidden state k of the chunk at ctx["start"], t (C, d)
        s = ctx["start"]
        if ctx["phase"] == "ref":
            if k not in store:
                store[k] = torch.empty(len(seq), t.shape[-1])
            store[k][s:s + t.shape[0]].copy_(t)
        else:
            acc.setdefault(k, Acc()).add(t, store[k][s:s + t.shape[0]], s)

    def wrap_block(i: int, orig):
        def forward_pending(residual, compute_dtype, stream=None, conv_settings=EXACT, pending=None):
            ctx["layer"] = i
            assert residual.shape[0] == 1, "one record, batch 1"
            before = (residual.clone() if pending is None else residual + pending) if ctx["phase"] == "ref" else None
            ret = orig(residual, compute_dtype, stream, conv_settings, pending)
            out = residual[0] + ret[0]
            if before is not None:
                inc[i] = inc.get(i, 0.0) + sqsum(before[0].neg_().add_(out))
                del before
            record(i + 1, out)
            s, n = ctx["start"], out.shape[0]
            del out
            if ctx["phase"] == "main" and i in iso_blocks and iso.get(i + 1) != "oom":
                ctx["phase"] = "iso"
                try:  # the reference's input of block i (a copy: the block adds into its residual in place)
                    r = store[i][s:s + n].to(residual.device, copy=True)[None]
                    st = None if stream is None else iso_stream.setdefault(i, LayerStream())
                    r += orig(r, compute_dtype, st, conv_settings, None)
                    iso.setdefault(i + 1, Acc()).add(r[0], store[i + 1][s:s + n], s)
                    del r
                except torch.OutOfMemoryError:
                    iso[i + 1] = "oom"
                    torch.cuda.empty_cache()
                finally:
                    ctx["phase"] = "main"
            return ret
        return forward_pending

    def instrument(emb) -> None:
        model = emb.model
        n = model.config.n_layer
        hidden_states = model.hidden_states

        def chunk(ids, layers=(-1,), stream=None, conv_settings=EXACT):
            ctx["start"] = stream.position if stream is not None else 0
            if ctx["start"] == 0:
                reset()
            ctx["chunks"].append((ctx["start"], ids.shape[1], conv_settings.filter_len))
            return hidden_states(ids, layers, stream, conv_settings)
        model.hidden_states = chunk
        model.backbone.embeddings.register_forward_hook(lambda m, a, out: record(0, out[0]))
        model.backbone.ln_f.register_forward_hook(lambda m, a, out: record(n + 1, out[0]))
        for i, block in enumerate(model.backbone.layers):
            block.forward_pending = wrap_block(i, block.forward_pending)

    def conv64(y, u, filt, pre, post, hist, start) -> list | None:  # y: the call's output (valid from `start`)
        if ctx["phase"] != "main" or filt.freq_keep < 1:
            return None
        batch, chans, length = u.shape
        past = 0 if hist is None else hist.shape[-1]
        total = past + length
        taps = min(filt.filter_len, total)
        n_fft = 1 << (total + taps - 2).bit_length()  # >= total + taps - 1: linear, no wrap-around
        step = max(1, (1 << 31) // (6 * 8 * batch * n_fft))  # ~2 GiB of float64 temporaries per channel block
        a = [0.0, 0.0, 0.0, 1, 0]
        for c in range(0, chans, step):
            x = u[:, c:c + step].double()
            if pre is not None:
                x = x * pre[:, c:c + step].double()
            if past:
                x = torch.cat([hist[:, c:c + step].double(), x], dim=-1)
            h = torch.fft.rfft(filt.taps[c:c + step, :taps].double(), n=n_fft)
            r = torch.fft.irfft(torch.fft.rfft(x, n=n_fft) * h, n=n_fft)[..., past + start:total]
            r += x[..., past + start:] * filt.bias[c:c + step, None].double()
            if post is not None:
                r *= post[:, c:c + step, start:].double()
            d = y[:, c:c + step, start:].double() - r
            a[0] += float(d.square().sum())
            a[1] += float(r.square().sum())
            a[2] = max(a[2], float(d.abs().max()))
        return a

    if args.check_conv:
        cuda_conv, ref_conv = gcuda.causal_conv_cuda, gfft.causal_conv_ref

        def checked(y, *a) -> torch.Tensor:  # out of memory in the check: counted, never re-planned by the engine
            try:
                got = conv64(y, *a)
            except torch.OutOfMemoryError:
                got = [0.0, 0.0, 0.0, 0, 1]
                torch.cuda.empty_cache()
            if got:
                old = conv.setdefault(ctx["layer"], [0.0, 0.0, 0.0, 0, 0])
                conv[ctx["layer"]] = [max(x, y) if j == 2 else x + y for j, (x, y) in enumerate(zip(old, got))]
            return y
        gcuda.causal_conv_cuda = lambda u, filt, pregate=None, postgate=None, valid_from=0: checked(
            cuda_conv(u, filt, pregate, postgate, valid_from), u, filt, pregate, postgate, None, valid_from)
        gfft.causal_conv_ref = lambda u, filt, pregate=None, postgate=None, history=None: checked(
            ref_conv(u, filt, pregate, postgate, history), u, filt, pregate, postgate, history, 0)

    info = {}
    saved_env = os.environ.get("GENOCONV_CONV_BACKEND")
    for phase, dtype in (("ref", "float32"), ("main", args.dtype)):
        t = time.perf_counter()
        ctx["phase"] = phase
        os.environ.pop("GENOCONV_CONV_BACKEND", None)  # the kernel path: as the user's environment has it
        os.environ.update({"GENOCONV_CONV_BACKEND": "reference"} if phase == "ref" else
                          {"GENOCONV_CONV_BACKEND": saved_env} if saved_env else {})
        emb = Embedder.from_pretrained(args.ckpt, device=dev, dtype=dtype)
        n = emb.config.n_layer
        if iso_blocks is None:
            iso_blocks = (set(range(n)) if args.isolate == "all" else set() if args.isolate == "none"
                          else {int(x) for x in args.isolate.split(",")})
        instrument(emb)
        backend = planned_backend(emb.device, emb.dtype)
        emb.embed(seq, as_tensor=True)
        if dev == "cuda":
            torch.cuda.synchronize()
        info[phase] = (str(emb.dtype), backend, list(ctx["chunks"]))
        print(f"{phase:>4}: {info[phase][0]}, conv backend {backend}, {len(ctx['chunks'])} chunk(s) (start, bases, "
              f"filter_len) {ctx['chunks'][:4]}{' ...' if len(ctx['chunks']) > 4 else ''}; "
              f"{time.perf_counter() - t:.1f} s" + (f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
                                                    if dev == "cuda" else ""), flush=True)
        del emb
        gc.collect()
        if dev == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    print(f"\nhidden state: {info['main'][0]} {info['main'][1]} path against float32 {info['ref'][1]}"
          f" (rel L2 = bench_e2e accuracy_dmd's ||fast - ref|| / ||ref||, float64)")
    print(f"{'h':>2} {'what':<8} {'rel L2':>9} {'from 2k':>9} {'base mean':>9} {'base max':>9} {'worst':>8} "
          f"{'max abs':>9} | {'iso rel':>9} "
          f"{'iso/incr':>9} {'own':>6}" + (f" | {'conv rel':>9} {'conv max':>9} calls" if args.check_conv else ""))
    for k in sorted(acc):
        a = acc[k]
        what = "embed" if k == 0 else "ln_f" if k == n + 1 else f"block {k - 1}"
        row = (f"{k:>2} {what:<8} {a.rel():9.2e} {a.rel_on():9.2e} {a.rsum / max(a.rows, 1):9.2e} {a.rmax:9.2e} "
               f"{a.worst:>8} {a.amax:9.2e} | ")
        b = iso.get(k)
        if isinstance(b, Acc):
            incr = (b.err / inc[k - 1]) ** 0.5 if inc.get(k - 1) else float("nan")
            own = (b.err / a.err) ** 0.5 if a.err else float("nan")
            row += f"{b.rel():9.2e} {incr:9.2e} {own:6.2f}"
        else:
            row += f"{b or '-':>9} {'':>9} {'':>6}"
        c = conv.get(k - 1) if 1 <= k <= n else None
        if args.check_conv and c:
            row += f" | {(c[0] / c[1]) ** 0.5 if c[1] else float('nan'):9.2e} {c[2]:9.2e} {c[3]:>5}"
            row += f" ({c[4]} unchecked: out of memory)" if c[4] else ""
        print(row)
    print(f"\nbench_e2e accuracy_dmd (bf16_kernel_vs_fp32_reference) here: {acc[n + 1].rel():.3e}")
    print(f"total wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
