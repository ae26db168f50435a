"""The ``genoconv`` command line: thin shells over :mod:`genoconv.runner`, :mod:`genoconv.store` and the model layer.

One module per command (``embed``, ``score``, ``merge``, ``inspect``, ``export``, ``plot``, ``doctor``) or group
(``models``); every option's type is declared once in :mod:`.params`. Exit codes: 0 ok, 1 runtime failure, 2
usage/bad input, 3 interrupted but resumable (see :mod:`genoconv.errors`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from typing import Annotated

import typer

from .._version import __version__
from ..errors import (EXIT_OK, EXIT_RESUMABLE, EXIT_RUNTIME, EXIT_USAGE, STARTUP_SIGNAL, TERM_SIGNALS, GenoconvError,
                      interrupt_now)
from .params import Command, Group

app = typer.Typer(
    name="genoconv",
    cls=Group,
    help="Single-nucleotide DNA embeddings with HyenaDNA long-convolution models.",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
)


class _Verbosity:
    """What ``-v`` asked for, kept for :func:`main`'s error report (tracebacks only when verbose)."""

    level = 0


def _version(value: bool) -> None:
    if value:
        print(f"genoconv {__version__}")  # one parseable line (nf-core versions.yml habit)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    _Verbosity.level = verbose
    setup_logging(logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO))


def setup_logging(level: int) -> None:
    root = logging.getLogger("genoconv")
    root.handlers.clear()
    root.setLevel(level)
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    root.propagate = False
    warnings.showwarning = _warning_to_log


def _warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one log line each, like every other message (not file:line plus a source line)."""
    logging.getLogger("genoconv").warning("%s", message)


def _register_commands() -> None:
    from .doctor import doctor
    from .embed import embed
    from .export import export
    from .inspect import inspect
    from .merge import merge
    from .models import app as models_app
    from .plot import plot
    from .score import score

    app.command(cls=Command)(embed)
    app.command(cls=Command, help="Next-base cross-entropy (bits per base) of records under a model.")(score)
    app.command(cls=Command, help="Combine shard outputs into one file.")(merge)
    app.command(cls=Command)(inspect)
    app.command(cls=Command)(export)
    app.command(cls=Command)(plot)
    app.command(cls=Command)(doctor)
    app.add_typer(models_app, name="models", help="List and download named models.")


_register_commands()


def main() -> None:
    """Console-script entry: run the app, turning genoconv errors into one line and an exit code."""
    STARTUP_SIGNAL.clear()  # this command's own signals only (tests run many in one process)
    for sig in TERM_SIGNALS:  # until a run takes over (genoconv.runner.StopFlag): exit 3, not 143/138
        signal.signal(sig, interrupt_now)
    try:
        # Typer >= 0.2x turns KeyboardInterrupt into Exit(130) and, without standalone mode, returns exit codes.
        code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        sys.stdout.flush()  # output still buffered (--version, a short table) meets a closed stdout here
    except BrokenPipeError:
        _stdout_closed()
    except SystemExit as exc:  # typer (a command's output) and rich (--help, tables) exit 1 on a closed stdout
        if isinstance(exc.__context__, BrokenPipeError):
            _stdout_closed()
        raise
    except GenoconvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(EXIT_RESUMABLE)
    except Exception as exc:  # click usage errors and unexpected failures
        if STARTUP_SIGNAL and not hasattr(exc, "exit_code"):  # a start-up stop a library wrapped in its own error
            print(f"error: interrupted by {signal.Signals(STARTUP_SIGNAL[0]).name} while starting; nothing was "
                  "written yet: rerun the same command", file=sys.stderr)
            sys.exit(EXIT_RESUMABLE)
        # Typer >= 0.2x vendors its own click: recognise click's exceptions by shape, not by class.
        kind = type(exc).__name__
        if kind == "Exit":
            sys.exit(getattr(exc, "exit_code", 0))
        if kind == "Abort":
            print("error: aborted", file=sys.stderr)
            sys.exit(EXIT_RUNTIME)
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(EXIT_USAGE if exc.exit_code in (1, 2) and kind != "ClickException" else exc.exit_code)
        if isinstance(exc, (OSError, RuntimeError)):  # a full disk wherever it shows (h5py raises RuntimeError)
            from ..store.hdf5 import out_of_space

            full = out_of_space(getattr(exc, "filename", None) or "a file being written", exc)
            if full is not None:
                print(f"error: {full}", file=sys.stderr)
                sys.exit(full.exit_code)
        if _Verbosity.level:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with -v for the traceback)", file=sys.stderr)
        sys.exit(EXIT_RUNTIME)
    sys.exit(code if isinstance(code, int) else 0)  # a command's own typer.Exit(code) comes back as its return


def _stdout_closed() -> None:
    """The reader of stdout went away (``| head -1``): no error for a Unix filter, so exit 0 without a word. devnull
    on stdout's descriptor, so that Python's own flush at exit does not print "Exception ignored ...
    BrokenPipeError"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # no real stdout (captured, None): nothing will flush to it
        pass
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
