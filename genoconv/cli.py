"""The ``genoconv`` command line: a thin shell over :mod:`genoconv.api` and :mod:`genoconv.runner`.

Exit codes: 0 ok, 1 runtime failure, 2 usage/bad input, 3 interrupted but resumable (see errors.py).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import EXIT_RUNTIME, EXIT_USAGE, GenoconvError, InputError

app = typer.Typer(
    name="genoconv",
    help="Single-nucleotide DNA embeddings with HyenaDNA long-convolution models.",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
)
log = logging.getLogger("genoconv")


def _version(value: bool) -> None:
    if value:
        print(f"genoconv {__version__}")  # one parseable line (nf-core versions.yml habit)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    _setup_logging(level)
    os.environ.setdefault("GENOCONV_VERBOSE", str(verbose))


def _setup_logging(level: int) -> None:
    root = logging.getLogger("genoconv")
    root.handlers.clear()
    root.setLevel(level)
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    root.propagate = False


def _parse_bytes(text: str | None) -> int | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?i?b?)?\s*", text.lower())
    if not m:
        raise InputError(f"--max-memory {text!r}: expected a size such as 4GiB, 500MB or 8G")
    scale = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20, "g": 1e9,
             "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}.get(m.group(2) or "", None)
    if scale is None:
        raise InputError(f"--max-memory {text!r}: unknown unit")
    return int(float(m.group(1)) * scale)


def _split_modes(values: list[str]) -> tuple[str, ...]:
    modes = [m.strip() for v in values for m in v.split(",") if m.strip()]
    return tuple(dict.fromkeys(modes))


def _load_embedder(model: str, device: str, dtype: str, strict_tokenizer: bool, shift: float | None):
    from .api import Embedder
    from .registry import resolve_model

    path = resolve_model(model)
    emb = Embedder.from_pretrained(path, device=device, dtype=dtype,
                                   tokenizer="strict" if strict_tokenizer else "clean", shift=shift)
    emb.name = model
    return emb


def _default_model() -> str:
    from .registry import DEFAULT_MODEL

    return DEFAULT_MODEL


@app.command()
def embed(
    inputs: Annotated[Optional[list[Path]], typer.Argument(
        help="FASTA/FASTQ (plain, gzip, bgzip), SAM/BAM/CRAM files.", show_default=False)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="HDF5 file to write (one per run).")] = ...,
    model: Annotated[Optional[str], typer.Option(help="Model name (see `genoconv models list`) or checkpoint "
                                                      "directory. [default: genoconv-demo]")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="Compute dtype: float32 (exact), bfloat16 or float16.")] = "float32",
    layer: Annotated[list[int], typer.Option("--layer", "-l", help="Hidden state(s) to store; repeatable; "
                                             "negative counts from the end (-1 = final LayerNorm).")] = [-1],  # noqa: B006
    per_nucleotide: Annotated[bool, typer.Option(help="Store one row per base.")] = True,
    pool: Annotated[list[str], typer.Option(help="Pooled vectors per record: mean, max, last (comma list).")] = ["mean"],  # noqa: B006
    window: Annotated[Optional[int], typer.Option(help="Also store windowed means, one row per W bases.")] = None,
    rc_average: Annotated[bool, typer.Option(help="Average with the reverse complement's output flipped back "
                                             "(gives each base context from both sides).")] = False,
    filter_len: Annotated[Optional[int], typer.Option(help="Partial convolution: first K filter taps (default: "
                                                      "full filter; K = max_seq_len for longer records).")] = None,
    chunk_size: Annotated[Optional[int], typer.Option(help="Stream long records in chunks of C bases "
                                                      "(default: from --max-memory).")] = None,
    freq_keep: Annotated[float, typer.Option(help="Frequency-sparse convolution: fraction of the filter "
                                             "spectrum kept, low frequencies first.")] = 1.0,
    max_memory: Annotated[Optional[str], typer.Option(help="Memory for activations, e.g. 4GiB (default: 80% "
                                                      "of free GPU memory / a quarter of RAM).")] = None,
    tokens_per_batch: Annotated[Optional[int], typer.Option(help="Bases per batch of short records.")] = None,
    store_dtype: Annotated[str, typer.Option(help="float16 or float32 for per-nucleotide rows.")] = "float16",
    compression: Annotated[str, typer.Option(help="none, gzip or lzf (HDF5 filters, with shuffle).")] = "none",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output instead of resuming it.")] = False,
    commit_interval: Annotated[float, typer.Option(help="Seconds between durable commits (0: every record); "
                                                   "an interruption loses at most this much work.")] = 2.0,
    reference: Annotated[Optional[Path], typer.Option(help="Indexed FASTA for --regions (and CRAM).")] = None,
    regions: Annotated[Optional[Path], typer.Option(help="BED (0-based) or GTF/GFF (1-based) regions.")] = None,
    feature: Annotated[str, typer.Option(help="GTF/GFF feature type to embed.")] = "gene",
    strand_aware: Annotated[bool, typer.Option(help="Reverse-complement minus-strand regions.")] = True,
    include_secondary: Annotated[bool, typer.Option(help="Keep secondary alignments (BAM).")] = False,
    include_supplementary: Annotated[bool, typer.Option(help="Keep supplementary alignments (BAM).")] = False,
    dedupe_ids: Annotated[bool, typer.Option(help="Suffix duplicate record ids instead of failing.")] = False,
    strict_tokenizer: Annotated[bool, typer.Option(help="The official tokenizer exactly (lower case -> [UNK]) "
                                                   "instead of upper-casing and IUPAC -> N.")] = False,
    modulation_shift: Annotated[Optional[float], typer.Option(help="Override the filter modulation shift "
                                                              "(0.05 official inference, 0.0 training code).")] = None,
    shard: Annotated[Optional[str], typer.Option(help="Embed only shard i/n of the records (balanced by bases), "
                                                 "or 'slurm' to take it from the job array.")] = None,
) -> None:
    """Embed DNA records into one HDF5 file (resumable: rerun the same command after an interruption)."""
    from .engine import EmbedOptions
    from .runner import embed_to_file
    from .sharding import parse_shard

    if not inputs and regions is None:
        raise InputError("give at least one INPUT file, or --reference and --regions")
    if compression not in ("none", "gzip", "lzf"):
        raise InputError(f"--compression {compression!r}: expected none, gzip or lzf")
    if store_dtype not in ("float16", "float32"):
        raise InputError(f"--store-dtype {store_dtype!r}: expected float16 or float32")
    options = EmbedOptions(layers=tuple(layer), per_nucleotide=per_nucleotide, pools=_split_modes(pool),
                           window=window, rc_average=rc_average, filter_len=filter_len, chunk_size=chunk_size,
                           freq_keep=freq_keep, max_memory=_parse_bytes(max_memory),
                           tokens_per_batch=tokens_per_batch)
    shard_spec = parse_shard(shard)
    model_name = model or _default_model()
    emb = _load_embedder(model_name, device, dtype, strict_tokenizer, modulation_shift)
    log.info("model %s (d_model %d, %d layers, max_seq_len %d) on %s, %s", model_name, emb.d_model,
             emb.config.n_layer, emb.max_seq_len, emb.device, str(emb.dtype).replace("torch.", ""))
    reporter = _ProgressReporter()
    with reporter:
        embed_to_file(emb, inputs or [], output, options=options, store_dtype=store_dtype,
                      compression=None if compression == "none" else compression, overwrite=overwrite,
                      reference=reference, regions=regions, feature=feature, strand_aware=strand_aware,
                      include_secondary=include_secondary, include_supplementary=include_supplementary,
                      dedupe_ids=dedupe_ids, shard=shard_spec, model_name=model_name, commit_interval=commit_interval,
                      command_line=shlex.join(["genoconv", *sys.argv[1:]]),
                      on_progress=reporter.update, on_start=reporter.start)


class _ProgressReporter:
    """A rich progress bar on a terminal; plain periodic log lines otherwise (SLURM logs)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty() and logging.getLogger("genoconv").level <= logging.INFO
        self.interval = float(os.environ.get("GENOCONV_LOG_INTERVAL", "30"))
        self.progress = None
        self.task = None
        self.total_records = self.total_bases = 0
        self.last = 0.0
        self.t0 = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def start(self, n_records: int, n_bases: int) -> None:
        self.total_records, self.total_bases = n_records, n_bases
        self.t0 = self.last = time.monotonic()
        if self.tty:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(TextColumn("[bold]embedding"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                                     TextColumn("{task.fields[records]}"), TextColumn("{task.fields[rate]}"),
                                     TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self.task = self.progress.add_task("embed", total=n_bases, records=f"0/{n_records} records", rate="")
            self.progress.start()
        else:
            log.info("embedding %d records, %d bases", n_records, n_bases)

    def update(self, p) -> None:
        now = time.monotonic()
        rate = p.bases / max(now - self.t0, 1e-9)
        if self.progress is not None:
            self.progress.update(self.task, completed=p.bases + 0, records=f"{p.records}/{self.total_records} records",
                                 rate=f"{rate / 1e3:,.1f} kb/s")
        elif now - self.last >= self.interval or p.records == self.total_records:
            self.last = now
            eta = (self.total_bases - p.bases) / rate if rate > 0 else float("nan")
            log.info("progress: %d/%d records, %d/%d bases (%.1f%%), %.1f kb/s, ETA %.0f s", p.records,
                     self.total_records, p.bases, self.total_bases, 100 * p.bases / max(1, self.total_bases),
                     rate / 1e3, eta)


@app.command()
def inspect(path: Annotated[Path, typer.Argument(help="A genoconv HDF5 output.")],
            records: Annotated[int, typer.Option(help="Rows of the record table to show.")] = 10) -> None:
    """Summarise an output file: provenance, layout and the first records."""
    from rich.console import Console
    from rich.table import Table

    from .store import open_embeddings

    if not path.exists():
        raise InputError(f"{path}: no such file")
    with open_embeddings(path) as f:
        console = Console()
        prov = f.provenance
        table = Table(title=str(path), show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        rows = [
            ("complete", str(f.complete)),
            ("records", f"{len(f):,}"),
            ("bases", f"{int(f.lengths.sum()):,}"),
            ("layers", ", ".join(map(str, f.layers))),
        ]
        for key in ("model", "checkpoint_sha256", "compute_dtype", "store_dtype", "pools", "window",
                    "tokenizer_policy", "convolution", "conv_backend", "genoconv_version", "start_time",
                    "end_time", "command_line"):
            if key in prov:
                rows.append((key, str(prov[key])))
        for k, v in rows:
            table.add_row(k, v)
        console.print(table)
        recs = Table(title=f"first {min(records, len(f))} of {len(f)} records")
        for col in ("id", "length", "mode"):
            recs.add_column(col)
        modes = f.modes if hasattr(f, "modes") else [""] * len(f)
        for rid, length, mode in list(zip(f.ids, f.lengths, modes))[:records]:
            recs.add_row(rid, f"{int(length):,}", str(mode))
        console.print(recs)


@app.command()
def doctor() -> None:
    """Report the environment: torch, CUDA devices, whether the kernels are built, the default model."""
    import h5py
    import pysam
    import torch
    from rich.console import Console
    from rich.table import Table

    from .ops import cuda

    table = Table(title="genoconv doctor", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("status")
    table.add_row("genoconv", __version__)
    table.add_row("python", sys.version.split()[0])
    table.add_row("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            table.add_row(f"cuda:{i}", f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB")
    else:
        table.add_row("cuda", "no CUDA device: the reference (torch.fft) path runs on the CPU")
    st = cuda.status()
    table.add_row("fftconv kernels", ("built for " + ", ".join(st.get("archs", []))) if st.get("built")
                  else f"not built: {st.get('reason')}")
    table.add_row("h5py / HDF5", f"{h5py.__version__} / {h5py.version.hdf5_version}")
    table.add_row("pysam", pysam.__version__)
    try:
        from .registry import DEFAULT_MODEL, resolve_model

        table.add_row("default model", f"{DEFAULT_MODEL}: {resolve_model(DEFAULT_MODEL)}")
    except Exception as exc:  # noqa: BLE001 - doctor reports, never fails
        table.add_row("default model", f"unavailable: {exc}")
    Console().print(table)


def _register_command_groups() -> None:
    """Commands that live in their own modules (one file per command group)."""
    from .cli_models import app as models_app
    from .cli_models import score
    from .merge import merge_command

    app.add_typer(models_app, name="models", help="List and download named models.")
    app.command(help="Next-base cross-entropy (bits per base) of records under a model.")(score)
    app.command(name="merge", help="Combine shard outputs into one file.")(merge_command)


_register_command_groups()


def main() -> None:
    """Console-script entry: run the app, turning genoconv errors into one line and an exit code."""
    try:
        app(standalone_mode=False)
    except GenoconvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(3)
    except Exception as exc:  # click usage errors and unexpected failures
        # Typer >= 0.2x vendors its own click: recognise click's exceptions by shape, not by class.
        kind = type(exc).__name__
        if kind == "Exit":
            sys.exit(getattr(exc, "exit_code", 0))
        if kind == "Abort":
            print("error: aborted", file=sys.stderr)
            sys.exit(EXIT_RUNTIME)
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(EXIT_USAGE if exc.exit_code in (1, 2) and kind != "ClickException" else exc.exit_code)
        if os.environ.get("GENOCONV_VERBOSE", "0") not in ("0", ""):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with -v for the traceback)", file=sys.stderr)
        sys.exit(EXIT_RUNTIME)
    sys.exit(0)


if __name__ == "__main__":
    main()
