"""HyenaDNA's character tokenizer, without special tokens: output row t is input base t.

Vocabulary (all official checkpoints): [CLS]=0 [SEP]=1 [BOS]=2 [MASK]=3 [PAD]=4 [RESERVED]=5 [UNK]=6
A=7 C=8 G=9 T=10 N=11.

Two cleaning policies:
- ``"clean"`` (default): upper-case (soft-masked repeats are ordinary bases), U -> T, and every IUPAC ambiguity
  code (R Y S W K M B D H V N) and gap (- .) -> N.
- ``"strict"``: the official tokenizer exactly — A C G T N map to their ids, anything else that is a nucleotide
  letter (lower case, other IUPAC codes) becomes [UNK], as ``CharacterTokenizer`` does.
Under both, a character that is no nucleotide code at all (digits, '*', 'X', ...) is an input error.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError

CLS, SEP, BOS, MASK, PAD, RESERVED, UNK = range(7)
BASE_IDS = {"A": 7, "C": 8, "G": 9, "T": 10, "N": 11}
N_ID = BASE_IDS["N"]
# Id of each id's complement (A<->T, C<->G; N, special tokens and padding map to themselves).
COMPLEMENT_IDS = np.arange(16, dtype=np.int64)
for _base, _other in (("A", "T"), ("C", "G")):
    COMPLEMENT_IDS[BASE_IDS[_base]], COMPLEMENT_IDS[BASE_IDS[_other]] = BASE_IDS[_other], BASE_IDS[_base]
IUPAC = "ACGTUNRYSWKMBDHV"
GAPS = "-."
AMINO_ACID_ONLY = "EFIJLOPQZ"  # amino-acid letters that are no nucleotide code
POLICIES = ("clean", "strict")
_INVALID = 255


def _lookup_table(policy: str) -> np.ndarray:
    lut = np.full(256, _INVALID, dtype=np.uint8)
    for ch in IUPAC + GAPS:
        for c in (ch, ch.lower()):
            if policy == "clean":
                up = c.upper()
                lut[ord(c)] = BASE_IDS.get("T" if up == "U" else up, BASE_IDS["N"])
            else:
                lut[ord(c)] = BASE_IDS.get(c, UNK)
    return lut


_TABLES = {p: _lookup_table(p) for p in POLICIES}
_ID_TO_BASE = np.frombuffer(b"??????" + b"?" + b"ACGTN" + b"????", dtype=np.uint8)


class Tokenizer:
    """Turns a DNA string into token ids (one per base) under a cleaning policy."""

    def __init__(self, policy: str = "clean"):
        if policy not in POLICIES:
            raise InputError(f"tokenizer policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self._lut = _TABLES[policy]

    def describe(self) -> str:
        """One line for provenance: what the policy does to the input."""
        if self.policy == "clean":
            return "clean: upper-cased, U->T, IUPAC ambiguity codes and gaps -> N, no special tokens"
        return "strict: official HyenaDNA CharacterTokenizer (lower case and IUPAC codes -> [UNK]), no special tokens"

    def encode_array(self, seq: str | bytes, *, record: str = "sequence", offset: int = 0) -> np.ndarray:
        """uint8 ids of ``seq``; a non-nucleotide character raises InputError naming the record and position."""
        raw = seq.encode("ascii", errors="replace") if isinstance(seq, str) else seq
        ids = self._lut[np.frombuffer(raw, dtype=np.uint8)]
        bad = np.flatnonzero(ids == _INVALID)
        if bad.size:
            pos = int(bad[0])
            # the character as given (a str's non-ASCII characters became '?' in ``raw``, one byte each)
            char = seq[pos] if isinstance(seq, str) else raw[pos:pos + 1].decode("latin-1")
            protein = " (an amino acid? genoconv embeds DNA, not protein)" if char.upper() in AMINO_ACID_ONLY else ""
            raise InputError(f"record {record!r}: character {char!r} at position {offset + pos + 1} "
                             f"is not a nucleotide code ({bad.size} such characters){protein}")
        return ids

    def encode(self, seq: str | bytes, *, record: str = "sequence", offset: int = 0) -> torch.Tensor:
        """int64 tensor of ids, one per base."""
        return torch.from_numpy(self.encode_array(seq, record=record, offset=offset).astype(np.int64))

    @staticmethod
    def reverse_complement(ids: torch.Tensor) -> torch.Tensor:
        """Token ids of the reverse complement of ``ids`` (..., L): complemented, then reversed along the last axis."""
        table = torch.as_tensor(COMPLEMENT_IDS, device=ids.device)
        return table[ids].flip(-1)

    @staticmethod
    def decode(ids) -> str:
        arr = np.asarray(ids, dtype=np.int64)
        return _ID_TO_BASE[np.clip(arr, 0, len(_ID_TO_BASE) - 1)].tobytes().decode("ascii")
