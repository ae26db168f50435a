"""The csrc/fftconv CUDA kernels, compiled for the CPU by tools/kernels/emu and run there, against float64.

CI has no GPU and the GPU is lent rarely, so the kernels' logic is tested here on every commit: the real sources
(each CUDA thread a fiber, the mma and cp.async instructions emulated, dynamic shared memory, outputs and workspaces
filled with NaN first) driven by genoconv/ops/cuda.py's own dispatch and spectrum code on CPU tensors. What this
proves: index maps, twiddles, scales, the block/split/streamed plans, barriers between the phases (run in both thread
orders), every output written. What it does not: speed, races the GPU's memory model allows beyond a missing barrier,
the mma unit's own rounding. tests/ops/test_fftconv_cuda.py runs the same kernels on a GPU.

Skipped on a machine with CUDA (the real extension registers the same ops; its GPU tests run there) and where the
CUDA headers or a C++ compiler are missing.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from genoconv.ops import LongFilter, causal_conv_ref, cuda
from genoconv.ops.selfcheck import CASES, TOLERANCE

EMU = Path(__file__).resolve().parents[2] / "tools" / "kernels" / "emu"


def _emu_module(name: str):
    spec = importlib.util.spec_from_file_location(f"genoconv_emu_{name}", EMU / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


SMEM = _emu_module("dispatch").SMEM_PER_BLOCK  # the emulated device's shared memory per block (an H100/H200's)


def _emu_build():
    return _emu_module("build")


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the real kernels' tests (test_fftconv_cuda.py) run instead")
    build = _emu_build()
    if build.cuda_include() is None or shutil.which("c++") is None or shutil.which("ninja") is None:
        pytest.skip("the emulator needs the CUDA headers (cuda_fp16.h), a C++ compiler and ninja")
    return build.load(tmp_path_factory.mktemp("emu"))


def _plan(module, seq_len: int, filter_len: int, history: int, gated: bool) -> tuple[str, object]:
    """The dispatch's plan on the emulated device; the scalar kernels' plan needs the device's fused size."""
    path, how = cuda._path_plan(seq_len, filter_len, SMEM, history, pre=gated, post=gated)
    if how is None:
        planned = cuda._planned_taps(seq_len, filter_len, history)
        how = (*cuda.scalar_plan(seq_len, planned, module.max_fused_points(0)), planned)
    return path, how


