"""genoconv.store: layout, chunking, the notebook reader, resume rules and crash safety (SIGKILL torture)."""

from __future__ import annotations

import ctypes
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from genoconv import store
from genoconv.store import hdf5
from genoconv.errors import InputError, InputFileError, ResourceError
from genoconv.store import EmbeddingWriter, StoreSpec, open_embeddings

CHILD = Path(__file__).with_name("store_writer_child.py")
PROVENANCE = {
    "model_name": "tiny-test",
    "checkpoint_sha256": "ab" * 32,
    "compute_dtype": "float32",
    "tokenizer_policy": "N->N",
    "convolution_mode": "exact",
    "command_line": "genoconv embed in.fa -o out.h5",
    "run_config": {"model": "tiny-test", "window": 10},
}
SPEC = StoreSpec(d_model=16, layers=(0, 2), pools=("mean", "max", "last"), window=10)


def _record(i: int, length: int, d: int = 16) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(i)
    return {layer: rng.standard_normal((length, d)).astype(np.float32) + layer for layer in (0, 2)}


def _windows(rows: np.ndarray, window: int) -> np.ndarray:
    return np.stack([rows[a : a + window].mean(0) for a in range(0, len(rows), window)])


def _write(writer: EmbeddingWriter, records: list[tuple[str, int]], spec: StoreSpec = SPEC, step: int = 7,
           only: set[str] | None = None) -> None:
    for i, (rid, length) in enumerate(records):
        if rid in writer.committed or (only is not None and rid not in only):
            continue
        data = _record(i, length, spec.d_model)
        rec = writer.begin(rid, length, "exact")
        pooled = {}
        for layer in spec.layers:
            for a in range(0, length, step):
                if spec.per_nucleotide:
                    rec.append(layer, data[layer][a : a + step])
            if spec.window:
                rec.append_windows(layer, _windows(data[layer], spec.window))
            for mode, fn in (("mean", lambda x: x.mean(0)), ("max", lambda x: x.max(0)), ("last", lambda x: x[-1])):
                if mode in spec.pools:
                    pooled[(mode, layer)] = fn(data[layer])
        rec.commit(pooled)


RECORDS = [("chr1", 25), ("DMD", 1), ("read/3 strand=+", 40), ("ünïcode", 9)]


