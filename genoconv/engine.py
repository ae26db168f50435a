"""The embedding engine: records in, per-record rows/pools/windows out, in fixed memory.

Per record the engine picks a *plan*:
- ``exact``: the whole record in one forward pass (it fits the model's context and the memory budget);
- ``partial``: a record longer than ``max_seq_len`` is convolved with the first K filter taps only (K defaults to
  ``max_seq_len``; the implicit filter is undefined past it) — never a silent truncation of the record itself;
- ``streamed``: a record too large for one pass is processed in chunks of C bases, each layer carrying exactly the
  inputs its causal convolutions look back on (:class:`~genoconv.model.hyena.StreamState`), so the result equals
  the one-pass result (to float rounding) while memory is O(layers · (K + C) · d_model), whatever the length.

Short records are batched by a token budget: sorted by length within bounded windows of the input, then padded
*after* their end to a common length. HyenaDNA is causal, so right padding cannot change any of a record's outputs
(left padding, the official tokenizer's default, does); rows past each record's end are dropped. Records are
committed in this processing order: input order, except that short records are sorted within each window.
Outputs go to a *sink* as they are produced (the HDF5 store, or memory for the Python API); pooled vectors and
windowed means are accumulated on the fly in fp32/fp64.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

from .api import Embedder
from .errors import InputError, Interrupted, ResourceError, SequenceTooLongError
from .io.record import Record
from .model.hyena import StreamState, set_filter_cache_bytes

log = logging.getLogger("genoconv.engine")

POOL_MODES = ("mean", "max", "last")
# Bytes of activations and temporaries per base and per model dimension in one exact forward pass, for planning.
# Measured on an H200 (BENCHMARKS.md): a bf16 pass over 1 Mbp at d_model 256 peaks at ~38 GiB of which ~24 GiB are
# cached filters, i.e. ~55 B per base and dimension of activations; 96 leaves room for fp32 compute.
EXACT_BYTES_PER_BASE_DIM = 96
# Short records are sorted by length within windows of this many token budgets (or records), then batched.
SORT_WINDOW_BATCHES = 16
SORT_WINDOW_RECORDS = 65_536
_COMPLEMENT_IDS = torch.tensor([0, 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 11, 12, 13, 14, 15])


@dataclass(frozen=True)
class EmbedOptions:
    """Everything that changes what is computed (recorded in the store's provenance)."""

    layers: tuple[int, ...] = (-1,)
    per_nucleotide: bool = True
    pools: tuple[str, ...] = ("mean",)
    window: int | None = None
    rc_average: bool = False
    filter_len: int | None = None  # partial convolution: first K taps (None: full filter, K = max_seq_len past it)
    chunk_size: int | None = None  # streaming chunk C (None: chosen from the memory budget)
    freq_keep: float = 1.0  # frequency-sparse convolution: fraction of low-frequency bins kept
    max_memory: int | None = None  # bytes the engine may use for activations (None: a default per device)
    tokens_per_batch: int | None = None  # padded bases per batch of short records (None: from max_memory)

    def __post_init__(self) -> None:
        bad = [p for p in self.pools if p not in POOL_MODES]
        if bad:
            raise InputError(f"--pool: unknown mode(s) {', '.join(bad)} (choose from {', '.join(POOL_MODES)})")
        if self.window is not None and self.window < 1:
            raise InputError(f"--window must be >= 1, got {self.window}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise InputError(f"--chunk-size must be >= 1, got {self.chunk_size}")
        if self.filter_len is not None and self.filter_len < 1:
            raise InputError(f"--filter-len must be >= 1, got {self.filter_len}")
        if not 0.0 < self.freq_keep <= 1.0:
            raise InputError(f"--freq-keep must be in (0, 1], got {self.freq_keep}")
        if not (self.per_nucleotide or self.pools or self.window):
            raise InputError("nothing to store: enable --per-nucleotide, a --pool mode or --window")


@dataclass(frozen=True)
class Plan:
    """How one record is computed."""

    filter_len: int | None  # None: exact full-length convolution
    chunk_size: int | None  # None: one pass

    @property
    def mode(self) -> str:
        parts = ["exact" if self.filter_len is None else f"partial:K={self.filter_len}"]
        if self.chunk_size is not None:
            parts.append(f"streamed:C={self.chunk_size}")
        return ";".join(parts)


class RecordSink(Protocol):
    def append(self, layer: int, rows: np.ndarray) -> None: ...
    def append_windows(self, layer: int, rows: np.ndarray) -> None: ...
    def commit(self, pooled: dict[tuple[str, int], np.ndarray]) -> None: ...


class Sink(Protocol):
    def begin(self, record_id: str, length: int, mode: str) -> RecordSink: ...


# ---- accumulators ------------------------------------------------------------------------------------------
class _Pools:
    """Running mean (fp64 sum), max and last row of one layer."""

    def __init__(self, modes: Sequence[str], d: int):
        self.modes, self.count = modes, 0
        self.sum = np.zeros(d, np.float64)
        self.max = np.full(d, -np.inf, np.float32)
        self.last = np.zeros(d, np.float32)

    def update(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        self.count += len(rows)
        if "mean" in self.modes:
            self.sum += rows.sum(0, dtype=np.float64)
        if "max" in self.modes:
            np.maximum(self.max, rows.max(0), out=self.max)
        self.last = rows[-1].astype(np.float32, copy=True)

    def result(self) -> dict[str, np.ndarray]:
        out = {"mean": (self.sum / max(1, self.count)).astype(np.float32), "max": self.max, "last": self.last}
        return {m: out[m] for m in self.modes}


class _Windows:
    """Means over consecutive windows of W bases (the last one partial), emitted as they complete."""

    def __init__(self, window: int, d: int):
        self.window = window
        self.sum = np.zeros(d, np.float64)
        self.filled = 0

    def update(self, rows: np.ndarray) -> np.ndarray:
        done = []
        i = 0
        while i < len(rows):
            take = min(self.window - self.filled, len(rows) - i)
            self.sum += rows[i:i + take].sum(0, dtype=np.float64)
            self.filled += take
            i += take
            if self.filled == self.window:
                done.append(self.sum / self.window)
                self.sum = np.zeros_like(self.sum)
                self.filled = 0
        return np.asarray(done, np.float32).reshape(len(done), len(self.sum))

    def finish(self) -> np.ndarray:
        if self.filled == 0:
            return np.zeros((0, len(self.sum)), np.float32)
        return (self.sum / self.filled).astype(np.float32)[None]


class _RecordOutput:
    """Everything one record emits, fed rows in order: per-nucleotide rows, running pools, completed windows."""

    def __init__(self, writer: RecordSink, opts: EmbedOptions, layers: Sequence[int], d: int):
        self.writer, self.opts = writer, opts
        self.pools = {layer: _Pools(opts.pools, d) for layer in layers}
        self.windows = {layer: _Windows(opts.window, d) for layer in layers} if opts.window else None

    def add(self, layer: int, rows: np.ndarray) -> None:
        if self.opts.per_nucleotide:
            self.writer.append(layer, rows)
        self.pools[layer].update(rows)
        if self.windows is not None:
            self.writer.append_windows(layer, self.windows[layer].update(rows))

    def commit(self) -> None:
        if self.windows is not None:
            for layer, win in self.windows.items():
                self.writer.append_windows(layer, win.finish())
        self.writer.commit({(m, layer): v for layer, p in self.pools.items() for m, v in p.result().items()})


# ---- the engine --------------------------------------------------------------------------------------------
@dataclass
class Progress:
    records: int = 0
    bases: int = 0
    skipped_committed: int = 0
    started: float = field(default_factory=time.monotonic)


class Engine:
    """Runs an :class:`Embedder` over records with one :class:`EmbedOptions`, writing to a sink."""

    def __init__(self, embedder: Embedder, options: EmbedOptions, *,
                 should_stop: Callable[[], bool] = lambda: False,
                 on_progress: Callable[[Progress], None] | None = None):
        self.emb = embedder
        self.opts = options
        self.layers = embedder.resolve_layers(options.layers)
        self.should_stop = should_stop
        self.on_progress = on_progress
        self.progress = Progress()
        self._skip: set[str] | frozenset = frozenset()
        self.d = embedder.d_model
        self.max_memory = options.max_memory or default_memory_budget(embedder.device)
        # The budget also bounds the filters the model keeps (taps + spectra, per layer): a quarter of it in all.
        set_filter_cache_bytes(self.max_memory // (4 * embedder.config.n_layer), embedder.device.type)
        # Largest record (bases) one exact pass may take within the budget.
        self.exact_limit = max(1024, self.max_memory // (EXACT_BYTES_PER_BASE_DIM * self.d))
        self.tokens_per_batch = options.tokens_per_batch or max(1024, min(self.exact_limit, 1 << 18))
        if options.filter_len is not None and options.filter_len > embedder.max_seq_len:
            raise InputError(f"--filter-len {options.filter_len} exceeds the model's max_seq_len "
                             f"{embedder.max_seq_len}: the implicit filter is only defined up to it")

    # ---- planning
    def plan(self, length: int) -> Plan:
        """Exact when the record fits context and budget; partial past max_seq_len; streamed when too large."""
        k = self.opts.filter_len
        if k is None and length > self.emb.max_seq_len:
            k = self.emb.max_seq_len
        if k is not None and k >= length:
            k = None  # a filter as long as the record: the convolution is exact
        chunk = self.opts.chunk_size
        if chunk is None and length > self.exact_limit:
            chunk = self.choose_chunk(k or length)
        if chunk is not None and chunk >= length:
            chunk = None
        return Plan(k, chunk)

    def choose_chunk(self, filter_len: int) -> int:
        """Largest chunk whose activations plus the carried state fit the budget (overlap-save wants C >= K)."""
        n_layer = self.emb.config.n_layer
        state_bytes = n_layer * filter_len * self.d * (4 if self.emb.dtype == torch.float32 else 2)
        per_base = EXACT_BYTES_PER_BASE_DIM * self.d
        chunk = (self.max_memory - state_bytes) // per_base - filter_len  # the FFT spans history + chunk
        floor = 4096
        if chunk < floor:
            need = state_bytes + (filter_len + floor) * per_base
            log.warning("memory budget %.1f GiB is below the %.1f GiB a filter of %d taps needs; using chunks of %d",
                        self.max_memory / 2**30, need / 2**30, filter_len, floor)
            chunk = floor
        return int(1 << int(math.log2(chunk))) if chunk >= 2 * floor else int(chunk)

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

    def _alone(self, rec: Record) -> bool:
        """Records that run by themselves: partial/streamed plans, or more than half a batch."""
        return self.plan(rec.length) != Plan(None, None) or rec.length > self.tokens_per_batch // 2

    def _batches(self, records: Iterable[Record], skip) -> Iterator[list[Record]]:
        """Batches of short records, sorted by length within windows of the input; long records alone.

        Short records are collected into windows of up to ``SORT_WINDOW_BATCHES`` token budgets, sorted by length
        (ties in input order) and cut into batches of similar length, so mixed read lengths still batch well while
        only one window of records (not of outputs) is held. Everything is a function of the input alone:
        committed records included, a resumed run rebuilds exactly the batches (and therefore the arithmetic) of
        an uninterrupted one; fully committed batches are skipped.
        """
        window: list[Record] = []
        bases = 0
        for rec in records:
            if rec.length == 0:
                raise InputError(f"record {rec.id!r} ({rec.source}) has no sequence")
            if self._alone(rec):
                yield from self._sorted_batches(window, skip)
                window, bases = [], 0
                yield from self._keep([rec], skip)
                continue
            window.append(rec)
            bases += rec.length
            if bases >= SORT_WINDOW_BATCHES * self.tokens_per_batch or len(window) >= SORT_WINDOW_RECORDS:
                yield from self._sorted_batches(window, skip)
                window, bases = [], 0
        yield from self._sorted_batches(window, skip)

    def _sorted_batches(self, window: list[Record], skip) -> Iterator[list[Record]]:
        """Cut a window, sorted by length, into batches whose padding stays within 12.5% of the shortest."""
        batch: list[Record] = []
        lo = hi = 0
        for rec in sorted(window, key=lambda r: r.length):  # stable: equal lengths keep input order
            if batch:
                new_lo, new_hi = min(lo, rec.length), max(hi, rec.length)
                if new_hi > new_lo * 1.125 or new_hi * (len(batch) + 1) > self.tokens_per_batch:
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
        if len(batch) == 1 and self.plan(batch[0].length) != Plan(None, None):
            self._run_long(batch[0], sink)
            return
        try:
            rows = self._forward_batch(batch)
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
        for rec, per_layer in zip(batch, rows):
            if rec.id in self._skip:
                continue  # committed before an interruption; recomputed only because its batch was partial
            out = _RecordOutput(sink.begin(rec.id, rec.length, Plan(None, None).mode), self.opts, self.layers, self.d)
            for layer, rows in per_layer.items():
                out.add(layer, rows)
            out.commit()
            self._advance(rec.length)

    def _tokens(self, rec: Record, start: int = 0, end: int | None = None) -> torch.Tensor:
        return self.emb.tokenizer.encode(rec.sequence(start, end), record=rec.id, offset=start)

    def _forward_batch(self, batch: list[Record]) -> list[dict[int, np.ndarray]]:
        """One padded forward pass; returns each record's rows (length, d) per layer, fp32 numpy."""
        lengths = [r.length for r in batch]
        ids = self._padded([self._tokens(rec) for rec in batch])
        self.emb.model.set_convolution(None, self.opts.freq_keep)
        hidden = self._hidden(ids)
        rows = [{layer: h[i, :n] for layer, h in hidden.items()} for i, n in enumerate(lengths)]
        if self.opts.rc_average:
            # Each record reverse-complemented within its own length and padded *after* it again: flipping the
            # padded row would put the padding first, which changes a causal model's outputs.
            rc_ids = self._padded([_reverse_complement_ids(ids[i, :n]) for i, n in enumerate(lengths)])
            rc = self._hidden(rc_ids)
            for i, n in enumerate(lengths):
                for layer in self.layers:
                    rows[i][layer] = (rows[i][layer] + rc[layer][i, :n][::-1]) / 2
        return rows

    @staticmethod
    def _padded(token_rows: list[torch.Tensor]) -> torch.Tensor:
        ids = torch.full((len(token_rows), max(len(t) for t in token_rows)), 4, dtype=torch.long)  # [PAD] after
        for i, t in enumerate(token_rows):
            ids[i, :len(t)] = t
        return ids

    def _hidden(self, ids: torch.Tensor, stream: StreamState | None = None) -> dict[int, np.ndarray]:
        out = self.emb.hidden_states(ids, self.layers, stream)
        return {layer: out[layer].float().cpu().numpy() for layer in self.layers}

    def _advance(self, bases: int) -> None:
        self.progress.records += 1
        self.progress.bases += bases
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
                self._stream_record(rec, sink, Plan(plan.filter_len, chunk if chunk < rec.length else None))
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
        model = self.emb.model
        model.set_convolution(plan.filter_len, self.opts.freq_keep)
        if plan.filter_len is None and rec.length > self.emb.max_seq_len:
            raise SequenceTooLongError(f"record {rec.id!r} has {rec.length:,} bases > max_seq_len")
        try:
            chunk = plan.chunk_size or rec.length
            rc_rows = self._reverse_pass(rec, chunk) if self.opts.rc_average else None
            out = _RecordOutput(sink.begin(rec.id, rec.length, plan.mode), self.opts, self.layers, self.d)
            stream = StreamState.empty(model.config.n_layer)
            for start in range(0, rec.length, chunk):
                if self.should_stop():
                    raise Interrupted(f"interrupted inside record {rec.id!r}; rerun the same command to resume")
                end = min(rec.length, start + chunk)
                hidden = self._hidden(self._tokens(rec, start, end)[None], stream)
                for layer in self.layers:
                    rows = hidden[layer][0]
                    if rc_rows is not None:
                        rows = (rows + np.asarray(rc_rows[layer][start:end], np.float32)) / 2
                    out.add(layer, rows)
            out.commit()
            self._advance(rec.length)
        finally:
            model.set_convolution(None, self.opts.freq_keep)

    def _reverse_pass(self, rec: Record, chunk: int) -> dict[int, np.memmap]:
        """Stream the reverse complement, storing its rows (flipped back to forward coordinates) on disk.

        Averaging with the reverse strand needs, for forward chunk [s, e), reverse-pass outputs that a forward
        stream only reaches at its end; a float32 scratch file of L x d per layer holds them in between.
        """
        scratch_dir = os.environ.get("GENOCONV_SCRATCH") or tempfile.gettempdir()
        out = {}
        for layer in self.layers:
            fh = tempfile.NamedTemporaryFile(dir=scratch_dir, prefix="genoconv-rc-", suffix=".f32", delete=True)
            out[layer] = np.memmap(fh, dtype=np.float32, mode="w+", shape=(rec.length, self.d))
            out[layer]._genoconv_file = fh  # keep the file alive with the map
        stream = StreamState.empty(self.emb.model.config.n_layer)
        for end in range(rec.length, 0, -chunk):  # reverse strand read 5'->3' = forward coordinates descending
            start = max(0, end - chunk)
            ids = _reverse_complement_ids(self._tokens(rec, start, end)[None])
            hidden = self._hidden(ids, stream)
            for layer in self.layers:
                out[layer][start:end] = hidden[layer][0][::-1]
        return out


def _reverse_complement_ids(ids: torch.Tensor) -> torch.Tensor:
    return _COMPLEMENT_IDS.to(ids.device)[ids].flip(-1)


def default_memory_budget(device: torch.device) -> int:
    """Bytes for activations: 80% of free GPU memory, or a quarter of RAM (at most 8 GiB) on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 8 << 30
    return int(min(ram // 4, 8 << 30))
