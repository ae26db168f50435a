"""What a run records about each file it reads, so that a resume can tell the same file from a changed one.

A file is identified by its size and a content fingerprint, never by the path it was named by (the same file
reached through another relative path, or copied elsewhere, is the same input):

- files up to ``WHOLE_HASH_BYTES`` (256 MiB), and files the run reads through anyway (FASTQ, plain gzip, SAM/BAM/
  CRAM, FASTA without an index): the SHA-256 of the whole file. Hashing runs at about 1 GB/s, thousands of times
  faster than embedding the same bases, so this costs next to nothing;
- larger files read through an index (an indexed FASTA input, a ``--reference`` for regions, of which a run may
  read only a few genes): the SHA-256 of the index files, the size, and ``SAMPLED_BLOCKS`` blocks of
  ``SAMPLE_BYTES`` spread evenly over the file, first and last included. A same-size edit that touches no sampled
  block would go unseen, so such a fingerprint also records the modification time, and a resume requires it too.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

WHOLE_HASH_BYTES = 256 * 2**20
SAMPLED_BLOCKS = 64
SAMPLE_BYTES = 64 * 2**10
_READ_BYTES = 4 * 2**20


def file_identity(path: Path, index_files: Sequence[Path] = ()) -> dict:
    """``{"size", "mtime_ns", "sha256"}`` (the whole file hashed) or ``{"size", "mtime_ns", "sampled_sha256"}`` (its
    index and sampled blocks: a file larger than ``WHOLE_HASH_BYTES`` read through ``index_files``)."""
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if st.st_size <= WHOLE_HASH_BYTES or not index_files:
            while block := fh.read(_READ_BYTES):
                h.update(block)
            return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()}
        for index in index_files:
            h.update(Path(index).read_bytes())
        last = st.st_size - SAMPLE_BYTES
        for i in range(SAMPLED_BLOCKS):
            fh.seek(last * i // (SAMPLED_BLOCKS - 1))
            h.update(fh.read(SAMPLE_BYTES))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sampled_sha256": h.hexdigest()}


def resume_key(identity: dict) -> dict:
    """The part of an identity a resume must find unchanged: the modification time only where the content was
    sampled (a whole-file hash already proves the content; a copy or a ``touch`` changes nothing)."""
    return {k: v for k, v in identity.items() if k != "mtime_ns" or "sha256" not in identity}


def identity_difference(old: dict, new: dict) -> str:
    """How two resume keys differ, in words ('' when they are the same file)."""
    if old == new:
        return ""
    if old.get("size") != new.get("size"):
        return f"{old.get('size')} bytes then, {new.get('size')} now"
    if old.keys() != new.keys():
        return "fingerprinted another way now (its index appeared or went away); the content may be the same"
    if "mtime_ns" in old and old.get("mtime_ns") != new.get("mtime_ns"):
        return "modified since (same size; large files are fingerprinted by their index and sampled blocks, " \
               "so the modification time must match too)"
    return "same size, different content"
