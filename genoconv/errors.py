"""The error family, one exit code each (documented in the README's "Exit codes" table).

Every message is one line that names the file and/or record at fault; the CLI prints it as ``error: <message>``
and exits with ``exit_code``. Each class also subclasses the builtin it resembles, so library users can catch
``ValueError``/``OSError`` as usual.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from collections.abc import Callable, Iterator

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_RESUMABLE = 3


class GenoconvError(Exception):
    """Base class: a failure with a one-line message and a documented exit code."""

    exit_code = EXIT_RUNTIME


class InputError(GenoconvError, ValueError):
    """Bad input or usage: a malformed file, record or option (exit 2). Nothing already written is lost."""

    exit_code = EXIT_USAGE


class InputFileError(InputError, OSError):
    """An input/output path that cannot be read or written (exit 2)."""


class CheckpointError(InputError):
    """A model checkpoint that cannot be loaded: wrong layout, missing/unknown/mis-shaped tensors (exit 2)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle references code (a callable, a class we do not know) — refused, never run."""


class SequenceTooLongError(InputError):
    """A record longer than the model's context with no option that handles it (exit 2)."""


class ResourceError(GenoconvError, RuntimeError):
    """Out of GPU memory after every fallback, or not enough disk space (exit 1)."""


class NonFiniteError(GenoconvError, ArithmeticError):
    """A record whose output holds NaN or Inf (overflow in reduced precision, a broken model): it is not stored,
    the records committed before it are kept (exit 1)."""


class Interrupted(GenoconvError):
    """SIGTERM/SIGUSR1/Ctrl-C: everything committed is flushed; the same command resumes (exit 3)."""

    exit_code = EXIT_RESUMABLE


STARTUP_SIGNAL: list[int] = []  # set by interrupt_now: code that catches the Interrupted (torch's
                                # load_state_dict wraps it in a RuntimeError) cannot hide that a stop was asked


# The signals a scheduler stops a job with (SLURM's time limit and scancel: SIGTERM; --signal=USR1 warnings), where
# the platform has them; every command turns them into exit 3, not the signal's own 143/138.
TERM_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


@contextlib.contextmanager
def signals_handled(handler: Callable[[int, object], None], signals: tuple = TERM_SIGNALS) -> Iterator[None]:
    """``handler`` for ``signals`` while the block runs, the previous handlers back after it. Only the main thread
    may set handlers: elsewhere (a library user's worker thread) the block runs under the handlers it has."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def interrupt_now(signum: int, frame: object) -> None:  # noqa: ARG001 - a signal handler
    """Signal handler for start-up (loading the model, reading the inputs): nothing is written yet, so SIGTERM or
    SIGUSR1 stops at once, with exit code 3 like an interruption later on, not the signal's own 143/138."""
    STARTUP_SIGNAL.append(signum)
    raise Interrupted(f"interrupted by {signal.Signals(signum).name} while starting; nothing was written yet: "
                      "rerun the same command")


# Write errors that mean "the disk (or the quota, or the file size limit) is full": a runtime failure (exit 1).
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def cannot_write(path: str | os.PathLike[str], err: OSError) -> GenoconvError:
    """The error for a failed write of a side file (export table, track, picture, projection): a full disk is a
    runtime failure (exit 1, as for the store); a missing folder or a refused permission is bad input (exit 2)."""
    if getattr(err, "errno", None) in OUT_OF_SPACE:
        return ResourceError(f"cannot write {path}: {os.strerror(err.errno).lower()}; free some space and rerun")
    return InputFileError(f"cannot write {path}: {err.strerror or err}")