def _inputs(batch, channels, seq_len, filter_len, gated, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(filter_len, dtype=torch.float64)
    taps = torch.randn(channels, filter_len, generator=gen, dtype=torch.float64) / filter_len ** 0.5
    taps = taps * torch.exp(-t * 2.0 / filter_len) + 0.1 * torch.cos(t * 0.01) / filter_len ** 0.5
    bias = torch.randn(channels, generator=gen, dtype=torch.float64)
    sig = [torch.randn(batch, channels, seq_len, generator=gen).to(dtype) for _ in range(3 if gated else 1)]
    return taps, bias, sig[0], (sig[1] if gated else None), (sig[2] if gated else None)


def _check(module, seq_len, filter_len, *, history=0, gated=False, dtype=torch.bfloat16, batch=2, channels=3,
           plan=None, view=None, seed=0):
    """One call on the emulated kernels against the float64 convolution of the same 16-bit inputs; returns the path.
    ``view``: a function making the signals non-contiguous views (strided inputs)."""
    total = history + seq_len
    taps, bias, u, pre, post = _inputs(batch, channels, total, filter_len, gated, dtype, seed + total + 7 * gated)
    if view is not None:
        u, pre, post = (None if t is None else view(t) for t in (u, pre, post))
    path, how = plan or _plan(module, total, filter_len, history, gated)
    y = cuda._run_path(u, LongFilter(taps.float(), bias.float()), pre, post, path, how)
    x = u if pre is None else u * pre
    want = causal_conv_ref(x.double(), LongFilter(taps, bias))
    if post is not None:
        want = want * post.double()
    got, want = y[..., history:].double(), want[..., history:]
    assert torch.isfinite(got).all(), f"{path}: outputs not written (NaN left from the poisoned output)"
    err = ((got - want).norm() / want.norm()).item()
    assert err <= TOLERANCE[dtype], f"{path} {how}: relative L2 error {err:.2e}"
    return path


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_dispatch_path(emulated, case, gated):
    """`genoconv doctor --check`'s cases: one per path the dispatch takes (reads on the scalar fused kernel, the
    tensor-core kernel and its blocks, the long path at R = 16 and R = 256, its overlap-save blocks, a row split by
    filter taps, a streamed chunk as a circular transform)."""
    _, seq_len, filter_len, history = case
    _check(emulated, seq_len, filter_len, history=history, gated=gated)


def test_cases_cover_every_path(emulated):
    paths = {_plan(emulated, s + h, k, h, False)[0] for _, s, k, h in CASES}
    assert paths == {"3-pass", "monarch", "blocks", "toeplitz", "long", "long_blocks", "long_split"}


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("seq_len", [300, 1000, 2000, 4000, 8000, 16000])
def test_tensor_core_kernel_every_size(emulated, seq_len, gated):
    """N = 2^10 .. 2^15 (r = 4 .. 128 rows of 256 points; staged gates up to 2^14, streamed at 2^15), plain and gated
    (r = 16 plain has its own register budget)."""
    assert _check(emulated, seq_len, seq_len, gated=gated, batch=3, channels=2) == "monarch"


def test_tensor_core_kernel_writes_rows_that_start_aligned(emulated):
    """A row of odd length on the tensor-core kernel comes back in rows that start 16-byte aligned (a padded buffer),
    so the model's out_proj GEMM takes its fast kernel without copying v (ops.layout), and the values are the same."""
    from genoconv.ops.layout import aligned_rows

    path = _check(emulated, 1001, 1001, gated=True)
    assert path == "monarch"
    taps, bias, u, pre, post = _inputs(2, 3, 1001, 1001, True, torch.bfloat16, 3)
    y = cuda._run_path(u, LongFilter(taps.float(), bias.float()), pre, post, *_plan(emulated, 1001, 1001, 0, True))
    assert y.shape == u.shape and aligned_rows(y) and not y.is_contiguous()


@pytest.mark.parametrize("seq_len", [20_000, 50_001, 100_000, 200_000])
def test_long_path_inner_sizes(emulated, seq_len):
    """N = 2^16 (R = 16, scalar outer passes), 2^17 .. 2^19 (R = 256 around the circular tensor-core kernel at
    r = 2, 4, 8), B = 1: a lone row."""
    _check(emulated, seq_len, seq_len, batch=1, channels=2, plan=("long", cuda.long_plan(seq_len, seq_len)))


@pytest.mark.slow
@pytest.mark.parametrize("seq_len", [800_000, 3_000_000])
def test_long_path_largest_sizes(emulated, seq_len):
    """N = 2^21 (inner r = 32) and 2^23 (R = 512, the DMD gene's full-length filter): one row."""
    _check(emulated, seq_len, seq_len, batch=1, channels=1, plan=("long", cuda.long_plan(seq_len, seq_len)))


@pytest.mark.parametrize("case", [("gene", 3000, 3000, 0), ("long 2^17", 50_001, 50_001, 0),
                                  ("split", 70_001, 70_001, 0), ("reads", 51, 51, 0)], ids=lambda c: c[0])
def test_float16(emulated, case):
    _, seq_len, filter_len, history = case
    _check(emulated, seq_len, filter_len, history=history, gated=True, dtype=torch.float16)


def _strided(t):
    """A view with batch and channel strides of a larger tensor (channels 1, 3, 5 of 6) and unit sequence stride."""
    big = torch.zeros(t.shape[0], 2 * t.shape[1], t.shape[2] + 5, dtype=t.dtype)
    big[:, 1::2, 5:] = t
    return big[:, 1::2, 5:]


@pytest.mark.parametrize("case", [(3000, 3000), (40_001, 1026), (20_001, 20_001), (50_001, 50_001),
                                  (270_000, 16_001)],
                         ids=["monarch", "blocks", "toeplitz", "long", "long_blocks"])
def test_strided_inputs_odd_channels(emulated, case):
    seq_len, filter_len = case
    _check(emulated, seq_len, filter_len, gated=True, batch=1, channels=5, view=_strided)


@pytest.mark.parametrize("case", [(3000, 3000), (16_000, 16_000), (50_001, 50_001), (40_000, 40_000)],
                         ids=["monarch", "monarch 2^15", "long", "3-pass"])
def test_threads_in_reverse_order(emulated, case, monkeypatch):
    """The same results when each block's threads run last to first between barriers: a missing barrier shows in
    one order or the other (removing one from the long path's inverse pass gives 0.30 error, from the tensor-core
    kernel NaN: tools/kernels/NOTES.md)."""
    monkeypatch.setenv("GENOCONV_EMU_ORDER", "reverse")
    seq_len, filter_len = case
    plan = None
    if case == (40_000, 40_000):
        plan = ("3-pass", (*cuda.scalar_plan(seq_len, filter_len, emulated.max_fused_points(0)), filter_len))
    _check(emulated, seq_len, filter_len, gated=True, plan=plan)


@pytest.mark.parametrize("case", [(32_768, 32_768, False, 2, 3), (20_001, 20_001, True, 1, 5),
                                  (16_385, 9_000, True, 3, 2), (40_000, 40_000, True, 2, 2),
                                  (45_000, 17_000, False, 2, 2)],
                         ids=["m=2 whole blocks", "short last block, gated, B=1, H=5", "one-sample last block",
                              "m=3 gated", "m=3, two filter blocks"])
def test_block_toeplitz_rows(emulated, case):
    """Rows of 2-3 blocks of N/2 = 16K on the tensor-core kernel (toeplitz_plan): the i = 0 terms write y, the pairs
    [h_i | h_(i-1)] add into it (causal_conv_monarch_add), a shorter last block takes only its outputs; a pair holding
    only the tail of h_(i-1) (K = 17,000 at m = 3) too."""
    seq_len, filter_len, gated, batch, channels = case
    plan = ("toeplitz", cuda.toeplitz_plan(seq_len, pre=gated, post=gated, smem_per_block=SMEM))
    assert _check(emulated, seq_len, filter_len, gated=gated, batch=batch, channels=channels, plan=plan) == "toeplitz"


def test_non_finite_input_poisons_its_row_only(emulated):
    """A NaN in one row's input makes that row NaN (the long path's input scale marks it) and leaves the others."""
    seq_len = 50_001
    taps, bias, u, _, _ = _inputs(2, 3, seq_len, seq_len, False, torch.bfloat16, 5)
    u[1, 2, 777] = float("nan")
    y = cuda._run_path(u, LongFilter(taps.float(), bias.float()), None, None, "long", cuda.long_plan(seq_len, seq_len))
    assert torch.isnan(y[1, 2, 777:]).all()
    clean = torch.ones(2, 3, dtype=torch.bool)
    clean[1, 2] = False
    assert torch.isfinite(y[clean]).all()


def test_long_path_scales_in_the_op_match_the_python_ones(emulated, monkeypatch):
    """The long path's own input scales (a peak pass per channel block) give bitwise the outputs of cuda._in_scale's,
    also with one channel per launch (each block's peak words and scales at its offset), gated, with a NaN row and an
    all-zero row."""
    seq_len = 50_001
    taps, bias, u, pre, post = _inputs(2, 3, seq_len, seq_len, True, torch.bfloat16, 9)
    u[1, 2, 777] = float("nan")
    u[0, 1] = 0
    # Peaks a binade above the rest decide their rows' scales: at an odd index, in the second peak chunk (32,768
    # samples a block), at the last sample (of a misaligned row, and of the 16-byte aligned row 0: one of its L % 8
    # samples past the 16-byte words), and in the pre-gate.
    u[0, 0, 1001], u[1, 0, 40_001], u[0, 2, seq_len - 1], pre[1, 1, 3] = 40.0, -100.0, 300.0, 50.0
    u[0, 0, seq_len - 1] = 500.0
    filt, plan = LongFilter(taps.float(), bias.float()), cuda.long_plan(seq_len, seq_len)
    own = cuda._run_path(u, filt, pre, post, "long", plan)
    monkeypatch.setenv("GENOCONV_LONG_WORK_BYTES", "1")
    small = cuda._run_path(u, filt, pre, post, "long", plan)
    real_op = cuda._long_op

    def python_scales(f, uv, prev, postv, y, in_scale, *rest, op=None):
        assert in_scale is None
        return real_op(f, uv, prev, postv, y, cuda._in_scale(uv, prev), *rest, op=op)

    monkeypatch.setattr(cuda, "_long_op", python_scales)
    want = cuda._run_path(u, filt, pre, post, "long", plan)
    for got in (own, small):
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())
    assert own[1, 2].isnan().all() and (own[0, 1] == 0).all() and own[0, 0].isfinite().all()


