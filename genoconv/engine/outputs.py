"""What the engine emits per record: sinks (the HDF5 store, or memory for the Python API) and the accumulators that
turn rows into pooled vectors and windowed means on the fly (fp64 sums), so no record is ever held whole."""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

from ..options import EmbedOptions


class RecordSink(Protocol):
    def append(self, layer: int, rows: np.ndarray) -> None: ...
    def append_windows(self, layer: int, rows: np.ndarray) -> None: ...
    def commit(self, pooled: dict[tuple[str, int], np.ndarray]) -> None: ...
    def abort(self) -> None: ...


class Sink(Protocol):
    # coords: the record's Record.coords (contig, start, end, strand) or None, passed through as it is.
    def begin(self, record_id: str, length: int, mode: str, coords: tuple | None = None) -> RecordSink: ...


class _Numpy:
    """Accumulator arithmetic on the host: numpy's fp64 sums cast block by block (torch's CPU sum with an fp64
    dtype first copies the whole input to fp64: 7x slower and 258 MB more for one 262K x 128 chunk)."""

    @staticmethod
    def rows(x):
        return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    @staticmethod
    def zeros(d, like):
        return np.zeros(d, np.float64)

    @staticmethod
    def full(d, value, like):
        return np.full(d, value, np.float32)

    @staticmethod
    def sum64(rows):
        return rows.sum(0, dtype=np.float64)

    @staticmethod
    def window_sums(rows, window):
        return rows.reshape(-1, window, rows.shape[-1]).sum(1, dtype=np.float64)

    @staticmethod
    def maximum_(acc, rows):
        np.maximum(acc, rows.max(0), out=acc)

    @staticmethod
    def host(x, dtype=np.float32):
        with np.errstate(over="ignore"):  # values past float16 become inf, which the sink reports by record
            return np.asarray(x, dtype=dtype)

    @classmethod
    def host_pieces(cls, x, dtype=np.float32) -> Iterator[np.ndarray]:
        yield cls.host(x, dtype)


class _Torch:
    """The same arithmetic on the model's device (CUDA): only pooled vectors, windows and the rows a sink stores
    cross to the host, not every hidden state (a 2 Mbp chunk of a d = 256 model is 2 GB of fp32)."""

    @staticmethod
    def rows(x):
        return x

    @staticmethod
    def zeros(d, like):
        return torch.zeros(d, dtype=torch.float64, device=like.device)

    @staticmethod
    def full(d, value, like):
        return torch.full((d,), value, dtype=torch.float32, device=like.device)

    @staticmethod
    def sum64(rows):
        return rows.sum(0, dtype=torch.float64)

    @staticmethod
    def window_sums(rows, window):
        return rows.reshape(-1, window, rows.shape[-1]).sum(1, dtype=torch.float64)

    @staticmethod
    def maximum_(acc, rows):
        torch.maximum(acc, rows.amax(0), out=acc)

    @staticmethod
    def host(x, dtype=np.float32):
        """To the host through page-locked memory: on the H200 VMs a pageable device-to-host copy ran at 0.75 GB/s
        (1.36 s of a 1.46 s ``Embedder.embed`` of 1 Mbp); pinned buffers come from torch's caching host allocator."""
        x = x.to(_TORCH_DTYPES[np.dtype(dtype)])
        out = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        out.copy_(x, non_blocking=True)
        torch.cuda.current_stream(x.device).synchronize()
        return out.numpy()

    @staticmethod
    def host_pieces(x, dtype=np.float32) -> Iterator[np.ndarray]:
        """:meth:`host` for a record's per-nucleotide rows: consecutive row blocks of at most ``HOST_PIECE_BYTES``,
        each in its own page-locked buffer, the next block's copy under way while the caller takes this one. Pinning
        is what a first call pays for (torch's host allocator keeps the blocks for later calls): one buffer for a
        DMD-sized record (2.2M x 256 fp32 rows, 2.3 GB) took 1.6 s of a first ``Embedder.embed`` on an H100 host
        (tools/cold_start.py), where the whole later call takes 0.46 s. A piece stays valid while the caller holds it
        (the HDF5 writer keeps pieces until its chunk is full): a freed block is reused only after its copy is done."""
        x = x.to(_TORCH_DTYPES[np.dtype(dtype)])
        n = x.shape[0]
        row_bytes = x[0].numel() * x.element_size() if n else 1
        step = max(1, HOST_PIECE_BYTES // max(1, row_bytes))
        stream = torch.cuda.current_stream(x.device)

        def start(i: int):
            out = torch.empty((min(step, n - i), *x.shape[1:]), dtype=x.dtype, pin_memory=True)
            out.copy_(x[i:i + step], non_blocking=True)
            done = torch.cuda.Event()
            done.record(stream)
            return out, done

        pending = start(0)
        for i in range(0, max(n, 1), step):
            out, done = pending
            if i + step < n:
                pending = start(i + step)
            done.synchronize()
            yield out.numpy()


# Largest page-locked block one copy of per-nucleotide rows to the host takes (_Torch.host_pieces).
HOST_PIECE_BYTES = 64 << 20


_TORCH_DTYPES = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
                 np.dtype(np.float64): torch.float64}


