"""Build hook beside pyproject.toml: ships the kernel sources inside the package, and compiles the csrc/fftconv CUDA
extension ahead of time when it can.

- Every build (wheel, sdist install) copies csrc/fftconv into ``genoconv/_csrc/fftconv``, so an installed package can
  compile the kernels on first CUDA use (genoconv.ops.cuda) even when no ahead-of-time build was made.
- The extension (``genoconv._fftconv_C``) is built only when this build environment has a CUDA-enabled torch and an
  nvcc (CUDA_HOME or PATH). pip's default build isolation installs a fresh environment without torch, so for an
  ahead-of-time build use

      pip install --no-build-isolation .          # or: pip install --no-build-isolation -e .

``GENOCONV_FORCE_CUDA=1`` makes a missing toolchain an error; ``GENOCONV_SKIP_CUDA=1`` skips the build. The
architectures and flags come from genoconv/ops/build.py, read by path (the package itself is not imported here).
"""

import os
import runpy
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
CSRC = Path("csrc") / "fftconv"
BUILD = runpy.run_path(str(HERE / "genoconv" / "ops" / "build.py"))


class build_py_with_kernel_sources(build_py):  # noqa: N801 - setuptools command naming
    """Copy the kernel sources into the built package (genoconv/_csrc/fftconv)."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "genoconv" / BUILD["PACKAGED_SOURCES"]
        target.mkdir(parents=True, exist_ok=True)
        for name in BUILD["SOURCES"] + BUILD["HEADERS"]:
            self.copy_file(str(HERE / CSRC / name), str(target / name))


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
        name=BUILD["EXTENSION"],
        sources=[str(CSRC / s) for s in BUILD["SOURCES"]],
        include_dirs=[str(HERE / CSRC)],
        extra_compile_args={"cxx": BUILD["cxx_flags"](), "nvcc": BUILD["nvcc_flags"]()},
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


ext_modules, cmdclass = cuda_extensions()
setup(ext_modules=ext_modules, cmdclass={"build_py": build_py_with_kernel_sources, **cmdclass})
