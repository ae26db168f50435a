"""Where a kernel's instructions go, by source line: summarise `ncu --page source --csv` output.

Why: the long path's three passes execute 1.45 G warp instructions per 2^27 samples, which alone bound it at ~11.6%
of the memory floor on an H100 (NOTES.md v19); cutting them needs to know which per-point steps (untangle, twiddles,
conversions, address arithmetic, the mma stages) they are made of. The build has -lineinfo, so ncu's SourceCounters
section attributes executed instructions to CUDA lines.
Usage: python tools/kernels/ncu_lines.py SOURCE.csv [TOP]   (a CSV of one or more kernels' source pages)
"""
import csv
import sys
from collections import defaultdict


def _column(header: list[str], *names: str) -> int | None:
    for name in names:
        for i, h in enumerate(header):
            if h.strip().lower() == name.lower():
                return i
    for name in names:
        for i, h in enumerate(header):
            if name.lower() in h.strip().lower() and "predicated" not in h.lower():
                return i
    return None


def _number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def summarise(path: str, top: int = 40) -> None:
    """Per kernel (ncu writes a header row per kernel page), the source lines with the most executed warp
    instructions and their share of the kernel's total."""
    tables: list[tuple[str, list[list[str]]]] = []
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            if not row:
                continue
            if _column(row, "Instructions Executed", "Warp Instructions Executed") is not None and \
                    _column(row, "Source", "Line") is not None:
                tables.append((" ".join(row[:1]), [row]))
            elif tables:
                tables[-1][1].append(row)
            elif len(row) == 1:  # a kernel name line before its table
                tables.append((row[0], []))
    if not tables:
        sys.exit(f"{path}: no table with an 'Instructions Executed' column (ncu --page source --csv output?)")
    for name, rows in tables:
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        ci = _column(header, "Instructions Executed", "Warp Instructions Executed")
        cs = _column(header, "Source")
        cl = _column(header, "# Line", "Line", "#")
        per_line: dict[str, float] = defaultdict(float)
        for r in body:
            if len(r) <= ci:
                continue
            key = (r[cl].strip() + ": " if cl is not None and cl != cs else "") + (r[cs].strip() if cs is not None else "")
            per_line[key[:150]] += _number(r[ci])
        total = sum(per_line.values())
        print(f"== {name}: {total / 1e6:,.1f} M warp instructions")
        for key, n in sorted(per_line.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {n / 1e6:9.2f} M {100 * n / max(total, 1):5.1f}%  {key}")


if __name__ == "__main__":
    summarise(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40)
