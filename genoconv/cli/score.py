"""``genoconv score``: next-base cross-entropy of records under a model (:mod:`genoconv.model.likelihood`)."""

from __future__ import annotations

import contextlib
import math
import signal
from typing import Annotated

import typer

from . import params as p
from .common import load_model, read_options


def _fmt(bits: float) -> str:
    return "NA" if math.isnan(bits) else f"{bits:.4f}"


def score(
    inputs: p.Inputs = None,
    model: p.ModelName = None,
    device: p.Device = "auto",
    dtype: p.DtypeOpt = p.Dtype.float32,
    batch_size: Annotated[int, typer.Option(min=1, help="Segments of max_seq_len scored together.",
                                            metavar="N")] = 8,
    reference: p.Reference = None,
    regions: p.Regions = None,
    feature: p.Feature = "gene",
    strand_aware: p.StrandAware = True,
    include_secondary: p.IncludeSecondary = False,
    include_supplementary: p.IncludeSupplementary = False,
    dedupe_ids: p.DedupeIds = False,
) -> None:
    """Next-base cross-entropy in bits per base, per record and overall (uniform guessing = 2.0).

    Reads every input `genoconv embed` reads, with the same options. Prints tab-separated lines: record, length,
    scored bases, bits/base; then ``overall`` (total bits over all scored bases). Records longer than the model's
    max_seq_len are scored in non-overlapping segments.
    """
    from ..io import open_records
    from ..model.likelihood import score_records

    read = read_options(locals())
    printed = []

    def row(r) -> None:
        typer.echo(f"{r.name}\t{r.length}\t{r.scored}\t{_fmt(r.bits_per_base)}")
        printed.append(r.name)

    with open_records(inputs or [], **read.as_kwargs()) as source, _stops_report(printed):
        source.lengths()  # a whole pass: every header and record is checked before the table starts
        embedder = load_model(model, device, dtype.value)
        typer.echo(f"# model {embedder.name}, max_seq_len {embedder.max_seq_len:,}, {embedder.device}, {dtype.value}")
        typer.echo("record\tlength\tscored_bases\tbits_per_base")
        per_record, overall = score_records(embedder, ((r.id, r.sequence()) for r in source), batch_size=batch_size,
                                            on_record=row)
    typer.echo(f"overall\t{overall.length}\t{overall.scored}\t{_fmt(overall.bits_per_base)}")


@contextlib.contextmanager
def _stops_report(printed: list):
    """SIGTERM/SIGUSR1/Ctrl-C while scoring: exit 3 with what the table holds. score writes no file, so it has no
    resume (the embed messages' "nothing was written yet" / "rerun to resume" would be wrong here)."""
    from ..errors import Interrupted, signals_handled

    came: list[str] = []

    def stopped() -> Interrupted:
        return Interrupted(f"score interrupted by {came[0] if came else 'Ctrl-C'} after {len(printed)} record(s); "
                           "the table above has no 'overall' line; score does not resume: rerun the same command")

    def handler(signum, frame) -> None:  # a signal handler (frame unused)
        came.append(signal.Signals(signum).name)
        raise stopped()

    try:
        with signals_handled(handler):
            yield
    except KeyboardInterrupt:
        raise stopped() from None
    except Interrupted:
        raise
    except Exception:
        if came:  # torch wrapped the handler's Interrupted in its own error
            raise stopped() from None
        raise
