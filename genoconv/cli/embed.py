"""``genoconv embed``: records in, one HDF5 file out (a thin shell over :func:`genoconv.runner.embed_to_file`)."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time

from ..options import EmbedOptions, StoreOptions
from . import params as p
from .common import load_model, read_options

log = logging.getLogger("genoconv")


def embed(
    inputs: p.Inputs = None,
    output: p.Output = ...,
    model: p.ModelName = None,
    device: p.Device = "auto",
    dtype: p.DtypeOpt = p.Dtype.float32,
    strict_tokenizer: p.StrictTokenizer = False,
    modulation_shift: p.ModulationShift = None,
    layer: p.Layer = [-1],  # noqa: B006 - Typer reads the default
    per_nucleotide: p.PerNucleotide = True,
    pool: p.Pool = ["mean"],  # noqa: B006
    window: p.Window = None,
    rc_average: p.RcAverage = False,
    store_dtype: p.StoreDtypeOpt = p.StoreDtype.float16,
    compression: p.CompressionOpt = p.Compression.none,
    overwrite: p.Overwrite = False,
    commit_interval: p.CommitInterval = 2.0,
    checkpoint_interval: p.CheckpointInterval = 300.0,
    filter_len: p.FilterLen = None,
    chunk_size: p.ChunkSize = None,
    freq_keep: p.FreqKeep = 1.0,
    max_memory: p.MaxMemory = None,
    tokens_per_batch: p.TokensPerBatch = None,
    reference: p.Reference = None,
    regions: p.Regions = None,
    feature: p.Feature = "gene",
    strand_aware: p.StrandAware = True,
    include_secondary: p.IncludeSecondary = False,
    include_supplementary: p.IncludeSupplementary = False,
    dedupe_ids: p.DedupeIds = False,
    shard: p.Shard = None,
) -> None:
    """Embed DNA records into one HDF5 file (resumable: rerun the same command after an interruption)."""
    from ..runner import embed_to_file
    from ..sharding import parse_shard, shard_device, shard_output

    read = read_options(locals())
    options = EmbedOptions(layers=tuple(layer), per_nucleotide=per_nucleotide, pools=tuple(pool), window=window,
                           rc_average=rc_average, filter_len=filter_len, chunk_size=chunk_size,
                           freq_keep=freq_keep, max_memory=max_memory, tokens_per_batch=tokens_per_batch)
    store = StoreOptions(store_dtype=store_dtype.value, compression=compression.value,
                         commit_interval=commit_interval, checkpoint_interval=checkpoint_interval,
                         overwrite=overwrite)
    shard_spec = parse_shard(shard)
    output = shard_output(output, shard_spec, shard)
    emb = load_model(model, shard_device(shard, device), dtype.value, strict_tokenizer=strict_tokenizer,
                     shift=modulation_shift, max_memory=options.max_memory)
    log.info("model %s (d_model %d, %d layers, max_seq_len %d) on %s, %s", emb.name, emb.d_model,
             emb.config.n_layer, emb.max_seq_len, emb.device, dtype.value)
    with ProgressReporter() as reporter:
        embed_to_file(emb, inputs or [], output, options=options, read=read, store=store, shard=shard_spec,
                      model_name=emb.name, command_line=shlex.join(["genoconv", *sys.argv[1:]]),
                      on_progress=reporter.update, on_start=reporter.start)


class ProgressReporter:
    """Progress in bases, counting those done inside a streamed record: a rich bar on a terminal, otherwise a plain
    log line every ``GENOCONV_LOG_INTERVAL`` seconds (default 30; SLURM logs) and one at the end.

    A resumed run starts from what is already committed; its rate and ETA count only the bases computed now.
    """

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty() and logging.getLogger("genoconv").level <= logging.INFO
        self.interval = float(os.environ.get("GENOCONV_LOG_INTERVAL", "30"))
        self.bar = None
        self.task = None
        self.total_records = self.total_bases = self.start_bases = 0
        self.last = 0.0
        self.t0 = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def start(self, n_records: int, n_bases: int, done) -> None:
        self.total_records, self.total_bases = n_records, n_bases
        self.start_bases = done.bases
        self.t0 = self.last = time.monotonic()
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]embedding"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                                TextColumn("{task.fields[records]}"), TextColumn("{task.fields[rate]}"),
                                TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task("embed", total=n_bases, completed=done.bases, rate="",
                                          records=f"{done.records}/{n_records} records")
            self.bar.start()
            return
        log.info("embedding %d records, %s bases", n_records, f"{n_bases:,}")
        if done.records:
            log.info("progress: %d/%d records, %s/%s bases (%.1f%%) already committed; resuming", done.records,
                     n_records, f"{done.bases:,}", f"{n_bases:,}", 100 * done.bases / max(1, n_bases))

    def update(self, progress) -> None:
        now = time.monotonic()
        done = progress.bases + progress.record_bases
        rate = (done - self.start_bases) / max(now - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, rate=f"{rate / 1e3:,.1f} kb/s",
                            records=f"{progress.records}/{self.total_records} records")
        elif now - self.last >= self.interval or progress.records == self.total_records:
            self.last = now
            eta = _duration((self.total_bases - done) / rate) if rate > 0 else "unknown"
            log.info("progress: %d/%d records, %s/%s bases (%.1f%%), %.1f kb/s, ETA %s", progress.records,
                     self.total_records, f"{done:,}", f"{self.total_bases:,}", 100 * done / max(1, self.total_bases),
                     rate / 1e3, eta)


def _duration(seconds: float) -> str:
    """``"42 s"`` below a minute, else ``"h:mm:ss"``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