def array_ops(rows) -> type:
    """Where accumulators compute for these rows: on the device for CUDA tensors, in numpy otherwise."""
    return _Torch if isinstance(rows, torch.Tensor) and rows.is_cuda else _Numpy


class Pools:
    """Running mean (fp64 sum), max and last row of one layer."""

    def __init__(self, modes: Sequence[str], d: int, ops: type = _Numpy, like=None):
        self.modes, self.count, self.ops = modes, 0, ops
        self.sum = ops.zeros(d, like)
        self.max = ops.full(d, -np.inf, like)
        self.last = ops.full(d, 0.0, like)

    def update(self, rows) -> None:
        if len(rows) == 0:
            return
        self.count += len(rows)
        if "mean" in self.modes:
            self.sum += self.ops.sum64(rows)
        if "max" in self.modes:
            self.ops.maximum_(self.max, rows)
        if "last" in self.modes:
            self.last = rows[-1].copy() if isinstance(rows, np.ndarray) else rows[-1].clone()

    def result(self) -> dict[str, np.ndarray]:
        host = self.ops.host
        out = {"mean": lambda: host(self.sum / max(1, self.count)), "max": lambda: host(self.max),
               "last": lambda: host(self.last)}
        return {m: out[m]() for m in self.modes}


def batch_pools(hidden, lengths: Sequence[int], modes: Sequence[str]) -> dict[str, np.ndarray]:
    """Pooled vectors of every record of a padded batch at once: ``hidden`` (B, L, d) fp32 rows of one layer (record i
    in its first ``lengths[i]`` positions; a CUDA tensor, a CPU tensor or an array, modified in place), the same
    arithmetic as :class:`Pools` (fp64 sums; max; last row), (B, d) float32 host arrays per mode.

    A batch of reads is thousands of records per forward pass: per record, the running pools cost ~10 small kernels
    and a device-to-host synchronisation on a GPU, far more than the model itself; here a batch costs a few kernels
    and one copy (the caller stacks layers and modes into it, see :func:`host_stack`)."""
    ops = array_ops(hidden)
    x = ops.rows(hidden)
    batch, length = x.shape[0], x.shape[1]
    n = np.asarray(lengths, dtype=np.int64)
    if ops is _Torch:
        n = torch.as_tensor(n, device=x.device)
        pad = torch.arange(length, device=x.device)[None, :] >= n[:, None]
        first, f64 = torch.arange(batch, device=x.device), torch.float64
    else:
        pad = np.arange(length)[None, :] >= n[:, None]
        first, f64 = np.arange(batch), np.float64
    out = {}
    if "last" in modes:  # before the padding is overwritten
        out["last"] = x[first, n - 1]
    if "mean" in modes:
        x[pad] = 0.0
        out["mean"] = x.sum(1, dtype=f64) / n[:, None]
    if "max" in modes:
        x[pad] = -np.inf
        out["max"] = x.amax(1) if ops is _Torch else x.max(1)
    return {m: out[m] for m in modes}


def host_stack(parts: Sequence, ops: type) -> list[np.ndarray]:
    """Arrays (each (B, d)) to float32 host arrays in one device-to-host copy."""
    if ops is _Torch:
        return list(ops.host(torch.stack([p.to(torch.float32) for p in parts])))
    return [np.asarray(p, dtype=np.float32) for p in parts]