def _same_content(a: Path, b: Path) -> None:
    """Every dataset byte-for-byte (and its dtype, shape, chunks, filters); every root attr but the times."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a, names_b = [], []
        fa.visit(names_a.append)
        fb.visit(names_b.append)
        assert sorted(names_a) == sorted(names_b)
        for name in names_a:
            x, y = fa[name], fb[name]
            assert type(x) is type(y), name
            if isinstance(x, h5py.Dataset):
                layout = [(d.dtype, d.shape, d.chunks, d.compression, d.shuffle) for d in (x, y)]
                assert layout[0] == layout[1], name
                if h5py.check_string_dtype(x.dtype):
                    assert list(x.asstr()[:]) == list(y.asstr()[:]), name
                else:
                    assert x[()].tobytes() == y[()].tobytes(), name
        attrs_a = {k: v for k, v in fa.attrs.items() if k not in ("start_time", "end_time")}
        attrs_b = {k: v for k, v in fb.attrs.items() if k not in ("start_time", "end_time")}
        assert attrs_a.keys() == attrs_b.keys()
        for k in attrs_a:
            assert np.array_equal(attrs_a[k], attrs_b[k]), k


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    out = tmp_path / "out.h5"
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        _write(w, RECORDS)
        w.finish()
    return out


# ------------------------------------------------------------------------------------------ layout
def test_layout_and_dtypes(finished: Path) -> None:
    n, total = len(RECORDS), sum(length for _, length in RECORDS)
    n_windows = sum(-(-length // 10) for _, length in RECORDS)
    assert not finished.with_name("out.h5.journal").exists()
    with h5py.File(finished, "r") as f:
        assert list(f["ids"].asstr()[:]) == [rid for rid, _ in RECORDS]
        assert list(f["modes"].asstr()[:]) == ["exact"] * n
        assert h5py.check_string_dtype(f["ids"].dtype).encoding == "utf-8"
        for name, shape in (("lengths", (n,)), ("offsets", (n,)), ("window_offsets", (n,))):
            assert f[name].dtype == np.int64 and f[name].shape == shape
        assert list(f["lengths"][:]) == [length for _, length in RECORDS]
        assert list(f["offsets"][:]) == list(np.cumsum([0] + [length for _, length in RECORDS])[:-1])
        for layer in (0, 2):
            assert f[f"per_nucleotide/{layer}"].dtype == np.float16
            assert f[f"per_nucleotide/{layer}"].shape == (total, 16)
            assert f[f"windowed/{layer}"].dtype == np.float32
            assert f[f"windowed/{layer}"].shape == (n_windows, 16)
            for mode in ("mean", "max", "last"):
                assert f[f"pooled/{mode}/{layer}"].dtype == np.float32
                assert f[f"pooled/{mode}/{layer}"].shape == (n, 16)
        attrs = f.attrs
        assert attrs["complete"] and attrs["format"] == "genoconv-embeddings"
        assert list(attrs["layers"]) == [0, 2]
        assert attrs["store_dtype"] == "float16" and attrs["genoconv_version"]
        assert attrs["model_name"] == "tiny-test" and attrs["checkpoint_sha256"] == "ab" * 32
        assert json.loads(attrs["run_config"]) == PROVENANCE["run_config"]
        assert attrs["start_time"] <= attrs["end_time"]


@pytest.mark.parametrize(
    "d_model, store_dtype, rows",
    [(256, "float16", 2048), (256, "float32", 1024), (3000, "float32", 87), (2**19, "float32", 1)],
)
def test_chunks_are_about_one_mib(tmp_path: Path, d_model: int, store_dtype: str, rows: int) -> None:
    assert store.chunk_rows(d_model, np.dtype(store_dtype).itemsize) == rows
    if d_model > 4096:
        return
    spec = StoreSpec(d_model, (5,), store_dtype=store_dtype, window=50)
    with EmbeddingWriter.open(tmp_path / "c.h5", spec, PROVENANCE) as w:
        pass
    with h5py.File(tmp_path / "c.h5", "r") as f:
        pn = f["per_nucleotide/5"]
        assert pn.chunks == (rows, d_model)
        assert 0.9 * 2**20 <= rows * d_model * pn.dtype.itemsize <= 2**20
        assert f["windowed/5"].chunks[0] * d_model * 4 <= 2**20
        assert pn.compression is None


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_compression_round_trips(tmp_path: Path, compression: str) -> None:
    spec = StoreSpec(16, (0, 2), pools=("mean",), compression=compression)
    out = tmp_path / "z.h5"
    with EmbeddingWriter.open(out, spec, PROVENANCE) as w:
        _write(w, RECORDS, spec)
        w.finish()
    with h5py.File(out, "r") as f:
        assert f["per_nucleotide/0"].compression == compression and f["per_nucleotide/0"].shuffle
    with open_embeddings(out) as e:
        np.testing.assert_array_equal(e.get("chr1", 0), _record(0, 25)[0].astype(np.float16))


def test_pooled_only_run(tmp_path: Path) -> None:
    spec = StoreSpec(16, (0, 2), per_nucleotide=False, pools=("last",))
    out = tmp_path / "pooled.h5"
    with EmbeddingWriter.open(out, spec, PROVENANCE) as w:
        _write(w, RECORDS, spec)
        w.finish()
    with h5py.File(out, "r") as f:
        names = []
        f.visit(names.append)
    assert sorted(names) == ["ids", "lengths", "modes", "offsets", "pooled", "pooled/last", "pooled/last/0",
                             "pooled/last/2"]
    with open_embeddings(out) as e:
        np.testing.assert_array_equal(e.pooled("last")[1], _record(1, 1)[2][-1])
        with pytest.raises(KeyError, match="no per-nucleotide rows"):
            e["chr1"]


# ------------------------------------------------------------------------------------------ reader
def test_round_trip_through_reader(finished: Path) -> None:
    with open_embeddings(finished) as e:
        assert e.complete and len(e) == 4 and list(e) == [rid for rid, _ in RECORDS]
        assert "DMD" in e and "nope" not in e and e.layers == [0, 2]
        assert list(e.lengths) == [25, 1, 40, 9]
        assert e.provenance["model_name"] == "tiny-test"
        for i, (rid, length) in enumerate(RECORDS):
            data = _record(i, length)
            np.testing.assert_array_equal(e[rid], data[2].astype(np.float16))  # default: last listed layer
            np.testing.assert_array_equal(e.get(rid, layer=0), data[0].astype(np.float16))
            np.testing.assert_array_equal(e.get(rid, layer=-2), data[0].astype(np.float16))
            np.testing.assert_array_equal(e.get(rid, 2, kind="windowed"), _windows(data[2], 10))
        pooled = e.pooled()
        assert pooled.shape == (4, 16) and pooled.dtype == np.float32
        np.testing.assert_array_equal(pooled[2], _record(2, 40)[2].mean(0))
        np.testing.assert_array_equal(e.pooled("last", 0)[0], _record(0, 25)[0][-1])
        with pytest.raises(KeyError):
            e.get("chr1", layer=1)
        with pytest.raises(KeyError):
            e["nope"]


def test_reader_slices_lazily(finished: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = h5py.Dataset.__getitem__

    def spy(self, key, *args, **kwargs):
        seen.append((self.name, key))
        return original(self, key, *args, **kwargs)

    with open_embeddings(finished) as e:
        monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
        e["read/3 strand=+"]
    assert seen == [("/per_nucleotide/2", slice(26, 66))]


def test_rows_and_modes(finished: Path) -> None:
    with open_embeddings(finished) as e:
        assert e.modes == ["exact"] * 4
        full = e["read/3 strand=+"]
        np.testing.assert_array_equal(e.rows("read/3 strand=+", 5, 17), full[5:17])
        np.testing.assert_array_equal(e.rows("read/3 strand=+", 30, 1000, layer=0), e.get("read/3 strand=+", 0)[30:])
        assert e.rows("DMD", 3, 9).shape == (0, 16)


def test_virtual_merge(tmp_path: Path, finished: Path) -> None:
    parts = []
    for k, chunk in enumerate((RECORDS[:2], RECORDS[2:])):
        part = tmp_path / f"part{k}.h5"
        with EmbeddingWriter.open(part, SPEC, PROVENANCE) as w:
            _write(w, RECORDS, only={rid for rid, _ in chunk})
            w.finish()
        parts.append(part)
    readers = [open_embeddings(p) for p in parts]
    spec = StoreSpec.from_dict(json.loads(readers[0].provenance["store_spec"]))
    assert spec == SPEC
    store.write_virtual_merge(readers, tmp_path / "merged.h5", spec, PROVENANCE)
    for r in readers:
        r.close()
    with open_embeddings(tmp_path / "merged.h5") as m, open_embeddings(finished) as e:
        assert m.ids == e.ids and m.complete
        for rid in e:
            np.testing.assert_array_equal(m[rid], e[rid])
            np.testing.assert_array_equal(m.get(rid, 0, "windowed"), e.get(rid, 0, "windowed"))
        np.testing.assert_array_equal(m.pooled("max", 2), e.pooled("max", 2))
        with h5py.File(tmp_path / "merged.h5", "r") as f:
            assert f["per_nucleotide/0"].is_virtual
    with pytest.raises(InputError, match="is complete"):
        store.write_virtual_merge([], tmp_path / "merged.h5", spec, PROVENANCE)


def _shards(tmp_path: Path, tag: str = "") -> list[Path]:
    """Two complete shards (1/2, 2/2) of RECORDS, as `genoconv embed --shard i/2` writes them."""
    parts = []
    for k, chunk in enumerate((RECORDS[:2], RECORDS[2:])):
        part = tmp_path / f"shard{k + 1}{tag}.h5"
        prov = {**PROVENANCE, "command_line": f"genoconv embed in.fa -o {part.name} --shard {k + 1}/2",
                "run_config": {**PROVENANCE["run_config"], "shard": [k + 1, 2]}}
        with EmbeddingWriter.open(part, SPEC, prov) as w:
            _write(w, RECORDS, only={rid for rid, _ in chunk})
            w.finish()
        parts.append(part)
    return parts


def test_virtual_merge_refuses_sources_that_moved_changed_or_are_itself(tmp_path: Path) -> None:
    # HDF5 reads a missing virtual source as zeros and a rewritten one as its new rows, without a word: the
    # reader must refuse both (it served zeros and other runs' rows with exit 0 before).
    parts = _shards(tmp_path)
    merged = tmp_path / "merged.h5"
    assert store.merge(parts, merged, virtual=True, command_line="genoconv merge s1 s2 -o merged.h5") == 4
    with open_embeddings(merged) as m:
        assert m["chr1"].any() and json.loads(m.provenance["merged_from"])[1]["records"] == 2
    parts[1].rename(tmp_path / "elsewhere.h5")
    with pytest.raises(InputError, match=r"merged.h5 is a --virtual merge whose rows live in .*shard2.h5, which is "
                                         r"missing"):
        open_embeddings(merged)
    (tmp_path / "elsewhere.h5").rename(parts[1])
    with open_embeddings(merged) as m:  # back in place: readable again
        assert m.ids == [rid for rid, _ in RECORDS]
    time.sleep(0.01)
    with EmbeddingWriter.open(parts[1], SPEC, {**PROVENANCE, "run_config": {**PROVENANCE["run_config"],
                                                                             "shard": [2, 2]}}, overwrite=True) as w:
        _write(w, RECORDS, only={"ünïcode"})  # the shard rerun: other rows at the same place
        w.finish()
    with pytest.raises(InputError, match=r"shard2.h5, which was rewritten after the merge"):
        open_embeddings(merged)
    # The sources are named relative to the merged file: the folder moved as a whole still reads.
    (tmp_path / "run").mkdir()
    parts = _shards(tmp_path / "run")
    store.merge(parts, tmp_path / "run" / "all.h5", virtual=True)
    (tmp_path / "run").rename(tmp_path / "moved")
    with open_embeddings(tmp_path / "moved" / "all.h5") as m, open_embeddings(tmp_path / "moved" / "shard1.h5") as s:
        np.testing.assert_array_equal(m["chr1"], s["chr1"])
    (tmp_path / "link.h5").symlink_to(tmp_path / "moved" / "all.h5")  # opened through a link elsewhere: reads
    with open_embeddings(tmp_path / "link.h5") as m:
        assert m.ids == [rid for rid, _ in RECORDS] and m["chr1"].any()
    (tmp_path / "alone").mkdir()
    (tmp_path / "moved" / "all.h5").rename(tmp_path / "alone" / "all.h5")  # the merged file without its shards
    with pytest.raises(InputError, match=r"rows live in .*alone/shard1.h5, which is missing"):
        open_embeddings(tmp_path / "alone" / "all.h5")
    (tmp_path / "alone" / "all.h5").rename(tmp_path / "all.h5")  # beside other files of the same names: not its own
    with pytest.raises(InputError, match=r"rows live in .*/shard1.h5, which was rewritten after the merge"):
        open_embeddings(tmp_path / "all.h5")
    # A virtual merge over one of its own shards would map that file onto itself (it segfaulted h5py): refused,
    # the shard untouched.
    parts = _shards(tmp_path, "b")
    before = parts[0].read_bytes()
    with pytest.raises(InputError, match=r"shard1b.h5 is one of the shards"):
        store.merge(parts, parts[0], virtual=True, overwrite=True)
    assert parts[0].read_bytes() == before


def test_merged_provenance_names_the_merge_and_keeps_each_shard(tmp_path: Path) -> None:
    parts = _shards(tmp_path)
    out = tmp_path / "merged.h5"
    store.merge(parts[::-1], out, command_line="genoconv merge shard2.h5 shard1.h5 -o merged.h5")
    with open_embeddings(out) as m, open_embeddings(parts[0]) as first:
        assert m.provenance["command_line"] == "genoconv merge shard2.h5 shard1.h5 -o merged.h5"
        assert m.provenance["start_time"] > first.provenance["end_time"]  # the merge's own times
        shards = json.loads(m.provenance["merged_from"])
        assert [Path(s["path"]).name for s in shards] == ["shard1.h5", "shard2.h5"]  # in shard order
        assert shards[0]["command_line"].endswith("--shard 1/2") and shards[0]["end_time"] == first.provenance[
            "end_time"]


@pytest.mark.filterwarnings("ignore:.*unfinished")
def test_reader_checks_an_unfinished_files_rows_against_its_journal(tmp_path: Path, monkeypatch) -> None:
    # A damaged unfinished file read as zeros (or stale bytes) with only the "unfinished" warning: the reader now
    # checks each record's rows, and the pooled rows, against the CRCs the run journaled.
    from genoconv.store import layout

    monkeypatch.setattr(layout, "CHUNK_BYTES", 2**10)  # rows reach the main datasets' chunks, not only /_tail
    partial = tmp_path / "partial.h5"
    with EmbeddingWriter.open(partial, SPEC, PROVENANCE) as w:
        _write(w, RECORDS[:3])
    with open_embeddings(partial) as f:
        good = {rid: (f[rid], f.get(rid, 0, "windowed")) for rid in f.ids}
        assert f.pooled("max", 2).shape == (3, 16)
    with hdf5.open_read(partial, None) as f:
        ds, pooled = f["per_nucleotide/2"], f["pooled/mean/2"]
        rows_at = ds.id.get_chunk_info(0).byte_offset if ds.chunks else ds.id.get_offset()
        pooled_at = pooled.id.get_chunk_info(0).byte_offset if pooled.chunks else pooled.id.get_offset()
    for at, read in ((rows_at + 3, lambda f: f["chr1"]), (rows_at + 3, lambda f: f.rows("chr1", 20, 22)),
                     (pooled_at + 3, lambda f: f.pooled("mean", 2))):
        damaged = bytearray(partial.read_bytes())
        damaged[at] ^= 0xFF
        out = tmp_path / "damaged.h5"
        out.write_bytes(bytes(damaged))
        out.with_name("damaged.h5.journal").write_bytes(partial.with_name("partial.h5.journal").read_bytes())
        with open_embeddings(out) as f:
            np.testing.assert_array_equal(f.get("DMD", 0, "windowed"), good["DMD"][1])  # undamaged rows read
            with pytest.raises(InputError, match=r"damaged.h5: .*chr1.* does not match the checksum its run "
                                                 r"journaled.*rerun its genoconv embed command"):
                read(f)


def test_to_anndata(finished: Path) -> None:
    with open_embeddings(finished) as e:
        try:
            import anndata  # noqa: F401
        except ImportError:
            with pytest.raises(ImportError, match="pip install anndata"):
                e.to_anndata()
        else:
            ad = e.to_anndata("max", 0)
            assert ad.shape == (4, 16) and list(ad.obs_names) == [rid for rid, _ in RECORDS]


# ------------------------------------------------------------------------------------------ resume rules
def test_spec_mismatch_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    spec = StoreSpec(16, (0, 2), pools=("mean",))
    with EmbeddingWriter.open(out, spec, PROVENANCE) as w:
        _write(w, RECORDS[:1], spec)
    other = StoreSpec(16, (0, 2), pools=("mean", "max"))
    message = r"was started with different options \(pools: mean vs mean,max\); use --overwrite"
    with pytest.raises(InputError, match=message):
        EmbeddingWriter.open(out, other, PROVENANCE)
    changed = dict(PROVENANCE, run_config={"model": "tiny-test", "window": 20})
    with pytest.raises(InputError, match="window: 10 vs 20"):
        EmbeddingWriter.open(out, spec, changed)
    # the refused attempts changed nothing: the same options resume
    with EmbeddingWriter.open(out, spec, PROVENANCE) as w:
        assert w.committed == ["chr1"]


def test_complete_file_needs_overwrite(finished: Path) -> None:
    with pytest.raises(InputError, match=r"out.h5 is complete; use --overwrite to replace it"):
        EmbeddingWriter.open(finished, SPEC, PROVENANCE)
    with EmbeddingWriter.open(finished, SPEC, PROVENANCE, overwrite=True) as w:
        assert w.committed == []
        _write(w, RECORDS[:2])
        w.finish()
    with open_embeddings(finished) as e:
        assert e.ids == ["chr1", "DMD"]


def test_foreign_file_is_not_resumed(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    with h5py.File(out, "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="not an unfinished genoconv run"):
        EmbeddingWriter.open(out, SPEC, PROVENANCE)


def test_close_leaves_a_resumable_file(tmp_path: Path, finished: Path) -> None:
    out = tmp_path / "resumed.h5"
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        _write(w, RECORDS[:2])
        rec = w.begin("read/3 strand=+", 40, "exact")  # interrupted mid-record (e.g. SIGTERM)
        rec.append(0, np.ones((30, 16), np.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_embeddings(out) as e:
            assert not e.complete and e.ids == ["chr1", "DMD"]
            np.testing.assert_array_equal(e["DMD"], _record(1, 1)[2].astype(np.float16))
    assert any("unfinished" in str(w.message) for w in caught)
    with h5py.File(out, "r") as f:  # the main datasets hold whole chunks only; the rest is in /_tail
        assert f["per_nucleotide/0"].shape == (0, 16) and f["pooled/mean/0"].shape == (2, 16)
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        assert w.committed == ["chr1", "DMD"]
        _write(w, RECORDS)
        w.finish()
    _same_content(out, finished)


def test_close_mid_record_after_whole_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM inside a long record that already completed whole chunks: close() keeps the committed rows
    of the shared chunk and the resumed run equals an uninterrupted one."""
    monkeypatch.setattr(store, "CHUNK_BYTES", 2**10)  # 32 rows per chunk at d=16 float16
    ref, out = tmp_path / "ref.h5", tmp_path / "out.h5"
    with EmbeddingWriter.open(ref, SPEC, PROVENANCE) as w:
        _write(w, RECORDS)
        w.finish()
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        _write(w, RECORDS[:2])  # 26 rows: inside the first chunk
        rec = w.begin("read/3 strand=+", 40, "exact")
        for layer in (0, 2):
            rec.append(layer, np.full((39, 16), 7.0))  # completes chunks 0 and 1 with uncommitted rows
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        assert w.committed == ["chr1", "DMD"]
        _write(w, RECORDS)
        w.finish()
    _same_content(out, ref)


