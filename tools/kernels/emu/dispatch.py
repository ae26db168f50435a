"""Route genoconv's CUDA dispatch to the emulated kernels: 16-bit CPU tensors take the path a GPU would give them.

Used by tests/ops/test_kernels_emulated.py (the model and engine on the emulated kernels) and run_gpu_tests.py (the
GPU test suite on the CPU). Everything else (plans, spectra, blocks, splits, streaming) is genoconv's own code.
"""

from __future__ import annotations

import torch

# The emulated device (cuda_emu.h): an H100/H200's shared memory per block, GENOCONV_EMU_SMS multiprocessors.
SMEM_PER_BLOCK = 232448
LOW_PRECISION = (torch.bfloat16, torch.float16)


class _NanEmpty:
    """genoconv.ops.cuda's view of torch with ``empty`` filled with NaN (floating dtypes): outputs the Python side
    allocates (blocks, long path, split rows) start poisoned, as the GPU tests' allocator trick makes them there."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty(*args, **kwargs):
        out = torch.empty(*args, **kwargs)
        if out.is_floating_point():
            out.fill_(float("nan"))
        return out


def emulate_device(module, monkeypatch) -> list[str]:
    """Patch the dispatch (with pytest's ``monkeypatch``) so 16-bit CPU tensors run on ``module``, the emulated
    extension (build.load()). Returns the list every kernel call's path name is appended to."""
    from genoconv import ops
    from genoconv.engine import plan as engine_plan
    from genoconv.model import hyena
    from genoconv.ops import cuda, fftconv, fused, selfcheck

    def planned(device, dtype):
        return "cuda" if dtype in LOW_PRECISION else "reference"

    def backend(u, filt):
        return "cuda" if u.dtype in LOW_PRECISION else "reference"

    for mod in (fftconv, ops, selfcheck, hyena):
        monkeypatch.setattr(mod, "backend_for", backend)
    for mod in (fftconv, ops, hyena, engine_plan):
        monkeypatch.setattr(mod, "planned_backend", planned)
    monkeypatch.setattr(cuda, "why_not", lambda u, filt: "" if u.dtype in LOW_PRECISION else "not a 16-bit tensor")
    monkeypatch.setattr(cuda, "_smem_per_block", lambda device: SMEM_PER_BLOCK)
    monkeypatch.setattr(cuda, "_load", lambda: (module, ""))
    monkeypatch.setattr(cuda, "plan", lambda seq_len, k, device: cuda.scalar_plan(seq_len, k, module.max_fused_points(0)))
    monkeypatch.setattr(cuda, "torch", _NanEmpty())
    monkeypatch.setattr(fused, "fused_impl", lambda device: "csrc")  # the block's fused steps: the library's kernels
    paths: list[str] = []
    run_path = cuda._run_path

    def recorded(u, filt, pre, post, path, how):
        paths.append(path)
        return run_path(u, filt, pre, post, path, how)

    monkeypatch.setattr(cuda, "_run_path", recorded)
    return paths
