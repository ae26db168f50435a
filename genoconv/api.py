"""The Python API: :class:`Embedder` wraps a loaded model, its tokenizer and the device/dtype choice.

The CLI is a thin shell over this class; notebooks use it directly::

    from genoconv import Embedder
    emb = Embedder.from_pretrained("path/to/checkpoint_dir", device="cpu", dtype="float32")
    x = emb.embed("ACGTN...")        # numpy (L, d_model): final LayerNorm output, one row per base
    x = emb.embed(seq, layer=-2)     # any hidden state; negative indices count from the end
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from .errors import InputError, SequenceTooLongError
from .model import HyenaDNA, Tokenizer
from .model.checkpoint import CheckpointInfo, load_checkpoint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else the CPU; ``cuda[:i]`` must exist."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device is available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise InputError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    return dev


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise InputError(f"--dtype {dtype!r}: expected float32, bfloat16 or float16") from None


class Embedder:
    """A HyenaDNA model ready to embed DNA: tokenizer, device, compute dtype and provenance in one place."""

    def __init__(self, model: HyenaDNA, *, name: str = "model", info: CheckpointInfo | None = None,
                 device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                 tokenizer: str = "clean"):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.model = model.to(self.device).eval()
        self.model.set_compute_dtype(self.dtype)
        self.tokenizer = Tokenizer(tokenizer)
        self.name = name
        self.info = info

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "auto", dtype: str = "float32",
                        tokenizer: str = "clean", shift: float | None = None) -> "Embedder":
        """Load a checkpoint directory (``-hf`` or original layout)."""
        model, info = load_checkpoint(path, shift=shift)
        return cls(model, name=Path(path).name, info=info, device=device, dtype=dtype, tokenizer=tokenizer)

    # ---- properties -----------------------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def d_model(self) -> int:
        return self.model.config.d_model

    @property
    def max_seq_len(self) -> int:
        return self.model.config.max_seq_len

    def resolve_layers(self, layers: Sequence[int]) -> list[int]:
        try:
            return sorted({self.model.resolve_layer(i) for i in layers})
        except IndexError as exc:
            raise InputError(f"--layer: {exc}") from None

    # ---- embedding ------------------------------------------------------------------------------------------
    def _check_length(self, length: int, record: str) -> None:
        if length > self.max_seq_len and self.model.backbone.layers[0].mixer.filter_len is None:
            raise SequenceTooLongError(
                f"record {record!r} has {length:,} bases, more than the model's max_seq_len "
                f"{self.max_seq_len:,}; embed it with a partial convolution (--filter-len) or split it")

    @torch.inference_mode()
    def hidden_states(self, ids: torch.Tensor, layers: Sequence[int], stream=None) -> dict[int, torch.Tensor]:
        """Hidden states (B, L, d) fp32 on the model's device for token ids (B, L); ``stream`` continues a
        :class:`~genoconv.model.hyena.StreamState` (the next chunk of a long record)."""
        return self.model.hidden_states(ids.to(self.device), layers, stream)

    def embed(self, seq: str, layer: int = -1, *, record: str = "sequence") -> np.ndarray:
        """Per-nucleotide embedding (len(seq), d_model) float32 of one layer (default: final LayerNorm output)."""
        if len(seq) == 0:
            raise InputError(f"record {record!r} is empty")
        self._check_length(len(seq), record)
        ids = self.tokenizer.encode(seq, record=record)[None]
        resolved = self.model.resolve_layer(layer)
        return self.hidden_states(ids, (resolved,))[resolved][0].float().cpu().numpy()

    def bits_per_base(self, seq: str, *, record: str = "sequence") -> float:
        """Next-base cross-entropy of ``seq`` in bits per base (uniform = 2.0; see :mod:`genoconv.likelihood`)."""
        from .likelihood import bits_per_base

        return bits_per_base(self.model, self.tokenizer.encode(seq, record=record)).bits_per_base

    # ---- many records --------------------------------------------------------------------------------------
    def embed_many(self, records_or_path, *, layers: Sequence[int] = (-1,), per_nucleotide: bool = True,
                   pools: Sequence[str] = ("mean",), window: int | None = None, rc_average: bool = False,
                   filter_len: int | None = None, chunk_size: int | None = None, freq_keep: float = 1.0,
                   max_memory: int | None = None, **read_options) -> Iterator[tuple[str, dict]]:
        """Yield ``(id, arrays)`` per record as records finish (input order, except that short records are
        sorted by length within windows of the input for batching; see :mod:`genoconv.engine`).

        ``records_or_path``: a path (or list of paths) that :func:`genoconv.io.open_records` reads, an iterable
        of ``(id, sequence)`` pairs, or of :class:`genoconv.io.Record`. ``arrays`` holds
        ``"per_nucleotide"`` {layer: (L, d)}, ``"pooled"`` {(mode, layer): (d,)}, ``"windowed"`` {layer: (n, d)}
        (layers as absolute indices) and ``"mode"`` (how the record was computed).
        """
        from .engine import EmbedOptions, Engine

        opts = EmbedOptions(layers=tuple(layers), per_nucleotide=per_nucleotide, pools=tuple(pools), window=window,
                            rc_average=rc_average, filter_len=filter_len, chunk_size=chunk_size,
                            freq_keep=freq_keep, max_memory=max_memory)
        engine = Engine(self, opts)
        sink = _MemorySink()
        for _ in engine.run_iter(_as_records(records_or_path, read_options), sink):
            yield from sink.drain()

    def embed_file(self, inputs, output: str | Path, **options):
        """Embed ``inputs`` into one HDF5 file ``output``: what ``genoconv embed`` does (see genoconv.runner)."""
        from .runner import embed_to_file

        return embed_to_file(self, inputs, output, **options)


def _as_records(records_or_path, read_options: dict):
    from .io import Record, open_records

    if isinstance(records_or_path, (str, Path)):
        return open_records([records_or_path], **read_options)
    items = list(records_or_path) if not isinstance(records_or_path, Iterator) else records_or_path
    if isinstance(items, list) and items and all(isinstance(x, (str, Path)) for x in items):
        return open_records(items, **read_options)
    return (x if isinstance(x, Record) else Record.from_sequence(str(x[0]), str(x[1])) for x in items)


class _MemoryRecord:
    def __init__(self, sink: "_MemorySink", record_id: str, length: int, mode: str):
        self.sink, self.id, self.length, self.mode = sink, record_id, length, mode
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
        }))


class _MemorySink:
    """Collects committed records for :meth:`Embedder.embed_many`."""

    def __init__(self):
        self.done: list[tuple[str, dict]] = []

    def begin(self, record_id: str, length: int, mode: str) -> _MemoryRecord:
        return _MemoryRecord(self, record_id, length, mode)

    def drain(self) -> Iterator[tuple[str, dict]]:
        done, self.done = self.done, []
        yield from done
