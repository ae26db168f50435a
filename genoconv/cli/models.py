"""``genoconv models``: list the named models and download the official ones (:mod:`genoconv.model.registry`)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..model.registry import DEFAULT_MODEL, cached_path, download_model, list_models
from .params import Command, Group

app = typer.Typer(name="models", help="Named models: the bundled demo and the official HyenaDNA checkpoints.",
                  no_args_is_help=True, add_completion=False, cls=Group)


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:,.1f} MB" if n_bytes < 1e9 else f"{n_bytes / 1e9:,.2f} GB"


@app.command("list", cls=Command)
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


@app.command("download", cls=Command)
def download_command(
    name: Annotated[str, typer.Argument(help="Model name from `genoconv models list` (e.g. hyenadna-large-1m).",
                                        metavar="NAME")],
) -> None:
    """Download an official model into the Hugging Face cache (honours HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE)."""
    typer.echo(download_model(name))
