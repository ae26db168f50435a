"""Every command-line option's type, declared once as an ``Annotated`` alias and reused by every command.

Choices are enums and ranges are ``min=``/``max=``, so Typer rejects bad values (exit 2) before any work starts;
``rich_help_panel`` groups ``genoconv embed --help`` into panels. Defaults live in :mod:`genoconv.options`.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

INPUT, MODEL, OUTPUT, PERFORMANCE, CLUSTER = "Input", "Model", "Output", "Performance", "Cluster"
ROWS, PICTURE = "Rows and projection", "Picture"


class _HelpWithoutTypes:
    """Typer's rich help shows a type column: ``<bool>`` beside every flag (``--help`` too), ``<list[Path]>`` beside
    an argument already named by its metavar, ``<int>`` beside a count. Here a flag or count shows nothing, an
    argument its name alone, and any other option its metavar (choices as ``a|b``, as typed)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        if not hasattr(typer.core.TyperOption, "display_type"):
            return params  # Typer before the type column (< 0.29): its help has no placeholders to hide
        for param in params:
            if isinstance(param, typer.core.TyperArgument):
                param.display_type_rich = _no_type
            elif param.is_flag or param.count:
                param.metavar = ""
            elif param.metavar is None:
                shown = param.display_type(ctx).strip("<>")
                param.metavar = shown if "|" in shown else shown.upper()  # choices as typed, "int" as INT
        return params


def _no_type(ctx) -> None:  # noqa: ARG001 - the signature rich_utils calls
    return None


class Command(_HelpWithoutTypes, typer.core.TyperCommand):
    """Every genoconv command: ``app.command(cls=Command)``."""


# The root's logging flags: accepted after the subcommand too (``genoconv embed x.fa -v``, as samtools-style habits
# write them), where click alone would refuse them as the subcommand's unknown options.
_LOG_FLAGS = frozenset({"-v", "-vv", "-vvv", "--verbose", "-q", "--quiet"})


class Group(_HelpWithoutTypes, typer.core.TyperGroup):
    """The root app and command groups: ``typer.Typer(cls=Group)``."""

    def parse_args(self, ctx, args):
        if ctx.parent is None and args:
            end = args.index("--") if "--" in args else len(args)  # "--" ends options: later tokens are names
            moved = [a for a in args[:end] if a in _LOG_FLAGS]
            if moved:
                kept = [a for a in args[:end] if a not in _LOG_FLAGS]
                args = moved + kept + args[end:]
        return super().parse_args(ctx, args)


class Dtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class StoreDtype(str, Enum):
    float16 = "float16"
    float32 = "float32"


class Compression(str, Enum):
    none = "none"
    gzip = "gzip"
    lzf = "lzf"


def _choices(name: str, *values: str) -> type[Enum]:
    """A ``str`` Enum of ``values`` for Typer (member names spell ``-`` as ``_``: ``RowSource.per_nucleotide``)."""
    return Enum(name, {value.replace("-", "_"): value for value in values}, type=str)


# Choices of the commands that read an output (genoconv export/plot); the names match genoconv.viz's.
TrackFormat = _choices("TrackFormat", "bigwig", "bedgraph")
RowSource = _choices("RowSource", "auto", "windowed", "per-nucleotide")
Overlap = _choices("Overlap", "error", "mean")
Panels = _choices("Panels", "both", "pooled", "tracks")
Method = _choices("Method", "pca", "umap")


Inputs = Annotated[Optional[list[Path]], typer.Argument(
    help="FASTA/FASTQ (plain, gzip, bgzip; - or a pipe too), SAM/BAM/CRAM files.", show_default=False,
    metavar="INPUT")]
Output = Annotated[Path, typer.Option("--output", "-o", help="HDF5 file to write (one per run).",
                                      metavar="FILE.h5", rich_help_panel=OUTPUT)]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing output instead of resuming it.",
                                         rich_help_panel=OUTPUT)]

ModelName = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Model name (`genoconv models list`) or checkpoint directory. [default: genoconv-demo]",
    metavar="NAME|DIR", show_default=False, rich_help_panel=MODEL)]
# An option whose metavar is its own name in capitals names itself explicitly: Typer 0.27 with click 8.5 made
# `device` with metavar DEVICE the option `--DEVICE` (seen on the GPU machine's image).
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", metavar="DEVICE",
                                     rich_help_panel=MODEL)]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", help="Compute dtype: float32 is the exact path.",
                                         rich_help_panel=MODEL)]
StrictTokenizer = Annotated[bool, typer.Option(help="The official tokenizer exactly (lower case -> [UNK]) instead "
                                               "of upper-casing and IUPAC -> N.", rich_help_panel=MODEL)]
ModulationShift = Annotated[Optional[float], typer.Option(
    help="Override the filter modulation shift (0.05 official inference, 0.0 training code).", metavar="SHIFT",
    show_default=False, rich_help_panel=MODEL)]

