"""The embedding engine: records in, per-record rows/pools/windows out, in fixed memory.

Each record gets a :class:`~genoconv.engine.plan.Plan` (exact, partial, streamed; see :mod:`genoconv.engine.plan`),
passed explicitly to the model's forward.

Short records are batched by a token budget: sorted by length within bounded blocks of the input, then padded
*after* their end to a common length. HyenaDNA is causal, so right padding cannot change any of a record's outputs
(left padding, the official tokenizer's default, does); rows past each record's end are dropped. Records are
committed in this processing order: input order, except that short records are sorted within each block.
Outputs go to a *sink* as they are produced (the HDF5 store, or memory for the Python API); pooled vectors and
windowed means are accumulated on the fly in fp32/fp64.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ..errors import InputError, Interrupted, ResourceError, SequenceTooLongError
from ..io.record import Record
from ..model.embedder import LoadedModel
from ..model.hyena import StreamState
from ..model.tokenizer import PAD, Tokenizer
from ..ops.cpu_alloc import release_freed_memory
from ..options import EmbedOptions
from .outputs import RecordOutput, Sink, array_ops, batch_pools, host_stack
from .plan import Plan, Planner

log = logging.getLogger("genoconv.engine")
# Pooled-only batches are pooled at once on the device (outputs.batch_pools); False takes the per-record accumulators
# (benchmarks/bench_e2e.py's A/B of the reads case).
_POOL_BATCHES = True

# Short records are sorted by length within blocks of this many token budgets (or records), then batched.
SORT_BLOCK_BATCHES = 16
SORT_BLOCK_RECORDS = 65_536


# ---- the engine --------------------------------------------------------------------------------------------
@dataclass
class Progress:
    records: int = 0
    bases: int = 0
    record_bases: int = 0  # bases done inside the record in progress (a streamed record reports each chunk)
    skipped_committed: int = 0
    started: float = field(default_factory=time.monotonic)


class Engine:
    """Runs a :class:`~genoconv.model.embedder.LoadedModel` over records with one :class:`EmbedOptions`, writing
    to a sink."""

    def __init__(self, model: LoadedModel, options: EmbedOptions, *,
                 should_stop: Callable[[], bool] = lambda: False,
                 on_progress: Callable[[Progress], None] | None = None,
                 prefetch: bool | None = None):
        self.emb = model
        # A streamed record's next chunk is read and tokenised on a helper thread while the device computes this one
        # (default: on CUDA, where the host would otherwise do it with the GPU idle after each chunk's outputs; on the
        # CPU the host is the device).
        self.prefetch = torch.device(model.device).type == "cuda" if prefetch is None else prefetch
        self.opts = options
        self.layers = model.resolve_layers(options.layers)
        self.should_stop = should_stop
        self.on_progress = on_progress
        self.progress = Progress()
        self._skip: set[str] | frozenset = frozenset()
        self.d = model.d_model
        self.planner = Planner(model, options)

    def plan(self, length: int) -> Plan:
        return self.planner.plan(length)

    # ---- running
    def run(self, records: Iterable[Record], sink: Sink, *, skip: set[str] | frozenset = frozenset()) -> Progress:
        """Embed every record not in ``skip`` and commit it to ``sink`` (in processing order, see _batches)."""
        for _ in self.run_iter(records, sink, skip=skip):
            pass
        return self.progress

    def run_iter(self, records: Iterable[Record], sink: Sink, *,
                 skip: set[str] | frozenset = frozenset()) -> Iterator[list[Record]]:
        """Like :meth:`run`, yielding each batch once it is committed (the Python API streams from here)."""
        self._skip = skip
        for batch in self._batches(records, skip):
            if self.should_stop():
                raise Interrupted("interrupted: everything committed so far is saved; rerun the same command to resume")
            self._run_batch(batch, sink)
            yield batch
        release_freed_memory()

    def _batches(self, records: Iterable[Record], skip) -> Iterator[list[Record]]:
        """Batches of short records, sorted by length within blocks of the input; long records alone.

        Short records are collected into blocks of up to ``SORT_BLOCK_BATCHES`` token budgets, sorted by length
        (ties in input order) and cut into batches of similar length, so mixed read lengths still batch well while
        only one block of records (not of outputs) is held. Everything is a function of the input alone:
        committed records included, a resumed run rebuilds exactly the batches (and therefore the arithmetic) of
        an uninterrupted one; fully committed batches are skipped.
        """
        block: list[Record] = []
        bases = 0
        budget = self.planner.tokens_per_batch
        for rec in records:
            if rec.length == 0:
                raise InputError(f"record {rec.id!r} ({rec.source}) has no sequence")
            if self.planner.runs_alone(rec.length):
                yield from self._sorted_batches(block, skip)
                block, bases = [], 0
                yield from self._keep([rec], skip)
                continue
            block.append(rec)
            bases += rec.length
            if bases >= SORT_BLOCK_BATCHES * budget or len(block) >= SORT_BLOCK_RECORDS:
                yield from self._sorted_batches(block, skip)
                block, bases = [], 0
        yield from self._sorted_batches(block, skip)

    def _sorted_batches(self, block: list[Record], skip) -> Iterator[list[Record]]:
        """Cut a block, sorted by length, into batches whose padding stays within 12.5% of the shortest."""
        batch: list[Record] = []
        lo = hi = 0
        for rec in sorted(block, key=lambda r: r.length):  # stable: equal lengths keep input order
            if batch:
                new_lo, new_hi = min(lo, rec.length), max(hi, rec.length)
                if new_hi > new_lo * 1.125 or new_hi * (len(batch) + 1) > self.planner.tokens_per_batch:
                    yield from self._keep(batch, skip)
                    batch = []
            lo, hi = (min(lo, rec.length), max(hi, rec.length)) if batch else (rec.length, rec.length)
            batch.append(rec)
        yield from self._keep(batch, skip)

    def _keep(self, batch: list[Record], skip) -> Iterator[list[Record]]:
        if not batch:
            return
        if all(r.id in skip for r in batch):
            self.progress.skipped_committed += len(batch)
            return
        yield batch

    def _run_batch(self, batch: list[Record], sink: Sink) -> None:
        if len(batch) == 1 and not self.plan(batch[0].length).one_pass_exact:
            self._run_long(batch[0], sink)
            return
        try:
            hidden, lengths = self._forward_batch(batch)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(batch) > 1:  # documented fallback 1: halve the batch
                half = len(batch) // 2
                log.warning("out of GPU memory on a batch of %d records; retrying in halves", len(batch))
                self._run_batch(batch[:half], sink)
                self._run_batch(batch[half:], sink)
                return
            self._run_long(batch[0], sink, oom=True)  # fallback 2: chunked evaluation
            return
        mode = self.plan(max(lengths)).mode  # exact, or freq-sparse:F=...: the plan _forward_batch ran
        if _POOL_BATCHES and not self.opts.per_nucleotide and not self.opts.window and min(lengths) > 0:
            # Pooled vectors only: the whole batch at once (reads: thousands of records per pass), one host copy.
            keys = [(m, layer) for layer in self.layers for m in self.opts.pools]
            with torch.inference_mode():  # batch_pools writes into the model's outputs (inference tensors)
                pools = {layer: batch_pools(hidden[layer], lengths, self.opts.pools) for layer in self.layers}
            host = dict(zip(keys, host_stack([pools[layer][m] for m, layer in keys], array_ops(hidden[self.layers[0]]))))
            for i, rec in enumerate(batch):
                if rec.id in self._skip:
                    continue  # committed before an interruption; recomputed only because its batch was partial
                sink.begin(rec.id, rec.length, mode, rec.coords).commit({key: arr[i] for key, arr in host.items()})
                self._advance(rec.length)
            return
        for i, (rec, n) in enumerate(zip(batch, lengths)):
            if rec.id in self._skip:
                continue
            out = RecordOutput(sink.begin(rec.id, rec.length, mode, rec.coords), self.opts, self.layers, self.d)
            for layer, h in hidden.items():
                out.add(layer, h[i, :n])
            out.commit()
            self._advance(rec.length)

    def _tokens(self, rec: Record, start: int = 0, end: int | None = None) -> torch.Tensor:
        return self.emb.tokenizer.encode(rec.sequence(start, end), record=rec.id, offset=start)

    def _forward_batch(self, batch: list[Record]) -> tuple[dict[int, torch.Tensor], list[int]]:
        """One padded forward pass: per stored layer the (B, L, d) fp32 rows on the model's device (record i in its
        first lengths[i] positions), and the lengths."""
        lengths = [r.length for r in batch]
        ids = self._padded([self._tokens(rec) for rec in batch])
        plan = self.plan(max(lengths))  # one pass: these records are batched because their plan is exact
        if plan.clear_caches:  # a record alone, in the whole budget (Planner._plan): the caches' reserve given back
            self.emb.model.clear_filter_cache()
        hidden = self._hidden(ids, plan)
        if self.opts.rc_average:
            # Each record reverse-complemented within its own length and padded *after* it again: flipping the
            # padded row would put the padding first, which changes a causal model's outputs.
            rc_ids = self._padded([Tokenizer.reverse_complement(ids[i, :n]) for i, n in enumerate(lengths)])
            rc = self._hidden(rc_ids, plan)
            with torch.inference_mode():  # the model's outputs are inference tensors
                for i, n in enumerate(lengths):
                    for layer in self.layers:
                        hidden[layer][i, :n] = (hidden[layer][i, :n] + rc[layer][i, :n].flip(0)) / 2
        return hidden, lengths

    @staticmethod
    def _padded(token_rows: list[torch.Tensor]) -> torch.Tensor:
        ids = torch.full((len(token_rows), max(len(t) for t in token_rows)), PAD, dtype=torch.long)  # [PAD] after
        for i, t in enumerate(token_rows):
            ids[i, :len(t)] = t
        return ids

    def _hidden(self, ids: torch.Tensor, plan: Plan, stream: StreamState | None = None) -> dict[int, torch.Tensor]:
        """Hidden states (B, L, d) fp32 of the stored layers, left on the model's device: pools and windows
        accumulate there (engine.outputs), so only what is stored crosses to the host."""
        out = self.emb.hidden_states(ids, self.layers, stream, plan.conv)
        return {layer: out[layer] for layer in self.layers}

    def _advance(self, bases: int) -> None:
        self.progress.records += 1
        self.progress.bases += bases
        self.progress.record_bases = 0
        if self.on_progress:
            self.on_progress(self.progress)

    # ---- long records: partial convolution and exact streaming
    def _run_long(self, rec: Record, sink: Sink, *, oom: bool = False) -> None:
        plan = self.plan(rec.length)
        if plan.filter_len is not None and self.opts.filter_len is None:
            log.info("record %s: %d bases > max_seq_len %d: partial convolution with the first K=%d filter taps",
                     rec.id, rec.length, self.emb.max_seq_len, plan.filter_len)
        chunk = plan.chunk_size or (rec.length if not oom else max(1024, rec.length // 2))
        while True:
            try:
                self._stream_record(rec, sink, Plan(plan.conv, chunk if chunk < rec.length else None))
                return
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                if chunk <= 1024:
                    raise ResourceError(f"record {rec.id!r} ({rec.length:,} bases): out of GPU memory even in chunks "
                                        "of 1,024 bases; use a smaller --filter-len or --device cpu") from None
                chunk = max(1024, chunk // 2)
                log.warning("out of GPU memory on record %s (%d bases); retrying in chunks of %d",
                            rec.id, rec.length, chunk)

    def _stream_record(self, rec: Record, sink: Sink, plan: Plan) -> None:
        if plan.filter_len is None and rec.length > self.emb.max_seq_len:
            raise SequenceTooLongError(f"record {rec.id!r} has {rec.length:,} bases > max_seq_len")
        chunk = plan.chunk_size or rec.length
        rc_rows = self._reverse_pass(rec, plan, chunk) if self.opts.rc_average else None
        out, stream, first = self._open_record(rec, sink, plan)
        # closing(): a record that stops early (interrupt, out of memory) ends its reader thread here, before a
        # retry reads the record again
        with closing(self._chunk_tokens(rec, first, chunk)) as chunks:
            try:
                if self.should_stop():
                    raise Interrupted(f"interrupted at record {rec.id!r}; rerun the same command to resume")
                for start, ids in chunks:
                    end = min(rec.length, start + chunk)
                    hidden = self._hidden(ids[None], plan, stream)
                    for layer in self.layers:
                        rows = hidden[layer][0]
                        if rc_rows is not None:
                            saved = torch.from_numpy(np.asarray(rc_rows[layer][start:end]))
                            rows = (rows + saved.to(rows.device)) / 2
                        out.add(layer, rows)
                    del hidden
                    if end < rec.length:
                        stop = self.should_stop()
                        # A checkpoint (rows so far, accumulators, the carried state) when the store's interval is
                        # up, and always before stopping: the rerun resumes here, not at the record's first base.
                        out.checkpoint(stream.to_arrays, end, force=stop)
                        if stop:
                            raise Interrupted(f"interrupted inside record {rec.id!r} at base {end:,}; rerun the "
                                              "same command to resume from there")
                        if self.on_progress:
                            self.progress.record_bases = end
                            self.on_progress(self.progress)
            except torch.OutOfMemoryError:
                out.abort()  # the record restarts from its first base with a smaller plan (_run_long)
                raise
        out.commit()
        self._advance(rec.length)

    def _chunk_tokens(self, rec: Record, first: int, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(start, token ids) of each chunk of ``rec`` from base ``first``, in order. With ``prefetch`` the next
        chunk is read and tokenised on a helper thread while the caller computes this one: reading and encoding a
        3.2M-base chunk of a bgzipped chromosome takes 20-75 ms of host time, which after each chunk's outputs (a
        device-to-host copy, so a synchronisation) left the GPU idle. Errors (a bad base) surface when their chunk
        is reached, as without it."""
        starts = range(first, rec.length, chunk)

        def tokens(start: int) -> torch.Tensor:
            return self._tokens(rec, start, min(rec.length, start + chunk))

        if not self.prefetch or len(starts) < 2:
            for start in starts:
                yield start, tokens(start)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="genoconv-prefetch") as pool:
            pending: Future = pool.submit(tokens, starts[0])
            for i, start in enumerate(starts):
                ids = pending.result()
                if i + 1 < len(starts):
                    pending = pool.submit(tokens, starts[i + 1])
                yield start, ids

    def _open_record(self, rec: Record, sink: Sink, plan: Plan) -> tuple[RecordOutput, StreamState, int]:
        """The record's output, stream state and first base: where its checkpoint left it when the sink holds one
        of this record under this plan (a resumed run), else a fresh start."""
        resume = getattr(sink, "resume", None)
        resumed = resume(rec.id, rec.length, plan.mode, rec.coords) if resume is not None else None
        if resumed is None:
            out = RecordOutput(sink.begin(rec.id, rec.length, plan.mode, rec.coords), self.opts, self.layers, self.d)
            return out, StreamState.empty(self.emb.config.n_layer), 0
        writer, saved, first = resumed
        out = RecordOutput(writer, self.opts, self.layers, self.d)
        out.restore(saved, self.emb.device)
        stream = StreamState.from_arrays(saved, self.emb.config.n_layer, self.emb.device)
        log.info("record %s: resuming at base %d of %d from its checkpoint", rec.id, first, rec.length)
        self.progress.record_bases = first
        return out, stream, first

    def _reverse_pass(self, rec: Record, plan: Plan, chunk: int) -> dict[int, np.memmap]:
        """Stream the reverse complement, storing its rows (flipped back to forward coordinates) on disk.

        Averaging with the reverse strand needs, for forward chunk [s, e), reverse-pass outputs that a forward
        stream only reaches at its end; a float32 scratch file of L x d per layer holds them in between.
        """
        scratch_dir = os.environ.get("GENOCONV_SCRATCH") or tempfile.gettempdir()
        out = {}
        for layer in self.layers:
            # Unnamed (unlinked at once): a killed run leaves no L x d x 4-byte file behind.
            fh = tempfile.TemporaryFile(dir=scratch_dir, prefix="genoconv-rc-", suffix=".f32")
            out[layer] = np.memmap(fh, dtype=np.float32, mode="w+", shape=(rec.length, self.d))
            out[layer]._genoconv_file = fh  # keep the file alive with the map
        stream = StreamState.empty(self.emb.config.n_layer)
        for end in range(rec.length, 0, -chunk):  # reverse strand read 5'->3' = forward coordinates descending
            start = max(0, end - chunk)
            ids = Tokenizer.reverse_complement(self._tokens(rec, start, end)[None])
            hidden = self._hidden(ids, plan, stream)
            for layer in self.layers:
                out[layer][start:end] = hidden[layer][0].flip(0).cpu().numpy()
            if start > 0 and self.should_stop():  # nothing of this pass is kept: stop now, not after the whole strand
                raise Interrupted(f"interrupted in record {rec.id!r}'s reverse-strand pass (--rc-average) at base "
                                  f"{start:,}; rerun the same command to resume (its reverse pass starts over)")
        return out