class Windows:
    """Means over consecutive windows of W bases (the last one partial), emitted as they complete."""

    def __init__(self, window: int, d: int, ops: type = _Numpy, like=None):
        self.window, self.d, self.ops = window, d, ops
        self.sum = ops.zeros(d, like)
        self.filled = 0

    def update(self, rows) -> np.ndarray:
        """Rows of the windows these rows complete, (n, d) float32 on the host."""
        done = []
        i, n, w = 0, len(rows), self.window
        if self.filled:
            take = min(w - self.filled, n)
            self.sum += self.ops.sum64(rows[:take])
            self.filled += take
            i = take
            if self.filled == w:
                done.append(self.ops.host(self.sum / w)[None])
                self.sum = self.sum * 0
                self.filled = 0
        whole = (n - i) // w
        if whole:
            done.append(self.ops.host(self.ops.window_sums(rows[i:i + whole * w], w) / w))
            i += whole * w
        if i < n:
            self.sum += self.ops.sum64(rows[i:])
            self.filled = n - i
        return np.concatenate(done) if done else np.zeros((0, self.d), np.float32)

    def finish(self) -> np.ndarray:
        if self.filled == 0:
            return np.zeros((0, self.d), np.float32)
        return self.ops.host(self.sum / self.filled)[None]


class RecordOutput:
    """Everything one record emits, fed rows in order: per-nucleotide rows, running pools, completed windows.

    Rows may be CUDA tensors: pools and windows then accumulate on the device, and only what the sink keeps crosses
    to the host (per-nucleotide rows already in the sink's storage dtype, halving the bytes for float16 stores).
    """

    def __init__(self, writer: RecordSink, opts: EmbedOptions, layers: Sequence[int], d: int):
        self.writer, self.opts, self.layers, self.d = writer, opts, layers, d
        self.pools: dict[int, Pools] | None = None
        self.windows: dict[int, Windows] | None = None
        self.row_dtype = np.dtype(getattr(writer, "row_dtype", np.float32))

    def _start(self, rows) -> None:
        ops = array_ops(rows)
        self.pools = {layer: Pools(self.opts.pools, self.d, ops, rows) for layer in self.layers}
        if self.opts.window:
            self.windows = {layer: Windows(self.opts.window, self.d, ops, rows) for layer in self.layers}

    # ---- checkpoints of a long record (the store keeps them; see EmbeddingWriter.resume)
    def state(self) -> dict[str, np.ndarray]:
        """The running accumulators as host arrays: pooled sums/max/last and the open window, per layer."""
        out: dict[str, np.ndarray] = {}
        for layer, pool in (self.pools or {}).items():
            host = pool.ops.host
            out[f"pool/{layer}/count"] = np.asarray(pool.count, dtype=np.int64)
            out[f"pool/{layer}/sum"] = host(pool.sum, np.float64)
            out[f"pool/{layer}/max"] = host(pool.max)
            out[f"pool/{layer}/last"] = host(pool.last)
        for layer, win in (self.windows or {}).items():
            out[f"win/{layer}/sum"] = win.ops.host(win.sum, np.float64)
            out[f"win/{layer}/filled"] = np.asarray(win.filled, dtype=np.int64)
        return out

    def restore(self, state: dict[str, np.ndarray], device) -> None:
        """Continue from :meth:`state` (accumulators placed where the model computes: ``device``)."""
        like = torch.empty(0, device=device)
        self._start(like if like.is_cuda else np.zeros((0, self.d), np.float32))
        put = (lambda a: torch.as_tensor(np.array(a), device=device)) if like.is_cuda else np.array
        for layer, pool in self.pools.items():
            if f"pool/{layer}/count" not in state:
                continue  # the checkpoint came before this record's first rows
            pool.count = int(state[f"pool/{layer}/count"])
            pool.sum, pool.max = put(state[f"pool/{layer}/sum"]), put(state[f"pool/{layer}/max"])
            pool.last = put(state[f"pool/{layer}/last"])
        for layer, win in (self.windows or {}).items():
            if f"win/{layer}/sum" in state:
                win.sum, win.filled = put(state[f"win/{layer}/sum"]), int(state[f"win/{layer}/filled"])

    def checkpoint(self, extra: Callable[[], dict[str, np.ndarray]], position: int, force: bool = False) -> bool:
        """Hand the sink a checkpoint at base ``position`` (the accumulators and ``extra()``, e.g. a stream's
        carried state) when it keeps them and one is due by its own interval, or ``force``; returns whether one
        was made."""
        due = getattr(self.writer, "checkpoint_due", None)
        if due is None or not (force or due()):
            return False
        self.writer.checkpoint({**self.state(), **extra()}, position)
        return True

    def add(self, layer: int, rows) -> None:
        """The next rows (n, d) of ``layer``: a numpy array, a CPU tensor or a CUDA tensor (fp32)."""
        if self.pools is None:
            self._start(rows)
        ops = self.pools[layer].ops
        if self.opts.per_nucleotide and getattr(self.writer, "keeps_tensors", False) and isinstance(rows, torch.Tensor):
            self.writer.append(layer, rows)  # the caller asked for tensors where the model made them
            rows = ops.rows(rows)
        else:
            rows = ops.rows(rows)
            if self.opts.per_nucleotide:
                for piece in ops.host_pieces(rows, self.row_dtype):
                    self.writer.append(layer, piece)
        self.pools[layer].update(rows)
        if self.windows is not None:
            self.writer.append_windows(layer, self.windows[layer].update(rows))

    def abort(self) -> None:
        """Drop what this record wrote (an out-of-memory retry restarts it with a smaller plan)."""
        self.writer.abort()

    def commit(self) -> None:
        if self.pools is None:
            self._start(np.zeros((0, self.d), np.float32))
        if self.windows is not None:
            for layer, win in self.windows.items():
                self.writer.append_windows(layer, win.finish())
        self.writer.commit({(m, layer): v for layer, p in self.pools.items() for m, v in p.result().items()})