Layer = Annotated[list[int], typer.Option("--layer", "-l", help="Hidden state(s) to store; repeatable; negative "
                                          "counts from the end (-1 = final LayerNorm).", metavar="N",
                                          rich_help_panel=OUTPUT)]
PerNucleotide = Annotated[bool, typer.Option(help="Store one row per base.", rich_help_panel=OUTPUT)]
Pool = Annotated[list[str], typer.Option(help="Pooled vectors per record: mean, max, last (comma list).",
                                         metavar="MODES", rich_help_panel=OUTPUT)]
Window = Annotated[Optional[int], typer.Option(min=1, help="Also store windowed means, one row per W bases.",
                                               metavar="W", show_default=False, rich_help_panel=OUTPUT)]
RcAverage = Annotated[bool, typer.Option(help="Average with the reverse complement's output flipped back (gives "
                                         "each base context from both sides).", rich_help_panel=OUTPUT)]
StoreDtypeOpt = Annotated[StoreDtype, typer.Option("--store-dtype", help="dtype of per-nucleotide rows.",
                                                   rich_help_panel=OUTPUT)]
CompressionOpt = Annotated[Compression, typer.Option("--compression", help="HDF5 filter (with byte shuffle).",
                                                     rich_help_panel=OUTPUT)]
CommitInterval = Annotated[float, typer.Option(min=0.0, help="Seconds between durable commits (0: every record); "
                                               "an interruption loses at most this much work.", metavar="SECONDS",
                                               rich_help_panel=OUTPUT)]
CheckpointInterval = Annotated[float, typer.Option(min=0.0, help="Seconds between checkpoints of a long (streamed) "
                                                   "record in progress (0: after every chunk); a kill loses at "
                                                   "most this much of it, SIGTERM/SIGUSR1 nothing.",
                                                   metavar="SECONDS", rich_help_panel=OUTPUT)]

FilterLen = Annotated[Optional[int], typer.Option(min=1, help="Partial convolution: first K filter taps (default: "
                                                  "full filter; K = max_seq_len for longer records).",
                                                  metavar="K", show_default=False, rich_help_panel=PERFORMANCE)]
ChunkSize = Annotated[Optional[int], typer.Option(min=1, help="Stream long records in chunks of C bases "
                                                  "(default: from --max-memory).", metavar="C", show_default=False,
                                                  rich_help_panel=PERFORMANCE)]
FreqKeep = Annotated[float, typer.Option(min=0.0, max=1.0, help="Frequency-sparse convolution: fraction of the "
                                         "filter spectrum kept, low frequencies first (> 0); an approximation, "
                                         "not faster on the GPU kernels.", metavar="F",
                                         rich_help_panel=PERFORMANCE)]
MaxMemory = Annotated[Optional[str], typer.Option(help="Memory the run may use on its device, e.g. 4GiB (default: "
                                                  "80% of free GPU memory / a quarter of RAM).", metavar="SIZE",
                                                  show_default=False, rich_help_panel=PERFORMANCE)]
TokensPerBatch = Annotated[Optional[int], typer.Option(min=1, help="Bases per batch of short records.",
                                                       metavar="N", show_default=False, rich_help_panel=PERFORMANCE)]

Reference = Annotated[Optional[Path], typer.Option(help="Indexed FASTA for --regions (and to decode CRAM).",
                                                   metavar="FASTA", show_default=False, rich_help_panel=INPUT)]
Regions = Annotated[Optional[Path], typer.Option(help="BED (0-based) or GTF/GFF (1-based) regions: embeds those "
                                                 "regions of --reference; with SAM/BAM/CRAM inputs, selects their "
                                                 "reads that overlap them (samtools view -L; indexed files).",
                                                 metavar="FILE", show_default=False, rich_help_panel=INPUT)]
Feature = Annotated[str, typer.Option(help="GTF/GFF feature type to embed.", metavar="TYPE", rich_help_panel=INPUT)]
StrandAware = Annotated[bool, typer.Option(help="Reverse-complement minus-strand regions.", rich_help_panel=INPUT)]
IncludeSecondary = Annotated[bool, typer.Option(help="Keep secondary alignments (BAM/CRAM).", rich_help_panel=INPUT)]
IncludeSupplementary = Annotated[bool, typer.Option(help="Keep supplementary alignments (BAM/CRAM).",
                                                    rich_help_panel=INPUT)]
DedupeIds = Annotated[bool, typer.Option(help="Suffix duplicate record ids instead of failing.",
                                         rich_help_panel=INPUT)]

Shard = Annotated[Optional[str], typer.Option(help="Embed only shard i/n of the records (balanced by bases); "
                                              "'slurm' takes it from the job array, 'torchrun' from torchrun's RANK/"
                                              "WORLD_SIZE (GPU LOCAL_RANK, -o gets .shard_i_of_n).",
                                              metavar="i/n|slurm|torchrun",
                                              show_default=False, rich_help_panel=CLUSTER)]

# ---- reading an output: genoconv export / plot
EmbeddingsPath = Annotated[Path, typer.Argument(help="A genoconv HDF5 output.", metavar="FILE.h5", exists=True,
                                                dir_okay=False)]
