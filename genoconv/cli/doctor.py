"""``genoconv doctor``: what this environment can do (torch, GPUs, the CUDA kernels, the default model)."""

from __future__ import annotations

import sys

from .._version import __version__


def doctor() -> None:
    """Report the environment: torch, CUDA devices, whether the kernels are built, the default model."""
    import h5py
    import pysam
    import torch
    from rich.console import Console
    from rich.table import Table

    from ..ops import cuda

    table = Table(title="genoconv doctor", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("status")
    table.add_row("genoconv", __version__)
    table.add_row("python", sys.version.split()[0])
    table.add_row("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            table.add_row(f"cuda:{i}", f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB")
    else:
        table.add_row("cuda", "no CUDA device: the reference (torch.fft) path runs on the CPU")
    st = cuda.status()
    table.add_row("fftconv kernels", ("built for " + ", ".join(st.get("archs", []))) if st.get("built")
                  else f"not built: {st.get('reason')}")
    table.add_row("kernel sources", st["sources"] or "not found (this installation cannot build the kernels on first use)")
    table.add_row("h5py / HDF5", f"{h5py.__version__} / {h5py.version.hdf5_version}")
    table.add_row("pysam", pysam.__version__)
    try:
        from ..model.registry import DEFAULT_MODEL, resolve_model

        table.add_row("default model", f"{DEFAULT_MODEL}: {resolve_model(DEFAULT_MODEL)}")
    except Exception as exc:  # noqa: BLE001 - doctor reports, never fails
        table.add_row("default model", f"unavailable: {exc}")
    Console().print(table)
