"""How the CUDA extension is built, defined once for ``setup.py`` (ahead of time) and :mod:`genoconv.ops.cuda` (on
first use). Torch-free and importable by path, so ``setup.py`` reads it without importing the package.

The kernel sources live in ``csrc/fftconv`` of a checkout; a wheel carries a copy in ``genoconv/_csrc/fftconv``
(setup.py's build step puts it there), so a build on first use works from an installed package too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Native code for Ampere (sm_80; also runs on sm_86/89) and Hopper (sm_90), plus compute_90 PTX for newer chips.
# GENOCONV_CUDA_ARCHS="sm_90" (comma list) builds fewer, e.g. only the GPU at hand, in half the time.
DEFAULT_ARCHS = ("sm_80", "sm_90", "compute_90")
ARCHS = tuple(a.strip() for a in os.environ.get("GENOCONV_CUDA_ARCHS", ",".join(DEFAULT_ARCHS)).split(",") if a.strip())
ARCH_FLAGS = tuple(f"-gencode=arch=compute_{a[-2:]},code={a}" for a in ARCHS)
SOURCES = ("bindings.cpp", "fftconv_fused.cu", "fftconv_multipass.cu", "fftconv_monarch.cu", "fftconv_long.cu",
           "block_ops.cu")
HEADERS = ("params.h", "fft_common.cuh", "monarch_common.cuh")
EXTENSION = "genoconv._fftconv_C"
PACKAGED_SOURCES = Path("_csrc") / "fftconv"  # inside the genoconv package (wheels)


def nvcc_flags() -> list[str]:
    """nvcc flags: -O3, line info for profilers, the architectures."""
    return ["-O3", "-lineinfo", *ARCH_FLAGS]


def cxx_flags() -> list[str]:
    """C++ flags (bindings.cpp): -O3 and the architectures' names for ``built_archs()``, unquoted (bindings.cpp
    stringifies them: quotes survive a direct compiler call but not ninja's shell). Only the C++ compiler gets it:
    nvcc reads a comma in ``-D`` as a list of macros, which defined ``sm_90`` and ``compute_90`` and broke CUDA's
    own headers."""
    return ["-O3", f"-DGENOCONV_FFTCONV_ARCHS={','.join(ARCHS)}"]


def source_dir() -> Path | None:
    """The folder holding every kernel source: the copy inside an installed package, else a checkout's csrc/."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / PACKAGED_SOURCES, package.parent / "csrc" / "fftconv"):
        if all((candidate / name).is_file() for name in SOURCES + HEADERS):
            return candidate
    return None


def _params_ints(names: tuple[str, ...], folder: Path | None) -> tuple[int, ...]:
    """Integer constants ``name = value`` of ``params.h`` (where the kernels' launchers check them), so each size range
    is written down once."""
    folder = folder or source_dir()
    if folder is None:
        raise FileNotFoundError("genoconv kernel sources (csrc/fftconv) not found")
    text = (folder / "params.h").read_text()
    values = [re.search(rf"\b{name}\s*=\s*(\d+)", text) for name in names]
    if not all(values):
        raise ValueError(f"{folder / 'params.h'}: {', '.join(names)} not found")
    return tuple(int(v.group(1)) for v in values)  # type: ignore[union-attr]


def monarch_log_n_range(folder: Path | None = None) -> tuple[int, int]:
    """(min, max) log2 FFT sizes of the tensor-core Monarch kernel, from ``params.h``."""
    return _params_ints(("kMonarchMinLogN", "kMonarchMaxLogN"), folder)  # type: ignore[return-value]


def monarch_accumulate_min_log_n(folder: Path | None = None) -> int:
    """Smallest log2 FFT size the tensor-core kernel's accumulating form (the block-Toeplitz terms) is built for."""
    return _params_ints(("kMonarchMinAccLogN",), folder)[0]


def long_log_n_range(folder: Path | None = None) -> tuple[int, int, int, int]:
    """(min, max, min inner, max inner) log2 sizes of the long path (its real FFT sizes and its inner transforms),
    from ``params.h``."""
    return _params_ints(("kLongMinLogN", "kLongMaxLogN", "kLongMinInnerLogN", "kLongMaxInnerLogN"),
                        folder)  # type: ignore[return-value]
