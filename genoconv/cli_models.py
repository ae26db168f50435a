"""CLI pieces for named models and likelihood: the ``models`` command group and the ``score`` command.

``genoconv/cli.py`` registers them (``app.add_typer(cli_models.app, name="models")`` and
``app.command()(cli_models.score)``); both stay callable as plain functions. Errors are raised as the
:mod:`genoconv.errors` family and printed by the main CLI as one ``error:`` line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Iterator

import typer

from .errors import InputError, InputFileError
from .registry import DEFAULT_MODEL, cached_path, download_model, list_models, resolve_model

app = typer.Typer(name="models", help="Named models: the bundled demo and the official HyenaDNA checkpoints.",
                  no_args_is_help=True, add_completion=False)


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:,.1f} MB" if n_bytes < 1e9 else f"{n_bytes / 1e9:,.2f} GB"


@app.command("list")
def list_command() -> None:
    """List the named models, where each comes from and whether it is available offline here."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="genoconv models (use with --model NAME)")
    for column in ("name", "source", "max_seq_len", "d_model x layers", "size", "cached?"):
        table.add_column(column, justify="right" if column in ("max_seq_len", "size") else "left")
    for entry in list_models():
        if entry.source == "bundled":
            source, cached = "bundled with genoconv" + (" (default)" if entry.name == DEFAULT_MODEL else ""), "yes"
        else:
            source = f"{entry.repo_id}@{entry.revision[:7]}"
            cached = "yes" if cached_path(entry) is not None else "no"
        table.add_row(entry.name, source, f"{entry.max_seq_len:,}", f"{entry.d_model} x {entry.n_layer}",
                      _size(entry.size_bytes), cached)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped output: never cut model names
    console.print(table)


@app.command("download")
def download_command(
    name: Annotated[str, typer.Argument(help="model name from `genoconv models list` (e.g. hyenadna-large-1m)")],
) -> None:
    """Download an official model into the Hugging Face cache (honours HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE)."""
    typer.echo(download_model(name))


def _read_records(path: Path) -> Iterator[tuple[str, str]]:
    import pysam

    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    count = 0
    try:
        with pysam.FastxFile(str(path)) as fh:
            for rec in fh:
                count += 1
                yield rec.name, rec.sequence or ""
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable FASTA/FASTQ file ({str(exc).strip() or type(exc).__name__})") \
            from None
    if count == 0:
        raise InputError(f"{path}: no FASTA/FASTQ records")


def _fmt(bits: float) -> str:
    return "NA" if math.isnan(bits) else f"{bits:.4f}"


def score(
    inputs: Annotated[list[Path], typer.Argument(help="FASTA/FASTQ files (plain or gzip)", exists=True,
                                                 dir_okay=False, readable=True)],
    model: Annotated[str, typer.Option("--model", "-m", help="checkpoint directory or model name "
                                                              "(`genoconv models list`)")] = DEFAULT_MODEL,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    dtype: Annotated[str, typer.Option(help="compute dtype: float32, bfloat16 or float16")] = "float32",
    batch_size: Annotated[int, typer.Option(min=1, help="windows of max_seq_len scored together")] = 8,
) -> None:
    """Next-base cross-entropy in bits per base, per record and overall (uniform guessing = 2.0).

    Prints tab-separated lines: record, length, scored bases, bits/base; then ``overall`` (total bits over all
    scored bases). Records longer than the model's max_seq_len are scored in non-overlapping windows.
    """
    from .api import Embedder
    from .likelihood import score_records

    path = resolve_model(model)
    embedder = Embedder.from_pretrained(path, device=device, dtype=dtype)
    typer.echo(f"# model {model} ({path}), max_seq_len {embedder.max_seq_len:,}, {embedder.device}, {dtype}")
    typer.echo("record\tlength\tscored_bases\tbits_per_base")
    all_scores = []
    for fasta in inputs:
        per_record, _ = score_records(embedder, _read_records(Path(fasta)), batch_size=batch_size)
        for r in per_record:
            typer.echo(f"{r.name}\t{r.length}\t{r.scored}\t{_fmt(r.bits_per_base)}")
        all_scores.extend(per_record)
    total_bits = sum(r.total_bits for r in all_scores)
    scored = sum(r.scored for r in all_scores)
    overall = total_bits / scored if scored else float("nan")
    typer.echo(f"overall\t{sum(r.length for r in all_scores)}\t{scored}\t{_fmt(overall)}")
