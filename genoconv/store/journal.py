"""The journal beside an unfinished output: an append-only log of committed records, one CRC-checked line each.

It is what makes a kill at any instant lose nothing committed (:mod:`genoconv.store`, points 2, 4 and 5).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genoconv.coords import Coords
from genoconv.store.hdf5 import fsync_dir

JOURNAL_FORMAT = "genoconv-store-journal"


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def salvage_path(path: Path) -> Path:
    return path.with_name(path.name + ".salvage")


def aside_path(path: Path) -> Path:
    """Where ``--overwrite`` writes the file that replaces ``path`` once complete."""
    return path.with_name(path.name + ".new")


def encode_line(obj: Mapping[str, Any]) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return text + b"\t%08x\n" % zlib.crc32(text)


@dataclass
class JournalState:
    header: dict[str, Any] | None
    entries: list[dict[str, Any]]
    clean: bool  # ends exactly with a valid "closed" line counting every entry
    attrs: int | None = None  # CRC32 of the file's root attributes as written (hdf5.attrs_digest)
    # The newest checkpoint of a record in progress (a "p" line after the last committed entry): its rows so far,
    # their CRCs, where they live, and the CRC of the saved state (accumulators, stream) to continue from.
    partial: dict[str, Any] | None = None

    @property
    def tail(self) -> dict[str, Any] | None:
        """The newest line that says where the rows past the last whole chunk live (``a``, ``s``)."""
        return self.partial if self.partial is not None else (self.entries[-1] if self.entries else None)


def state_path(path: Path, slot: int) -> Path:
    """The saved state of a record in progress, one file per tail slot (the one a journal line names is never
    being written)."""
    return path.with_name(f"{path.name}.state{slot}.npz")


def read_journal(path: Path) -> JournalState:
    """Parse the valid prefix: lines with a good CRC, entries numbered 0, 1, 2, ... Stops at the first bad one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JournalState(None, [], False)
    header: dict[str, Any] | None = None
    entries: list[dict[str, Any]] = []
    attrs: int | None = None
    partial: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    pos, intact = 0, True
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            intact = False  # torn last line
            break
        line, pos = data[pos:nl], nl + 1
        text, _, crc = line.rpartition(b"\t")
        try:
            ok = int(crc, 16) == zlib.crc32(text)
            obj = json.loads(text) if ok else None
        except ValueError:
            ok, obj = False, None
        if not ok or not isinstance(obj, dict):
            intact = False
            break
        if header is None:
            if obj.get("journal") != JOURNAL_FORMAT:
                intact = False
                break
            header = obj
        elif "c" in obj:
            if obj["c"] != len(entries):
                intact = False
                break
            entries.append(obj)
            partial = None  # the record it checkpointed is committed now (or another one began)
        elif "p" in obj:
            partial = obj["p"] if obj["p"].get("c") == len(entries) else None
        elif "attrs" in obj:
            attrs = obj["attrs"]
        last = obj
    clean = intact and last is not None and last.get("closed") == len(entries) and header is not None
    return JournalState(header, entries, clean, attrs, partial)


def entry_coords(entry: Mapping[str, Any]) -> Coords | None:
    """A record entry's coordinates (key ``co``; absent for records without them and in older journals)."""
    co = entry.get("co")
    return None if co is None else Coords.checked(co)


class Journal:
    """Append-only line log; one ``os.write`` per line on an O_APPEND descriptor."""

    def __init__(self, path: Path, header: dict[str, Any] | None = None) -> None:
        self.path = path
        if header is not None:  # new journal: header written to a temp name, then renamed into place
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as fh:
                fh.write(encode_line(header))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fsync_dir(path)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def write(self, obj: Mapping[str, Any], sync: bool = False) -> None:
        line = encode_line(obj)
        if os.write(self.fd, line) != len(line):
            raise OSError(f"short write to {self.path}")
        if sync:
            os.fsync(self.fd)

    def write_many(self, objs: list[Mapping[str, Any]]) -> None:
        """Several lines in one write: a kill may tear it, leaving a valid prefix of whole lines."""
        data = b"".join(encode_line(o) for o in objs)
        if os.write(self.fd, data) != len(data):
            raise OSError(f"short write to {self.path}")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
