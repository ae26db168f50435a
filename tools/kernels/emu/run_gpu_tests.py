"""Run the GPU kernel tests (tests/ops/test_fftconv_cuda.py) on the CPU emulator, before a GPU is lent.

The test file is copied with its CUDA device strings made CPU ones, then run by pytest with a conftest that routes the
dispatch to the emulated kernels (dispatch.emulate_device). What fails here is a wrong test or a kernel bug, found
without spending device time; what passes here can still fail on the GPU (timing-free emulation: no memory model, no
mma rounding). The allocator trick the GPU tests use to poison outputs is replaced by NaN-filled allocations.

    python tools/kernels/emu/run_gpu_tests.py [-- pytest arguments, e.g. -k monarch -m "not slow"]

Tests that ask the real device (build status, torch.compile of the CUDA ops) are deselected.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SOURCE = ROOT / "tests" / "ops" / "test_fftconv_cuda.py"
DESELECT = ("test_status_reports_built", "test_custom_ops_under_torch_compile")

REWRITES = [
    (r"torch\.cuda\.is_available\(\)", "True"),
    (r'torch\.device\("cuda"\)', 'torch.device("cpu")'),
    (r'device="cuda"', 'device="cpu"'),
    (r'\.to\("cuda", ', '.to("cpu", '),
    (r"\.cuda\(\)", ".cpu()"),
    (r"torch\.cuda\.synchronize\(\)", "None"),
    (r"torch\.cuda\.get_device_properties\(0\)", "EMU_DEVICE"),
    # The caching allocator's reuse of the poisoned block: the emulated outputs are NaN-filled instead.
    (r"    assert y\.data_ptr\(\) == ptr.*\n", ""),
]

CONFTEST = f'''
import importlib.util, sys
import pytest

def _load(name):
    spec = importlib.util.spec_from_file_location("genoconv_emu_" + name, r"{HERE}" + "/" + name + ".py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: the GPU suite")
    config.addinivalue_line("markers", "slow: long cases")

@pytest.fixture(scope="session", autouse=True)
def _emulated_dispatch():  # session scope: before the suite's own module fixtures ask the dispatch
    with pytest.MonkeyPatch.context() as patch:
        _load("dispatch").emulate_device(_load("build").load(), patch)
        yield
'''


def rewrite(text: str) -> str:
    for pattern, repl in REWRITES:
        text, n = re.subn(pattern, repl, text)
        if n == 0:
            raise ValueError(f"{SOURCE.name}: no match for {pattern!r} (the GPU tests changed; update REWRITES)")
    head = ("import os\nimport types\nimport torch\n\n"
            "EMU_DEVICE = types.SimpleNamespace(multi_processor_count=int(os.environ.get('GENOCONV_EMU_SMS', '2')))\n")
    return text.replace("import torch\n", head, 1)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:  # the usage line's separator; pytest would read what follows it as file names
        argv = argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "conftest.py").write_text(CONFTEST)
        target = folder / "test_fftconv_cuda_emulated.py"
        target.write_text(rewrite(SOURCE.read_text()))
        deselect = [f"--deselect={target.name}::{name}" for name in DESELECT]
        cmd = [sys.executable, "-m", "pytest", str(target), "-p", "no:cacheprovider", "--rootdir", tmp, *deselect,
               *argv]
        return subprocess.call(cmd, cwd=tmp)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