@pytest.mark.parametrize("dtype,gated,offset", [(torch.bfloat16, False, 0), (torch.float16, True, 1)],
                         ids=["bf16", "fp16 gated, rows one sample in"])
def test_row_scales_op_equals_the_python_scales(emulated, dtype, gated, offset):
    """long_row_scales (the scales a row's overlap-save blocks share): bitwise cuda._in_scale's, on channel-strided
    views (16-byte aligned rows, or one sample in), a NaN row, an inf in a gate, an all-zero row and peaks in the last
    chunk: row (0, 0)'s is its last sample, one of the L % 8 past its 16-byte words (a peak the aligned rows' packed
    maximum once dropped)."""
    seq_len = 70_001  # L % 8 = 1; row (0, 0) starts the tensor (16-byte aligned at offset 0)
    _, _, u, pre, _ = _inputs(2, 6, seq_len + offset, 64, gated, dtype, 11)
    u, pre = u[:, ::2, offset:], None if pre is None else pre[:, ::2, offset:]  # channels 0, 2, 4
    u[1, 2, 777] = float("nan")
    u[0, 1] = 0
    u[0, 0, seq_len - 1], u[1, 1, 40_001] = 300.0, -100.0
    if pre is not None:
        pre[1, 0, 5] = float("inf")
    got = torch.ops.genoconv_fftconv.long_row_scales(u, pre)
    want = cuda._in_scale(u, pre)
    assert got.shape == (3, 2) and got.dtype == torch.float32
    assert torch.equal(got, want), (got, want)
    assert got[2, 1] == 0 and (got[0, 1] == 0) == gated  # NaN row; the inf gate
    with pytest.raises(RuntimeError, match="at least one sample"):
        torch.ops.genoconv_fftconv.long_row_scales(u[..., :0], None)