EmbeddingsPaths = Annotated[list[Path], typer.Argument(help="genoconv HDF5 outputs (one colour each in the pooled "
                                                       "panel).", metavar="FILE.h5...", exists=True, dir_okay=False)]
ReadLayer = Annotated[Optional[int], typer.Option("--layer", "-l", help="Stored layer to use, counted as embed's --layer "
                                                  "(0 = embeddings, -1 = final LayerNorm); default: the last stored.",
                                                  metavar="N", show_default=False, rich_help_panel=ROWS)]
Components = Annotated[int, typer.Option(min=1, help="Top principal components to keep (one track each).",
                                         metavar="K", rich_help_panel=ROWS)]
SourceOpt = Annotated[RowSource, typer.Option("--source", help="Rows to project: the stored windows, or per-nucleotide "
                                              "rows averaged over --bin bases (auto: the windows when stored and no "
                                              "--bin).", rich_help_panel=ROWS)]
Bin = Annotated[Optional[int], typer.Option("--bin", min=1, help="Bases per bin of per-nucleotide rows (default "
                                            "100).", metavar="B", show_default=False, rich_help_panel=ROWS)]
ProjectionIn = Annotated[Optional[Path], typer.Option(
    "--projection", help="Project on a saved projection (from --save-projection) so several files share axes, "
    "instead of fitting on this file's rows.", metavar="FILE.npz", exists=True, dir_okay=False, show_default=False,
    rich_help_panel=ROWS)]
PoolSelect = Annotated[list[str], typer.Option("--pool", help="Pooling modes to use (comma list; default: every "
                                               "stored mode).", metavar="MODES", show_default=False)]
SaveProjection = Annotated[Optional[Path], typer.Option(
    help="Save the projection fitted on this file, to give other files the same axes (--projection).",
    metavar="FILE.npz", show_default=False, rich_help_panel=ROWS)]
Tracks = Annotated[Optional[Path], typer.Option(
    help="Write one track per component: PREFIX.PC1.bw, PREFIX.PC2.bw, ... (.bedGraph with --format bedgraph).",
    metavar="PREFIX", show_default=False, rich_help_panel=OUTPUT)]
TrackFormatOpt = Annotated[TrackFormat, typer.Option("--format", help="Track format.", rich_help_panel=OUTPUT)]
Table = Annotated[Optional[Path], typer.Option(help="Write the pooled vectors keyed by id: .tsv, or .parquet (needs "
                                               "pyarrow).", metavar="FILE", show_default=False, rich_help_panel=OUTPUT)]
ChromSizes = Annotated[Optional[Path], typer.Option(
    help="Contig lengths for the bigWig header: the reference's .fai or a chrom.sizes file (default: the furthest "
    "end on each contig).", metavar="FILE", exists=True, dir_okay=False, show_default=False, rich_help_panel=OUTPUT)]
OverlapOpt = Annotated[Overlap, typer.Option("--overlap", help="Records overlapping on the reference: an error, or "
                                             "averaged where they overlap.", rich_help_panel=OUTPUT)]

Image = Annotated[Path, typer.Option("--output", "-o", help="Image to write: .png, .svg or .pdf.", metavar="IMAGE",
                                     rich_help_panel=PICTURE)]
PanelsOpt = Annotated[Panels, typer.Option("--panels", help="Pooled vectors on two axes, one record's tracks, or both.",
                                           rich_help_panel=PICTURE)]
Record = Annotated[Optional[str], typer.Option(help="Record whose tracks to draw (default: the longest of the first "
                                               "file).", metavar="ID", show_default=False, rich_help_panel=PICTURE)]
Labels = Annotated[Optional[Path], typer.Option(help="Colour the pooled panel by label: a TSV of id<TAB>label lines "
                                                "(default: one colour per file).", metavar="FILE.tsv", exists=True,
                                                dir_okay=False, show_default=False, rich_help_panel=PICTURE)]
PooledMode = Annotated[Optional[str], typer.Option("--pool", help="Pooling mode of the pooled panel (default: the "
                                                   "first stored).", metavar="MODE", show_default=False,
                                                   rich_help_panel=PICTURE)]
MethodOpt = Annotated[Method, typer.Option("--method", help="Two axes of the pooled panel: PCA, or UMAP (needs "
                                           "umap-learn).", rich_help_panel=PICTURE)]
Width = Annotated[float, typer.Option(min=1.0, max=100.0, help="Image width in inches.", metavar="IN",
                                      rich_help_panel=PICTURE)]
Height = Annotated[float, typer.Option(min=1.0, max=100.0, help="Image height in inches.", metavar="IN",
                                       rich_help_panel=PICTURE)]
Dpi = Annotated[int, typer.Option("--dpi", min=10, max=1200, help="Pixels per inch (PNG size = width x dpi by "
                                  "height x dpi).", metavar="DPI", rich_help_panel=PICTURE)]
