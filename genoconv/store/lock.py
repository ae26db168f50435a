"""One writer per output: an exclusive lock on ``<out>.lock`` (beside the output) for as long as a run writes it.

The lock is ``flock`` on the lock file, which names its holder (pid, host, start time) for the message a second
writer gets. The kernel drops the lock when its holder dies, however it dies, so a lock file left by a killed run
is simply taken over. The holder deletes the file when done, while still holding the lock; a process that locked
a file which has since been deleted (or replaced) notices and starts over, so two writers never both hold "the"
lock. Where the filesystem has no locks (some NFS/Lustre mounts: ENOLCK), the file itself is the lock, created
exclusively; one left by a dead process on this host is taken over, one from another host is refused with the
command that removes it.

Within one process the lock is re-entrant (the runner holds it for the whole run, the writer it opens for its
own lifetime).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from pathlib import Path

from genoconv.errors import InputError, InputFileError
from genoconv.store.hdf5 import now, unlink

_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_held: dict[Path, list[int]] = {}  # lock path -> [descriptor, depth]


def lock_path(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


class OutputLock:
    """``with OutputLock(output): ...`` or ``acquire()``/``release()``; a second writer gets an InputError (exit 2)
    naming the holder."""

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.output = Path(output)
        self.path = lock_path(self.output.resolve())  # one lock however the output is named (links, "..")
        self._acquired = False

    def acquire(self) -> "OutputLock":
        if self._acquired:
            return self
        entry = _held.get(self.path)
        if entry is not None:
            entry[1] += 1
        else:
            _held[self.path] = [self._take(), 1]
        self._acquired = True
        return self

    def release(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        entry = _held[self.path]
        entry[1] -= 1
        if entry[1]:
            return
        del _held[self.path]
        unlink(self.path)  # while still holding it: see the module docstring
        os.close(entry[0])

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ---- taking the lock
    def _take(self) -> int:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                folder = self.output.parent.absolute()
                why = f"no folder {folder}" if err.errno == errno.ENOENT else f"its folder {folder} is not writable"
                raise InputFileError(f"cannot write {self.output}: {why} ({err.strerror or err})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise InputError(f"{self.output} is being written by another genoconv run ({holder}); wait for it "
                                 "to finish, or write to another output") from None
            except OSError as err:
                os.close(fd)
                if err.errno not in _NO_LOCKS:
                    raise
                return self._take_without_flock()
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                _describe_holder(fd)
                return fd
            os.close(fd)  # the holder finished and deleted the file we locked: try again

    def _take_without_flock(self) -> int:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                info = _holder_info(fd)
                os.close(fd)
                if info.get("host") == socket.gethostname() and not _alive(info.get("pid")):
                    unlink(self.path)  # left by a dead process on this host
                    continue
                raise InputError(f"{self.output} is being written by another genoconv run ({_holder_text(info)}; "
                                 f"this filesystem has no locks: if no such run is active, `rm {self.path}`)") from None
            _describe_holder(fd)
            return fd
        raise InputError(f"{self.output}: cannot take the lock {self.path}")


def active_writer(output: str | os.PathLike[str]) -> str | None:
    """Who is writing ``output`` now, as far as its lock file says (``None``: nobody alive holds it). Read only: a
    probe that took the lock, even shared and briefly, could make a run starting at that moment fail."""
    try:
        fd = os.open(lock_path(Path(output).resolve()), os.O_RDONLY)
    except OSError:
        return None
    try:
        info = _holder_info(fd)
    finally:
        os.close(fd)
    if not info or (info.get("host") == socket.gethostname() and not _alive(info.get("pid"))):
        return None  # a lock file a killed run left behind
    return _holder_text(info)


def _describe_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()}).encode() + b"\n", 0)


def _holder_info(fd: int) -> dict:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _holder_text(info: dict) -> str:
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}"


def _holder(fd: int) -> str:
    return _holder_text(_holder_info(fd))


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
