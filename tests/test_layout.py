"""The architecture as the README's "Layout" states it: imports point down only, the reader needs no torch, and a
wheel carries the kernel sources."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "genoconv"
# README "Layout": the layer of each top-level unit of the package. A module may import from its own unit or from a
# strictly lower layer; never from a higher layer or from another unit of its own layer.
LAYERS = {
    "_version": 0, "_lazy": 0, "errors": 0,
    "options": 1, "sharding": 1, "coords": 1,
    "io": 2, "store": 2, "ops": 2,
    "model": 3, "viz": 3,
    "engine": 4,
    "runner": 5,
    "api": 6, "train": 6,
    "cli": 7,
    "__main__": 8,
}


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported_units(path: Path) -> set[tuple[str, int]]:
    """Top-level genoconv units a module imports (every import statement, also inside functions), with lines."""
    tree = ast.parse(path.read_text(), str(path))
    package_parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if package_parts[-1] == "__init__":
        package_parts = package_parts[:-1]
    else:
        package_parts = package_parts[:-1]
    out = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
                if node.module == "genoconv":
                    names = [f"genoconv.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "genoconv" and len(parts) > 1:
                out.add((parts[1], node.lineno))
    return out


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in _modules()}
    assert units <= set(LAYERS), f"units without a layer in README/test: {sorted(units - set(LAYERS))}"


def test_imports_point_down_only():
    bad = []
    for path in _modules():
        unit = _unit(path)
        for target, line in _imported_units(path):
            if target == unit:
                continue
            if target not in LAYERS:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports unknown genoconv.{target}")
            elif LAYERS[target] >= LAYERS[unit]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {unit} (layer {LAYERS[unit]}) imports {target} "
                           f"(layer {LAYERS[target]})")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    # A test that cannot fail is a defect: the checker must catch an upward import hidden inside a function.
    fake = PACKAGE / "store" / "_layout_probe.py"
    fake.write_text("def f():\n    from ..engine import Engine\n    from genoconv.api import Embedder\n")
    try:
        targets = {t for t, _ in _imported_units(fake)}
    finally:
        fake.unlink()
    assert targets == {"engine", "api"}


def test_every_module_imports():
    import importlib

    for path in _modules():
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts)
        if name == "genoconv.__main__":
            continue  # runs the CLI on import
        importlib.import_module(name)


_ONLY_NUMPY_H5PY = r"""
import importlib.abc, sys
ALLOWED = {"numpy", "h5py", "genoconv"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in ALLOWED or top in sys.stdlib_module_names or top.startswith("_"):
            return None
        raise ImportError(f"blocked import of {name!r}: the reader must need numpy + h5py only")

sys.meta_path.insert(0, Block())
from genoconv import open_embeddings
with open_embeddings(sys.argv[1]) as f:
    print(len(f), f.pooled("mean").shape, sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "pysam")))
"""


def test_reader_needs_only_numpy_and_h5py(tmp_path):
    from genoconv.store import EmbeddingWriter, StoreSpec
    import numpy as np

    out = tmp_path / "x.h5"
    with EmbeddingWriter.open(out, StoreSpec(4, (1,), per_nucleotide=False), {"run_config": {}}) as w:
        rec = w.begin("r1", 3, "exact")
        rec.commit({("mean", 1): np.ones(4, np.float32)})
        w.finish()
    proc = subprocess.run([sys.executable, "-c", _ONLY_NUMPY_H5PY, str(out)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "1 (1, 4) []"


@pytest.mark.slow
def test_wheel_carries_kernel_sources_and_doctor_finds_them(tmp_path):
    """Build a wheel, install it alone into a folder, and run `genoconv doctor` from it (no checkout on the path)."""
    from genoconv.ops import build

    dist = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dist), str(ROOT)], capture_output=True, text=True,
                          env={**os.environ, "GENOCONV_SKIP_CUDA": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next(dist.glob("genoconv-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in build.SOURCES + build.HEADERS:
        assert f"genoconv/_csrc/fftconv/{source}" in names, source
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # -S: no .pth processing, so the editable checkout cannot shadow the installed copy.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), sysconfig.get_paths()["purelib"],
                                                        sysconfig.get_paths()["platlib"]]), "COLUMNS": "200"}
    where = subprocess.run([sys.executable, "-S", "-c", "import genoconv, genoconv.ops.build as b; "
                            "print(genoconv.__file__); print(b.source_dir())"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert where.returncode == 0, where.stderr[-2000:]
    module_file, sources = where.stdout.split()
    assert module_file.startswith(str(site)) and sources == str(site / "genoconv" / "_csrc" / "fftconv")
    doctor = subprocess.run([sys.executable, "-S", "-m", "genoconv", "doctor"], capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    assert doctor.returncode == 0, doctor.stderr[-2000:]
    assert "kernel sources" in doctor.stdout and "_csrc/fftconv" in doctor.stdout.replace("\n", "")
