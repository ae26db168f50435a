"""FASTA and FASTQ readers (plain, gzip, bgzip).

Plain and bgzip FASTA are read through ``pysam.FastaFile`` (a ``.fai`` index, built next to the file when
missing and the folder is writable): records are lazy and ``Record.sequence(start, end)`` reads only that
slice, so a chromosome is never a Python string unless asked for. Plain-gzip FASTA, FASTA without an index
that can be built, and all FASTQ are streamed one record at a time (that record is held in memory).

Record ids are the first word of the header line, like ``pysam``'s ``name`` and Biopython's ``.id``.
Coordinates are 0-based half-open throughout.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pysam

from genoconv.coords import Coords
from genoconv.errors import InputError, InputFileError
from genoconv.io.record import Record, reverse_complement
from genoconv.io.sniff import UTF8_BOM, Format

log = logging.getLogger("genoconv.io")

# htslib drops duplicate and empty FASTA records from a .fai with only a stderr note; a pass over the headers
# (4 MiB reads, about 1 GB/s uncompressed) checks the index really lists every record before trusting it.
_SCAN_CHUNK = 1 << 22
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def _open_binary(path: Path, compression: str):
    return gzip.open(path, "rb") if compression in ("gzip", "bgzip") else open(path, "rb")


def _gzip_message(path: Path, after: str, error: Exception) -> str:
    what = "truncated gzip file" if isinstance(error, EOFError) else "corrupt gzip data"
    return f"{path}: {what} ({error}); the data ends {after}"


def folder_writable(path: Path) -> bool:
    """Whether an index may be written next to ``path``. A read-only mount, or a folder without any write
    permission bit, counts as read-only even for root (who ``os.access`` would let write anyway): a shared
    data folder marked ``r-x`` must not gain files because genoconv ran as root."""
    folder = path.resolve().parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return False
        if not os.stat(folder).st_mode & 0o222:
            return False
    except OSError:
        return False
    return os.access(folder, os.W_OK)


class FastaHandle:
    """A lazily opened ``pysam.FastaFile``, reopened after a fork and dropped when pickled, so records can
    travel to worker processes. ``fetch`` is 0-based half-open and checks it got every base it asked for."""

    def __init__(self, path: Path, fasta: pysam.FastaFile | None = None) -> None:
        self.path = path
        self._fasta = fasta
        self._pid = os.getpid()
        self._lock = threading.Lock()
        if fasta is not None:
            self.references: tuple[str, ...] = tuple(fasta.references)
            self.lengths: tuple[int, ...] = tuple(fasta.lengths)

    def _get(self) -> pysam.FastaFile:
        if self._fasta is None or self._pid != os.getpid():
            self._fasta = pysam.FastaFile(str(self.path))
            self._pid = os.getpid()
        return self._fasta

    def fetch(self, contig: str, start: int, end: int) -> str:
        try:
            with self._lock:
                seq = self._get().fetch(reference=contig, start=start, end=end)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(
                f"{self.path}: cannot read {Coords(contig, start, end, '+').region()} ({e}); the file may be "
                "truncated"
            ) from None
        if len(seq) != end - start:
            raise InputError(
                f"{self.path}: read {len(seq)} of {end - start} bases of {Coords(contig, start, end, '+').region()}; "
                "the file may be truncated or its index stale"
            )
        return seq

    def close(self) -> None:
        if self._fasta is not None:
            self._fasta.close()
            self._fasta = None

    @property
    def index_files(self) -> tuple[Path, ...]:
        """The ``.fai`` (and ``.gzi``) this handle reads through."""
        return tuple(p for p in (Path(f"{self.path}.fai"), Path(f"{self.path}.gzi")) if p.exists())

    def __getstate__(self) -> dict:
        return {"path": self.path, "references": self.references, "lengths": self.lengths}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fasta = None
        self._pid = os.getpid()
        self._lock = threading.Lock()


class FastaSlice:
    """Bases ``[start, end)`` of a contig, reverse-complemented when ``reverse``; offsets given to ``get`` are
    on the sequence as embedded."""

    __slots__ = ("handle", "contig", "start", "end", "reverse")

    def __init__(self, handle: FastaHandle, contig: str, start: int, end: int, reverse: bool) -> None:
        self.handle, self.contig, self.start, self.end, self.reverse = handle, contig, start, end, reverse

    def get(self, start: int, end: int) -> str:
        if not self.reverse:
            return self.handle.fetch(self.contig, self.start + start, self.start + end)
        return reverse_complement(self.handle.fetch(self.contig, self.end - end, self.end - start))


def index_hint(path: Path) -> str:
    return f"run `samtools faidx {path}` where it can be written, or copy the file into a writable folder"


def stale_index(path: Path, compression: str) -> str | None:
    """Why the ``.fai``/``.gzi`` beside ``path`` no longer describe it, or None. An index older than the file was
    built before the file last changed (htslib would read a changed file through it: a record that grew is cut
    at its old length). For a plain FASTA the last record's end, as the ``.fai`` places it, must also be where the
    file ends, whatever the times say."""
    try:
        mtime = os.stat(path).st_mtime_ns
        for index in (Path(f"{path}.fai"), Path(f"{path}.gzi"))[: 2 if compression == "bgzip" else 1]:
            if index.exists() and os.stat(index).st_mtime_ns < mtime:
                return f"{index.name} is older than the file"
        if compression != "none":
            return None
        lines = Path(f"{path}.fai").read_bytes().splitlines()
        if not lines:
            return None
        length, offset, line_bases, line_width = (int(x) for x in lines[-1].split(b"\t")[1:5])
        end = offset + length // line_bases * line_width + length % line_bases
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.seek(min(end, size))
            rest = fh.read(1024)
    except (OSError, ValueError, ZeroDivisionError):
        return f"{path.name}.fai is not a valid index"
    if size < end or len(rest) == 1024 or rest.strip():
        return f"{path.name}.fai places the end of the last record at byte {end:,}, the file has {size:,} bytes"
    return None


def open_indexed(path: Path, compression: str, *, required: bool) -> FastaHandle | None:
    """Open ``path`` with its ``.fai`` (and ``.gzi`` for bgzip), building them when missing or stale (see
    :func:`stale_index`) and the folder is writable. Returns None when that is impossible and not ``required``;
    raises a one-line InputError otherwise."""
    if compression == "gzip":
        if not required:
            return None
        raise InputError(
            f"{path}: plain gzip cannot be read at random positions; recompress it with "
            f"`zcat {path} | bgzip > {path.with_suffix('.bgz')}` and index that with `samtools faidx`"
        )
    needed = [Path(f"{path}.fai")] + ([Path(f"{path}.gzi")] if compression == "bgzip" else [])
    stale = stale_index(path, compression) if needed[0].exists() else None
    if stale:
        if not folder_writable(path):
            if not required:
                return None  # read it through without the index
            raise InputFileError(f"{path}: its index is stale ({stale}) and its folder is not writable; "
                                 + index_hint(path))
        log.info("%s: rebuilding its index (%s)", path, stale)
        for p in needed:
            p.unlink(missing_ok=True)
    missing = [p for p in needed if not p.exists()]
    if missing and not folder_writable(path):
        if not required:
            return None
        raise InputFileError(f"{path}: no FASTA index {missing[0]} and its folder is not writable; {index_hint(path)}")
    try:
        fasta = pysam.FastaFile(str(path))
    except (OSError, ValueError):
        for p in missing:  # htslib can leave a partial index behind
            if p.exists():
                try:
                    p.unlink()
                except OSError:
                    pass
        if not required:
            return None
        # Find the precise fault (line, record) with the streaming parser; else say what to check.
        for _ in stream_fasta(path, Format("fasta", compression)):
            pass
        raise InputError(f"{path}: cannot index this FASTA (check it with `samtools faidx {path}`)") from None
    return FastaHandle(path, fasta)


class FastaLayout:
    """What one pass over a FASTA's bytes finds, to check an index against: per record its name (first word of
    the header), the offset of its first sequence byte in the uncompressed stream, its bases (sequence bytes
    less line ends) and its first line's bases and bytes (the wrapping the index's offsets are computed from: a
    re-wrapped version can keep every length and offset); and whether any line ends in a lone CR (classic Mac),
    which an index cannot describe."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.lines: list[tuple[int, int] | None] = []  # (bases, bytes) of the first sequence line
        self.lone_cr = False

    def mismatch(self, fai: Path) -> str | None:
        """Why ``fai`` does not describe these records (first difference), or None."""
        if self.lone_cr:
            return "some lines end in a lone CR"
        try:
            rows = [line.split(b"\t") for line in fai.read_bytes().splitlines() if line]
            index = [(r[0].decode("utf-8", "replace"), int(r[1]), int(r[2]), (int(r[3]), int(r[4]))) for r in rows]
        except (OSError, ValueError, IndexError):
            return f"{fai.name} is not a valid index"
        if len(index) != len(self.names):
            return f"{fai.name} lists {len(index)} records, the file has {len(self.names)}"
        for (name, length, offset, wrap), have, bases, at, line in zip(index, self.names, self.lengths, self.offsets,
                                                                      self.lines):
            if (name, length, offset) != (have, bases, at):
                return (f"{fai.name} has record {name!r} of {length:,} bases at byte {offset:,}, the file "
                        f"{have!r} of {bases:,} at byte {at:,}")
            if line is not None and bases and wrap != line:
                return (f"{fai.name} has record {name!r} in lines of {wrap[0]} bases ({wrap[1]} bytes), the file "
                        f"in lines of {line[0]} ({line[1]})")
        return None