def _copy_float32(rows, out: np.ndarray) -> None:
    """``out[...] = rows`` as float32, by torch's multi-threaded CPU copy: numpy's copies on one thread, 263 ms of a
    400 ms ``Embedder.embed`` of 1 Mbp on an H100 host (1 GB of fp32 rows; the GPU's own work was 110 ms)."""
    if isinstance(rows, np.ndarray) and not (rows.flags.writeable and rows.flags.c_contiguous):
        out[...] = rows  # torch views only writable, positively strided arrays
        return
    torch.from_numpy(out).copy_(torch.as_tensor(rows))


class _MemoryRecord:
    def __init__(self, sink: "MemorySink", record_id: str, length: int, mode: str, coords: tuple | None):
        self.sink, self.id, self.length, self.mode, self.coords = sink, record_id, length, mode, coords
        self.rows: dict[int, list] = {}
        self.filled: dict[int, int] = {}  # rows written so far into each layer's array (numpy rows only)
        self.windows: dict[int, list[np.ndarray]] = {}
        self.keeps_tensors = sink.keep_tensors

    def append(self, layer: int, rows) -> None:
        if self.keeps_tensors:  # rows stay where the model computed them (no host copy); chunks are views to keep
            self.rows.setdefault(layer, []).append(rows)
            return
        # Copied (the rows may view a page-locked block that the host allocator hands out again) into one float32
        # array per layer, allocated at the record's length: the pieces of a chunk and the chunks of a streamed
        # record need no concatenation at the end (a second copy of the whole record).
        rows = np.asarray(rows) if not isinstance(rows, torch.Tensor) else rows
        if layer not in self.rows:
            self.rows[layer] = [np.empty((self.length, rows.shape[-1]), np.float32)]
            self.filled[layer] = 0
        whole, at = self.rows[layer][0], self.filled[layer]
        if at + len(rows) > self.length:
            raise ValueError(f"record {self.id!r}: more than {self.length} per-nucleotide rows for layer {layer}")
        _copy_float32(rows, whole[at:at + len(rows)])
        self.filled[layer] = at + len(rows)

    def append_windows(self, layer: int, rows: np.ndarray) -> None:
        self.windows.setdefault(layer, []).append(np.array(rows, np.float32))

    def abort(self) -> None:
        self.rows.clear()
        self.filled.clear()
        self.windows.clear()

    def commit(self, pooled: dict) -> None:
        join = torch.cat if self.keeps_tensors else np.concatenate
        self.sink.done.append((self.id, {
            "per_nucleotide": {k: (v[0] if len(v) == 1 else join(v))[:self.filled.get(k)]
                               for k, v in self.rows.items()},
            "pooled": dict(pooled),
            "windowed": {k: np.concatenate(v) for k, v in self.windows.items()},
            "mode": self.mode,
            "coords": self.coords,
        }))


class MemorySink:
    """Collects committed records in memory (the Python API). ``keep_tensors``: per-nucleotide rows stay torch
    tensors on the model's device (``Embedder.embed(..., as_tensor=True)``), else float32 numpy arrays."""

    def __init__(self, keep_tensors: bool = False):
        self.done: list[tuple[str, dict]] = []
        self.keep_tensors = keep_tensors

    def begin(self, record_id: str, length: int, mode: str, coords: tuple | None = None) -> _MemoryRecord:
        return _MemoryRecord(self, record_id, length, mode, coords)

    def drain(self) -> Iterator[tuple[str, dict]]:
        done, self.done = self.done, []
        yield from done