# ---- the Hyena block's fused steps (block_ops.cu) ------------------------------------------------------------------

_ROUNDING = {torch.bfloat16: 4e-3, torch.float16: 6e-4, torch.float32: 1e-6}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_block_layer_norm_matches_float64(emulated, dtype):
    """LayerNorm of fp32 rows in the compute dtype (with y: x += y in place first) against float64, for widths that
    are and are not multiples of the warp, held in registers (d <= 256) or not (300); every output written (the
    emulator's outputs start as NaN)."""
    from genoconv.ops import fused

    g = torch.Generator().manual_seed(1)
    for d, rows, with_y in ((256, 37, True), (100, 9, False), (33, 5, True), (1, 3, False), (300, 4, True)):
        ln = torch.nn.LayerNorm(d)
        with torch.no_grad():
            ln.weight.normal_(generator=g)
            ln.bias.normal_(generator=g)
        x = torch.randn(2, rows, d, generator=g) * 3 + 1
        y = torch.randn(2, rows, d, generator=g).to(dtype) if with_y else None
        summed = x + y.float() if with_y else x.clone()
        want = torch.nn.functional.layer_norm(summed.double(), (d,), ln.weight.double(), ln.bias.double(), ln.eps)
        got = fused.csrc_layer_norm(x, y, ln, dtype)
        assert got.dtype == dtype and got.shape == x.shape and torch.isfinite(got).all()
        assert torch.equal(x, summed)  # the residual stream updated in place, in fp32 (unchanged without y)
        if d > 1:
            assert ((got.double() - want).norm() / want.norm()).item() < _ROUNDING[dtype], (d, rows)
        else:  # one element: LayerNorm is its bias
            assert torch.equal(got, ln.bias.expand_as(x).to(dtype))