def test_swmr_reads_of_a_dead_writer_do_not_retry(tmp_path: Path) -> None:
    """HDF5's SWMR reader retries a block with a bad checksum with doubling sleeps, 100 times by default
    (a salvage once hung for minutes on a block torn by SIGKILL); ours tries once."""
    out = tmp_path / "dead.h5"
    code = (f"import os, sys; sys.path[:0] = [{str(Path(__file__).parents[1])!r}, {str(Path(__file__).parent)!r}]\n"
            "import test_store as t\n"
            f"w = t.EmbeddingWriter.open({str(out)!r}, t.SPEC, t.PROVENANCE)\n"
            "t._write(w, t.RECORDS[:2])\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with pytest.raises(OSError):
        h5py.File(out, "r")  # still flagged as open for writing
    lib = hdf5.hdf5_library()
    assert lib is not None
    lib.H5Pget_metadata_read_attempts.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_uint)]
    with hdf5.open_read(out, None) as f:
        attempts = ctypes.c_uint(0)
        assert lib.H5Pget_metadata_read_attempts(f.id.get_access_plist().id, ctypes.byref(attempts)) >= 0
        assert attempts.value == 1
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:  # salvage
        assert w.committed == ["chr1", "DMD"]


def test_commit_checks_what_was_written(tmp_path: Path) -> None:
    with EmbeddingWriter.open(tmp_path / "out.h5", SPEC, PROVENANCE) as w:
        rec = w.begin("a", 5, "exact")
        rec.append(0, np.zeros((5, 16)))
        rec.append_windows(0, np.zeros((1, 16)))
        with pytest.raises(ValueError, match="0 of 5 per-nucleotide rows written for layer 2"):
            rec.commit({})
        with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
            rec.append(2, np.zeros((5, 15)))
        with pytest.raises(RuntimeError, match="still open"):
            w.begin("b", 3, "exact")


