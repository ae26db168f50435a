"""One embedding run into one HDF5 file: what ``genoconv embed`` and ``Embedder.embed_file`` do.

Reads the inputs, checks the disk, opens (or resumes) the store, runs the engine with committed records skipped,
turns SIGTERM/SIGUSR1/SIGINT into a clean, resumable stop (exit code 3), and marks the file complete last.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch

from .engine import Engine, Progress
from .errors import (TERM_SIGNALS, GenoconvError, InputError, InputFileError, Interrupted, interrupt_now,
                     signals_handled)
from .io import Record, RecordSource, open_records
from .io.identity import identity_difference, resume_key
from .model.embedder import LoadedModel, dtype_name
from .ops import arithmetic
from .options import EmbedOptions, ReadOptions, StoreOptions

log = logging.getLogger("genoconv")

STOP_SIGNALS = (*TERM_SIGNALS, signal.SIGINT)


class StopFlag:
    """Set by SIGTERM/SIGUSR1/SIGINT; the engine checks it between chunks and stops at a commit boundary. While
    ``starting`` (nothing written yet: inputs read, files fingerprinted) a signal stops the run at once instead."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.starting = True

    def __call__(self) -> bool:
        return self.signum is not None

    @contextlib.contextmanager
    def installed(self):
        def handler(signum, frame):
            if self.starting:
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                interrupt_now(signum, frame)
            if self.signum is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now (the file is still resumable)
            self.signum = signum
            log.warning("received %s: finishing the current chunk, then saving and stopping",
                        signal.Signals(signum).name)

        with signals_handled(handler, STOP_SIGNALS):
            yield self


# Options that change no number in the output, each with the reason. Every other field of the option dataclasses
# lands in the run config by itself (tests/test_runner.py checks every option and every `genoconv embed` parameter).
NOT_IN_RUN_CONFIG = {
    "max_memory": "a resource bound; it acts through the effective tokens_per_batch (recorded) and through how "
                  "long records are streamed (stored per record in /modes)",
    "commit_interval": "how often commits are made durable; the rows are the same",
    "checkpoint_interval": "how often a long record in progress is checkpointed; a resume continues with the same "
                           "chunks, so the rows are the same",
    "overwrite": "whether an existing output is replaced, not what is computed",
    "output": "where the file goes, not what it holds",
}


def embed_to_file(embedder: LoadedModel, inputs: Sequence[str | Path], output: str | Path, *,
                  options: EmbedOptions | None = None, read: ReadOptions | None = None,
                  store: StoreOptions | None = None, shard: tuple[int, int] | None = None,
                  model_name: str | None = None, command_line: str | None = None, check_disk: bool = True,
                  on_progress: Callable[[Progress], None] | None = None,
                  on_start: Callable[[int, int, Progress], None] | None = None) -> Progress:
    """Embed ``inputs`` into ``output``; resumes an unfinished run of the same command. Returns the progress.
    Holds the output's lock (``<output>.lock``) throughout: a second run on the same output is refused.

    ``on_start(records, bases, progress)`` gets the run's totals and its progress so far (what a resumed run finds
    committed); ``on_progress(progress)`` follows each committed record and each chunk of a streamed one."""
    from .store import OutputLock

    options, read, store = options or EmbedOptions(), read or ReadOptions(), store or StoreOptions()
    output = Path(output)
    if not output.parent.exists():
        raise InputFileError(f"{output}: output folder {output.parent} does not exist")
    stop = StopFlag()
    with stop.installed(), OutputLock(output):
        source = open_records(list(inputs), **read.as_kwargs())
        try:
            return _embed_locked(embedder, inputs, output, source, options, read, store, shard, model_name,
                                 command_line, check_disk, stop, on_progress, on_start)
        finally:
            source.close()


