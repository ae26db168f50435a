"""Build the CPU emulation of genoconv's CUDA kernels (cuda_emu.h) as a torch extension.

The csrc/fftconv sources are copied into a build folder with three rewrites the host compiler needs (kernel launches,
dynamic shared memory, the PTX asm statements) and the bindings registered for CPU tensors under the same op names
(``torch.ops.genoconv_fftconv.*``), so genoconv/ops/cuda.py's own dispatch code drives the emulated kernels. Never
load it in a process that also loads the real extension (both define the op library): the tests skip it on GPUs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
CSRC = HERE.parents[2] / "csrc" / "fftconv"
NAME = "genoconv_fftconv_emu"

_C10_CUDA = """namespace c10 { namespace cuda {  // the emulator has no streams or devices to guard
struct CUDAGuard { explicit CUDAGuard(c10::Device) {} };
struct EmuStream { cudaStream_t stream() const { return nullptr; } };
inline EmuStream getCurrentCUDAStream() { return {}; }
} }
inline at::Tensor emu_nan_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  // Floating tensors start as NaN, integer ones with every bit set: a word no kernel wrote shows in the result.
  const bool floating = at::isFloatingType(c10::typeMetaToScalarType(options.dtype()));
  return floating ? at::full(sizes, NAN, options) : at::full(sizes, -1, options);
}
"""


def _split_args(text: str) -> list[str]:
    """Top-level comma split (commas inside parentheses stay)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    out.append(cur.strip())
    return out


def _launch(match: re.Match) -> str:
    indent, kernel, config, args = match.groups()
    grid, block, smem = _split_args(config)[:3]
    return f"{indent}::emu::launch({kernel}, {grid}, {block}, {smem}, {args});"


def rewrite(name: str, text: str) -> str:
    """One source as the host compiler reads it under cuda_emu.h."""
    text = re.sub(r"^(\s*)(.*?)<<<(.*?)>>>\((.*?)\);", _launch, text, flags=re.MULTILINE)
    text = re.sub(r"extern __shared__ (?:__align__\(\d+\) )?(\w+) (\w+)\[\];",
                  r"\1* \2 = reinterpret_cast<\1*>(::emu::dynamic_smem());", text)
    text = re.sub(r'asm volatile\(\s*"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.f16\.f16\.f32.*?\);',
                  "::emu::mma_m16n8k16(d, a, b0, b1);", text, flags=re.DOTALL)
    text = re.sub(r'asm volatile\("cp\.async\.cg\.shared\.global.*?\);', "::emu::cp_async16(dst, src, src_bytes);",
                  text, flags=re.DOTALL)
    text = re.sub(r'asm volatile\("cp\.async\.(?:commit_group|wait_all|wait_group \d);.*?\);', "((void)0);", text,
                  flags=re.DOTALL)
    leftover = [line for line in text.splitlines() if re.search(r"\basm\b|<<<", line.split("//")[0])]
    if leftover:
        raise ValueError(f"{name}: a construct the emulator does not rewrite: {leftover[0].strip()}")
    if name == "bindings.cpp":
        text = re.sub(r"#include <c10/cuda/\w+\.h>\n", "", text)
        text = text.replace('#include "params.h"', '#include "params.h"\n' + _C10_CUDA, 1)
        text = re.sub(r"\bis_cuda\(\)", "is_cpu()", text)  # t.is_cuda() and opt->is_cuda()
        # Outputs and workspaces start as NaN, so an element no kernel wrote (or a workspace word read before it is
        # written) shows in the result.
        text, fills = re.subn(r"\bat::empty\(", "emu_nan_empty(", text)
        if fills < 3:
            raise ValueError("bindings.cpp: expected the output and workspace allocations (at::empty)")
        text = text.replace("TORCH_LIBRARY_IMPL(genoconv_fftconv, CUDA, m)", "TORCH_LIBRARY_IMPL(genoconv_fftconv, CPU, m)")
    return text


def prepare(build_dir: Path, csrc: Path = CSRC) -> list[Path]:
    """Write the rewritten sources (.cu as .cpp) and the emulator into ``build_dir``; returns the sources to compile."""
    build_dir.mkdir(parents=True, exist_ok=True)
    sources = []
    for src in sorted(csrc.iterdir()):
        if src.suffix not in (".cu", ".cuh", ".h", ".cpp"):
            continue
        out = build_dir / (src.name + ".cpp" if src.suffix == ".cu" else src.name)
        text = rewrite(src.name, src.read_text())
        if not out.exists() or out.read_text() != text:
            out.write_text(text)
        if out.suffix == ".cpp":
            sources.append(out)
    for extra in ("cuda_emu.h", "emu_runtime.cpp"):
        shutil.copyfile(HERE / extra, build_dir / extra)
    sources.append(build_dir / "emu_runtime.cpp")
    return sources


def cuda_include() -> Path | None:
    """The CUDA toolkit's include folder (for cuda_runtime.h and the fp16/bf16 types), or None."""
    candidates = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parents[1]))
    for c in candidates:
        if c and (Path(c) / "include" / "cuda_fp16.h").is_file():
            return Path(c) / "include"
    return None


def load(build_dir: Path | None = None, verbose: bool = False, csrc: Path = CSRC, sanitize: bool = False):
    """Compile (once per source change) and import the emulated extension; its ops are torch.ops.genoconv_fftconv.*
    on CPU tensors. ``csrc``: another copy of the kernel sources (a mutated one, to show a test catches the bug).
    ``sanitize``: built with AddressSanitizer (the GPU's memcheck on the CPU: a read or write outside a tensor, the
    dynamic shared memory or a static shared array fails); the process must preload the runtime
    (:func:`asan_runtime`, ``ASAN_OPTIONS=detect_leaks=0``)."""
    from torch.utils import cpp_extension

    include = cuda_include()
    if include is None:
        raise FileNotFoundError("CUDA headers (cuda_fp16.h) not found: set CUDA_HOME")
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(csrc.iterdir()) if p.is_file())
                          + (HERE / "cuda_emu.h").read_bytes() + (HERE / "build.py").read_bytes()).hexdigest()[:10]
    build_dir = build_dir or Path(os.environ.get("GENOCONV_EMU_BUILD", Path.home() / ".cache" / "genoconv" / "emu"))
    build_dir = build_dir / (digest + ("-asan" if sanitize else ""))
    sources = prepare(build_dir, csrc)
    asan = ["-fsanitize=address", "-fno-omit-frame-pointer"] if sanitize else []
    flags = [*asan, "-O1" if sanitize else "-O2", "-std=c++17", "-include", str(build_dir / "cuda_emu.h"), f"-I{include}", f"-I{build_dir}",
             "-DGENOCONV_FFTCONV_ARCHS=emulated", "-Wno-unknown-pragmas", "-Wno-unused-variable"]
    return cpp_extension.load(name=NAME + ("_asan" if sanitize else ""), sources=[str(s) for s in sources],
                              extra_cflags=flags, extra_ldflags=asan, build_directory=str(build_dir), verbose=verbose)


def asan_runtime() -> str | None:
    """Path of the compiler's AddressSanitizer runtime (to LD_PRELOAD into a Python that loads a sanitized build)."""
    import subprocess

    try:
        out = subprocess.run(["c++", "-print-file-name=libasan.so"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    path = out.stdout.strip()
    return path if path and Path(path).is_file() else None
