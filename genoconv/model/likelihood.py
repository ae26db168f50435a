"""Next-base likelihood: how well a HyenaDNA model predicts DNA, in bits per base (uniform guessing = 2.0).

Definition (one number per record, and the same loss that :mod:`genoconv.train` minimises):

- The model's next-token logits (``HyenaDNA.logits``: the LM head, or the input embedding when the checkpoint has
  none) at position ``t`` predict the base at ``t + 1``.
- Only the four base logits (A C G T = ids 7..10) are used, renormalised with a softmax over those four. So a model
  that knows nothing scores exactly 2.0, and mass a model puts on special tokens or N does not count against it.
  (Over the full 16-entry vocabulary an official checkpoint scores very slightly worse than this.)
- A base is *scored* when it is A/C/G/T and has at least one base of context before it in its segment: the first
  base of a record is never scored, and N (or any other non-ACGT token) is never a target, though it is context.
- Records longer than the model's ``max_seq_len`` are cut into **non-overlapping segments of max_seq_len bases**,
  each scored from its own start with no context carried over from the previous segment; the first base of every
  segment is therefore unscored too. ``scored`` counts exactly the bases that were scored.

Result = total negative log2-likelihood / scored bases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .hyena import EXACT, ConvSettings
from .tokenizer import BASE_IDS

BASE_ID_FIRST = BASE_IDS["A"]  # A C G T are consecutive ids
N_BASES = 4
assert [BASE_IDS[b] for b in "ACGT"] == list(range(BASE_ID_FIRST, BASE_ID_FIRST + N_BASES))
LN2 = math.log(2.0)


class BitsPerBase(NamedTuple):
    """A likelihood score: ``bits_per_base = total_bits / scored`` (NaN when nothing was scored)."""

    bits_per_base: float
    scored: int
    total_bits: float


def next_base_nll(logits: torch.Tensor, ids: torch.Tensor, *, dtype: torch.dtype = torch.float32
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-base negative log-likelihood in nats and the number of scored targets.

    logits: (B, L, V) next-token logits for ids (B, L). Target of position t is ids[:, t+1]; targets that are not
    A/C/G/T are ignored. The softmax over the four base logits runs in ``dtype`` (training: fp32; scoring: float64,
    so uniform logits give exactly 2 bits). Returns (summed nats, differentiable; scored count, int64).
    """
    base_logits = logits[:, :-1, BASE_ID_FIRST:BASE_ID_FIRST + N_BASES].to(dtype)
    target = ids[:, 1:] - BASE_ID_FIRST
    scored = (target >= 0) & (target < N_BASES)
    log_p = F.log_softmax(base_logits, dim=-1)
    nll = -log_p.gather(-1, target.clamp(0, N_BASES - 1).unsqueeze(-1)).squeeze(-1)
    return (nll * scored).sum(), scored.sum()


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def bits_per_base(model, ids, *, segment_len: int | None = None, batch_size: int = 8,
                  conv: ConvSettings = EXACT) -> BitsPerBase:
    """Next-base cross-entropy of one record in bits per base (see the module docstring for what is scored).

    model: a :class:`~genoconv.model.HyenaDNA` (its device and compute dtype are used as set);
    ids: token ids (L,) as a tensor or numpy array (``Tokenizer.encode``); segment_len: bases per segment
    (default and maximum: the model's ``max_seq_len``); batch_size: full segments run together; conv: partial or
    frequency-sparse convolutions (what their quality costs: benchmarks/bench_quality.py).
    """
    ids = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids).long().reshape(-1)
    max_len = model.config.max_seq_len
    segment_len = max_len if segment_len is None else int(segment_len)
    if not 2 <= segment_len <= max_len:
        raise InputError(f"segment_len must be in 2..max_seq_len={max_len}, got {segment_len}")
    device = _model_device(model)
    total_nats, scored = 0.0, 0
    n_full = ids.numel() // segment_len
    if n_full:
        full = ids[:n_full * segment_len].view(n_full, segment_len)
        for start in range(0, n_full, batch_size):
            chunk = full[start:start + batch_size].to(device)
            nats, count = next_base_nll(model.logits(chunk, conv), chunk, dtype=torch.float64)
            total_nats += float(nats)
            scored += int(count)
    rest = ids[n_full * segment_len:]
    if rest.numel() >= 2:
        chunk = rest[None].to(device)
        nats, count = next_base_nll(model.logits(chunk, conv), chunk, dtype=torch.float64)
        total_nats += float(nats)
        scored += int(count)
    total_bits = total_nats / LN2
    return BitsPerBase(total_bits / scored if scored else float("nan"), scored, total_bits)


@dataclass(frozen=True)
class RecordScore:
    """One record's score: its name, length in bases, scored bases and bits/base (NaN if nothing scored)."""

    name: str
    length: int
    scored: int
    total_bits: float

    @property
    def bits_per_base(self) -> float:
        return self.total_bits / self.scored if self.scored else float("nan")


def score_records(embedder, records: Iterable[tuple[str, str]], *, batch_size: int = 8,
                  on_record: Callable[[RecordScore], None] | None = None) -> tuple[list[RecordScore], RecordScore]:
    """Score ``(name, sequence)`` records with a :class:`~genoconv.model.embedder.LoadedModel`.

    Returns the per-record scores and the overall score (``name="overall"``: total bits over all scored bases,
    i.e. records weighted by their scored length, not averaged per record). ``on_record`` sees each score as soon
    as it is computed.
    """
    per_record: list[RecordScore] = []
    for name, seq in records:
        ids = embedder.tokenizer.encode(seq, record=name)
        result = bits_per_base(embedder.model, ids, batch_size=batch_size)
        per_record.append(RecordScore(name, len(seq), result.scored, result.total_bits))
        if on_record is not None:
            on_record(per_record[-1])
    overall = RecordScore("overall", sum(r.length for r in per_record), sum(r.scored for r in per_record),
                          sum(r.total_bits for r in per_record))
    return per_record, overall
