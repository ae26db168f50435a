"""What the engine emits per record: sinks (the HDF5 store, or memory for the Python API) and the accumulators that
turn rows into pooled vectors and windowed means on the fly (fp64 sums), so no record is ever held whole."""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence

import numpy as np

from ..options import EmbedOptions


class RecordSink(Protocol):
    def append(self, layer: int, rows: np.ndarray) -> None: ...
    def append_windows(self, layer: int, rows: np.ndarray) -> None: ...
    def commit(self, pooled: dict[tuple[str, int], np.ndarray]) -> None: ...


class Sink(Protocol):
    # coords: the record's Record.coords (contig, start, end, strand) or None, passed through as it is.
    def begin(self, record_id: str, length: int, mode: str, coords: tuple | None = None) -> RecordSink: ...


class Pools:
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


class Windows:
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


class RecordOutput:
    """Everything one record emits, fed rows in order: per-nucleotide rows, running pools, completed windows."""

    def __init__(self, writer: RecordSink, opts: EmbedOptions, layers: Sequence[int], d: int):
        self.writer, self.opts = writer, opts
        self.pools = {layer: Pools(opts.pools, d) for layer in layers}
        self.windows = {layer: Windows(opts.window, d) for layer in layers} if opts.window else None

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


class _MemoryRecord:
    def __init__(self, sink: "MemorySink", record_id: str, length: int, mode: str, coords: tuple | None):
        self.sink, self.id, self.length, self.mode, self.coords = sink, record_id, length, mode, coords
        self.rows: dict[int, list[np.ndarray]] = {}
        self.windows: dict[int, list[np.ndarray]] = {}

    def append(self, layer: int, rows: np.ndarray) -> None:
        self.rows.setdefault(layer, []).append(np.array(rows, np.float32))

    def append_windows(self, layer: int, rows: np.ndarray) -> None:
        self.windows.setdefault(layer, []).append(np.array(rows, np.float32))

    def commit(self, pooled: dict) -> None:
        self.sink.done.append((self.id, {
            "per_nucleotide": {k: np.concatenate(v) for k, v in self.rows.items()},
            "pooled": dict(pooled),
            "windowed": {k: np.concatenate(v) for k, v in self.windows.items()},
            "mode": self.mode,
            "coords": self.coords,
        }))


class MemorySink:
    """Collects committed records in memory (the Python API's ``embed_many``)."""

    def __init__(self):
        self.done: list[tuple[str, dict]] = []

    def begin(self, record_id: str, length: int, mode: str, coords: tuple | None = None) -> _MemoryRecord:
        return _MemoryRecord(self, record_id, length, mode, coords)

    def drain(self) -> Iterator[tuple[str, dict]]:
        done, self.done = self.done, []
        yield from done
