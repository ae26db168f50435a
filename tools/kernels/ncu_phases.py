"""Where a kernel's instructions go: join an ncu per-SASS CSV (`device_check.sh ncu_sass`) with `nvdisasm -g -c` of
the same cubin (nvdisasm is on the device machine only) and print executed warp instructions and stall samples per
barrier-delimited phase, per opcode and per source line.

    python3 tools/kernels/ncu_phases.py sass_16384.csv kernel.sass [source.cu]
    python3 tools/kernels/ncu_phases.py sass_16384.csv -      (phases and opcodes from the CSV alone, no lines)

source.cu (default: the repository's csrc/fftconv/fftconv_monarch.cu) supplies the text shown for its line numbers; a phase is
labelled by its most executed lines of the kernel body (from the `__global__` definition on), not of inlined helpers.
"""
import collections
import csv
import re
import sys
from pathlib import Path
from typing import NamedTuple


class Instr(NamedTuple):
    addr: int
    text: str
    opcode: str  # without modifiers or predicate: "HMMA", "LDS", ...
    file: str
    line: int
    executed: int
    stalls: int
    phase: int  # number of barriers (BAR.SYNC) before it in address order


def read_sass(sass_path: str) -> list[tuple[int, str, str, int]]:
    """(addr, text, file, line) in address order, with the line info of ``nvdisasm -g``."""
    sass, where = [], ("?", 0)
    with open(sass_path) as f:
        for raw in f:
            m = re.search(r'File "([^"]+)", line (\d+)', raw)
            if m and raw.strip().startswith("//##"):
                where = (Path(m.group(1)).name, int(m.group(2)))
                continue
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", raw)
            if m:
                sass.append((int(m.group(1), 16), m.group(2).strip(), *where))
    return sass


def load(csv_path: str, sass_path: str) -> list[Instr]:
    rows = list(csv.reader(open(csv_path)))
    head, data = rows[1], rows[2:]
    i_exec = head.index("Instructions Executed")
    i_stall = head.index("Warp Stall Sampling (All Samples)")
    if sass_path == "-":  # no disassembly: the CSV's own SASS text, without source lines
        i_src = head.index("Source")
        sass = [(int(r[0], 16), r[i_src].strip().rstrip(";"), "?", 0) for r in data]
    else:
        sass = read_sass(sass_path)
    if len(sass) != len(data):
        raise SystemExit(f"{sass_path}: {len(sass)} instructions, {csv_path}: {len(data)}; not the same cubin")
    out, phase = [], 0
    for (addr, text, file, line), row in zip(sass, data):
        words = text.split()
        opcode = (words[1] if words[0].startswith("@") else words[0]).split(".")[0]
        out.append(Instr(addr, text, opcode, file, line, int(row[i_exec]), int(row[i_stall]), phase))
        phase += "BAR.SYNC" in text
    return out


def report(instrs: list[Instr], source: Path) -> None:
    src = source.read_text().splitlines()
    text_of = (lambda f, ln: src[ln - 1].strip() if f == source.name and 0 < ln <= len(src) else "")
    body = next((n for n, t in enumerate(src, 1) if t.startswith("__global__")), 1)
    total = sum(i.executed for i in instrs)
    stalls = sum(i.stalls for i in instrs) or 1
    print(f"total executed {total / 1e6:.1f} M warp instr, stall samples {stalls}")
    by_phase = collections.defaultdict(list)
    for i in instrs:
        by_phase[i.phase].append(i)
    for phase, group in by_phase.items():
        e = sum(i.executed for i in group)
        if e < 0.003 * total:
            continue
        ops, lines = collections.Counter(), collections.Counter()
        for i in group:
            ops[i.opcode] += i.executed
            if i.file == source.name and i.line >= body:
                lines[i.line] += i.executed
        print(f"seg{phase:2d} @{group[0].addr:05x} {e / total:6.1%} instr {sum(i.stalls for i in group) / stalls:6.1%} "
              f"stalls | {', '.join(f'{o} {c / e:.0%}' for o, c in ops.most_common(7))}")
        print("        lines: " + ", ".join(f"{ln}:{text_of(source.name, ln)[:38]}" for ln, _ in lines.most_common(3)))
    ops = collections.Counter()
    for i in instrs:
        ops[i.opcode] += i.executed
    print("ops:", ", ".join(f"{o} {c / total:.1%}" for o, c in ops.most_common(22)))
    executed, stalled = collections.Counter(), collections.Counter()
    for i in instrs:
        executed[(i.file, i.line)] += i.executed
        stalled[(i.file, i.line)] += i.stalls
    for (f, ln), c in executed.most_common(40):
        print(f"{c / total:6.1%} {stalled[(f, ln)] / stalls:6.1%}st {f}:{ln} {text_of(f, ln)[:70]}")


if __name__ == "__main__":
    default_source = Path(__file__).resolve().parents[2] / "csrc" / "fftconv" / "fftconv_monarch.cu"
    report(load(sys.argv[1], sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else default_source)