def _embed_locked(embedder: LoadedModel, inputs: Sequence[str | Path], output: Path, source: RecordSource,
                  options: EmbedOptions, read: ReadOptions, store: StoreOptions, shard: tuple[int, int] | None,
                  model_name: str | None, command_line: str | None, check_disk: bool, stop: StopFlag,
                  on_progress: Callable[[Progress], None] | None,
                  on_start: Callable[[int, int, Progress], None] | None) -> Progress:
    from .store import EmbeddingWriter, StoreSpec, check_free_space, estimate_bytes, space_needed, unfinished_run

    lengths = source.lengths()
    if not lengths:
        raise InputError(f"{', '.join(map(str, inputs)) or read.regions}: no records to embed")
    keep = None
    if shard is not None:
        from .sharding import select_shard

        keep = select_shard(lengths, *shard)
        if not keep:  # more shards than records: an empty, complete file keeps the set mergeable
            log.warning("shard %d/%d has none of the %d records; writing an empty, complete file", *shard,
                        len(lengths))
        lengths = [x for x in lengths if x[0] in keep]
    engine = Engine(embedder, options)
    spec = StoreSpec(d_model=embedder.d_model, layers=tuple(engine.layers), per_nucleotide=options.per_nucleotide,
                     pools=tuple(options.pools), window=options.window, store_dtype=store.store_dtype,
                     compression=store.compression)
    files = source.identities()
    run_config = build_run_config(embedder, engine, read, store, shard, files)
    started = unfinished_run(output, overwrite=store.overwrite)
    if started is not None and started[1]:  # records are committed: they must come from the same files
        check_same_inputs(output, started[0], run_config, files)
    total = sum(n for _, n in lengths)
    if check_disk:
        estimate = estimate_bytes(spec, len(lengths), total)
        check_free_space(output, space_needed(output, estimate, overwrite=store.overwrite))
    provenance = {
        "model": model_name or embedder.name,
        "checkpoint_sha256": embedder.sha256,
        "checkpoint_format": embedder.info.format if embedder.info else "in-memory",
        "model_config": embedder.config.to_hf_dict(),
        "compute_dtype": run_config["compute_dtype"],
        "device": str(embedder.device),
        "tokenizer_policy": embedder.tokenizer.describe(),
        "convolution": _convolution_summary(embedder, options),
        "conv_backend": _backend_name(embedder),
        "command_line": command_line or " ".join(sys.argv),
        "inputs": [str(p) for p in inputs],
        "input_files": [{"role": role, "path": str(path.resolve() if path.exists() else path), **identity}
                        for role, path, identity in files],  # a pipe keeps its name (<stdin>)
        "run_config": run_config,
    }
    # Commits are made durable together at most every `commit_interval` seconds: thousands of short reads then
    # write at ~285 MB/s instead of ~41 (genoconv.store); a kill loses at most that much work, never a committed record.
    stop.starting = False  # from here a signal stops the run at a commit boundary, everything committed kept
    writer = EmbeddingWriter.open(output, spec, provenance, overwrite=store.overwrite,
                                  commit_interval=store.commit_interval,
                                  checkpoint_interval=store.checkpoint_interval,
                                  fresh=bool(source.piped_inputs))  # a pipe's --overwrite rerun starts afresh
    skip = set(writer.committed)
    if skip and source.piped_inputs:  # a pipe cannot be fingerprinted: resuming would trust it blindly
        writer.close()
        source.close()
        raise InputError(f"{output}: cannot resume its {len(skip)} committed records: {', '.join(source.piped_inputs)} "
                         "is a pipe, whose content cannot be checked against the earlier run; rerun with --overwrite "
                         "to start afresh, or save the input to a file")
    if skip:
        log.info("resuming %s: %d records already committed", output, len(skip))
    engine.should_stop = stop
    engine.on_progress = on_progress
    engine.progress = Progress(records=len(skip), bases=sum(n for rid, n in lengths if rid in skip))
    resumed_bases = engine.progress.bases
    if on_start:
        on_start(len(lengths), total, engine.progress)
    records = RecentSources(source if keep is None else (r for r in source if r.id in keep))
    t0 = time.monotonic()
    try:
        engine.run(records, writer, skip=skip)
        for reason, count in sorted(source.skipped.items()):
            log.info("skipped %d input records: %s", count, reason)
        writer.finish()
    except (Interrupted, KeyboardInterrupt):
        writer.close()  # keep everything committed: resumable
        if source.piped_inputs:  # "rerun the same command" would be refused: a pipe cannot be checked on resume
            raise Interrupted(f"interrupted; {', '.join(source.piped_inputs)} is a pipe, which a rerun cannot check "
                              "against this run: rerun with --overwrite, or save the input to a file and rerun with "
                              "it to resume") from None
        raise
    except GenoconvError as exc:
        writer.close()  # keep everything committed: resumable
        raise records.naming_the_file(exc) from None
    except BaseException:  # KeyboardInterrupt, unexpected errors: keep everything committed, resumable
        writer.close()
        raise
    progress = engine.progress
    elapsed = time.monotonic() - t0
    peak = ""
    if embedder.device.type == "cuda":
        import torch

        peak = f", peak GPU memory {torch.cuda.max_memory_allocated(embedder.device) / 2**30:.2f} GiB"
    computed = progress.bases - resumed_bases
    log.info("wrote %s: %d records, %d bases; %d bases computed in %.1f s (%.0f bases/s)%s", output,
             progress.records, progress.bases, computed, elapsed, computed / max(elapsed, 1e-9), peak)
    return progress


