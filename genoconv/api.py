"""The Python API for notebooks and scripts: :class:`Embedder`.

    from genoconv import Embedder
    emb = Embedder.from_pretrained()                      # the shipped default model (same names as --model)
    emb = Embedder.from_pretrained("hyenadna-tiny-1k", device="cuda", dtype="bfloat16")
    x = emb.embed("ACGTN...")        # numpy (L, d_model): final LayerNorm output, one row per base
    x = emb.embed(seq, layer=-2)     # any hidden state; negative indices count from the end
    for rid, arrays in emb.embed_many("genes.fa", pools=("mean", "max"), window=1000): ...
    emb.embed_file(["genes.fa"], "genes.h5", per_nucleotide=False)   # what `genoconv embed` does

Options are those of ``genoconv embed`` (:mod:`genoconv.options`), spelled as keyword arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence


from .errors import InputError
from .model.embedder import LoadedModel
from .options import ReadOptions, parse_bytes, split_options

__all__ = ["Embedder"]


class Embedder(LoadedModel):
    """A HyenaDNA model ready to embed DNA (see the module docstring for the calls)."""

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, *, device: str = "auto",
                        dtype: str = "float32", tokenizer: str = "clean", shift: float | None = None,
                        max_memory: int | str | None = None) -> "Embedder":
        """Load a model by name (``genoconv models list``; default: the shipped ``genoconv-demo``) or from a
        checkpoint directory (``-hf`` or original layout), as ``--model`` does. Never touches the network: an
        official model must be in the Hugging Face cache (``genoconv models download NAME``).
        ``genoconv.resolve_model(name)`` gives the checkpoint directory a name stands for."""
        from .model.registry import DEFAULT_MODEL, resolve_model

        name = DEFAULT_MODEL if name_or_path is None else os.fspath(name_or_path)
        path = resolve_model(name)
        return cls.from_checkpoint(path, device=device, dtype=dtype, tokenizer=tokenizer, shift=shift, name=name,
                                   max_memory=parse_bytes(max_memory))

    # ---- one sequence
    def embed(self, seq: str, layer: int = -1, *, record: str = "sequence", as_tensor: bool = False, **options):
        """Per-nucleotide embedding (len(seq), d_model) float32 of one layer (default: final LayerNorm output).

        Runs the same plan as ``genoconv embed``: a sequence longer than ``max_seq_len`` gets a partial convolution
        (logged once) and a long one is streamed within the memory budget. ``as_tensor=True`` returns a torch tensor
        on the model's device (no host copy); ``options``: ``filter_len``, ``chunk_size``, ``freq_keep``,
        ``max_memory``, ``rc_average`` as for :meth:`embed_many`.
        """
        from .engine import Engine, MemorySink
        from .io import Record

        resolved, = self.resolve_layers([layer])  # --layer's check: the same InputError for a layer the model lacks
        if len(seq) == 0:
            raise InputError(f"record {record!r} is empty")
        if "layers" in options:
            raise InputError("embed returns one layer: pass layer=N (embed_many and embed_file take layers=[...])")
        embed, _, _ = split_options({"layers": (resolved,), "pools": (), "per_nucleotide": True, **options})
        engine = Engine(self, embed)
        sink = MemorySink(keep_tensors=as_tensor)
        engine.run([Record.from_sequence(record, seq)], sink)
        (_, arrays), = sink.drain()
        return arrays["per_nucleotide"][resolved]

    def bits_per_base(self, seq: str, *, record: str = "sequence") -> float:
        """Next-base cross-entropy of ``seq`` in bits per base (uniform = 2.0; see :mod:`genoconv.model.likelihood`)."""
        from .model.likelihood import bits_per_base

        if not seq:
            raise InputError(f"record {record!r} is empty")
        return bits_per_base(self.model, self.tokenizer.encode(seq, record=record)).bits_per_base

    # ---- many records
    def embed_many(self, records_or_path, **options) -> Iterator[tuple[str, dict]]:
        """Yield ``(id, arrays)`` per record as records finish (input order, except that short records are
        sorted by length within blocks of the input for batching; see :mod:`genoconv.engine`).

        ``records_or_path``: a path (or list of paths) that :func:`genoconv.io.open_records` reads, an iterable
        of ``(id, sequence)`` pairs, or of :class:`genoconv.io.Record`; with ``reference`` and ``regions`` the
        regions' records follow them (``None`` or ``[]``: the regions alone), as in ``genoconv embed``.
        ``options``: any field of
        :class:`~genoconv.options.EmbedOptions` (``layers``, ``pools``, ``window``, ``filter_len`` ...) or of
        :class:`~genoconv.options.ReadOptions` (``reference``, ``regions`` ...). ``arrays`` holds
        ``"per_nucleotide"`` {layer: (L, d)}, ``"pooled"`` {(mode, layer): (d,)}, ``"windowed"`` {layer: (n, d)}
        (layers as absolute indices), ``"mode"`` (how the record was computed) and ``"coords"`` (where it lies on
        the reference, :class:`genoconv.coords.Coords`, or None).
        """
        from .engine import Engine, MemorySink

        embed, read, store = split_options(options)
        if store != type(store)():
            raise InputError("embed_many keeps results in memory: store options (store_dtype, compression, "
                             "commit_interval, overwrite) belong to embed_file")
        engine = Engine(self, embed)
        sink = MemorySink()
        for _ in engine.run_iter(_as_records(records_or_path, read), sink):
            yield from sink.drain()

    def embed_file(self, inputs: Sequence[str | Path] | str | Path, output: str | Path, **options):
        """Embed ``inputs`` into one HDF5 file ``output``: what ``genoconv embed`` does (see genoconv.runner).
        ``options``: any field of the :mod:`genoconv.options` dataclasses."""
        from .runner import embed_to_file

        embed, read, store = split_options(options)
        inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        return embed_to_file(self, inputs, output, options=embed, read=read, store=store)


def _as_records(records_or_path, read: ReadOptions):
    """Records as ``genoconv embed`` reads them: files through open_records; in-memory pairs as they are, followed
    by the ``regions`` of ``reference`` when given (as the CLI's FASTA inputs are); ``None`` is no inputs."""
    import itertools

    from .io import Record, open_records

    if isinstance(records_or_path, (str, Path)):
        return open_records([records_or_path], **read.as_kwargs())
    items = [] if records_or_path is None else records_or_path
    items = list(items) if not isinstance(items, Iterator) else items
    if isinstance(items, list) and all(isinstance(x, (str, Path)) for x in items) and (items or read.regions):
        return open_records(items, **read.as_kwargs())
    pairs = _unique((x if isinstance(x, Record) else Record.from_sequence(str(x[0]), str(x[1])) for x in items))
    if read.regions is not None:
        return itertools.chain(pairs, open_records([], **read.as_kwargs()))
    file_only = sorted(k for k, v in read.as_kwargs().items() if k != "reference" and v != getattr(ReadOptions(), k))
    if file_only:  # they select or rename records read from files; given with in-memory pairs they would do nothing
        raise InputError(f"embed_many: {', '.join(file_only)} apply to records read from files (or --regions), not to "
                         "in-memory (id, sequence) pairs")
    return pairs


def _unique(records):
    """In-memory records with unique ids, as files must have (results are keyed by id: a repeat would be lost)."""
    seen: dict[str, int] = {}
    for ordinal, record in enumerate(records, 1):
        if record.id in seen:
            raise InputError(f"duplicate record id {record.id!r}: records {seen[record.id]} and {ordinal} of the "
                             "records given (ids must be unique)")
        seen[record.id] = ordinal
        yield record
