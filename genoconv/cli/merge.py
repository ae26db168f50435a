"""``genoconv merge``: combine the shard outputs of one sharded run (see :mod:`genoconv.store.merge`)."""

from __future__ import annotations

import logging
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import signals_handled
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

    with _StopOnSignal() as stop:
        n = merge_files(shards, output, virtual=virtual, overwrite=overwrite,
                        command_line=shlex.join(["genoconv", *sys.argv[1:]]), stop=stop)
    log.info("merged %d shards, %d records into %s%s", len(shards), n, output, " (virtual)" if virtual else "")


class _StopOnSignal:
    """SIGTERM/SIGUSR1 (a cluster's time limit, scancel) during a merge: noted here and acted on by the merge between
    records (a flag, not an exception raised inside HDF5 calls, where it could be lost or leave a half-written
    record); the merge then exits 3 with what it had done. Ctrl-C keeps Python's KeyboardInterrupt."""

    def __init__(self) -> None:
        self.name: str | None = None
        self._handled = signals_handled(self._note)

    def __call__(self) -> str | None:
        return self.name

    def _note(self, signum, frame) -> None:  # a signal handler (frame unused)
        self.name = signal.Signals(signum).name
        log.warning("received %s: stopping after the current record", self.name)

    def __enter__(self):
        self._handled.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._handled.__exit__(*exc)
