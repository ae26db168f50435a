"""``genoconv merge``: combine the shard outputs of one sharded run (see :mod:`genoconv.store.merge`)."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import params as p

log = logging.getLogger("genoconv")


def merge(
    shards: Annotated[list[Path], typer.Argument(help="Shard outputs of one `genoconv embed --shard i/n` run.",
                                                 metavar="SHARD.h5")],
    output: p.Output,
    virtual: Annotated[bool, typer.Option(help="Map the shards' rows with HDF5 virtual datasets instead of "
                                          "copying them (the shard files must stay in place).")] = False,
    overwrite: p.Overwrite = False,
) -> None:
    """Combine shard outputs into one file (checks completeness, provenance and ids first)."""
    from ..store import merge as merge_files

    n = merge_files(shards, output, virtual=virtual, overwrite=overwrite,
                    command_line=shlex.join(["genoconv", *sys.argv[1:]]))
    log.info("merged %d shards, %d records into %s%s", len(shards), n, output, " (virtual)" if virtual else "")
