"""What partial (K taps) and frequency-sparse (keep F of the spectrum) convolutions cost in quality, on real DNA.

For each record and each variant, against the exact (full-filter) result of the same model:
- relative L2 difference of the per-base embeddings (final LayerNorm output, all bases of the record),
- relative L2 difference of the mean-pooled vector,
- next-base bits/base under the model's LM head (tied to the input embedding when absent).

Default (CPU): the shipped demo model (l_max 16,386) on windows of 16,386 bases of the held-out DMD gene and of
E. coli, K in {16,386 (exact), 4,096, 1,024, 256}, F in {1, 0.5, 0.25}.
``--large`` (GPU): the HyenaDNA-large-1m shape with random weights on the whole DMD gene (2,220,382 bp, streamed),
K in {1,000,002 (the reference: the longest filter the model defines), 262,144, 65,536, 16,384}, F in {1, 0.5,
0.25}; random weights give no meaningful bits/base, so that column is left out there.

    python benchmarks/bench_quality.py [--windows 4]        # CPU, demo model
    python benchmarks/bench_quality.py --large --device cuda  # GPU, large-1m shape
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_e2e import LARGE_1M  # noqa: E402

from genoconv.model.likelihood import bits_per_base  # noqa: E402
from genoconv.model import HyenaDNA, Tokenizer  # noqa: E402
from genoconv.model.checkpoint import load_checkpoint  # noqa: E402
from genoconv.model.hyena import ConvSettings, StreamState  # noqa: E402
from genoconv.io import open_records  # noqa: E402


def read_first_record(path: Path) -> str:
    """The first record's bases (upper case, as genoconv embeds them), through genoconv's own readers."""
    with open_records([path]) as source:
        record = next(iter(source))
        return record.sequence(0, record.length)


def final_layer(model: HyenaDNA, ids: torch.Tensor, chunk: int | None, conv: ConvSettings) -> torch.Tensor:
    last = model.num_hidden_states - 1
    with torch.inference_mode():
        if chunk is None:
            return model.hidden_states(ids, [last], conv=conv)[last][0].float()
        state = StreamState.empty(model.config.n_layer)
        return torch.cat([model.hidden_states(ids[:, s:s + chunk], [last], state, conv)[last][0].float()
                          for s in range(0, ids.shape[1], chunk)])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def evaluate(model, records, variants, *, chunk, with_bits):
    rows = []
    for name, ids in records:
        ref = None
        for label, k, f in variants:
            conv = ConvSettings(filter_len=k, freq_keep=f)
            out = final_layer(model, ids, chunk, conv)
            if ref is None:
                ref = out
            row = {"record": name, "variant": label, "per_base_rel": rel(out, ref),
                   "pooled_rel": rel(out.mean(0), ref.mean(0))}
            if with_bits:
                with torch.inference_mode():
                    row["bits_per_base"] = bits_per_base(model, ids[0].cpu(), conv=conv)[0]
            rows.append(row)
            print(json.dumps(row), flush=True, file=sys.stderr)
    return rows


def demo_windows(data: Path, length: int, windows: int) -> list[tuple[str, torch.Tensor]]:
    """``windows`` evenly spaced windows of ``length`` bases from the DMD gene and from E. coli, as token ids."""
    tok = Tokenizer()
    records = []
    for genome, name in (("DMD", "DMD_GRCh37_chrX.fa.gz"), ("E. coli", "ecoli_K12_MG1655.fa.gz")):
        seq = read_first_record(data / name)
        for i in range(windows):
            start = (i + 1) * len(seq) // (windows + 1)
            records.append((f"{genome}:{start}+{length}", tok.encode(seq[start:start + length])[None]))
    return records


def print_table(rows: list[dict], labels: list[str], with_bits: bool) -> None:
    """One line per variant: the per-record metrics averaged over each genome's records."""
    groups = sorted({r["record"].split(":")[0] for r in rows})
    head = "| variant | " + " | ".join(f"{g}: per-base rel. diff | {g}: pooled rel. diff" +
                                         (f" | {g}: bits/base" if with_bits else "") for g in groups) + " |"
    print(head)
    print("|" + " --- |" * (1 + len(groups) * (3 if with_bits else 2)))
    for label in labels:
        cells = []
        for g in groups:
            sel = [r for r in rows if r["variant"] == label and r["record"].split(":")[0] == g]
            cells += [f"{np.mean([r['per_base_rel'] for r in sel]):.2e}", f"{np.mean([r['pooled_rel'] for r in sel]):.2e}"]
            if with_bits:
                cells.append(f"{np.mean([r['bits_per_base'] for r in sel]):.4f}")
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--large", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--windows", type=int, default=3, help="windows per genome (demo model)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.large:
        model = HyenaDNA(LARGE_1M).init_weights(seed=0).to(device).eval().set_compute_dtype(torch.bfloat16)
        dmd = read_first_record(args.data / "DMD_GRCh37_chrX.fa.gz")
        records = [("DMD (2,220,382 bp)", Tokenizer().encode(dmd)[None].to(device))]
        ks = [1_000_002, 262_144, 65_536, 16_384]
        chunk, with_bits, title = 262_144, False, "HyenaDNA-large-1m shape, random weights, bf16, DMD streamed"
    else:
        from genoconv.model.registry import DEFAULT_MODEL, resolve_model

        model, _ = load_checkpoint(resolve_model(DEFAULT_MODEL))
        model = model.to(device).eval()
        n = model.config.max_seq_len
        records = [(name, ids.to(device)) for name, ids in demo_windows(args.data, n, args.windows)]
        ks = [n, 4096, 1024, 256]
        chunk, with_bits, title = None, True, f"genoconv-demo (l_max {n:,}), fp32, windows of {n:,} bases"
    variants = [(f"K={k:,}" + (" (reference)" if i == 0 else ""), k, 1.0) for i, k in enumerate(ks)]
    variants += [(f"F={f}", ks[0], f) for f in (0.5, 0.25)]
    rows = evaluate(model, records, variants, chunk=chunk, with_bits=with_bits)
    print(f"\n{title}; device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}\n")
    print_table(rows, [label for label, _, _ in variants], with_bits)
    if args.json:
        args.json.write_text(json.dumps({"title": title, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
