"""``genoconv inspect``: summarise an output file (provenance, layout, the first records)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError


def inspect(path: Annotated[Path, typer.Argument(help="A genoconv HDF5 output.")],
            records: Annotated[int, typer.Option(min=0, help="Rows of the record table to show.")] = 10) -> None:
    """Summarise an output file: provenance, layout and the first records."""
    from rich.console import Console
    from rich.table import Table

    from ..store import open_embeddings

    if not path.exists():
        raise InputError(f"{path}: no such file")
    with open_embeddings(path) as f:
        console = Console()
        prov = f.provenance
        table = Table(title=str(path), show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        rows = [
            ("complete", str(f.complete)),
            ("records", f"{len(f):,}"),
            ("bases", f"{int(f.lengths.sum()):,}"),
            ("layers", ", ".join(map(str, f.layers))),
        ]
        for key in ("model", "checkpoint_sha256", "compute_dtype", "store_dtype", "pools", "window",
                    "tokenizer_policy", "convolution", "conv_backend", "genoconv_version", "start_time",
                    "end_time", "command_line"):
            if key in prov:
                rows.append((key, str(prov[key])))
        shards = _merged_from(prov.get("merged_from"))
        if shards:
            rows.append(("merged_from", "\n".join(shards)))
        for k, v in rows:
            table.add_row(k, v)
        console.print(table)
        recs = Table(title=f"first {min(records, len(f))} of {len(f)} records")
        for col in ("id", "length", "mode") + (("reference",) if f.has_coords else ()):
            recs.add_column(col)
        modes = f.modes if hasattr(f, "modes") else [""] * len(f)
        for rid, length, mode in list(zip(f.ids, f.lengths, modes))[:records]:
            where = (str(f.coords(rid) or ""),) if f.has_coords else ()
            recs.add_row(rid, f"{int(length):,}", str(mode), *where)
        console.print(recs)


def _merged_from(value) -> list[str]:
    """The shard files of a merged output, one line each (older files recorded bare paths)."""
    import json

    try:
        entries = json.loads(value) if isinstance(value, str) else list(value or [])
    except ValueError:
        return [str(value)]
    return [f"{e.get('path')} ({e.get('records')} records, finished {e.get('end_time')})" if isinstance(e, dict)
            else str(e) for e in entries]
