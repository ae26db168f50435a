"""Which reader a path needs: decided by its first bytes, not by its name (a ``.fa`` that is really gzip,
or a BAM named ``.dat``, is read all the same).

A gzip file is BGZF (``bgzip``) when its first member carries the ``BC`` extra subfield (SAM spec §4.1);
only BGZF and plain files can be indexed for random access.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from genoconv.errors import InputError, InputFileError

_HEAD_BYTES = 1 << 16
_SAM_HEADER = re.compile(rb"@(HD|SQ|RG|PG|CO)\t")
# Letters a header-less FASTA line is made of: IUPAC codes, gaps, stops, both cases.
_SEQUENCE_LINE = re.compile(rb"[ACGTUMRWSYKVHDBNXacgtumrwsykvhdbnx.*-]+")


@dataclass(frozen=True)
class Format:
    kind: str  # "fasta" | "fastq" | "bam" | "cram" | "sam"
    compression: str  # "none" | "gzip" | "bgzip"


def check_readable(path: Path) -> None:
    """Raise InputFileError (one line) for a missing, non-regular or unreadable path."""
    try:
        os.stat(path)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read ({e.strerror or e})") from None
    if os.path.isdir(path):
        raise InputFileError(f"{path}: is a directory, not a sequence file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as e:
        raise InputFileError(f"{path}: cannot read ({e.strerror or e})") from None


def read_head(path: Path) -> tuple[bytes, str]:
    """The first bytes of the file's content (decompressed when gzip) and its compression."""
    check_readable(path)
    with open(path, "rb") as fh:
        raw = fh.read(_HEAD_BYTES)
    if not raw:
        raise InputError(f"{path}: empty file")
    if raw[:2] != b"\x1f\x8b":
        return raw, "none"
    bgzf = len(raw) >= 18 and raw[3] & 4 and raw[12:14] == b"BC"
    out = bytearray()
    data = raw
    ended = False
    try:
        # BGZF and concatenated gzip are several members: decompress member after member.
        while data and len(out) < _HEAD_BYTES:
            d = zlib.decompressobj(wbits=31)
            out += d.decompress(data, _HEAD_BYTES)
            if not d.eof:
                break
            data = d.unused_data
        else:
            ended = not data and os.path.getsize(path) == len(raw)
    except zlib.error as e:
        raise InputError(f"{path}: corrupt gzip data ({e})") from None
    if not out:
        if ended:
            raise InputError(f"{path}: empty file")
        if os.path.getsize(path) <= len(raw):
            raise InputError(f"{path}: truncated gzip file (no data could be decompressed)")
    return bytes(out), "bgzip" if bgzf else "gzip"


def sniff(path: str | Path) -> Format:
    """The format of an input sequence file, or InputError (one line) saying why it cannot be read."""
    path = Path(path)
    head, compression = read_head(path)
    if head[:4] == b"CRAM":
        return Format("cram", compression)
    if head[:4] == b"BAM\x01":
        return Format("bam", compression)
    text = head.lstrip()
    if not text:
        raise InputError(f"{path}: empty file (only whitespace)")
    if text[:1] == b">":
        return Format("fasta", compression)
    if text[:1] == b"@":
        return Format("sam" if _SAM_HEADER.match(text) else "fastq", compression)
    first = text.split(b"\n", 1)[0].rstrip(b"\r")
    fields = first.split(b"\t")
    if len(fields) >= 11 and fields[1].isdigit():
        return Format("sam", compression)  # SAM without a header
    if _SEQUENCE_LINE.fullmatch(first):
        line_no = head[: len(head) - len(text)].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line_no}: sequence before the first '>' header (a FASTA file needs a '>name' line first)"
        )
    raise InputError(
        f"{path}: unknown format (expected FASTA, FASTQ, SAM, BAM or CRAM; the file starts with {first[:24]!r})"
    )