# (length, past, in_bias, p offset, x0 offset, gated offset, extra row elements): p = a (B, 3d, length) view starting
# `p offset` elements into rows of p offset + length + extra, and x0, gated views likewise into their own NaN buffers
# (one row length for both, so they share strides). 16-bit tiles hold 1,024 outputs, fp32 ones 512.
_SHORT_CONV_CASES = (
    # rows of 2,048 / 1,024 elements starting 16 bytes in: the 16-byte path of 16-bit dtypes
    (2040, True, False, 8, 8, 8, 0), (1016, True, True, 8, 8, 8, 0), (2051, False, True, 8, 8, 8, 5),
    # the staged path: contiguous rows of odd and not-multiple-of-8 lengths, tiny rows, tile edges
    (1, False, False, 0, 0, 0, 0), (2, True, False, 0, 0, 0, 0), (7, True, True, 0, 0, 0, 0),
    (9, False, True, 0, 0, 0, 0), (37, True, False, 0, 0, 0, 0), (1025, True, True, 0, 0, 0, 0),
    (1023, False, False, 0, 0, 0, 1), (1024, True, False, 0, 0, 0, 1), (511, True, True, 0, 0, 0, 2),
    (512, False, True, 0, 0, 0, 3), (513, True, False, 0, 0, 0, 0),
    # outputs at every misalignment from an aligned p (a streamed chunk behind its history), lead + length across
    # tile edges
    (1100, True, True, 0, 1, 1, 4), (2046, False, False, 0, 2, 2, 0), (1017, True, False, 0, 3, 3, 1),
    (1020, True, True, 0, 4, 4, 0), (509, False, True, 0, 5, 5, 3), (2, True, False, 0, 7, 7, 0),
    (1, True, True, 0, 5, 5, 0), (1019, True, False, 0, 6, 6, 0), (2049, False, True, 0, 7, 7, 7),
    (9, True, False, 0, 7, 7, 0), (7, False, False, 0, 1, 1, 0),
    # p unaligned under aligned outputs, both unaligned, and x0 and gated not congruent mod 16 (gated element-wise)
    (1030, True, True, 3, 0, 0, 0), (2050, False, False, 5, 8, 8, 0), (16, True, False, 1, 1, 1, 0),
    (1500, True, True, 7, 2, 2, 1), (1033, True, True, 0, 3, 6, 0), (40, False, True, 2, 1, 4, 0),
)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_block_short_conv_gate_matches_float64(emulated, dtype, width):
    """HyenaDNA's short conv and gate against float64 for each width the kernel is built for, element by element
    (within a rounding of the output): lengths around its 16-byte words and tiles, carried inputs (past), in_proj's bias
    folded in (rounded with p as the GEMM's output would be), rows of p and of the outputs at every alignment (the
    16-byte path and the staged one), outputs into views of larger buffers (a streamed chunk behind its history):
    every output written (the buffers start as NaN) and nothing outside the views."""
    from genoconv.ops import fused

    g = torch.Generator().manual_seed(width)
    batch, d = 2, 3
    rtol = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 1e-6}[dtype]
    for length, with_past, with_in_bias, p_off, x_off, g_off, extra in _SHORT_CONV_CASES:
        case = (length, p_off, x_off, g_off, extra)
        base = torch.randn(batch, 3 * d, p_off + length + extra, generator=g).to(dtype)
        p = base[..., p_off:p_off + length]
        w, b = torch.randn(3 * d, 1, width, generator=g), torch.randn(3 * d, generator=g)
        in_bias = torch.randn(3 * d, generator=g) if with_in_bias else None
        past = torch.randn(batch, 3 * d, width - 1, generator=g).to(dtype) if with_past and width > 1 else None
        row = max(x_off, g_off) + length + extra
        x0_buf, g_buf = (torch.full((batch, d, row), float("nan"), dtype=dtype) for _ in range(2))
        views = (x0_buf[..., x_off:x_off + length], g_buf[..., g_off:g_off + length])
        x0, gated = fused.csrc_short_conv_gate(p, w, b, past, in_bias, out=views)
        assert x0.data_ptr() == views[0].data_ptr() and gated.data_ptr() == views[1].data_ptr()
        for buf, off in ((x0_buf, x_off), (g_buf, g_off)):
            outside = torch.ones(buf.shape, dtype=torch.bool)
            outside[..., off:off + length] = False
            assert buf[outside].isnan().all(), case
        inputs = p.double() if in_bias is None else (p.float() + in_bias.to(dtype).float()[:, None]).to(dtype).double()
        r0, rg = fused.short_conv_gate_ref(inputs, w.double(), b.double(), past.double() if past is not None else None)
        for got, want in ((x0, r0), (gated, rg)):
            assert torch.isfinite(got).all(), case
            torch.testing.assert_close(got.double(), want, rtol=rtol, atol=1e-4, msg=lambda m, c=case: f"{c}: {m}")


