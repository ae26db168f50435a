"""Genome-browser tracks: each principal component of a file's bins as one bigWig (pyBigWig) or bedGraph file.

Every bin of every placed record (:mod:`.bins`) becomes one interval on its contig with its coordinate on each
component. bigWig and bedGraph hold one value per base, so records that overlap on the reference are an error
naming both (``overlap="error"``, the default) or are averaged where they overlap (``overlap="mean"``: the
contig is cut at every interval edge and each piece gets the mean of the bins covering it).

Contig sizes for the bigWig header come from ``chrom_sizes`` (a ``.fai`` or ``chrom.sizes`` file: name, length,
tab-separated) when given, else from the furthest interval end on each contig (genome browsers accept a
shorter header; ``bedGraphToBigWig``-style checks need the real sizes).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genoconv.coords import Coords
from genoconv.errors import InputError, InputFileError, cannot_write
from genoconv.store import EmbeddingsFile
from genoconv.viz.bins import Bins, iter_bins, placement, reference_intervals
from genoconv.viz.projection import Projection

log = logging.getLogger("genoconv.viz")
FORMATS = {"bigwig": ".bw", "bedgraph": ".bedGraph"}
OVERLAPS = ("error", "mean")


@dataclass
class ContigTrack:
    """Intervals on one contig, ascending: ``starts``/``ends`` (int64), ``values`` (n, k) and, per interval, the
    index of its record in the file's ids (-1 for a piece averaged from several records)."""

    starts: np.ndarray
    ends: np.ndarray
    values: np.ndarray
    records: np.ndarray


def collect_tracks(f: EmbeddingsFile, bins: Bins, projection: Projection, *,
                   overlap: str = "error") -> dict[str, ContigTrack]:
    """Project every placed record's bins and lay them out per contig (contigs in order of first appearance)."""
    if overlap not in OVERLAPS:
        raise InputError(f"overlap must be one of {', '.join(OVERLAPS)}, got {overlap!r}")
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {}
    lengths = dict(zip(f.ids, f.lengths.tolist()))
    index = {rid: i for i, rid in enumerate(f.ids)}
    skipped = 0
    for rid, rows in iter_bins(f, bins):
        coords = placement(f, rid, lengths[rid])
        if coords is None:
            skipped += 1
            continue
        starts, ends, order = reference_intervals(coords, lengths[rid], bins.size, len(rows))
        values = projection.apply(rows)[order]
        parts.setdefault(coords.contig, []).append((starts, ends, values, np.full(len(starts), index[rid])))
    if skipped:
        log.warning("%s: %d records without reference coordinates (FASTA/FASTQ records or unmapped reads in a file "
                    "whose other records have them) are left out of the tracks", f.path, skipped)
    tracks = {}
    for contig, items in parts.items():
        starts, ends, values, records = (np.concatenate(x) for x in zip(*items))
        order = np.argsort(starts, kind="stable")
        track = ContigTrack(starts[order], ends[order], values[order], records[order])
        clash = np.flatnonzero(track.starts[1:] < track.ends[:-1])
        if len(clash):
            if overlap == "error":
                a, b = track.records[clash[0]], track.records[clash[0] + 1]
                lo, hi = int(track.starts[clash[0] + 1]), int(min(track.ends[clash[0]], track.ends[clash[0] + 1]))
                where = Coords(contig, lo, hi, "+").region()
                raise InputError(f"{f.path}: records {f.ids[a]!r} and {f.ids[b]!r} overlap at {where}; a track holds "
                                 "one value per base: use --overlap mean to average overlapping records")
            track = average_overlaps(track)
        tracks[contig] = track
    if not tracks:
        raise InputError(f"{f.path}: no record has reference coordinates to place a track on")
    return tracks


def average_overlaps(track: ContigTrack) -> ContigTrack:
    """Cut the contig at every interval edge; each covered piece gets the mean of the intervals covering it."""
    bounds = np.unique(np.concatenate([track.starts, track.ends]))
    first, last = np.searchsorted(bounds, track.starts), np.searchsorted(bounds, track.ends)
    sums = np.zeros((len(bounds), track.values.shape[1]))
    counts = np.zeros(len(bounds), np.int64)
    np.add.at(sums, first, track.values)
    np.add.at(sums, last, -track.values)
    np.add.at(counts, first, 1)
    np.add.at(counts, last, -1)
    sums, counts = np.cumsum(sums, 0)[:-1], np.cumsum(counts)[:-1]
    covered = counts > 0
    return ContigTrack(bounds[:-1][covered], bounds[1:][covered], sums[covered] / counts[covered, None],
                       np.full(int(covered.sum()), -1))