def scan_fasta(path: Path, compression: str) -> FastaLayout:
    """One pass over the (uncompressed) bytes: the :class:`FastaLayout`, without parsing sequence lines."""
    out = FastaLayout()

    def count(region: bytes, a: int, b: int) -> None:
        if out.lengths and b > a:
            seg = region[a:b]
            out.lengths[-1] += len(seg) - seg.count(b"\n") - seg.count(b"\r")

    def first_line(region: bytes, start: int) -> None:  # the line from region[start] is the newest record's first
        end = region.find(b"\n", start)
        if end == -1:
            pending[0] = True  # the header ended the region: its first line starts the next one
            return
        line = region[start : end + 1]
        out.lines[-1] = None if line[:1] == b">" else (len(line.rstrip(b"\r\n")), len(line))

    pending = [False]

    def scan(region: bytes, at: int) -> None:  # region ends with "\n"; region[k] is byte at + k of the stream
        if region.count(b"\r") != region.count(b"\r\n"):
            out.lone_cr = True
        if pending[0]:
            pending[0] = False
            first_line(region, 1)  # region[0] is the line end that closed the header
        done = 0
        i = region.find(b"\n>")
        while i != -1:
            count(region, done, i + 1)
            j = region.find(b"\n", i + 1)
            words = region[i + 2 : j].split(None, 1)
            out.names.append(words[0].decode("utf-8", "replace") if words else "")
            out.offsets.append(at + j + 1)
            out.lengths.append(0)
            out.lines.append(None)
            first_line(region, j + 1)
            done = j + 1
            i = region.find(b"\n>", j)
        count(region, done, len(region))

    buf, at = b"\n", -1  # a virtual line end before byte 0, so a header on the first line is found
    try:
        with _open_binary(path, compression) as fh:
            while chunk := fh.read(_SCAN_CHUNK):
                buf += chunk
                cut = buf.rfind(b"\n")
                if cut > 0:
                    scan(buf[: cut + 1], at)
                    at += cut
                    buf = buf[cut:]
    except _GZIP_ERRORS as e:
        where = f"in record {len(out.names)} '{out.names[-1]}'" if out.names else "before the first record"
        raise InputError(_gzip_message(path, where, e)) from None
    scan(buf + b"\n", at)
    return out


