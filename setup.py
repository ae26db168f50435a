"""Build hook beside pyproject.toml: compiles the csrc/fftconv CUDA extension ahead of time when it can.

The extension (``genoconv._fftconv_C``) is built only when this build environment has a CUDA-enabled torch and an
nvcc (CUDA_HOME or PATH). pip's default build isolation installs a fresh environment without torch, so for an
ahead-of-time build use

    pip install --no-build-isolation .          # or: pip install --no-build-isolation -e .

Otherwise the package installs as pure Python and the kernels are compiled on first CUDA use
(torch.utils.cpp_extension.load, from a checkout) or the fp32 PyTorch reference is used.
``GENOCONV_FORCE_CUDA=1`` makes a missing toolchain an error; ``GENOCONV_SKIP_CUDA=1`` skips the build.
"""

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
CSRC = Path("csrc") / "fftconv"
SOURCES = [str(CSRC / s) for s in ("bindings.cpp", "fftconv_fused.cu", "fftconv_multipass.cu", "fftconv_monarch.cu")]
# Native code for sm_80 and sm_90 (not PTX only), plus compute_90 PTX for newer chips; keep in sync with
# genoconv/ops/cuda.py ARCH_FLAGS.
ARCH_FLAGS = [
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
]


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def cuda_extensions():
    if _flag("GENOCONV_SKIP_CUDA"):
        return [], {}
    why = None
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        why = "torch is not importable in the build environment (use pip install --no-build-isolation)"
    else:
        nvcc = Path(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None
        if torch.version.cuda is None:
            why = f"torch {torch.__version__} is a CPU build"
        elif not (nvcc and nvcc.is_file()) and shutil.which("nvcc") is None:
            why = "no nvcc found (set CUDA_HOME)"
    if why is not None:
        if _flag("GENOCONV_FORCE_CUDA"):
            raise RuntimeError(f"GENOCONV_FORCE_CUDA is set but the CUDA extension cannot be built: {why}")
        print(f"genoconv: not building the CUDA extension ({why}); kernels compile on first use", file=sys.stderr)
        return [], {}
    ext = CUDAExtension(
        name="genoconv._fftconv_C",
        sources=SOURCES,
        include_dirs=[str(HERE / CSRC)],
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo", *ARCH_FLAGS]},
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


ext_modules, cmdclass = cuda_extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
