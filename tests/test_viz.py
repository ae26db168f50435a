"""`genoconv export` and `genoconv plot` (issue 19): principal-component tracks placed on the reference (minus strand
flipped back), pooled tables, shared projections, and pictures of the documented size and labels."""

from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genoconv.coords import Coords
from genoconv.store import EmbeddingWriter, StoreSpec, open_embeddings
from genoconv.viz import Projection, reference_intervals
from test_cli import run_cli  # genoconv ARGS... in-process: (exit code, stdout, stderr)

D, LAYER, W = 6, 2, 10
SPEC = StoreSpec(d_model=D, layers=(LAYER,), per_nucleotide=True, pools=("mean", "max"), window=W,
                 store_dtype="float32")
SHA = "ab" * 32
# id, length, coords: a plus- and a minus-strand region on chr1 (lengths not multiples of W), one on chr2
REGIONS = [("a_plus", 35, Coords("chr1", 100, 135, "+")), ("b_minus", 42, Coords("chr1", 1000, 1042, "-")),
           ("c_chr2", 20, Coords("chr2", 0, 20, "+"))]
# The same windows placed by hand (0-based half-open): b_minus's window k covers record bases [10k, 10k + 10),
# i.e. reference [1042 - 10k - 10, 1042 - 10k); its last, partial window (record bases 40-41) is reference 1000-1002.
EXPECTED = {"chr1": [(100, 110, "a_plus", 0), (110, 120, "a_plus", 1), (120, 130, "a_plus", 2),
                     (130, 135, "a_plus", 3), (1000, 1002, "b_minus", 4), (1002, 1012, "b_minus", 3),
                     (1012, 1022, "b_minus", 2), (1022, 1032, "b_minus", 1), (1032, 1042, "b_minus", 0)],
            "chr2": [(0, 10, "c_chr2", 0), (10, 20, "c_chr2", 1)]}


def _rows(seed: int, length: int) -> np.ndarray:
    """Per-base rows with well-separated variances along fixed directions (so the PCA axes are well defined)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((length, D)) * np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.2]) + 1.5).astype(np.float32)


def _windows(rows: np.ndarray) -> np.ndarray:
    return np.stack([rows[a:a + W].mean(0, dtype=np.float64) for a in range(0, len(rows), W)]).astype(np.float32)


def _store(path: Path, records, sha: str = SHA) -> dict[str, np.ndarray]:
    """A finished file with per-nucleotide, windowed and pooled rows; returns the per-base rows by id."""
    data = {}
    with EmbeddingWriter.open(path, SPEC, {"checkpoint_sha256": sha, "run_config": {"t": 1}}) as w:
        for seed, (rid, length, coords) in enumerate(records):
            rows = data[rid] = _rows(seed + len(path.name), length)
            rec = w.begin(rid, length, "exact", coords)
            rec.append(LAYER, rows)
            rec.append_windows(LAYER, _windows(rows))
            rec.commit({("mean", LAYER): rows.mean(0), ("max", LAYER): rows.max(0)})
        w.finish()
    return data


def _pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference PCA straight from the SVD of the centred data, with the documented sign rule."""
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:k] * np.sign(vt[:k][np.arange(k), np.abs(vt[:k]).argmax(1)])[:, None]
    return mean, comps


@pytest.fixture
def regions_h5(tmp_path):
    path = tmp_path / "regions.h5"
    return path, _store(path, REGIONS)


def _expected_values(data, proj_mean, proj_comps, contig):
    windows = {rid: _windows(rows) for rid, rows in data.items()}
    return np.stack([(windows[rid][k] - proj_mean) @ proj_comps.T for _, _, rid, k in EXPECTED[contig]])


