"""``genoconv doctor``: what this environment can do (torch, GPUs, the CUDA kernels, the default model), and with
``--check`` whether the convolution it would run is right on this machine."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .._version import __version__
from ..errors import GenoconvError


class SelfCheckError(GenoconvError, RuntimeError):
    """The convolution on this device disagrees with float64 beyond its tolerance (exit 1)."""


def doctor(check: Annotated[bool, typer.Option(
        "--check", help="Also run the convolution on this machine (every kernel path the dispatch takes, plain and "
                        "gated, bf16 and fp16 on a GPU) and the shipped model against float64; exit 1 if any is "
                        "off.")] = False,
           device: Annotated[str, typer.Option("--device", help="Device for --check: auto, cpu, cuda or cuda:N.",
                                               metavar="DEVICE")] = "auto") -> None:
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
    if check:
        _self_check(device)


def _self_check(device: str) -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    from ..ops.selfcheck import run_checks

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    results = run_checks(dev)
    table = Table(title=f"convolution self-check on {dev}",
                  caption="relative L2 error against float64; allowed: " +
                  ", ".join(sorted({f"{r.dtype} {r.tolerance:.0e}" for r in results})))
    for col in ("case", "L", "K", "gated", "dtype", "path", "error", ""):
        table.add_column(col, justify="right" if col in ("L", "K", "error") else "left", no_wrap=True)
    for r in results:
        table.add_row(r.name, f"{r.seq_len:,}", f"{r.filter_len:,}", "yes" if r.gated else "no", r.dtype, r.path,
                      f"{r.error:.1e}", "[green]ok[/green]" if r.ok else "[bold red]FAIL[/bold red]")
    console = Console(width=max(100, Console().width))
    console.print(table)
    model_rows = _model_check(dev)
    table = Table(title=f"the shipped model on {dev}, 12 kbp, against its float64 evaluation")
    for col in ("dtype", "error", "tolerance", ""):
        table.add_column(col, justify="right" if col in ("error", "tolerance") else "left", no_wrap=True)
    for dtype, err, tol in model_rows:
        table.add_row(dtype, f"{err:.1e}", f"{tol:.0e}", "[green]ok[/green]" if err <= tol else "[bold red]FAIL[/bold red]")
    console.print(table)
    bad = [r for r in results if not r.ok]
    if bad:
        worst = max(bad, key=lambda r: r.error if r.error == r.error else float("inf"))
        raise SelfCheckError(
            f"convolution self-check failed on {dev}: {len(bad)} of {len(results)} cases off (worst: {worst.name}, "
            f"{worst.dtype}{', gated' if worst.gated else ''}, path {worst.path}, error {worst.error:.1e} > "
            f"{worst.tolerance:.0e}); GENOCONV_FFTCONV_PATH=scalar or GENOCONV_CONV_BACKEND=reference avoid the "
            "kernels: please report it with this table")
    for dtype, err, tol in model_rows:  # the convolution alone first: it names the kernel path
        if not err <= tol:  # NaN fails
            raise SelfCheckError(f"model self-check failed on {dev}: the shipped model in {dtype} is {err:.1e} from "
                                 f"float64 (allowed {tol:.0e}); GENOCONV_FUSED=0 and GENOCONV_CONV_BACKEND=reference "
                                 "avoid the fused steps and the kernels: please report it with these tables")


# The whole forward of the shipped model (fused block steps, GEMM epilogues, the convolution kernels) against float64:
# bf16/fp16 differ from it by their rounding through 4 layers (tests/test_gpu.py: < 3e-2 / 1e-2), fp32 by ~1e-6.
_MODEL_TOLERANCE = {"bfloat16": 3e-2, "float16": 1e-2, "float32": 1e-4}


def _model_check(dev) -> list[tuple[str, float, float]]:
    """(dtype, relative L2 error, tolerance) of the shipped model's hidden states on a fixed random 12 kbp record."""
    import numpy as np

    from ..api import Embedder

    seq = "".join(np.random.default_rng(12).choice(list("ACGT"), size=12_000))
    want = Embedder.from_pretrained(device=str(dev), dtype="float64").embed(seq, as_tensor=True)
    rows = []
    for dtype in (("bfloat16", "float16") if dev.type == "cuda" else ("float32",)):
        got = Embedder.from_pretrained(device=str(dev), dtype=dtype).embed(seq, as_tensor=True).double()
        rows.append((dtype, float((got - want).norm() / want.norm()), _MODEL_TOLERANCE[dtype]))
    return rows