def test_damaged_record_is_recomputed_not_trusted(tmp_path: Path, finished: Path) -> None:
    """An unclean journal makes the writer verify every committed byte: a flipped byte in record 1 keeps
    record 0 and drops records 1.. (they are recomputed), and the result still equals a clean run."""
    out = tmp_path / "damaged.h5"
    spec = SPEC
    with EmbeddingWriter.open(out, spec, PROVENANCE) as w:
        _write(w, RECORDS[:3])
    journal = out.with_name("damaged.h5.journal")
    lines = journal.read_bytes().splitlines(keepends=True)
    assert b'"closed"' in lines[-1]
    journal.write_bytes(b"".join(lines[:-1]) + b'{"c":3,"id":"torn')  # as after a kill: no "closed", torn tail
    slot = store.read_journal(journal).entries[-1]["s"]
    with h5py.File(out, "r") as f:  # committed rows past the last whole chunk live in /_tail, slot `slot`
        tail = f["_tail/per_nucleotide/0"]
        offset = tail.id.get_offset() + (slot * tail.shape[1] + 25) * 16 * 2  # row 25 = record 1's only row
    with open(out, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x40]))
    with EmbeddingWriter.open(out, spec, PROVENANCE) as w:
        assert w.committed == ["chr1"]
        _write(w, RECORDS)
        w.finish()
    _same_content(out, finished)