def test_bigwig_tracks_are_the_projection_of_the_windows_on_the_reference(regions_h5, tmp_path, monkeypatch, capsys):
    pyBigWig = pytest.importorskip("pyBigWig")
    path, data = regions_h5
    code, _, err = run_cli(["export", path, "--tracks", tmp_path / "reg", "--save-projection", tmp_path / "p.npz"],
                           monkeypatch, capsys)
    assert code == 0, err
    x = np.concatenate([_windows(data[rid]) for rid, _, _ in REGIONS]).astype(np.float64)
    mean, comps = _pca(x, 3)
    proj = Projection.load(tmp_path / "p.npz")
    np.testing.assert_allclose(proj.mean, mean, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(proj.components, comps, atol=1e-8)
    assert proj.meta["layer"] == LAYER and proj.meta["model_sha256"] == SHA and proj.meta["n_rows"] == len(x)
    for j in range(3):
        bw = pyBigWig.open(str(tmp_path / f"reg.PC{j + 1}.bw"))
        try:
            assert bw.chroms() == {"chr1": 1042, "chr2": 20}  # furthest end per contig without --chrom-sizes
            for contig in ("chr1", "chr2"):
                got = bw.intervals(contig)
                assert [(s, e) for s, e, _ in got] == [(s, e) for s, e, _, _ in EXPECTED[contig]]
                want = _expected_values(data, mean, comps, contig)[:, j]
                np.testing.assert_allclose([v for _, _, v in got], want, rtol=1e-5, atol=1e-5)  # float32 in bigWig
        finally:
            bw.close()


def test_bedgraph_and_chrom_sizes(regions_h5, tmp_path, monkeypatch, capsys):
    path, data = regions_h5
    sizes = tmp_path / "genome.fa.fai"
    sizes.write_text("chr1\t5000\t6\t60\t61\nchr2\t300\t5090\t60\t61\nchr3\t10\t5400\t60\t61\n")
    code, _, err = run_cli(["export", path, "--tracks", tmp_path / "reg", "--format", "bedgraph", "--components", "2",
                            "--chrom-sizes", sizes], monkeypatch, capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("reg.*")) == ["reg.PC1.bedGraph", "reg.PC2.bedGraph"]
    x = np.concatenate([_windows(data[rid]) for rid, _, _ in REGIONS]).astype(np.float64)
    mean, comps = _pca(x, 2)
    for j in range(2):
        lines = (tmp_path / f"reg.PC{j + 1}.bedGraph").read_text().splitlines()
        assert lines[0] == f'track type=bedGraph name="reg PC{j + 1}"'
        rows = [line.split("\t") for line in lines[1:]]
        want = [(c, s, e) for c in ("chr1", "chr2") for s, e, _, _ in EXPECTED[c]]
        assert [(c, int(s), int(e)) for c, s, e, _ in rows] == want
        values = np.concatenate([_expected_values(data, mean, comps, c)[:, j] for c in ("chr1", "chr2")])
        np.testing.assert_allclose([float(v) for *_, v in rows], values, rtol=1e-6, atol=1e-6)
    sizes.write_text("chr1\t1040\nchr2\t300\n")  # chr1 too short for b_minus: another assembly
    code, _, err = run_cli(["export", path, "--tracks", tmp_path / "x", "--chrom-sizes", sizes], monkeypatch, capsys)
    assert code == 2 and "chr1 is 1040 bp, but a record ends at 1042" in err and err.count("\n") == 1


def test_shared_projection_and_its_checks(regions_h5, tmp_path, monkeypatch, capsys):
    pytest.importorskip("pyBigWig")
    path, _ = regions_h5
    other = tmp_path / "other.h5"
    other_data = _store(other, [("z", 25, Coords("chr7", 10, 35, "+"))])
    assert run_cli(["export", path, "--save-projection", tmp_path / "p.npz"], monkeypatch, capsys)[0] == 0
    code, _, err = run_cli(["export", other, "--tracks", tmp_path / "o", "--format", "bedgraph", "--projection",
                            tmp_path / "p.npz"], monkeypatch, capsys)
    assert code == 0, err
    proj = Projection.load(tmp_path / "p.npz")
    got = [float(line.split("\t")[3]) for line in (tmp_path / "o.PC2.bedGraph").read_text().splitlines()[1:]]
    np.testing.assert_allclose(got, proj.apply(_windows(other_data["z"]))[:, 1], rtol=1e-6, atol=1e-6)
    foreign = tmp_path / "foreign.h5"
    _store(foreign, REGIONS, sha="cd" * 32)
    code, _, err = run_cli(["export", foreign, "--tracks", tmp_path / "f", "--projection", tmp_path / "p.npz"],
                           monkeypatch, capsys)
    assert code == 2 and "p.npz was fitted on model checkpoint abab" in err and "foreign.h5" in err
    code, _, err = run_cli(["export", path, "--projection", tmp_path / "p.npz", "--components", "4", "--tracks",
                            tmp_path / "g"], monkeypatch, capsys)
    assert code == 2 and "holds 3 components" in err


def test_per_nucleotide_rows_binned(regions_h5, tmp_path, monkeypatch, capsys):
    path, data = regions_h5
    code, _, err = run_cli(["export", path, "--tracks", tmp_path / "b", "--format", "bedgraph", "--bin", "7",
                            "--components", "1"], monkeypatch, capsys)
    assert code == 0, err
    bins = {rid: np.stack([rows[a:a + 7].mean(0) for a in range(0, len(rows), 7)]) for rid, rows in data.items()}
    mean, comps = _pca(np.concatenate([bins[rid] for rid, _, _ in REGIONS]).astype(np.float64), 1)
    rows = [line.split("\t") for line in (tmp_path / "b.PC1.bedGraph").read_text().splitlines()[1:]]
    minus = [(int(s), int(e), float(v)) for c, s, e, v in rows if c == "chr1" and int(s) >= 1000]
    # b_minus: 42 bases = 6 bins of 7, flipped: record bin 5 (bases 35-41) is reference 1000-1007
    assert [(s, e) for s, e, _ in minus] == [(1000 + 7 * i, 1007 + 7 * i) for i in range(6)]
    np.testing.assert_allclose([v for *_, v in minus], ((bins["b_minus"] - mean) @ comps.T)[::-1, 0], rtol=1e-6,
                               atol=1e-6)


def test_whole_contig_fasta_records_use_their_id(tmp_path, monkeypatch, capsys):
    path = tmp_path / "contigs.h5"
    data = _store(path, [("NC_000913", 23, None), ("plasmid", 10, None)])
    code, _, err = run_cli(["export", path, "--tracks", tmp_path / "c", "--format", "bedgraph"], monkeypatch, capsys)
    assert code == 0, err
    rows = [line.split("\t")[:3] for line in (tmp_path / "c.PC1.bedGraph").read_text().splitlines()[1:]]
    assert rows == [["NC_000913", "0", "10"], ["NC_000913", "10", "20"], ["NC_000913", "20", "23"],
                    ["plasmid", "0", "10"]]
    assert set(data) == {"NC_000913", "plasmid"}


def test_overlapping_records(tmp_path, monkeypatch, capsys):
    path = tmp_path / "ov.h5"
    data = _store(path, [("g1", 20, Coords("chr1", 0, 20, "+")), ("g2", 10, Coords("chr1", 15, 25, "-"))])
    code, _, err = run_cli(["export", path, "--tracks", tmp_path / "o"], monkeypatch, capsys)
    assert code == 2 and "records 'g1' and 'g2' overlap at chr1:16-20" in err and "--overlap mean" in err
    code, _, err = run_cli(["export", path, "--tracks", tmp_path / "o", "--format", "bedgraph", "--components", "1",
                            "--overlap", "mean"], monkeypatch, capsys)
    assert code == 0, err
    x = np.concatenate([_windows(data["g1"]), _windows(data["g2"])]).astype(np.float64)
    mean, comps = _pca(x, 1)
    v = (x - mean) @ comps.T
    g1_0, g1_1, g2_0 = v[0, 0], v[1, 0], v[2, 0]
    rows = [(int(s), int(e), float(val)) for _, s, e, val in
            (line.split("\t") for line in (tmp_path / "o.PC1.bedGraph").read_text().splitlines()[1:])]
    assert [(s, e) for s, e, _ in rows] == [(0, 10), (10, 15), (15, 20), (20, 25)]
    np.testing.assert_allclose([val for *_, val in rows], [g1_0, g1_1, (g1_1 + g2_0) / 2, g2_0], rtol=1e-6,
                               atol=1e-6)


def test_reads_scaled_onto_their_aligned_span():
    # 30 read bases aligned over 20 reference bases (soft clips/insertions), reverse strand, bins of 10:
    # record edges 0, 10, 20, 30 -> span edges 0, 7 (6.67 rounded), 13, 20 -> flipped onto [500, 520)
    starts, ends, order = reference_intervals(Coords("chr2", 500, 520, "-"), 30, 10, 3)
    assert list(zip(starts, ends, order)) == [(500, 507, 2), (507, 513, 1), (513, 520, 0)]
    starts, ends, order = reference_intervals(Coords("c", 0, 3, "+"), 10, 2, 5)  # a bin shrinking to nothing goes
    assert list(zip(starts, ends, order)) == [(0, 1, 0), (1, 2, 2), (2, 3, 4)]


def test_pooled_table_tsv_and_parquet(regions_h5, tmp_path, monkeypatch, capsys):
    path, data = regions_h5
    code, _, err = run_cli(["export", path, "--table", tmp_path / "pooled.tsv"], monkeypatch, capsys)
    assert code == 0, err
    with open(tmp_path / "pooled.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    header = ["id", "length", "contig", "start", "end", "strand"] + [f"{m}_{j}" for m in ("mean", "max")
                                                                      for j in range(D)]
    assert list(rows[0]) == header
    assert [(r["id"], int(r["length"]), r["contig"], int(r["start"]), int(r["end"]), r["strand"]) for r in rows] == \
        [(rid, n, *c) for rid, n, c in REGIONS]
    for r in rows:
        got = np.array([float(r[f"mean_{j}"]) for j in range(D)], np.float32)
        np.testing.assert_array_equal(got, data[r["id"]].mean(0))  # 9 digits: float32 exactly
        assert np.array_equal(np.array([float(r[f"max_{j}"]) for j in range(D)], np.float32), data[r["id"]].max(0))
    code, _, err = run_cli(["export", path, "--table", tmp_path / "m.tsv", "--pool", "max"], monkeypatch, capsys)
    assert code == 0 and (tmp_path / "m.tsv").read_text().split("\n")[0].split("\t")[6] == "max_0"
    pq = pytest.importorskip("pyarrow.parquet")
    code, _, err = run_cli(["export", path, "--table", tmp_path / "pooled.parquet"], monkeypatch, capsys)
    assert code == 0, err
    table = pq.read_table(tmp_path / "pooled.parquet")
    assert table.column_names == header and table.column("id").to_pylist() == [r[0] for r in REGIONS]
    assert str(table.schema.field("mean_0").type) == "float"
    with open_embeddings(path) as f:
        np.testing.assert_array_equal(np.column_stack([table.column(f"mean_{j}").to_numpy() for j in range(D)]),
                                      f.pooled("mean"))


def test_export_usage_errors(regions_h5, tmp_path, monkeypatch, capsys):
    path, _ = regions_h5
    for args, message in [
        ([], "nothing to export"),
        (["--table", tmp_path / "t.csv"], "t.csv: table format from the name"),
        (["--table", tmp_path / "t.tsv", "--pool", "last"], "has no pooled last vectors (stored: mean, max)"),
        (["--tracks", tmp_path / "t", "--layer", "5"], "layer 5 is not stored"),
        (["--tracks", tmp_path / "t", "--source", "windowed", "--bin", "5"], "--bin sets the bin of per-nucleotide"),
        (["--tracks", tmp_path / "missing" / "t"], "output folder"),
        (["--save-projection", tmp_path / "a.npz", "--projection", path], "exclude each other"),
    ]:
        code, _, err = run_cli(["export", path, *args], monkeypatch, capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
    code, _, err = run_cli(["export", tmp_path / "nope.h5", "--table", tmp_path / "t.tsv"], monkeypatch, capsys)
    assert code == 2 and "nope.h5" in err


def test_unwritable_track_is_an_error_not_a_crash(regions_h5, tmp_path, monkeypatch, capsys):
    pytest.importorskip("pyBigWig")  # pyBigWig itself segfaults on a path it cannot open
    path, _ = regions_h5
    (tmp_path / "t.PC1.bw").mkdir()
    code, _, err = run_cli(["export", path, "--tracks", tmp_path / "t"], monkeypatch, capsys)
    assert code == 2 and "cannot write" in err and "t.PC1.bw" in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_while_exporting_exits_1_like_the_store(regions_h5, tmp_path, monkeypatch, capsys):
    """A full disk is a runtime failure (exit 1, README), not bad input (exit 2) as a missing folder is."""
    path, _ = regions_h5
    (tmp_path / "full.tsv").symlink_to("/dev/full")
    code, _, err = run_cli(["export", path, "--table", tmp_path / "full.tsv"], monkeypatch, capsys)
    assert code == 1 and "cannot write" in err and "no space left on device" in err, err
    code, _, err = run_cli(["export", path, "--table", tmp_path / "missing" / "t.tsv"], monkeypatch, capsys)
    assert code == 2, err


def test_embedded_regions_end_to_end(shared_data, small_model_dir, tmp_path, monkeypatch, capsys):
    """Real chrX regions through embed and export: the bigWig holds the stored windows' projection, placed on X."""
    pyBigWig = pytest.importorskip("pyBigWig")
    bed = tmp_path / "r.bed"
    bed.write_text("X\t31137344\t31137594\tdmd_3p\t0\t-\nX\t1000000\t1000120\tplus\t0\t+\n")
    out = tmp_path / "r.h5"
    code, _, err = run_cli(["embed", "--reference", shared_data / "GRCh37_chrX_1-70M.fa.gz", "--regions", bed, "-o",
                            out, "--model", small_model_dir, "--device", "cpu", "--window", "100"], monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli(["export", out, "--tracks", tmp_path / "r", "--components", "2", "--save-projection",
                            tmp_path / "p.npz", "--chrom-sizes", shared_data / "GRCh37_chrX_1-70M.fa.gz.fai"],
                           monkeypatch, capsys)
    assert code == 0, err
    proj = Projection.load(tmp_path / "p.npz")
    with open_embeddings(out) as f:
        minus = proj.apply(f.get("dmd_3p", kind="windowed"))[::-1]  # 3 windows, flipped into reference order
        plus = proj.apply(f.get("plus", kind="windowed"))
    bw = pyBigWig.open(str(tmp_path / "r.PC2.bw"))
    try:
        assert bw.chroms() == {"X": 69_999_930}
        got = bw.intervals("X")
    finally:
        bw.close()
    assert [(s, e) for s, e, _ in got] == [(1_000_000, 1_000_100), (1_000_100, 1_000_120), (31_137_344, 31_137_394),
                                           (31_137_394, 31_137_494), (31_137_494, 31_137_594)]
    np.testing.assert_allclose([v for *_, v in got], np.concatenate([plus[:, 1], minus[:, 1]]), rtol=1e-5, atol=1e-5)


_NO_TORCH = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "pysam"):
            raise ImportError(f"blocked import of {name!r}")
sys.meta_path.insert(0, Block())
from genoconv.store import open_embeddings
from genoconv.viz import choose_bins, export_tracks, file_projection, pooled_table, write_table
import genoconv.viz.plot
with open_embeddings(sys.argv[1]) as f:
    write_table(pooled_table(f), sys.argv[2])
    bins = choose_bins(f)
    print(len(export_tracks(f, sys.argv[3], file_projection(f, bins, 2), bins, fmt="bedgraph")))
"""


def test_viz_needs_no_torch(regions_h5, tmp_path):
    path, _ = regions_h5
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(path), str(tmp_path / "t.tsv"), str(tmp_path / "t")],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "2" and (tmp_path / "t.PC2.bedGraph").exists()


# ------------------------------------------------------------------------------------------ plot
def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_plot_png_size_and_svg_labels(regions_h5, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    path, _ = regions_h5
    second = tmp_path / "second.h5"
    _store(second, [("s1", 30, None), ("s2", 25, None), ("s3", 12, None)])
    code, _, err = run_cli(["plot", path, second, "-o", tmp_path / "fig.png"], monkeypatch, capsys)
    assert code == 0, err
    assert _png_size(tmp_path / "fig.png") == (1000, 500)  # default 10 x 5 in at 100 dpi
    code, _, err = run_cli(["plot", path, "-o", tmp_path / "small.png", "--width", "6", "--height", "4", "--dpi", "50"],
                           monkeypatch, capsys)
    assert code == 0 and _png_size(tmp_path / "small.png") == (300, 200)
    code, _, err = run_cli(["plot", path, second, "-o", tmp_path / "fig.svg", "--record", "b_minus"], monkeypatch,
                           capsys)
    assert code == 0, err
    svg = (tmp_path / "fig.svg").read_text()
    assert 'width="720pt" height="360pt"' in svg  # 10 x 5 in
    for text in ("PC1 (", "% of variance)", "PC2 (", "PC3", "chr1 position (bp)", "regions.h5", "second.h5",
                 "at chr1:1,001-1,042 (-, drawn in reference order)"):
        assert text in svg, text
    labels = tmp_path / "labels.tsv"
    labels.write_text("id\tlabel\na_plus\tpromoter\nb_minus\tenhancer\n")
    code, _, err = run_cli(["plot", path, "-o", tmp_path / "lab.svg", "--labels", labels, "--panels", "pooled",
                            "--pool", "max"], monkeypatch, capsys)
    assert code == 0, err
    svg = (tmp_path / "lab.svg").read_text()
    assert "promoter" in svg and "enhancer" in svg and "unlabelled" in svg and "position (bp)" not in svg
    assert "max vectors of 3 records, PCA" in svg


def test_plot_tracks_figure_is_the_projection(regions_h5, tmp_path):
    pytest.importorskip("matplotlib")
    from genoconv.viz import choose_bins, file_projection
    from genoconv.viz.plot import draw, record_tracks

    path, data = regions_h5
    with open_embeddings(path) as f:
        bins = choose_bins(f)
        tracks = record_tracks(f, "b_minus", bins, file_projection(f, bins, 2))
        fig = draw(tmp_path / "t.png", tracks=tracks, width=4, height=3, dpi=50)
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["PC1", "PC2"] and axes[-1].get_xlabel() == "chr1 position (bp)"
    x, y = axes[0].get_lines()[0].get_data()
    np.testing.assert_allclose(x, [1001, 1007, 1017, 1027, 1037])  # bin centres in reference order
    x_all = np.concatenate([_windows(data[rid]) for rid, _, _ in REGIONS]).astype(np.float64)
    mean, comps = _pca(x_all, 2)
    np.testing.assert_allclose(y, ((_windows(data["b_minus"]) - mean) @ comps.T)[::-1, 0], atol=1e-6)
    assert _png_size(tmp_path / "t.png") == (200, 150)


def test_plot_tracks_of_a_one_base_record_are_drawn(tmp_path):
    """A 1-base record has one bin: its panels were empty (a line through one point draws nothing) and its x axis
    labelled "0 0 0 1 1". Now each panel marks the point, on the record's span, labelled at whole bases only."""
    pytest.importorskip("matplotlib")
    from genoconv.viz import choose_bins, file_projection
    from genoconv.viz.plot import draw, record_tracks

    path = tmp_path / "one.h5"
    _store(path, [*REGIONS, ("d_one", 1, Coords("chr3", 0, 1, "+"))])
    with open_embeddings(path) as f:
        bins = choose_bins(f)
        tracks = record_tracks(f, "d_one", bins, file_projection(f, bins, 2))
        fig = draw(tmp_path / "t.png", tracks=tracks, width=4, height=3, dpi=50)
    for j, ax in enumerate(fig.get_axes()):
        (line,) = ax.get_lines()
        x, y = line.get_data()
        np.testing.assert_allclose(x, [0.5])
        np.testing.assert_allclose(y, tracks.values[:, j])
        assert line.get_marker() not in (None, "None", "", " ") and line.get_markersize() > 0
        assert ax.get_xlim() == (0, 1)
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.get_axes()[-1].get_xticklabels()]
    assert [t for t in labels if t] == ["0", "1"], labels


def test_plot_without_matplotlib_says_how_to_install(regions_h5, tmp_path, monkeypatch, capsys):
    path, _ = regions_h5
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, _, err = run_cli(["plot", path, "-o", tmp_path / "x.png"], monkeypatch, capsys)
    assert code == 2 and err.strip() == "error: plotting needs matplotlib: pip install 'genoconv[viz]' (or pip " \
        "install matplotlib)"
    assert not (tmp_path / "x.png").exists()


def test_plot_usage_errors(regions_h5, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    path, _ = regions_h5
    bad = tmp_path / "bad.tsv"
    bad.write_text("a_plus\tx\textra\n")
    foreign = tmp_path / "foreign.h5"
    _store(foreign, REGIONS, sha="cd" * 32)
    for args, message in [
        (["-o", tmp_path / "x.gif"], "x.gif: image format from the name"),
        (["-o", tmp_path / "x.png", "--record", "nope"], "no record 'nope' in"),
        (["-o", tmp_path / "x.png", "--labels", bad], "bad.tsv: line 1: expected 'id<TAB>label'"),
        (["-o", tmp_path / "x.png", "--pool", "mean,max"], "one pooling mode"),
        ([foreign, "-o", tmp_path / "x.png"], "foreign.h5 comes from another model or layer than"),
    ]:
        code, _, err = run_cli(["plot", path, *args], monkeypatch, capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)


def test_plot_of_a_one_record_file_points_to_its_tracks(tmp_path, monkeypatch, capsys):
    """One record has no spread for the pooled panel's PCA: the error says to draw its tracks alone, and that works."""
    pytest.importorskip("matplotlib")
    solo = tmp_path / "solo.h5"
    _store(solo, REGIONS[:1])
    code, _, err = run_cli(["plot", solo, "-o", tmp_path / "solo.png"], monkeypatch, capsys)
    assert code == 2 and "needs at least 2 (draw this record's tracks alone with --panels tracks)" in err, err
    code, _, err = run_cli(["plot", solo, "-o", tmp_path / "solo.png", "--panels", "tracks"], monkeypatch, capsys)
    assert code == 0 and (tmp_path / "solo.png").stat().st_size > 0, err


def test_umap_without_umap_learn_says_how_to_install(regions_h5, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    path, _ = regions_h5
    monkeypatch.setitem(sys.modules, "umap", None)
    code, _, err = run_cli(["plot", path, "-o", tmp_path / "u.png", "--method", "umap"], monkeypatch, capsys)
    assert code == 2 and "--method umap needs umap-learn: pip install umap-learn" in err


def test_projection_keeps_only_the_components_the_rows_have(caplog, monkeypatch):
    # 4 centred rows span 3 directions: a 4th..10th "component" would be an arbitrary axis written as a track.
    import logging

    from genoconv.viz.projection import fit_projection

    monkeypatch.setattr(logging.getLogger("genoconv"), "propagate", True)  # an in-process CLI run turns it off

    rows = np.random.default_rng(0).standard_normal((4, 16))
    proj = fit_projection([rows[:1], rows[1:]], 10, what="tiny.h5 rows")
    assert proj.n_components == 3 and proj.variance.min() > 1e-3
    assert "tiny.h5 rows: 4 rows have only 3 principal components; keeping those, not 10" in caplog.text


def test_bedgraph_contigs_in_the_order_bedgraphtobigwig_needs(tmp_path, monkeypatch, capsys):
    # Records met in the order chrX, chr10, chr2 (first appearance): bedGraphToBigWig refuses a file whose
    # contigs are not in C-locale order ("is not case-sensitive sorted ... LC_COLLATE=C").
    path = tmp_path / "c.h5"
    _store(path, [("x", 30, Coords("chrX", 100, 130, "+")), ("ten", 20, Coords("chr10", 0, 20, "+")),
                  ("two", 20, Coords("chr2", 50, 70, "-")), ("x2", 10, Coords("chrX", 0, 10, "+"))])
    code, _, err = run_cli(["export", path, "--tracks", tmp_path / "c", "--format", "bedgraph", "--components", "1"],
                           monkeypatch, capsys)
    assert code == 0, err
    rows = [line.split("\t")[:2] for line in (tmp_path / "c.PC1.bedGraph").read_text().splitlines()[1:]]
    assert rows == sorted(rows, key=lambda r: (r[0].encode(), int(r[1])))
    assert rows[0][0] == "chr10" and rows[-1][0] == "chrX"