# ---- the model and engine on the emulated kernels ------------------------------------------------------------------

@pytest.fixture
def kernels_on_cpu(emulated, monkeypatch):
    """16-bit CPU tensors take the CUDA dispatch (as they would on a GPU) into the emulated kernels: the model's own
    choices (shared taps, streamed chunks as circular rows, partial filters, the planner's path) run unchanged."""
    return _emu_module("dispatch").emulate_device(emulated, monkeypatch)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from genoconv.model.checkpoint import save_checkpoint
    from genoconv.model.config import HyenaConfig
    from genoconv.model.hyena import HyenaDNA

    path = tmp_path_factory.mktemp("model")
    save_checkpoint(HyenaDNA(HyenaConfig(d_model=8, n_layer=2, d_inner=16, max_seq_len=70_002)).init_weights(seed=5),
                    path)
    return path


@pytest.mark.parametrize("case", [("one pass", 36_000, {}, None, {"toeplitz"}),
                                  ("partial filter", 36_000, {"filter_len": 1000}, None, {"blocks"}),
                                  ("partial, streamed", 20_000, {"filter_len": 3000}, 5000, {"monarch"}),
                                  ("exact, streamed", 24_000, {}, 6000, {"monarch", "toeplitz"}),
                                  # odd lengths: in_proj into row-padded views, the gated product and out_proj's input
                                  # padded (ops.layout); a whole odd row runs out_proj over its rows' padding
                                  ("exact, streamed, odd chunks", 24_003, {}, 6001, {"monarch", "toeplitz"}),
                                  ("one pass, odd", 36_001, {}, None, {"toeplitz"})],
                         ids=lambda c: c[0])