def read_chrom_sizes(path: str | os.PathLike[str]) -> dict[str, int]:
    """``{contig: length}`` from a ``.fai`` or ``chrom.sizes`` file (first two tab-separated columns)."""
    sizes: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip() or line.startswith("#"):
                    continue
                fields = line.rstrip("\r\n").split("\t")
                try:
                    sizes[fields[0]] = int(fields[1])
                except (IndexError, ValueError):
                    raise InputError(f"{path}: line {line_no}: expected 'name<TAB>length'") from None
    except OSError as err:
        raise InputFileError(f"cannot read {path}: {err.strerror or err}") from None
    if not sizes:
        raise InputError(f"{path}: no contig sizes in this file")
    return sizes


def contig_sizes(tracks: dict[str, ContigTrack], chrom_sizes: dict[str, int] | None,
                 where: str) -> list[tuple[str, int]]:
    """The bigWig header: ``chrom_sizes`` (checked against the tracks) or each contig's furthest end."""
    if chrom_sizes is None:
        return [(contig, int(track.ends.max())) for contig, track in tracks.items()]
    for contig, track in tracks.items():
        if contig not in chrom_sizes:
            raise InputError(f"{where}: contig {contig!r} of the embeddings is not listed")
        if int(track.ends.max()) > chrom_sizes[contig]:
            raise InputError(f"{where}: {contig} is {chrom_sizes[contig]} bp, but a record ends at "
                             f"{int(track.ends.max())} (another assembly?)")
    return list(chrom_sizes.items())


def write_bigwig(path: Path, sizes: list[tuple[str, int]], tracks: dict[str, ContigTrack], component: int) -> None:
    try:
        import pyBigWig
    except ImportError:
        raise InputError("writing bigWig needs pyBigWig: pip install pyBigWig (or 'genoconv[bigwig]'), or use "
                         "--format bedgraph") from None
    try:
        open(path, "wb").close()  # pyBigWig 0.3 crashes the process (SIGSEGV) on a path it cannot open
    except OSError as err:
        raise cannot_write(path, err) from None
    bw = pyBigWig.open(str(path), "w")
    try:
        bw.addHeader(sizes)
        for contig, _ in sizes:
            track = tracks.get(contig)
            if track is not None and len(track.starts):
                bw.addEntries([contig] * len(track.starts), track.starts.tolist(), ends=track.ends.tolist(),
                              values=track.values[:, component].tolist())
    finally:
        bw.close()


def write_bedgraph(path: Path, sizes: list[tuple[str, int]], tracks: dict[str, ContigTrack], component: int,
                   name: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f'track type=bedGraph name="{name}"\n')
            # Contigs in C-locale order, as bedGraphToBigWig requires (`LC_COLLATE=C sort -k1,1 -k2,2n`).
            for contig in sorted((c for c, _ in sizes), key=lambda c: c.encode()):
                track = tracks.get(contig)
                if track is None:
                    continue
                for s, e, v in zip(track.starts.tolist(), track.ends.tolist(), track.values[:, component].tolist()):
                    fh.write(f"{contig}\t{s}\t{e}\t{v:.7g}\n")
    except OSError as err:
        raise cannot_write(path, err) from None


def export_tracks(f: EmbeddingsFile, prefix: str | os.PathLike[str], projection: Projection, bins: Bins, *,
                  fmt: str = "bigwig", chrom_sizes: str | os.PathLike[str] | None = None,
                  overlap: str = "error") -> list[Path]:
    """Write ``<prefix>.PC<j>.bw`` (or ``.bedGraph``) for every component of ``projection``; returns the paths."""
    if fmt not in FORMATS:
        raise InputError(f"track format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    tracks = collect_tracks(f, bins, projection, overlap=overlap)
    sizes = contig_sizes(tracks, None if chrom_sizes is None else read_chrom_sizes(chrom_sizes),
                         str(chrom_sizes))
    prefix = Path(prefix)
    if not prefix.parent.exists():
        raise InputFileError(f"{prefix}: output folder {prefix.parent} does not exist")
    paths = []
    for j in range(projection.n_components):
        path = prefix.with_name(f"{prefix.name}.PC{j + 1}{FORMATS[fmt]}")
        if fmt == "bigwig":
            write_bigwig(path, sizes, tracks, j)
        else:
            write_bedgraph(path, sizes, tracks, j, f"{prefix.name} PC{j + 1}")
        paths.append(path)
    n = sum(len(t.starts) for t in tracks.values())
    log.info("wrote %d %s tracks of %d intervals on %d contigs (%s)", len(paths), fmt, n, len(tracks),
             bins.describe())
    return paths