def test_grouped_commits_are_durable_at_close(tmp_path: Path, finished: Path) -> None:
    out = tmp_path / "grouped.h5"
    with EmbeddingWriter.open(out, SPEC, PROVENANCE, commit_interval=3600) as w:
        _write(w, RECORDS[:3])
        assert store.read_journal(out.with_name("grouped.h5.journal")).entries == []  # none durable yet
    with EmbeddingWriter.open(out, SPEC, PROVENANCE, commit_interval=3600) as w:
        assert w.committed == ["chr1", "DMD", "read/3 strand=+"]
        _write(w, RECORDS)
        w.finish()
    _same_content(out, finished)


def test_unwritable_output_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="cannot write .*missing/out.h5"):
        EmbeddingWriter.open(tmp_path / "missing" / "out.h5", SPEC, PROVENANCE)


# ------------------------------------------------------------------------------------------ sizes, locking
def test_free_space_check(tmp_path: Path) -> None:
    spec = StoreSpec(256, (7,), pools=("mean",))
    estimate = store.estimate_bytes(spec, n_records=10, total_bases=1_000_000)
    assert 512e6 <= estimate <= 530e6  # 1 Mb x d=256 x float16 = 512 MB, plus a little
    store.check_free_space(tmp_path / "out.h5", 1024)
    with pytest.raises(ResourceError, match=r"not enough disk space for .*out.h5: need about .* free on"):
        store.check_free_space(tmp_path / "sub" / "out.h5", store.estimate_bytes(spec, 10**6, 10**15))


