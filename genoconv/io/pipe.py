"""Inputs that can be read only once: stdin (``-``), ``/dev/stdin`` fed by a pipe, process substitution
(``<(zcat x.fa.gz)``), a FIFO.

A run reads its inputs twice (record lengths first, for the disk estimate, the shard split and the progress total;
then the records), and a pipe gives its bytes once. So a stream's first 64 KiB are read into a buffer and sniffed
(no seeking; gzip and bgzip are recognised as for a file), then the whole stream is copied, as it is (compressed
stays compressed), into a temporary file in ``$GENOCONV_SCRATCH`` (default: the system's temporary folder). The
readers parse that copy and name the stream in every message; the copy is deleted when the record source closes
(or at exit). A piped input is always streamed, never indexed.

A pipe has no identity a later run could check, so ``RecordSource.piped_inputs`` lists them and the runner
refuses to resume a run that reads one.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path

from genoconv.errors import InputError, InputFileError, ResourceError
from genoconv.io.sniff import HEAD_BYTES, STDIN, Format, decompress_head, sniff_content

log = logging.getLogger("genoconv.io")
STDIN_NAME = "<stdin>"
_COPY_BLOCK = 1 << 20


def _read_up_to(fh, n_bytes: int) -> bytes:
    """Up to ``n_bytes`` from a stream: a pipe may hand over fewer per read before its end."""
    parts, got = [], 0
    while got < n_bytes and (part := fh.read(n_bytes - got)):
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class SavedStream:
    """A stream read to its end into a temporary file: ``name`` for messages, ``data`` to read, ``format``
    sniffed from its first bytes."""

    name: Path
    data: Path
    format: Format

    def __init__(self, path: str | Path) -> None:
        """Read ``path`` (``-``: stdin) to its end, its format recognised first (an unreadable one is refused
        before anything is copied)."""
        stdin = str(path) == STDIN
        self.name = Path(STDIN_NAME if stdin else path)
        try:
            fh = sys.stdin.buffer if stdin else open(path, "rb")  # noqa: SIM115 - closed below
        except (AttributeError, OSError) as e:
            raise InputFileError(f"{self.name}: cannot read ({getattr(e, 'strerror', None) or e})") from None
        try:
            if fh.isatty():
                raise InputError(f"{self.name}: is a terminal; pipe or redirect a FASTA/FASTQ file into genoconv "
                                 "(e.g. `zcat reads.fq.gz | genoconv embed - -o out.h5`)")
            head = _read_up_to(fh, HEAD_BYTES)
            self.format = sniff_content(self.name, *decompress_head(self.name, head, whole=len(head) < HEAD_BYTES))
            self._save(fh, head)
        except InputError:
            raise  # an InputFileError is an OSError too: already said in our words
        except OSError as e:
            raise InputFileError(f"{self.name}: cannot read ({e.strerror or e})") from None
        finally:
            if not stdin:
                fh.close()

    def _save(self, fh, head: bytes) -> None:
        folder = os.environ.get("GENOCONV_SCRATCH") or tempfile.gettempdir()
        try:
            fd, name = tempfile.mkstemp(dir=folder, prefix="genoconv-pipe-")
        except OSError as e:
            raise InputFileError(f"{self.name}: cannot save this pipe's contents in {folder} ({e.strerror or e}); "
                                 "set GENOCONV_SCRATCH to a writable folder") from None
        self.data = Path(name)
        self._remove = weakref.finalize(self, _unlink, self.data)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(head)
                shutil.copyfileobj(fh, out, _COPY_BLOCK)
        except OSError as e:  # in practice the disk filling up: reading a pipe does not fail
            self.remove()
            raise ResourceError(f"{self.name}: cannot copy this pipe into {folder} ({e.strerror or e}); "
                                "set GENOCONV_SCRATCH to a folder with room") from None
        log.info("%s: read from a pipe into %s (%s bytes; a run reads its inputs twice)", self.name, self.data,
                 f"{self.data.stat().st_size:,}")

    def remove(self) -> None:
        """Delete the temporary copy (also done at exit)."""
        self._remove()
