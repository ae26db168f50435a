"""One embedding run into one HDF5 file: what ``genoconv embed`` and ``Embedder.embed_file`` do.

Reads the inputs, checks the disk, opens (or resumes) the store, runs the engine with committed records skipped,
turns SIGTERM/SIGUSR1/SIGINT into a clean, resumable stop (exit code 3), and marks the file complete last.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from .engine import Engine, Progress
from .errors import InputError, InputFileError
from .io import open_records
from .model.embedder import LoadedModel, dtype_name
from .options import EmbedOptions, ReadOptions, StoreOptions

log = logging.getLogger("genoconv")

STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None),
                                 signal.SIGINT) if s is not None)


class StopFlag:
    """Set by SIGTERM/SIGUSR1/SIGINT; the engine checks it between chunks and stops at a commit boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @contextlib.contextmanager
    def installed(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

        def handler(signum, frame):  # noqa: ARG001
            if self.signum is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now (the file is still resumable)
            self.signum = signum
            log.warning("received %s: finishing the current chunk, then saving and stopping",
                        signal.Signals(signum).name)

        for s in STOP_SIGNALS:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def embed_to_file(embedder: LoadedModel, inputs: Sequence[str | Path], output: str | Path, *,
                  options: EmbedOptions | None = None, read: ReadOptions | None = None,
                  store: StoreOptions | None = None, shard: tuple[int, int] | None = None,
                  model_name: str | None = None, command_line: str | None = None, check_disk: bool = True,
                  on_progress: Callable[[Progress], None] | None = None,
                  on_start: Callable[[int, int, Progress], None] | None = None) -> Progress:
    """Embed ``inputs`` into ``output``; resumes an unfinished run of the same command. Returns the progress.

    ``on_start(records, bases, progress)`` gets the run's totals and its progress so far (what a resumed run finds
    committed); ``on_progress(progress)`` follows each committed record and each chunk of a streamed one."""
    from .store import EmbeddingWriter, StoreSpec, check_free_space, estimate_bytes

    options = options or EmbedOptions()
    read = read or ReadOptions()
    store = store or StoreOptions()
    output = Path(output)
    if not output.parent.exists():
        raise InputFileError(f"{output}: output folder {output.parent} does not exist")
    source = open_records(list(inputs), **read.as_kwargs())
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
    layers = tuple(embedder.resolve_layers(options.layers))
    spec = StoreSpec(d_model=embedder.d_model, layers=layers, per_nucleotide=options.per_nucleotide,
                     pools=tuple(options.pools), window=options.window, store_dtype=store.store_dtype,
                     compression=store.compression)
    total = sum(n for _, n in lengths)
    if check_disk:
        check_free_space(output, estimate_bytes(spec, len(lengths), total))
    run_config = {**asdict(options), **read.as_kwargs(), "layers": list(layers), "model_sha256": embedder.sha256,
                  "tokenizer": embedder.tokenizer.policy, "compute_dtype": dtype_name(embedder.dtype),
                  "shard": list(shard) if shard else None, "inputs": [str(p) for p in inputs]}
    run_config.pop("max_memory")  # a resource bound: changes how, not what
    run_config.pop("tokens_per_batch")
    run_config.pop("reference")  # the regions' source; recorded in provenance
    engine = Engine(embedder, options)
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
        "run_config": run_config,
    }
    # Commits are made durable together at most every `commit_interval` seconds: thousands of short reads then
    # write at ~285 MB/s instead of ~41 (genoconv.store); a kill loses at most that much work, never a committed record.
    writer = EmbeddingWriter.open(output, spec, provenance, overwrite=store.overwrite,
                                  commit_interval=store.commit_interval)
    skip = set(writer.committed)
    if skip and source.piped_inputs:  # a pipe cannot be fingerprinted: resuming would trust it blindly
        writer.close()
        source.close()
        raise InputError(f"{output}: cannot resume its {len(skip)} committed records: {', '.join(source.piped_inputs)} "
                         "is a pipe, whose content cannot be checked against the earlier run; rerun with --overwrite "
                         "to start afresh, or save the input to a file")
    if skip:
        log.info("resuming %s: %d records already committed", output, len(skip))
    stop = StopFlag()
    engine.should_stop = stop
    engine.on_progress = on_progress
    engine.progress = Progress(records=len(skip), bases=sum(n for rid, n in lengths if rid in skip))
    resumed_bases = engine.progress.bases
    if on_start:
        on_start(len(lengths), total, engine.progress)
    records = source if keep is None else (r for r in source if r.id in keep)
    t0 = time.monotonic()
    try:
        with stop.installed():
            engine.run(records, writer, skip=skip)
        for reason, count in sorted(source.skipped.items()):
            log.info("skipped %d input records: %s", count, reason)
        writer.finish()
    except BaseException:  # Interrupted, errors, KeyboardInterrupt: keep everything committed, resumable
        writer.close()
        raise
    finally:
        source.close()
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


def _convolution_summary(embedder: LoadedModel, options: EmbedOptions) -> str:
    k = options.filter_len
    parts = [f"exact up to max_seq_len={embedder.max_seq_len}"]
    parts.append(f"partial K={k}" if k else f"partial K={embedder.max_seq_len} for longer records")
    if options.freq_keep < 1:
        parts.append(f"frequency-sparse keep={options.freq_keep}")
    if options.chunk_size:
        parts.append(f"streamed C={options.chunk_size}")
    return "; ".join(parts)


def _backend_name(embedder: LoadedModel) -> str:
    if embedder.device.type != "cuda":
        return "reference (torch.fft, fp32)"
    from .ops import cuda

    st = cuda.status()
    return f"cuda kernel ({', '.join(st.get('archs', []))})" if st.get("built") else f"reference ({st.get('reason')})"
