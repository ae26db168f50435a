"""Per-shard throughput of a sharded genoconv run, as a TSV (the workflow's `report` rule).

One row per shard, then a ``total`` row:

    shard  records  bases  start_time  end_time  wall_s  bases_per_s

``start_time``/``end_time`` are the shard file's provenance (ISO 8601 UTC, milliseconds), so ``wall_s`` is
end minus start: the time genoconv ran, model loading excluded, and for a shard that was resumed also the
time it waited between attempts. ``bases_per_s`` is ``bases / wall_s`` (``NA`` when ``wall_s`` is 0). In
the ``total`` row ``start_time``/``end_time`` span the whole run (first start to last end), ``wall_s`` is
that span and ``bases_per_s`` what the cluster achieved over it; the sum of the shards' ``wall_s`` is the
GPU time the run used.

Run by Snakemake (``script:``; so no ``from __future__`` import: Snakemake puts its preamble first), or by
hand: ``python report.py REPORT.tsv MERGED.h5 SHARD.h5...``.
"""

import csv
import json
import sys
from datetime import datetime
from pathlib import Path

from genoconv import open_embeddings

COLUMNS = ("shard", "records", "bases", "start_time", "end_time", "wall_s", "bases_per_s")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _row(label: str, records: int, bases: int, start: datetime, end: datetime) -> dict:
    wall = (end - start).total_seconds()
    return {"shard": label, "records": records, "bases": bases,
            "start_time": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end_time": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "wall_s": f"{wall:.3f}", "bases_per_s": f"{bases / wall:.1f}" if wall > 0 else "NA"}


def shard_rows(paths: list[str | Path]) -> list[dict]:
    """One row per shard file, in shard order."""
    rows = []
    for path in paths:
        with open_embeddings(path) as f:
            if not f.complete:
                raise ValueError(f"{path}: incomplete shard")
            prov = f.provenance
            run_config = prov.get("run_config") or "{}"
            run_config = json.loads(run_config) if isinstance(run_config, str) else run_config
            index, count = run_config.get("shard") or (1, 1)
            row = _row(f"{index}/{count}", len(f.ids), int(f.lengths.sum()), _time(prov["start_time"]),
                       _time(prov["end_time"]))
            rows.append((index, row))
    return [row for _, row in sorted(rows, key=lambda x: x[0])]


def total_row(rows: list[dict]) -> dict:
    return _row("total", sum(r["records"] for r in rows), sum(r["bases"] for r in rows),
                min(_time(r["start_time"]) for r in rows), max(_time(r["end_time"]) for r in rows))


def write_report(output: str | Path, merged: str | Path, shards: list[str | Path]) -> list[dict]:
    rows = shard_rows(shards)
    total = total_row(rows)
    with open_embeddings(merged) as f:
        if len(f.ids) != total["records"] or int(f.lengths.sum()) != total["bases"]:
            raise ValueError(f"{merged}: {len(f.ids)} records, {int(f.lengths.sum())} bases, but the shards hold "
                             f"{total['records']} records, {total['bases']} bases")
    with open(output, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows([*rows, total])
    return [*rows, total]


if __name__ == "__main__":
    if "snakemake" in globals():
        sm = globals()["snakemake"]
        rows = write_report(sm.output[0], sm.input.merged, list(sm.input.shards))
        total = rows[-1]
        with open(sm.log[0], "w") as fh:
            fh.write(f"{sm.output[0]}: {len(rows) - 1} shards, {total['records']} records, {total['bases']} bases "
                     f"in {total['wall_s']} s ({total['bases_per_s']} bases/s)\n")
    elif len(sys.argv) >= 4:
        write_report(sys.argv[1], sys.argv[2], sys.argv[3:])
    else:
        sys.exit("usage: python report.py REPORT.tsv MERGED.h5 SHARD.h5...")
