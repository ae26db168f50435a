"""Which reader a path needs: decided by its first bytes, not by its name (a ``.fa`` that is really gzip,
or a BAM named ``.dat``, is read all the same).

A gzip file is BGZF (``bgzip``) when its first member carries the ``BC`` extra subfield (SAM spec §4.1);
only BGZF and plain files can be indexed for random access.
"""

from __future__ import annotations

import os
import re
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

from genoconv.errors import InputError, InputFileError

HEAD_BYTES = 1 << 16  # bytes read to recognise a format
STDIN = "-"
UTF8_BOM = b"\xef\xbb\xbf"
_SAM_HEADER = re.compile(rb"@(HD|SQ|RG|PG|CO)\t")
# Letters a header-less FASTA line is made of: IUPAC codes, gaps, stops, both cases.
_SEQUENCE_LINE = re.compile(rb"[ACGTUMRWSYKVHDBNXacgtumrwsykvhdbnx.*-]+")
# Letters of the amino-acid alphabet that are no nucleotide (IUPAC) code.
_AMINO_ONLY = re.compile(rb"[EFIJLOPQZ]")


@dataclass(frozen=True)
class Format:
    kind: str  # "fasta" | "fastq" | "bam" | "cram" | "sam"
    compression: str  # "none" | "gzip" | "bgzip"
    bom: bool = False  # the text starts with a UTF-8 byte-order mark (Windows editors write one)
    cr_only: bool = False  # lines end in CR alone (classic Mac OS)

    @property
    def indexable(self) -> bool:
        """Whether htslib can index the file for random access (else it is streamed)."""
        return self.compression != "gzip" and not self.bom and not self.cr_only


def is_stream(path: str | Path) -> bool:
    """Whether ``path`` can only be read once, from its start: ``-`` (stdin), a pipe (``/dev/stdin`` fed by one,
    process substitution ``<(zcat x.fa.gz)``), a FIFO, a socket or a terminal."""
    if str(path) == STDIN:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


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
        raw = fh.read(HEAD_BYTES)
    return decompress_head(path, raw, whole=os.path.getsize(path) <= len(raw))


def decompress_head(name: str | Path, raw: bytes, *, whole: bool) -> tuple[bytes, str]:
    """The first bytes of content in ``raw`` (the first bytes of a file or stream; ``whole`` when that is all of
    it), decompressed when gzip, and the compression."""
    if not raw:
        raise InputError(f"{name}: empty file")
    if raw[:2] != b"\x1f\x8b":
        return raw, "none"
    bgzf = len(raw) >= 18 and raw[3] & 4 and raw[12:14] == b"BC"
    out = bytearray()
    data = raw
    ended = False
    try:
        # BGZF and concatenated gzip are several members: decompress member after member.
        while data and len(out) < HEAD_BYTES:
            d = zlib.decompressobj(wbits=31)
            out += d.decompress(data, HEAD_BYTES)
            if not d.eof:
                break
            data = d.unused_data
        else:
            ended = not data and whole
    except zlib.error as e:
        raise InputError(f"{name}: corrupt gzip data ({e})") from None
    if not out:
        if ended:
            raise InputError(f"{name}: empty file")
        if whole:
            raise InputError(f"{name}: truncated gzip file (no data could be decompressed)")
    return bytes(out), "bgzip" if bgzf else "gzip"


def sniff(path: str | Path) -> Format:
    """The format of an input sequence file, or InputError (one line) saying why it cannot be read."""
    path = Path(path)
    return sniff_content(path, *read_head(path))


def sniff_content(name: str | Path, head: bytes, compression: str) -> Format:
    """The format of content that starts with ``head`` (already decompressed), or InputError naming ``name``."""
    if head[:4] == b"CRAM":
        return Format("cram", compression)
    if head[:4] == b"BAM\x01":
        return Format("bam", compression)
    bom = head.startswith(UTF8_BOM)
    if bom:
        head = head[len(UTF8_BOM):]
    cr_only = b"\r" in head and b"\n" not in head
    if cr_only:
        head = head.replace(b"\r", b"\n")
    text = head.lstrip()
    if not text:
        raise InputError(f"{name}: empty file (only whitespace)")
    if text[:1] == b">":
        _refuse_protein(name, text)
        return Format("fasta", compression, bom, cr_only)
    if text[:1] == b"@":
        return Format("sam" if _SAM_HEADER.match(text) else "fastq", compression, bom, cr_only)
    first = text.split(b"\n", 1)[0].rstrip(b"\r")
    fields = first.split(b"\t")
    if len(fields) >= 11 and fields[1].isdigit():
        return Format("sam", compression)  # SAM without a header
    if _SEQUENCE_LINE.fullmatch(first):
        line_no = head[: len(head) - len(text)].count(b"\n") + 1
        raise InputError(
            f"{name}: line {line_no}: sequence before the first '>' header (a FASTA file needs a '>name' line first)"
        )
    raise InputError(
        f"{name}: unknown format (expected FASTA, FASTQ, SAM, BAM or CRAM; the file starts with {first[:24]!r})"
    )


def _refuse_protein(name: str | Path, text: bytes) -> None:
    """A FASTA whose first record holds letters only amino acids use is a protein file: say so before any work."""
    header, _, rest = text.partition(b"\n")
    sequence = rest.split(b"\n>", 1)[0]
    letters = sorted(set(_AMINO_ONLY.findall(sequence.upper())))
    if letters:
        record = header[1:].split(None, 1)[0].decode("utf-8", "replace") if header[1:].split() else "1"
        shown = ", ".join(x.decode() for x in letters[:6])
        raise InputError(f"{name}: record '{record}' holds amino acids ({shown}), not DNA: a protein FASTA? "
                         "genoconv embeds nucleotide sequences")