def test_locking_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENOCONV_HDF5_LOCKING", "0")
    assert store.locking_setting(None) is False and store.locking_setting(True) is True
    monkeypatch.delenv("GENOCONV_HDF5_LOCKING")
    assert store.locking_setting(None) is None
    out = tmp_path / "nolock.h5"
    with EmbeddingWriter.open(out, SPEC, PROVENANCE, locking=False) as w:
        _write(w, RECORDS[:1])
        w.finish()
    with open_embeddings(out, locking=False) as e:
        assert e.ids == ["chr1"]


# ------------------------------------------------------------------------------------------ crash safety
def _child(out: Path, n: int, seed: int, compression: str, sleep: float, interval: float = 0.0) -> subprocess.Popen:
    args = [str(out), str(n), str(seed), compression, str(sleep), str(interval)]
    return subprocess.Popen([sys.executable, str(CHILD), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("compression, kills, interval", [("none", 15, 0.0), ("gzip", 8, 0.02)])
def test_sigkill_torture(tmp_path: Path, compression: str, kills: int, interval: float) -> None:
    """Kill -9 a writer at random moments (during startup/salvage, inside writes, between the data flush and
    the journal line), rerun each time with the same inputs, and finish: the file equals an uninterrupted
    run, and every rerun resumes exactly the records the journal had committed. After each kill the
    notebook reader shows the committed records of the damaged file correctly. With ``interval`` > 0
    commits are grouped (commit_interval)."""
    n, seed, sleep = 40, 7, 0.001
    ref = tmp_path / "ref.h5"
    proc = _child(ref, n, seed, compression, sleep)
    assert proc.stdout.readline().startswith("resumed 0")
    start = time.monotonic()
    out_text, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    step = 1.6 * (time.monotonic() - start) / kills  # kills land all along the run, which rarely finishes early
    out = tmp_path / "out.h5"
    journal = out.with_name("out.h5.journal")
    rng = random.Random(2024)
    salvaged = killed = 0
    for k in range(kills):
        state = store.read_journal(journal)
        proc = _child(out, n, seed, compression, sleep, interval)
        if k % 5 == 4:  # sometimes kill early: interpreter start, open, salvage
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            line = proc.stdout.readline()
            assert line.startswith("resumed"), proc.stderr.read()
            assert int(line.split()[1]) == len(state.entries)  # nothing committed is recomputed
            salvaged += bool(state.entries) and not state.clean
            time.sleep(rng.uniform(0.0, step))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        out_text, err = proc.communicate(timeout=60)
        if proc.returncode == 0:  # finished before the kill: nothing left to interrupt
            break
        assert proc.returncode == -signal.SIGKILL, err
        if store.read_journal(journal).entries:
            with pytest.warns(UserWarning, match="unfinished"), open_embeddings(out) as e, open_embeddings(ref) as r:
                for rid in e.ids[-3:]:
                    np.testing.assert_array_equal(e.get(rid, 0), r.get(rid, 0))
                    np.testing.assert_array_equal(e.get(rid, 3, "windowed"), r.get(rid, 3, "windowed"))
                np.testing.assert_array_equal(e.pooled("max", 3), r.pooled("max", 3)[: len(e)])
    else:
        state = store.read_journal(journal)
        proc = _child(out, n, seed, compression, sleep, interval)
        out_text, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out_text.split() == ["resumed", str(len(state.entries)), "done"]
    assert killed >= kills - 3 and salvaged >= 2, (killed, salvaged)
    assert not journal.exists() and not out.with_name("out.h5.salvage").exists()
    _same_content(out, ref)
    with open_embeddings(out) as e:
        assert e.complete and len(e) == n


# ------------------------------------------------------------------------------------------ issue 16, case 4
@pytest.mark.parametrize("kind, value", [("per_nucleotide", np.nan), ("per_nucleotide", 1e5),
                                         ("windowed", np.inf), ("pooled", np.nan)])
def test_non_finite_rows_fail_the_record_and_keep_the_rest(tmp_path: Path, kind: str, value: float) -> None:
    """NaN/Inf (or a float16 overflow: 1e5 > 65504) is never stored: the record fails, earlier commits stay."""
    from genoconv.errors import NonFiniteError

    out = tmp_path / "out.h5"
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        _write(w, RECORDS[:2])
        rows = _record(7, 20)
        pooled = {(m, layer): rows[layer].mean(0) for m in SPEC.pools for layer in SPEC.layers}
        bad = rows[2].copy()
        bad[4, 3] = value
        rec = w.begin("bad", 20, "exact")
        with pytest.raises(NonFiniteError, match=r"out.h5: record 'bad': .* hold NaN or Inf"):
            rec.append(0, rows[0])
            rec.append_windows(0, _windows(rows[0], 10))
            rec.append(2, bad if kind == "per_nucleotide" else rows[2])
            rec.append_windows(2, _windows(bad if kind == "windowed" else rows[2], 10))
            if kind == "pooled":
                pooled[("max", 2)] = bad.max(0)
            rec.commit(pooled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_embeddings(out) as e:
            assert e.ids == ["chr1", "DMD"]


# ------------------------------------------------------------------------------------------ issue 16, case 5
def _hold_lock(out: Path) -> subprocess.Popen:
    """Another process holding ``out``'s lock until its stdin closes."""
    code = ("import sys; from genoconv.store import OutputLock; l = OutputLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); sys.stdin.read()")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    holder = _hold_lock(out)
    try:
        with pytest.raises(InputError, match=rf"out.h5 is being written by another genoconv run \(pid {holder.pid} on "):
            EmbeddingWriter.open(out, SPEC, PROVENANCE)
        assert not out.exists()
    finally:
        holder.communicate("")
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:  # the holder is gone: the lock is free
        _write(w, RECORDS)
        w.finish()
    assert not out.with_name("out.h5.lock").exists()


def test_merge_is_refused_while_another_process_writes_its_output(tmp_path: Path, finished: Path) -> None:
    out = tmp_path / "merged.h5"
    holder = _hold_lock(out)
    try:
        for virtual in (False, True):
            with pytest.raises(InputError, match=rf"merged.h5 is being written by .*pid {holder.pid}"):
                store.merge([finished], out, virtual=virtual)
    finally:
        holder.communicate("")
    assert store.merge([finished], out) == len(RECORDS)


def test_lock_left_by_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer runs
    stale = json.dumps({"pid": proc.pid, "host": os.uname().nodename, "since": "earlier"})
    out.with_name("out.h5.lock").write_text(stale + "\n")
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        _write(w, RECORDS[:1])
        w.finish()
    assert not out.with_name("out.h5.lock").exists()


def test_lock_without_filesystem_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where flock fails (ENOLCK: some NFS/Lustre mounts) the lock file itself is the lock."""
    import errno
    import fcntl
    import socket

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "out.h5"
    lock = out.with_name("out.h5.lock")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    lock.write_text(json.dumps({"pid": dead.pid, "host": host, "since": "earlier"}))
    with store.OutputLock(out):  # a dead process on this host: taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with store.OutputLock(out):  # re-entrant within a process
            pass
        assert lock.exists()
    assert not lock.exists()
    lock.write_text(json.dumps({"pid": os.getppid(), "host": host, "since": "earlier"}))
    with pytest.raises(InputError, match=rf"pid {os.getppid()} on {host}.*no locks: if no such run is active, `rm "):
        store.OutputLock(out).acquire()
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "earlier"}))
    with pytest.raises(InputError, match="pid 1 on elsewhere"):
        store.OutputLock(out).acquire()


# ------------------------------------------------------------------------------------------ issue 16, case 7
def test_full_disk_in_the_journal_is_a_resumable_resource_error(tmp_path: Path, finished: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC where the journal is appended (injected): a one-line ResourceError naming the file, the file is
    abandoned (nothing more written to it), and the next open resumes from what was committed."""
    import errno

    from genoconv.store.journal import Journal

    out = tmp_path / "full.h5"
    original = Journal.write_many
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        _write(w, RECORDS[:2])

        def full(self, objs):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

        monkeypatch.setattr(Journal, "write_many", full)
        with pytest.raises(ResourceError, match=r"full.h5: no space left on device; free some space and rerun"):
            _write(w, RECORDS)
        monkeypatch.setattr(Journal, "write_many", original)
    assert not out.with_name("full.h5.lock").exists()  # released
    with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
        assert w.committed == ["chr1", "DMD"]
        _write(w, RECORDS)
        w.finish()
    _same_content(out, finished)


# ------------------------------------------------------------------------------------------ issue 16, case 8
# Signatures of HDF5's metadata structures (object headers, heaps, chunk indexes, B-trees) and the superblock.
_METADATA = (b"\x89HDF", b"OHDR", b"OCHK", b"GCOL", b"FRHP", b"FHDB", b"FHIB", b"FSHD", b"FSSE", b"EAHD", b"EAIB",
             b"EADB", b"EASB", b"BTHD", b"BTIN", b"BTLF", b"FAHD", b"FADB")


def _metadata_offsets(data: bytes) -> list[int]:
    offsets = []
    for signature in _METADATA:
        at = data.find(signature)
        while at >= 0:
            offsets += [at + 6, at + 13]
            at = data.find(signature, at + 1)
    return sorted(o for o in set(offsets) if o < len(data))


def test_a_flipped_byte_in_a_partial_file_is_salvaged_or_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """One flipped byte in an unfinished file, cleanly closed: in any metadata structure, in the text of its
    attributes (held in HDF5's unchecked global heap) or in stored numbers. The resume salvages what the journal
    vouches for and finishes equal to an uninterrupted run, or refuses with an InputError naming the way out;
    never another exception, never a complete file with the flipped byte."""
    from genoconv.store import layout

    monkeypatch.setattr(layout, "CHUNK_BYTES", 2**10)  # several chunks, so chunk indexes have nodes
    ref, partial = tmp_path / "ref.h5", tmp_path / "partial.h5"
    with EmbeddingWriter.open(ref, SPEC, PROVENANCE) as w:
        _write(w, RECORDS)
        w.finish()
    with EmbeddingWriter.open(partial, SPEC, PROVENANCE) as w:
        _write(w, RECORDS[:3])
    data = partial.read_bytes()
    heap_text = data.find(b"ab" * 32)  # the checkpoint_sha256 attribute's text
    raw = []  # the first byte of some stored numbers: a row chunk, a tail slot, pooled rows, the index arrays
    with hdf5.open_read(partial, None) as f:
        for name in ("per_nucleotide/0", "_tail/per_nucleotide/2", "_tail/windowed/2", "pooled/max/2", "lengths"):
            ds = f[name]
            raw.append((ds.id.get_chunk_info(0).byte_offset if ds.chunks else ds.id.get_offset()) + 3)
    offsets = _metadata_offsets(data) + [heap_text + 5] + raw
    assert len(offsets) > 20 and heap_text > 0
    outcomes = {"finished": 0, "refused": 0}
    for k, offset in enumerate(offsets):
        out = tmp_path / f"out{k}.h5"
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        out.write_bytes(bytes(damaged))
        out.with_name(out.name + ".journal").write_bytes(partial.with_name("partial.h5.journal").read_bytes())
        try:
            with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:
                _write(w, RECORDS)
                w.finish()
        except InputError as err:
            assert "--overwrite" in str(err) or "rerun the same command" in str(err), (offset, err)
            outcomes["refused"] += 1
            with EmbeddingWriter.open(out, SPEC, PROVENANCE) as w:  # the rerun it asks for finishes
                _write(w, RECORDS)
                w.finish()
        _same_content(out, ref)
        outcomes["finished"] += 1
    assert outcomes["finished"] == len(offsets), outcomes


def test_reader_counts_negative_layers_as_embed_does(tmp_path: Path) -> None:
    # `--layer 0 --layer -2` of a 2-block model stores hidden states 0 and 2; f.get(id, -2) gave layer 0 (the
    # second-to-last *stored*) where Embedder.embed(seq, layer=-2) gives 2.
    out = tmp_path / "out.h5"
    with EmbeddingWriter.open(out, SPEC, {**PROVENANCE, "model_config": {"n_layer": 2, "d_model": 16}}) as w:
        _write(w, RECORDS)
        w.finish()
    data = _record(0, 25)
    with open_embeddings(out) as f:
        np.testing.assert_array_equal(f.get("chr1", -2), data[2].astype(np.float16))  # 4 hidden states: -2 is 2
        np.testing.assert_array_equal(f["chr1"], f.get("chr1", 2))  # the default: the last stored
        assert f.resolve_layer(-4) == 0 and f.resolve_layer(None) == 2
        with pytest.raises(KeyError, match=r"layer -1 \(= 3 of this model\) is not stored .*stored: \[0, 2\]"):
            f.get("chr1", -1)
        with pytest.raises(IndexError, match="out of range"):
            f.pooled("mean", -5)


def test_a_directory_as_output_is_refused_before_any_work(tmp_path: Path, finished: Path) -> None:
    # `-o out.h5` naming a folder: the advice was --overwrite, which then failed at the final rename, after all work.
    (tmp_path / "out_dir.h5").mkdir()
    with pytest.raises(InputError, match="out_dir.h5 is a directory"):
        EmbeddingWriter.open(tmp_path / "out_dir.h5", SPEC, PROVENANCE, overwrite=True)
    with pytest.raises(InputError, match="out_dir.h5 is a directory"):
        store.merge([finished], tmp_path / "out_dir.h5", overwrite=True)


def test_a_stop_during_a_merge_lands_between_records_and_the_same_merge_resumes(tmp_path: Path) -> None:
    """SIGTERM in the CLI sets a flag the merge reads between records: exit 3 naming what was done, the records
    committed so far kept, and the same merge completes the file (equal to an uninterrupted one); a --virtual merge
    stopped before its write leaves nothing."""
    from genoconv.errors import Interrupted

    parts = _shards(tmp_path)
    asked = []

    def stop_at_third() -> str | None:
        asked.append(1)
        return "SIGTERM" if len(asked) >= 3 else None

    out = tmp_path / "merged.h5"
    with pytest.raises(Interrupted, match=r"merge interrupted by SIGTERM after 2 of 4 records"):
        store.merge(parts, out, stop=stop_at_third)
    assert store.merge(parts, out) == 4
    clean = tmp_path / "clean.h5"
    store.merge(parts, clean)
    with open_embeddings(out) as a, open_embeddings(clean) as b:
        assert hdf5.is_complete(out, None) and list(a.ids) == list(b.ids) == [rid for rid, _ in RECORDS]
        for rid in a.ids:
            np.testing.assert_array_equal(a.get(rid), b.get(rid))
    with pytest.raises(Interrupted, match="nothing was written"):
        store.merge(parts, tmp_path / "virtual.h5", virtual=True, stop=lambda: "SIGUSR1")
    assert not (tmp_path / "virtual.h5").exists()


def test_merging_a_shard_another_run_is_still_writing_says_so(tmp_path: Path) -> None:
    """An unfinished shard whose run is alive (its lock held) is "still being written", naming the run, not "an
    interrupted run" to be rerun (a second writer would then be refused anyway); once nobody holds it, it is."""
    parts = _shards(tmp_path)
    live = tmp_path / "live.h5"
    prov = {**PROVENANCE, "run_config": {**PROVENANCE["run_config"], "shard": [2, 2]}}
    w = EmbeddingWriter.open(live, SPEC, prov)
    _write(w, RECORDS, only={RECORDS[2][0]})
    w.close()  # unfinished, as a running shard's file is between commits
    holder = _hold_lock(live)
    try:
        with pytest.raises(InputError, match=rf"live.h5 is still being written \(pid {holder.pid} on "):
            store.merge([parts[0], live], tmp_path / "merged.h5")
    finally:
        holder.communicate("")
    with pytest.raises(InputError, match=r"live.h5 is incomplete \(an interrupted run\)"):
        store.merge([parts[0], live], tmp_path / "merged.h5")
