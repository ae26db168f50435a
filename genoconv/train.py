"""Train a small HyenaDNA for next-base prediction, with a held-out region: how ``genoconv-demo`` was made.

    python -m genoconv.train --fasta GRCh37_chrX_1-70M.fa.gz --out runs/demo \\
        --eval dmd=DMD_GRCh37_chrX.fa.gz --eval ecoli=ecoli_K12_MG1655.fa.gz --max-minutes 8

What it does:
- Reads one record of ``--fasta`` (:func:`genoconv.io.open_records`) and tokenises it with the ``clean`` policy.
- Holds out ``--heldout`` (1-based inclusive region string; default the DMD gene, chrX:31,137,345-33,357,726) and a
  guard band of ``--guard`` bases on each side: no training crop overlaps them.
- Draws random crops of ``--seq-len`` bases from the rest (``seq_len - 1`` targets each; 16384 keeps the FFT a
  power of two); crops with more than ``--max-n-frac`` N are
  redrawn. Loss: next-base cross-entropy over A/C/G/T (:func:`genoconv.model.likelihood.next_base_nll`; N targets are
  ignored), reported in bits per base.
- AdamW (weight decay on projection/MLP weights only: not on the implicit filters, norms, biases or embeddings, as
  HyenaDNA trains), linear warm-up then cosine decay to ``--min-lr-ratio`` x peak, gradient clipping, bf16 autocast
  on a GPU and fp32 on the CPU. The head is tied to the input embedding (HyenaDNA's ``ConvLMHeadModel``), so the
  saved checkpoint has no ``lm_head.weight``.
- ``--steps 0`` (the default) fits the cosine schedule to ``--max-minutes``: the step time is measured over the
  first steps and the schedule length is fixed from it (and saved, so a resumed run keeps it). ``--max-minutes`` is
  also a hard stop of the training loop; evaluation and saving come after it (seconds on a GPU).
- Every ``--save-every`` steps and at the end, the model, optimizer, step, tokens seen and RNG states go to
  ``OUT/train_state.pt`` (written atomically); ``--resume`` continues from there with the saved hyper-parameters
  (run-control options -- budget, device, logging, evaluation -- come from the new command line).
- At the end: ``OUT/config.json`` + ``OUT/model.safetensors`` (the ``-hf`` layout) and ``OUT/training.json`` (data
  files and sha256, held-out region, steps, tokens, seed, hyper-parameters, losses, bits/base on each ``--eval``
  file, device, wall time, genoconv version).

Progress: a rich progress bar on a terminal, else one plain line every ``--log-every`` steps (step, loss in
bits/base, learning rate, tokens/s).
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ._version import __version__
from .errors import GenoconvError, InputError
from .model.likelihood import LN2, bits_per_base, next_base_nll
from .model.config import HyenaConfig
from .model.hyena import HyenaDNA
from .model.tokenizer import N_ID, Tokenizer
from .model.checkpoint import save_checkpoint, sha256_file

DMD_REGION = "X:31137345-33357726"  # GRCh37, 1-based inclusive (../shared/data/README.md)
STATE_FILE = "train_state.pt"
# Options that define the run; on --resume they come from the saved state, not from the new command line.
RUN_DEFINING = ("fasta", "record", "heldout", "guard", "n_layer", "d_model", "d_inner", "max_seq_len", "seq_len",
                "batch_size", "lr", "min_lr_ratio", "warmup", "weight_decay", "grad_clip", "betas", "steps",
                "max_n_frac", "seed")


# ---- data ---------------------------------------------------------------------------------------------------
def read_fasta(path: str | Path, record: str | None = None) -> tuple[str, str]:
    """(name, sequence) of one record (the first when ``record`` is None) of a plain, gzip or bgzip FASTA, read
    through :func:`genoconv.io.open_records` like every other input."""
    from .io import open_records

    with open_records([path]) as source:
        names = []
        for rec in source:
            if record is None or rec.id == record:
                return rec.id, rec.sequence()
            names.append(rec.id)
    raise InputError(f"{path}: no record {record!r} (records: {', '.join(names[:5])})")


def parse_region(region: str) -> tuple[str, int, int]:
    """``CONTIG:START-END`` (1-based inclusive, commas allowed) -> (contig, start0, end0) half-open 0-based."""
    try:
        contig, span = region.rsplit(":", 1)
        start, end = (int(x.replace(",", "")) for x in span.split("-"))
    except ValueError:
        raise InputError(f"--heldout {region!r}: expected CONTIG:START-END (1-based, inclusive)") from None
    if not 1 <= start <= end:
        raise InputError(f"--heldout {region!r}: need 1 <= START <= END")
    return contig, start - 1, end


class CropSampler:
    """Random training crops of ``length`` tokens that avoid an excluded span and mostly-N stretches.

    ``allowed``: half-open 0-based intervals of the record where crops may lie entirely.
    """

    def __init__(self, tokens: np.ndarray, allowed: list[tuple[int, int]], length: int, max_n_frac: float,
                 rng: np.random.Generator):
        self.tokens, self.length, self.max_n_frac, self.rng = tokens, length, max_n_frac, rng
        spans = [(a, b - length + 1) for a, b in allowed if b - a >= length]  # valid start ranges [a, last+1)
        if not spans:
            raise InputError(f"no room for a training crop of {length:,} bases outside the held-out region")
        self.starts = np.array([a for a, _ in spans], dtype=np.int64)
        self.cum = np.cumsum([b - a for a, b in spans])

    def _draw_start(self) -> int:
        u = int(self.rng.integers(0, int(self.cum[-1])))
        i = int(np.searchsorted(self.cum, u, side="right"))
        return int(self.starts[i] + u - (self.cum[i - 1] if i else 0))

    def sample_starts(self, n: int) -> np.ndarray:
        """``n`` crop starts (0-based), each crop holding at most ``max_n_frac`` N."""
        out = np.empty(n, dtype=np.int64)
        for row in range(n):
            for _ in range(10_000):
                s = self._draw_start()
                if np.count_nonzero(self.tokens[s:s + self.length] == N_ID) <= self.max_n_frac * self.length:
                    break
            else:
                raise InputError("could not find a training crop that is not mostly N")
            out[row] = s
        return out

    def batch(self, n: int) -> np.ndarray:
        """(n, length) int64 token crops."""
        return np.stack([self.tokens[s:s + self.length] for s in self.sample_starts(n)]).astype(np.int64)


# ---- optimisation -------------------------------------------------------------------------------------------
def param_groups(model: HyenaDNA, weight_decay: float) -> list[dict]:
    """Weight decay on matrices of the projections/MLP only (HyenaDNA: wd 0 on Hyena filters, norms, biases)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim >= 2 and ".filter_fn." not in name and "embeddings" not in name:
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int | None, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``peak`` to ``min_ratio * peak`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if not total or total <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / (total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---- progress display ---------------------------------------------------------------------------------------
class TrainingDisplay:
    """rich progress bar on a terminal; otherwise plain log lines every ``log_every`` steps."""

    def __init__(self, total: int | None, start: int, log_every: int, enabled_rich: bool):
        self.log_every, self.bar = log_every, None
        if enabled_rich:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeElapsedColumn

            self.bar = RichProgress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                    TextColumn("{task.fields[info]}"))
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, info="")

    def update(self, step: int, total: int | None, loss_bits: float, lr: float, tok_s: float, elapsed: float) -> None:
        info = f"loss {loss_bits:.4f} bits/base  lr {lr:.2e}  {tok_s / 1e3:,.0f}k tokens/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, total=total, info=info)
        elif step % self.log_every == 0:
            of = f"/{total}" if total else ""
            print(f"step {step}{of}  {info}  elapsed {elapsed / 60:.1f} min", flush=True)

    def tick(self, step: int, total: int | None) -> None:
        """Move the bar (every step; the loss text changes every ``log_every`` steps)."""
        if self.bar is not None:
            self.bar.update(self.task, completed=step, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ---- the run ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m genoconv.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--fasta", required=True, help="training FASTA (plain, gzip or bgzip)")
    d.add_argument("--record", default=None, help="record to train on (default: the first)")
    d.add_argument("--heldout", default=DMD_REGION, help="held-out region, CONTIG:START-END, 1-based inclusive")
    d.add_argument("--guard", type=int, default=100_000, help="bases kept out on each side of the held-out region")
    d.add_argument("--max-n-frac", type=float, default=0.5, help="redraw crops with more N than this fraction")
    d.add_argument("--eval", action="append", default=[], metavar="NAME=FASTA",
                   help="score the first record of FASTA at the end (repeatable)")
    d.add_argument("--eval-max-bases", type=int, default=0, help="score at most this many bases of each (0 = all)")
    m = p.add_argument_group("model")
    m.add_argument("--n-layer", type=int, default=4)
    m.add_argument("--d-model", type=int, default=128)
    m.add_argument("--d-inner", type=int, default=512)
    m.add_argument("--max-seq-len", type=int, default=16386, help="l_max (HyenaDNA: training length + 2)")
    m.add_argument("--seq-len", type=int, default=0, help="training crop length (0 = max_seq_len - 2)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=int, default=16)
    o.add_argument("--lr", type=float, default=1.5e-3)
    o.add_argument("--min-lr-ratio", type=float, default=0.1)
    o.add_argument("--warmup", type=int, default=100)
    o.add_argument("--weight-decay", type=float, default=0.1)
    o.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    o.add_argument("--grad-clip", type=float, default=1.0)
    o.add_argument("--steps", type=int, default=0, help="schedule length (0 = fit to --max-minutes)")
    o.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("run control")
    r.add_argument("--out", required=True, help="output directory (checkpoint, training.json, train_state.pt)")
    r.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt when it exists")
    r.add_argument("--max-minutes", type=float, default=60.0, help="wall-clock budget of the training loop")
    r.add_argument("--stop-at", type=int, default=0, help="stop (and save) at this step, leaving the schedule as is")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    r.add_argument("--save-every", type=int, default=250, help="steps between saved training states")
    r.add_argument("--log-every", type=int, default=50, help="steps between plain log lines")
    r.add_argument("--no-rich", action="store_true", help="plain log lines even on a terminal")
    return p


def _rng_state(rng: np.random.Generator, device: torch.device) -> dict:
    state = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _save_state(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _file_info(path: str | Path) -> dict:
    path = Path(path)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def train(argv: list[str] | None = None) -> dict:
    """Run (or resume) training; returns the training.json content."""
    t_start = time.monotonic()
    args = build_parser().parse_args(argv)
    # The csrc/ kernels are inference-only; the fp32 FFT reference path has autograd.
    os.environ["GENOCONV_CONV_BACKEND"] = "reference"
    from .model.embedder import resolve_device

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    state = None
    if args.resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)  # our own file
        for key in RUN_DEFINING:
            setattr(args, key, state["args"][key])
    seq_len = args.seq_len or args.max_seq_len - 2
    if not 2 <= seq_len <= args.max_seq_len:
        raise InputError(f"--seq-len must be in 2..max_seq_len={args.max_seq_len}, got {seq_len}")

    # data
    t0 = time.monotonic()
    name, seq = read_fasta(args.fasta, args.record)
    tokens = Tokenizer("clean").encode_array(seq, record=name)
    del seq
    contig, h_start, h_end = parse_region(args.heldout)
    if contig != name:
        raise InputError(f"--heldout {args.heldout}: contig {contig!r} is not the training record {name!r}")
    if h_end > len(tokens):
        raise InputError(f"--heldout {args.heldout}: past the end of record {name!r} ({len(tokens):,} bases)")
    lo, hi = max(0, h_start - args.guard), min(len(tokens), h_end + args.guard)
    allowed = [(0, lo), (hi, len(tokens))]
    train_bases = sum(b - a for a, b in allowed)
    load_s = time.monotonic() - t0

    # model, optimiser
    cfg = HyenaConfig(d_model=args.d_model, n_layer=args.n_layer, d_inner=args.d_inner, max_seq_len=args.max_seq_len)
    model = HyenaDNA(cfg, lm_head=False).init_weights(seed=args.seed).to(device)
    use_fused = device.type == "cuda"
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=tuple(args.betas),
                            fused=use_fused)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    step, tokens_seen, train_s, total_steps, history, resumes = 0, 0, 0.0, args.steps or None, [], 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, tokens_seen, train_s = state["step"], state["tokens_seen"], state["train_seconds"]
        total_steps, history, resumes = state["total_steps"], state["history"], state["resumes"] + 1
        rng.bit_generator.state = state["rng"]["numpy"]
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        print(f"resumed from {state_path} at step {step} ({tokens_seen:,} tokens)", flush=True)
    sampler = CropSampler(tokens, allowed, seq_len, args.max_n_frac, rng)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    n_params = sum(p.numel() for p in model.parameters())
    print(f"genoconv {__version__} training on {device} ({'bf16 autocast' if autocast else 'fp32'}): "
          f"{n_params:,} parameters, record {name} {len(tokens):,} bases ({train_bases:,} trainable, held out "
          f"{args.heldout} +/- {args.guard:,}), crops {seq_len:,} x {args.batch_size}; data loaded in {load_s:.1f} s",
          flush=True)

    def save() -> None:
        _save_state(state_path, model=model.state_dict(), optimizer=opt.state_dict(), step=step,
                    tokens_seen=tokens_seen, train_seconds=train_s, total_steps=total_steps, history=history,
                    resumes=resumes, rng=_rng_state(rng, device), args=vars(args))

    budget_s = args.max_minutes * 60.0
    loop_start = time.monotonic()
    progress = TrainingDisplay(total_steps, step, args.log_every,
                        enabled_rich=sys.stderr.isatty() and not args.no_rich)
    measure_from, measure_at = (step + 3, step + 23)  # steps whose wall time sets an automatic schedule
    t_measure = None
    interval_loss, interval_count, t_interval, tok_interval = 0.0, 0, time.monotonic(), 0
    last_loss_bits = float("nan")
    recent = collections.deque(maxlen=100)  # (nats, targets) of the last steps: the reported final train loss
    stop_reason = "steps"
    model.train()
    try:
        while True:
            if total_steps is not None and step >= total_steps:
                break
            if args.stop_at and step >= args.stop_at:
                stop_reason = "stop-at"
                break
            if time.monotonic() - loop_start >= budget_s:
                stop_reason = "time budget"
                break
            t_step = time.monotonic()
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total_steps, args.lr, args.warmup, args.min_lr_ratio)
            batch = torch.from_numpy(sampler.batch(args.batch_size)).to(device, non_blocking=True)
            if autocast is not None:
                with autocast:
                    logits = model.logits(batch)
            else:
                logits = model.logits(batch)
            nats, count = next_base_nll(logits, batch)
            loss = nats / count.clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            step += 1
            step_nats, step_count = float(nats.detach()), int(count)  # one host sync per step
            tokens_seen += step_count
            tok_interval += step_count
            interval_loss += step_nats
            interval_count += step_count
            recent.append((step_nats, step_count))
            train_s += time.monotonic() - t_step
            if total_steps is None and step == measure_from:
                t_measure = time.monotonic()
            if total_steps is None and step == measure_at and t_measure is not None:
                per_step = (time.monotonic() - t_measure) / (measure_at - measure_from)
                left = budget_s - (time.monotonic() - loop_start)
                total_steps = max(step + 1, step + int(0.97 * left / per_step))
                print(f"measured {per_step * 1e3:.1f} ms/step: cosine schedule fitted to {total_steps:,} steps",
                      flush=True)
            progress.tick(step, total_steps)
            if step % args.log_every == 0 or step == total_steps:
                last_loss_bits = interval_loss / max(interval_count, 1) / LN2
                now = time.monotonic()
                progress.update(step, total_steps, last_loss_bits, opt.param_groups[0]["lr"],
                                tok_interval / max(now - t_interval, 1e-9), now - loop_start)
                history.append([step, round(last_loss_bits, 5)])
                interval_loss, interval_count, t_interval, tok_interval = 0.0, 0, now, 0
            if step % args.save_every == 0:
                save()
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    finally:
        progress.close()
    if interval_count:
        history.append([step, round(interval_loss / interval_count / LN2, 5)])
    if recent:
        last_loss_bits = sum(n for n, _ in recent) / max(1, sum(c for _, c in recent)) / LN2
    elif history:  # resumed a finished run: nothing new was trained
        last_loss_bits = history[-1][1]
    save()
    print(f"stopped at step {step} ({stop_reason}); {tokens_seen:,} tokens in {train_s / 60:.1f} min of training",
          flush=True)

    # evaluation and the checkpoint
    model.eval()
    validation = {}
    heldout_ids = torch.from_numpy(tokens[h_start:h_end].astype(np.int64))
    sources = [("heldout", None, heldout_ids)]
    for spec in args.eval:
        label, _, path = spec.partition("=")
        if not path:
            raise InputError(f"--eval {spec!r}: expected NAME=FASTA")
        rec, eseq = read_fasta(path)
        sources.append((label, path, Tokenizer("clean").encode(eseq, record=rec)))
    for label, path, ids in sources:
        if args.eval_max_bases:
            ids = ids[:args.eval_max_bases]
        t_eval = time.monotonic()
        res = bits_per_base(model, ids, batch_size=8)
        entry = {"bits_per_base": round(res.bits_per_base, 5), "scored_bases": res.scored,
                 "seconds": round(time.monotonic() - t_eval, 2)}
        if path is not None:
            entry.update(_file_info(path))
        else:
            entry["region"] = f"{args.heldout} (from the training FASTA)"
        validation[label] = entry
        print(f"validation {label}: {res.bits_per_base:.4f} bits/base over {res.scored:,} bases", flush=True)

    model_cpu = model.to("cpu")
    save_checkpoint(model_cpu, out, fmt="hf")
    info = {
        "name": out.name,
        "what": "HyenaDNA trained from scratch by genoconv.train for next-base prediction (a demo model)",
        "genoconv_version": __version__,
        "torch_version": torch.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m genoconv.train " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": {"train": {**_file_info(args.fasta), "record": name, "length": int(len(tokens)),
                           "trainable_bases": int(train_bases)}},
        "heldout": {"region": args.heldout, "coordinates": "1-based inclusive", "guard_bases": args.guard,
                    "excluded_0based_half_open": [int(lo), int(hi)]},
        "model_config": {"d_model": cfg.d_model, "n_layer": cfg.n_layer, "d_inner": cfg.d_inner,
                         "max_seq_len": cfg.max_seq_len, "parameters": n_params, "lm_head": "tied to embedding"},
        "hyperparameters": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                            if k in RUN_DEFINING and k not in ("fasta", "record", "heldout", "guard")}
                           | {"seq_len": seq_len, "steps": total_steps, "optimizer": "AdamW",
                              "schedule": "linear warm-up, cosine to min_lr_ratio",
                              "loss": "next-base cross-entropy over A/C/G/T (N targets ignored)"},
        "steps": step,
        "stop_reason": stop_reason,
        "tokens_seen": tokens_seen,
        "seed": args.seed,
        "resumes": resumes,
        "final_train_loss_bits_per_base": round(last_loss_bits, 5),
        "final_train_loss_steps": (f"mean over the last {len(recent)} steps of this run" if recent
                                   else "last logged value (no step in this run)"),
        "validation_bits_per_base": validation,
        "uniform_bits_per_base": 2.0,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "precision": "bf16 autocast" if autocast else "fp32",
        "train_seconds": round(train_s, 1),
        "wall_seconds": round(time.monotonic() - t_start, 1),
        "loss_history": history,
    }
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {out / 'model.safetensors'} and {out / 'training.json'}", flush=True)
    return info


def main(argv: list[str] | None = None) -> None:
    try:
        train(argv)
    except GenoconvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":
    main()
