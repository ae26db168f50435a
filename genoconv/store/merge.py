"""Merging: combine the shard outputs of one sharded run into one file with the store's layout.

Checks before writing anything: every shard is complete, all come from the same model and options (their
``run_config`` differs only in the shard number), they are distinct shards of one split, and no record id
appears twice. Record order is stable: shard 1's records in their order, then shard 2's, and so on.

Two modes: copy (default; rows are replayed through the ordinary crash-safe writer, so an interrupted merge
resumes) or ``--virtual`` (HDF5 virtual datasets that map the shards' rows without copying them; the shard files
must stay where they are).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from genoconv.errors import InputError, Interrupted
from genoconv.store.hdf5 import abandon, fsync_dir, fsync_path, is_complete, now, out_of_space, unlink
from genoconv.store.journal import journal_path
from genoconv.store.layout import (UTF8, StoreSpec, canonical_run_config, check_free_space, estimate_bytes, n_windows,
                                   write_attrs, write_coords)
from genoconv.store.lock import OutputLock, active_writer
from genoconv.store.reader import EmbeddingsFile, open_embeddings
from genoconv.store.writer import EmbeddingWriter, space_needed

log = logging.getLogger("genoconv.merge")
ROW_BLOCK = 1 << 18  # rows copied per read: bounded memory even for a chromosome-sized record


def _run_config(f) -> dict:
    rc = f.provenance.get("run_config", "{}")
    return json.loads(rc) if isinstance(rc, str) else dict(rc)


def check_shards(paths: list[Path]):
    """Open the shards, validate them, and return the open readers sorted by shard number."""
    if not paths:
        raise InputError("merge: no shard files given")
    readers = []
    try:
        for path in paths:
            if not Path(path).exists():
                raise InputError(f"merge: {path}: no such file")
            f = open_embeddings(path)
            readers.append(f)
            if not f.complete:
                if (writer := active_writer(path)) is not None:
                    raise InputError(f"merge: {path} is still being written ({writer}); merge when its run has "
                                     "finished")
                raise InputError(f"merge: {path} is incomplete (an interrupted run); rerun its genoconv embed "
                                 "command to finish it, then merge")
        configs = [_run_config(f) for f in readers]
        shards = [tuple(c.get("shard") or (1, 1)) for c in configs]
        base = {k: v for k, v in configs[0].items() if k != "shard"}
        for path, cfg in zip(paths[1:], configs[1:]):
            other = {k: v for k, v in cfg.items() if k != "shard"}
            if other != base:
                diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
                raise InputError(f"merge: {path} was made with different model/options than {paths[0]} "
                                 f"({', '.join(diff)} differ)")
        counts = {n for _, n in shards}
        if len(counts) != 1:
            raise InputError(f"merge: shards come from different splits (n = {sorted(counts)})")
        if len(set(shards)) != len(shards):
            dup = next(s for s in shards if shards.count(s) > 1)
            raise InputError(f"merge: shard {dup[0]}/{dup[1]} given twice")
        n = counts.pop()
        missing = sorted(set(range(1, n + 1)) - {i for i, _ in shards})
        if missing:
            raise InputError(f"merge: shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing")
        seen: dict[str, Path] = {}
        for path, f in zip(paths, readers):
            for rid in f.ids:
                if rid in seen:
                    raise InputError(f"merge: record {rid!r} is in both {seen[rid]} and {path}")
                seen[rid] = path
        order = sorted(range(len(readers)), key=lambda i: shards[i][0])
        return [paths[i] for i in order], [readers[i] for i in order], base
    except BaseException:
        for f in readers:
            f.close()
        raise


def merge(paths: list[Path], output: Path, *, virtual: bool = False, overwrite: bool = False,
          command_line: str | None = None, stop: Callable[[], str | None] | None = None) -> int:
    """Merge shard files into ``output``; returns the number of records. Holds the output's lock throughout.
    ``command_line`` (default: this process's) is the merged file's; each shard's own is kept in ``merged_from``.
    ``stop`` (the CLI's signal flag: the signal's name once one came) is asked between records, so a stop lands on a
    commit boundary (copy mode: the same command resumes) or before anything is written (``--virtual``)."""
    if Path(output).is_dir():
        raise InputError(f"{output} is a directory; give the merged file's path")
    with OutputLock(output):
        return _merge(paths, Path(output), virtual, overwrite, command_line, stop or (lambda: None))


def _stopped(stop: Callable[[], str | None], output: Path, done: int, total: int, virtual: bool) -> None:
    if (name := stop()) is None:
        return
    if virtual:
        raise Interrupted(f"merge interrupted by {name}; nothing was written to {output}: rerun the same command")
    raise Interrupted(f"merge interrupted by {name} after {done} of {total} records of {output}; rerun the same "
                      "command to resume")


def _is_same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _merge(paths: list[Path], output: Path, virtual: bool, overwrite: bool, command_line: str | None,
           stop: Callable[[], str | None]) -> int:
    if virtual and any(_is_same_file(Path(p), output) for p in paths):
        raise InputError(f"merge: the output {output} is one of the shards; a --virtual merge reads its rows from "
                         "the shards, so it cannot replace one: choose another output path")
    paths, readers, run_config = check_shards([Path(p) for p in paths])
    try:
        first = readers[0]
        spec = StoreSpec.from_dict(json.loads(first.provenance["store_spec"]))
        provenance = {k: v for k, v in first.provenance.items() if k in _PROVENANCE_KEYS}
        provenance["run_config"] = run_config
        provenance["command_line"] = command_line or shlex.join(sys.argv)
        # Each shard's identity: a --virtual merge's reader checks that its sources are still these files.
        # (``source``: the name a virtual dataset maps, relative so that the folder can move as a whole.)
        provenance["merged_from"] = [
            {"path": str(p.resolve()), "end_time": f.provenance.get("end_time", ""), "records": len(f),
             "command_line": f.provenance.get("command_line", ""), **({"source": _source_name(p, output)} if virtual
                                                                      else {})} for p, f in zip(paths, readers)]
        n = sum(len(f) for f in readers)
        if virtual:
            _stopped(stop, output, 0, n, virtual)
            write_virtual_merge(readers, output, spec, provenance, overwrite=overwrite)
            if (name := stop()) is not None:  # came while the (short) mapping was written: the file is complete
                log.warning("received %s after the merge was complete: %s is whole", name, output)
            return n
        estimate = estimate_bytes(spec, n, sum(int(f.lengths.sum()) for f in readers))
        check_free_space(output, space_needed(output, estimate, overwrite=overwrite))
        writer = EmbeddingWriter.open(output, spec, provenance, overwrite=overwrite)
        done = set(writer.committed)
        try:
            for f in readers:
                pooled_all = {(m, layer): f.pooled(m, layer) for m in spec.pools for layer in spec.layers}
                for i, rid in enumerate(f.ids):
                    if rid in done:
                        continue
                    _stopped(stop, output, len(writer.committed), n, virtual)
                    rec = writer.begin(rid, int(f.lengths[i]), f.modes[i], f.coords(rid))
                    for layer in spec.layers:
                        if spec.per_nucleotide:
                            for start in range(0, int(f.lengths[i]), ROW_BLOCK):
                                rec.append(layer, f.rows(rid, start, start + ROW_BLOCK, layer=layer))
                        if spec.window:
                            rec.append_windows(layer, f.get(rid, layer=layer, kind="windowed"))
                    rec.commit({key: np.asarray(m[i], np.float32) for key, m in pooled_all.items()})
            writer.finish()
        except BaseException:
            writer.close()
            raise
        return n
    finally:
        for f in readers:
            f.close()


_PROVENANCE_KEYS = ("model", "checkpoint_sha256", "checkpoint_format", "model_config", "compute_dtype", "device",
                    "tokenizer_policy", "convolution", "conv_backend", "inputs", "input_files")


def _source_name(shard: Path, output: Path) -> str:
    """A shard's path relative to the merged file's folder: HDF5 resolves a relative virtual source there, so a
    results folder moved or copied as a whole (merged file and shards) still reads."""
    return os.path.relpath(Path(shard).resolve(), Path(output).resolve().parent)


def write_virtual_merge(readers: list[EmbeddingsFile], output: str | os.PathLike[str], spec: StoreSpec,
                        provenance: Mapping[str, Any], *, overwrite: bool = False) -> None:
    """Write ``output`` with the store's layout whose per-nucleotide and windowed rows are HDF5 virtual
    datasets over the given complete files, in order (their paths relative to ``output``'s folder are recorded, so
    they must stay where they are relative to it); ids, index arrays, coordinates and pooled rows are copied. Built
    under a temporary name and renamed, so an interrupted merge leaves nothing half-made."""
    output = Path(output)
    with OutputLock(output):
        _write_virtual_merge(readers, output, spec, provenance, overwrite)


def _write_virtual_merge(readers: list[EmbeddingsFile], output: Path, spec: StoreSpec,
                         provenance: Mapping[str, Any], overwrite: bool) -> None:
    if output.exists() and not overwrite:
        if is_complete(output, None):
            raise InputError(f"{output} is complete; use --overwrite to replace it")
        raise InputError(f"{output} exists; use --overwrite or another output path")
    for r in readers:
        if not r.complete:
            raise InputError(f"{r.path} is unfinished; finish it before merging")
    tmp = output.with_name(output.name + ".tmp")
    n = sum(len(r) for r in readers)
    lengths = np.concatenate([r.lengths for r in readers]) if readers else np.zeros(0, np.int64)
    try:
        f = h5py.File(tmp, "w", libver="latest")
        try:
            write_attrs(f, spec, provenance, canonical_run_config(provenance), now())
            f["lengths"] = lengths.astype(np.int64)
            f["offsets"] = (np.cumsum(lengths) - lengths).astype(np.int64)
            f.create_dataset("ids", data=np.asarray([i for r in readers for i in r.ids], dtype=object), dtype=UTF8)
            f.create_dataset("modes", data=np.asarray([m for r in readers for m in r.modes], dtype=object),
                             dtype=UTF8)
            write_coords(f, [r.coords(rid) for r in readers for rid in r.ids])
            if spec.window:
                n_win = np.asarray([n_windows(int(x), spec.window) for x in lengths], dtype=np.int64)
                f["window_offsets"] = np.cumsum(n_win) - n_win
            kinds = [k for k, on in (("per_nucleotide", spec.per_nucleotide), ("windowed", spec.window)) if on]
            for layer in spec.layers:
                for kind in kinds:
                    name = f"{kind}/{layer}"
                    shapes = [r._f[name].shape for r in readers]
                    dtype = readers[0]._f[name].dtype
                    layout = h5py.VirtualLayout(shape=(sum(x[0] for x in shapes), spec.d_model), dtype=dtype)
                    pos = 0
                    for r, shape in zip(readers, shapes):
                        layout[pos : pos + shape[0]] = h5py.VirtualSource(_source_name(r.path, output), name,
                                                                          shape=shape)
                        pos += shape[0]
                    f.create_virtual_dataset(name, layout)
                for mode in spec.pools:
                    f[f"pooled/{mode}/{layer}"] = np.concatenate([r.pooled(mode, layer) for r in readers])
            assert f["lengths"].shape == (n,)
            f.attrs["end_time"] = now()
            f.flush()
            f.attrs["complete"] = True
            f.close()
        except Exception as err:
            abandon(f, err)  # a failed HDF5 write: never write to it again (see hdf5.abandon)
            full = out_of_space(output, err)
            if full is not None:
                raise full from None
            raise
        fsync_path(tmp)
        os.replace(tmp, output)
        unlink(journal_path(output))
        fsync_dir(output)
    finally:
        unlink(tmp)