def checked_reference(path: Path, compression: str) -> FastaHandle:
    """A reference opened through an index that describes it, record for record (see
    ``FastaInput._index_describes_the_file``): regions are cut from it by offset, so a stale or foreign index, a
    duplicate contig name (htslib keeps the first, silently) or lone-CR line ends would cut the wrong bases. One
    pass over the file (~0.5 s per 70 Mbp of bgzip)."""
    handle = open_indexed(path, compression, required=True)
    verdict = _verdict_path(path, compression)
    if verdict is not None and verdict.exists():
        return handle  # this very file and index were checked before (see _verdict_path)
    layout = scan_fasta(path, compression)
    seen: dict[str, int] = {}
    for ordinal, name in enumerate(layout.names, 1):
        if name in seen:
            handle.close()
            raise InputError(f"{path}: contig {name!r} is in the reference twice (records {seen[name]} and "
                             f"{ordinal}); a region on it would be ambiguous")
        seen[name] = ordinal
    handle, why = _rebuilt_if_stale(path, compression, handle, layout, layout.mismatch(Path(f"{path}.fai")),
                                    required=True)
    if why:
        handle.close()
        fix = "write it out with LF line ends and index that" if layout.lone_cr else index_hint(path)
        raise InputFileError(f"{path}: its index does not describe it ({why}); {fix}")
    verdict = _verdict_path(path, compression)
    if verdict is not None:
        try:
            verdict.parent.mkdir(parents=True, exist_ok=True)
            verdict.touch()
        except OSError:
            pass  # no cache: the next run checks again
    return handle