def build_run_config(embedder: LoadedModel, engine: Engine, read: ReadOptions, store: StoreOptions,
                     shard: tuple[int, int] | None, files: Sequence[tuple[str, Path, dict]]) -> dict:
    """Every setting that changes a number in the output (what a resume must find unchanged): the options (all
    fields but NOT_IN_RUN_CONFIG's), the files by content, the model and the arithmetic that runs it."""
    fields = {**asdict(engine.opts), **read.as_kwargs(), **asdict(store)}
    run_config = {k: v for k, v in fields.items() if k not in NOT_IN_RUN_CONFIG}
    by_role: dict = {"inputs": [], "reference": None, "regions": None}
    for role, _, identity in files:
        key = resume_key(identity)
        if role == "inputs":
            by_role["inputs"].append(key)
        else:
            by_role[role] = key
    cfg = embedder.config
    run_config.update(by_role)
    run_config.update({
        "layers": list(engine.layers),
        "tokens_per_batch": engine.planner.tokens_per_batch,  # batching sets padded lengths, hence FFT sizes
        "shard": list(shard) if shard else None,
        "model_sha256": embedder.sha256 if embedder.info else weights_sha256(embedder),
        "model_config": cfg.to_hf_dict(),
        "modulation_shift": cfg.shift,
        "tokenizer": embedder.tokenizer.policy,
        "compute_dtype": dtype_name(embedder.dtype),
        "convolution": arithmetic(embedder.device, embedder.dtype),
    })
    return run_config


def weights_sha256(embedder: LoadedModel) -> str:
    """SHA-256 over a model's tensors (a model built in memory has no checkpoint file to hash)."""
    h = hashlib.sha256()
    for key, value in sorted(embedder.model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_same_inputs(output: Path, started: dict, run_config: dict, files: Sequence[tuple[str, Path, dict]]) -> None:
    """Refuse to resume ``output`` from files other than those its committed records came from, naming the file."""
    paths: dict = {"inputs": [], "reference": [], "regions": []}
    for role, path, _ in files:
        paths[role].append(path)
    for role in ("inputs", "reference", "regions"):
        if role not in started:
            continue  # written by an older genoconv: the run config comparison decides
        old, new = started[role], run_config[role]
        old, new = (old if role == "inputs" else [old] if old else []), (new if role == "inputs" else [new] if new else [])
        if len(old) != len(new):
            raise InputError(f"{output} was started from {len(old)} {role} file(s), now {len(new)} are given; rerun "
                             "with the same files or use --overwrite to start afresh")
        for path, a, b in zip(paths[role], old, new):
            why = identity_difference(a, b)
            if why:
                raise InputError(f"{path} is not the file the unfinished run {output} started from ({why}); "
                                 "restore it, or use --overwrite to start afresh")


class RecentSources:
    """The records on their way to the engine, remembering the file of the latest ones: errors raised where only
    the record is known (the tokenizer, the engine) then name its file too."""

    def __init__(self, records: Iterable[Record], remember: int = 1 << 17) -> None:
        self.records, self.remember = records, remember
        self.recent: OrderedDict[str, str] = OrderedDict()

    def __iter__(self) -> Iterator[Record]:
        for record in self.records:
            self.recent[record.id] = record.source
            if len(self.recent) > self.remember:
                self.recent.popitem(last=False)
            yield record

    def naming_the_file(self, exc: GenoconvError) -> GenoconvError:
        text = str(exc)
        for record_id, source in reversed(self.recent.items()):
            if f"record {record_id!r}" in text:
                return exc if source in text else type(exc)(f"{source}: {text}")
        return exc


def _convolution_summary(embedder: LoadedModel, options: EmbedOptions) -> str:
    k = options.filter_len
    if options.freq_keep < 1:  # approximate at every length: never "exact"
        parts = [f"frequency-sparse keep={options.freq_keep:g} (approximate)"]
    else:
        parts = [f"exact up to max_seq_len={embedder.max_seq_len}"]
    parts.append(f"partial K={k}" if k else f"partial K={embedder.max_seq_len} for longer records")
    if options.chunk_size:
        parts.append(f"streamed C={options.chunk_size}")
    return "; ".join(parts)


def _backend_name(embedder: LoadedModel) -> str:
    if embedder.device.type != "cuda":
        return "reference (torch.fft, fp32)"
    from .ops import cuda

    st = cuda.status()
    return f"cuda kernel ({', '.join(st.get('archs', []))})" if st.get("built") else f"reference ({st.get('reason')})"