def test_embedder_on_emulated_kernels_matches_reference(small_model, case, request):
    """`Embedder` in bf16 on the emulated kernels against the same model on the PyTorch reference path: per-base
    error at the bf16 level (the GPU measured 5.7e-3 on DMD), through each path the model's calls take."""
    import numpy as np

    from genoconv import Embedder

    _, length, options, chunk, expect = case
    seq = "".join(np.random.default_rng(length).choice(list("ACGT"), length))

    def embed():
        emb = Embedder.from_pretrained(small_model, device="cpu", dtype="bfloat16")
        out = dict(emb.embed_many([("x", seq)], chunk_size=chunk, **options))["x"]
        return out["per_nucleotide"][max(out["per_nucleotide"])]

    want = embed()
    paths = request.getfixturevalue("kernels_on_cpu")
    got = embed()
    assert set(paths) & expect == expect, paths
    assert np.isfinite(got).all()
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-2


@pytest.mark.slow
def test_memcheck_under_address_sanitizer(emulated, tmp_path):
    """Every dispatch path in a process that runs the emulated kernels built with AddressSanitizer
    (tools/kernels/emu/memcheck.py): no access outside a tensor or shared memory, results within tolerance."""
    import os
    import subprocess
    import sys

    runtime = _emu_build().asan_runtime()
    if runtime is None:
        pytest.skip("no AddressSanitizer runtime (libasan) for this compiler")
    env = {**os.environ, "LD_PRELOAD": runtime, "ASAN_OPTIONS": "detect_leaks=0"}
    proc = subprocess.run([sys.executable, str(EMU / "memcheck.py"), "--build-dir", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    report = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert "AddressSanitizer" not in proc.stderr.replace("WARNING: ASan doesn't fully support", ""), report
    assert proc.stdout.count("ok ") == 2 * len(CASES), report


def test_reads_pooled_at_once_on_emulated_kernels(small_model, kernels_on_cpu):
    """tests/test_gpu.py's read-batch check on the emulated kernels: read-sized records (rows <= 256 samples) take the
    scalar fused kernel, not the long path, and pooling the whole batch at once (pooled-only output) equals the
    per-record accumulators of the same batch."""
    import numpy as np

    from genoconv import Embedder

    rng = np.random.default_rng(7)
    seqs = [(f"read{i}", "".join(rng.choice(list("ACGT"), size=int(n)))) for i, n in
            enumerate(rng.integers(40, 152, size=60))]
    emb = Embedder.from_pretrained(small_model, device="cpu", dtype="bfloat16")
    pools = ["mean", "max", "last"]
    fast = dict(emb.embed_many(seqs, pools=pools, per_nucleotide=False))
    slow = dict(emb.embed_many(seqs, pools=pools))
    assert set(kernels_on_cpu) == {"3-pass"}, kernels_on_cpu  # the scalar kernels' path; one transform of 2^9
    assert list(fast) == list(slow)
    for rid, _ in seqs:
        for key, want in slow[rid]["pooled"].items():
            np.testing.assert_allclose(fast[rid]["pooled"][key], want, rtol=1e-6, atol=1e-7, err_msg=f"{rid} {key}")


def test_nearby_lengths_share_one_spectrum_on_emulated_kernels(small_model, kernels_on_cpu):
    """tests/test_gpu.py's shared-taps check on the emulated kernels: records of 2,100-3,900 bases ask every layer for
    one filter of 4,096 taps, whose tensor-core spectrum (N = 2^13) is built once and reused."""
    import numpy as np

    from genoconv import Embedder

    rng = np.random.default_rng(3)
    emb = Embedder.from_pretrained(small_model, device="cpu", dtype="bfloat16")
    for n in (2100, 2600, 3100, 3900):
        assert np.isfinite(emb.embed("".join(rng.choice(list("ACGT"), size=n)))).all()
    assert set(kernels_on_cpu) == {"monarch"}, kernels_on_cpu
    for block in emb.model.backbone.layers:
        filt = block.mixer.filter_fn.cached_filter()
        assert filt.filter_len == 4096
        assert [key[:3] for key in filt._cache if key[0] == "cuda_monarch"] == [("cuda_monarch", 13, 4096)]


@pytest.mark.parametrize("seq_len", [2000, 3000])
@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_tensor_core_kernel_bad_and_lone_rows_on_one_block(emulated, gated, seq_len, monkeypatch):
    """The tensor-core kernel zeroes a bad row's staged samples, and a lone last row's absent partner, instead of
    selecting per sample (NOTES.md v25). One emulated SM, so one block walks every unit in order: the lone row of each
    channel follows a pair whose second row is huge (finite), and that row's staged samples are still in shared memory
    when the lone unit runs; left there, they overflow fp16 and the lone row comes out NaN. A NaN input and (gated) an
    inf pre-gate make their own rows NaN and no other. At 2000 (r = 16) the rows of the causal zero half are neither
    written nor read (NOTES.md v26): what an earlier unit left there must not reach the outputs."""
    monkeypatch.setenv("GENOCONV_EMU_SMS", "1")
    batch, channels = 3, 3
    taps, bias, u, pre, post = _inputs(batch, channels, seq_len, seq_len, gated, torch.bfloat16, 21)
    u[1] = (u[1].double() * 3e4).to(torch.bfloat16)  # every channel's pair (0, 1): row 1 huge, staged before row 2
    u[1, 1, 5] = float("nan")
    bad = {(1, 1)}
    if gated:
        pre[0, 2, 9] = float("inf")
        bad.add((0, 2))
    path, how = _plan(emulated, seq_len, seq_len, 0, gated)
    assert path == "monarch"
    y = cuda._run_path(u, LongFilter(taps.float(), bias.float()), pre, post, path, how).double()
    x = u if pre is None else u * pre
    want = causal_conv_ref(torch.nan_to_num(x.double(), nan=0.0, posinf=0.0), LongFilter(taps, bias))
    if post is not None:
        want = want * post.double()
    for b in range(batch):
        for c in range(channels):
            if (b, c) in bad:
                assert torch.isnan(y[b, c]).all(), (b, c)
                continue
            err = ((y[b, c] - want[b, c]).norm() / want[b, c].norm()).item()
            assert err <= TOLERANCE[torch.bfloat16], f"row ({b}, {c}): relative L2 error {err:.2e}"


@pytest.mark.parametrize("seq_len, filter_len, path", [(50_000, 20_000, "long"), (6_000, 3_000, "monarch")])
def test_streamed_chunk_post_gated_in_the_kernel(kernels_on_cpu, seq_len, filter_len, path):
    """A streamed chunk whose post-gate is indexed like [history | chunk] (the model's `beside` buffer, NOTES.md v25):
    the kernel multiplies it as it writes, and its first `past` columns (NaN here: the model never writes them) reach
    no kept output. Equal to the float64 convolution of the whole row, times the gate, on the chunk."""
    from genoconv.ops.fftconv import causal_conv_joined
    from genoconv.ops.layout import carried_inputs

    past = carried_inputs(filter_len)
    taps, bias, joined, _, gate = _inputs(2, 3, past + seq_len, filter_len, True, torch.bfloat16, 31)
    beside = gate.clone()
    beside[..., :past] = float("nan")
    y = causal_conv_joined(joined, past, LongFilter(taps.float(), bias.float()), postgate=beside)
    assert path in kernels_on_cpu
    want = causal_conv_ref(joined.double(), LongFilter(taps, bias))[..., past:] * gate[..., past:].double()
    assert y.shape == want.shape and torch.isfinite(y).all()
    err = ((y.double() - want).norm() / want.norm()).item()
    assert err <= TOLERANCE[torch.bfloat16], f"relative L2 error {err:.2e}"