def _rebuilt_if_stale(path: Path, compression: str, handle: FastaHandle | None, layout: FastaLayout, why: str | None,
                      *, required: bool) -> tuple[FastaHandle | None, str | None]:
    """When ``why`` (the index does not describe ``layout``) has a cure, i.e. the file has no lone-CR lines and its
    folder is writable: the index built again and checked again. Returns the handle and what is still wrong."""
    if not why or layout.lone_cr or not folder_writable(path):
        return handle, why
    log.info("%s: rebuilding its index (%s)", path, why)
    _drop_index(path, handle)
    handle = open_indexed(path, compression, required=required)
    return handle, (layout.mismatch(Path(f"{path}.fai")) if handle is not None else "it cannot be indexed")


def _drop_index(path: Path, handle: FastaHandle | None) -> None:
    """Close ``handle`` and delete the ``.fai``/``.gzi`` beside ``path`` (they do not describe it)."""
    if handle is not None:
        handle.close()
    for index in (Path(f"{path}.fai"), Path(f"{path}.gzi")):
        index.unlink(missing_ok=True)


def _verdict_path(path: Path, compression: str) -> Path | None:
    """Where a passed reference check is remembered, so that every shard of a cluster run does not scan a 3 Gbp
    genome again (~20 s): a name made of the file's and its index's identity, status-change time included (no
    copy, ``touch`` or ``cp -p`` can set it back), under ``$XDG_CACHE_HOME/genoconv`` (``~/.cache``)."""
    try:
        ident = [str(path.resolve())]
        for p in [path, Path(f"{path}.fai")] + ([Path(f"{path}.gzi")] if compression == "bgzip" else []):
            st = os.stat(p)
            ident += [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except (OSError, RuntimeError):
        return None
    return root / "genoconv" / "checked-fasta-indexes" / hashlib.sha256(repr(ident).encode()).hexdigest()[:32]


def indexed_records(handle: FastaHandle) -> Iterator[tuple[Record, int]]:
    for ordinal, (name, length) in enumerate(zip(handle.references, handle.lengths), 1):
        access = FastaSlice(handle, name, 0, length, False)
        yield Record(id=name, length=length, source=str(handle.path), _access=access), ordinal


def _record_id(path: Path, header: bytes, ordinal: int, line_no: int) -> str:
    words = header.split(None, 1)
    if not words:
        raise InputError(f"{path}: record {ordinal} (line {line_no}) has an empty name")
    return words[0].decode("utf-8", "replace")


def _decode(path: Path, seq: bytes | bytearray, name: str, ordinal: int) -> str:
    try:
        return seq.decode("ascii")
    except UnicodeDecodeError:
        raise InputError(f"{path}: record {ordinal} '{name}' contains non-ASCII bytes") from None


def _cr_lines(fh) -> Iterator[bytes]:
    """The lines of a file whose lines end in CR alone (classic Mac OS), each ending in LF instead."""
    pending: list[bytes] = []
    while chunk := fh.read(_SCAN_CHUNK):
        *ended, rest = chunk.replace(b"\r", b"\n").split(b"\n")
        for part in ended:
            pending.append(part)
            yield b"".join(pending) + b"\n"
            pending = []
        pending.append(rest)
    if tail := b"".join(pending):
        yield tail


def read_lines(path: Path, fmt: Format, data: Path | None = None) -> Iterator[bytes]:
    """The lines of a FASTA/FASTQ file (or of ``data``, the saved bytes of a pipe named ``path``), line ends kept,
    CR-only line ends read as LF and a leading UTF-8 byte-order mark dropped."""
    with _open_binary(data or path, fmt.compression) as fh:
        lines = _split_lone_cr(_cr_lines(fh) if fmt.cr_only else iter(fh))
        for first in lines:
            yield first.removeprefix(UTF8_BOM)
            break
        yield from lines


def _split_lone_cr(lines: Iterator[bytes]) -> Iterator[bytes]:
    """Lines as they are, except that one holding a CR before its end (a CR-only part inside an LF or CRLF file,
    which the first bytes did not show) is several lines: read whole it would glue a header to its bases."""
    for line in lines:
        i = line.find(b"\r")
        if i == -1:
            yield line
            continue
        body = line.rstrip(b"\r\n")
        if i >= len(body):
            yield line
            continue
        *parts, last = body.split(b"\r")
        for part in parts:
            yield part + b"\n"
        yield last + line[len(body):]


def stream_fasta(path: Path, fmt: Format, data: Path | None = None) -> Iterator[tuple[Record, int]]:
    """FASTA records one at a time (from ``data`` when given: a pipe's saved bytes); errors name the line and
    record."""
    ordinal = 0
    name: str | None = None
    header_line = 0
    seq = bytearray()  # grows in place: a record costs about twice its length at its peak, not three times

    def finish() -> Record:
        if not seq:
            raise InputError(f"{path}: record {ordinal} '{name}' (line {header_line}) has no sequence")
        return Record.from_sequence(name, _decode(path, seq, name, ordinal), str(path))

    line_no = 0
    try:
        for raw in read_lines(path, fmt, data):
            line_no += 1
            if raw[:1] == b">":
                if name is not None:
                    yield finish(), ordinal
                ordinal += 1
                header_line = line_no
                name = _record_id(path, raw[1:], ordinal, line_no)
                seq = bytearray()
                continue
            line = raw.strip()
            if not line:
                continue
            if name is None:
                raise InputError(
                    f"{path}: line {line_no}: sequence before the first '>' header "
                    "(a FASTA file needs a '>name' line first)"
                )
            seq += line
    except _GZIP_ERRORS as e:
        where = f"in record {ordinal} '{name}' (line {line_no})" if name is not None else f"at line {line_no}"
        raise InputError(_gzip_message(path, where, e)) from None
    if name is None:
        raise InputError(f"{path}: no FASTA records")
    yield finish(), ordinal


def stream_fastq(path: Path, fmt: Format, data: Path | None = None,
                 on_empty: Callable[[], None] | None = None) -> Iterator[tuple[Record, int]]:
    """FASTQ records one at a time (multi-line records accepted; from ``data`` when given: a pipe's saved bytes);
    qualities are checked for length only. A read with no bases (all trimmed away) is skipped and reported to
    ``on_empty`` when given (as SAM/BAM reads without SEQ are), else an error."""
    ordinal = 0
    line_no = 0
    try:
        lines = read_lines(path, fmt, data)

        def next_line() -> bytes | None:
            nonlocal line_no
            for raw in lines:
                line_no += 1
                return raw.rstrip(b"\r\n")
            return None

        suspect = ""  # a previous record whose multi-line quality ended on a line starting with '@' (a header?)
        while (header := next_line()) is not None:
            if not header.strip():
                continue
            if header[:1] != b"@":
                raise InputError(f"{path}: line {line_no}: expected a FASTQ '@name' line, found {header[:24]!r}"
                                 + suspect)
            ordinal += 1
            header_line = line_no
            name = _record_id(path, header[1:], ordinal, line_no)
            seq_parts = []
            while (line := next_line()) is not None and line[:1] != b"+":
                seq_parts.append(line.strip())
            if line is None:
                raise InputError(f"{path}: record {ordinal} '{name}' (line {header_line}) ends before its '+' line")
            seq = b"".join(seq_parts)
            qual_len = before = qual_lines = 0
            while qual_len < len(seq) and (line := next_line()) is not None:
                before = qual_len
                qual_len += len(line.strip())
                qual_lines += 1
            suspect = (f" (record {ordinal} '{name}', line {header_line}, may have fewer quality values than bases: "
                       f"its quality took line {line_no}, which starts with '@')"
                       if qual_lines > 1 and line is not None and line[:1] == b"@" else "")
            if qual_len != len(seq):
                if qual_len > len(seq) and before and line[:1] == b"@":  # the next record's header read as quality
                    qual_len = before
                raise InputError(
                    f"{path}: record {ordinal} '{name}' (line {header_line}) has {len(seq)} bases "
                    f"but {qual_len} quality values"
                )
            if not seq:
                if on_empty is not None:
                    on_empty()
                    continue
                raise InputError(f"{path}: record {ordinal} '{name}' (line {header_line}) has no sequence")
            yield Record.from_sequence(name, _decode(path, seq, name, ordinal), str(path)), ordinal
    except _GZIP_ERRORS as e:
        raise InputError(_gzip_message(path, f"in record {ordinal} (line {line_no})", e)) from None
    if ordinal == 0:
        raise InputError(f"{path}: no FASTQ records")


class FastaInput:
    """One FASTA file: lazy records through the index when it exists or can be built, else streamed (always for a
    pipe, whose saved bytes are ``data``)."""

    kind = "FASTA"

    def __init__(self, path: Path, fmt: Format, data: Path | None = None) -> None:
        self.path = path
        self.fmt = fmt
        self.compression = fmt.compression
        self.data = data
        indexable = data is None and fmt.indexable
        self._built = indexable and not Path(f"{path}.fai").exists()  # an index this run writes beside the file
        self.handle = open_indexed(path, fmt.compression, required=False) if indexable else None
        self._index_complete: bool | None = None

    def records(self, source) -> Iterator[tuple[Record, int]]:
        if self.handle is not None and self._index_complete is None:
            self._index_complete = self._index_describes_the_file()
        if self.handle is not None and self._index_complete:
            yield from indexed_records(self.handle)
        else:  # duplicate or empty records, which the index would silently drop: the streaming parser reports them
            yield from stream_fasta(self.path, self.fmt, self.data)

    def _index_describes_the_file(self) -> bool:
        """Whether every record is where the ``.fai`` says, as long as it says. An index can be newer than the file
        and still describe another version of it (``cp -p``, ``rsync -a``, ``tar x`` keep old times) or another
        file: htslib would then cut records short or read from the wrong place, silently. A stale index is
        rebuilt once where the folder allows; what no index can describe (duplicate or empty records, lone-CR
        line ends, spaces in sequence lines) is read sequentially, where the streaming parser handles or names it."""
        layout = scan_fasta(self.path, self.compression)
        fai = Path(f"{self.path}.fai")
        why = layout.mismatch(fai)

        def loaded_whole(handle) -> bool:
            return handle is not None and (list(handle.references), list(handle.lengths)) == (layout.names,
                                                                                               layout.lengths)
        if not why and not loaded_whole(self.handle):
            # The handle loaded an index another process was still writing (shards started together on a file
            # without one): the file on disk is now whole, so read it again.
            self.handle.close()
            self.handle = open_indexed(self.path, self.compression, required=False)
            if not loaded_whole(self.handle):
                why = "its index changed while it was read"
        self.handle, why = _rebuilt_if_stale(self.path, self.compression, self.handle, layout, why, required=False)
        if why:
            log.info("%s: reading it sequentially (%s)", self.path, why)
            if self._built and self.handle is not None:  # htslib wrote an index that misdescribes it: take it back
                _drop_index(self.path, self.handle)
                self.handle = None
        return not why and all(layout.names) and all(layout.lengths)

    def position(self, ordinal: int) -> str:
        return f"record {ordinal} of {self.path}"

    def describe(self) -> str:
        how = "indexed" if self.handle is not None and self._index_complete is not False else "streamed"
        return f"{self.path} (FASTA, {self.compression}, {how}{' from a pipe' if self.data else ''})"

    def files(self) -> list[tuple[str, Path, tuple[Path, ...]]]:
        indexed = self.handle is not None and self._index_complete is not False
        return [("inputs", self.path, self.handle.index_files if indexed else ())]

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


class FastqInput:
    kind = "FASTQ"

    def __init__(self, path: Path, fmt: Format, data: Path | None = None) -> None:
        self.path = path
        self.fmt = fmt
        self.data = data

    def records(self, source) -> Iterator[tuple[Record, int]]:
        def empty() -> None:
            source.skipped["no_sequence"] += 1

        yield from stream_fastq(self.path, self.fmt, self.data, on_empty=empty)

    def position(self, ordinal: int) -> str:
        return f"record {ordinal} of {self.path}"

    def describe(self) -> str:
        return f"{self.path} (FASTQ, {self.fmt.compression}, streamed{' from a pipe' if self.data else ''})"

    def files(self) -> list[tuple[str, Path, tuple[Path, ...]]]:
        return [("inputs", self.path, ())]

    def close(self) -> None:
        pass
