"""The long path's plan and spectrum (genoconv/ops/cuda.py), checked on the CPU with a float64 stand-in for its three
kernels (fftconv_long.cu): the same four-step arithmetic, index maps and scales, so a wrong source window, inner
spectrum order or scale shows here without a GPU. The kernels themselves are tested against float64 in
test_fftconv_cuda.py."""

from __future__ import annotations

import pytest
import torch

from genoconv.ops import LongFilter
from genoconv.ops import cuda


def _unpack(spec: torch.Tensor, gain: torch.Tensor, log_n: int) -> torch.Tensor:
    """The inverse of cuda._monarch_pack: (rows, N) complex128 spectra in natural order (the 16^(2 n16) / N undone)."""
    rows, n = spec.shape[0], 1 << log_n
    words = spec.double().reshape(rows, n // 4, 2, 2, 2).permute(0, 1, 2, 4, 3).reshape(rows, n, 2)
    ordered = torch.view_as_complex(words.contiguous()) * gain.double()[:, None]
    natural = torch.empty_like(ordered)
    natural[:, cuda._monarch_order(log_n, "cpu")] = ordered
    n16 = 3 if n >= 16 * 256 else 2  # radix-16 mma stages per transform (cuda._monarch_words)
    return natural / (16.0 ** (2 * n16) / n)


def _oracle(u, taps, bias, pre=None, post=None) -> torch.Tensor:
    """float64 linear causal convolution by FFT (checked against the direct form in test_fftconv_ref.py)."""
    x = u * pre if pre is not None else u
    seq_len = x.shape[-1]
    n = 1 << (seq_len + taps.shape[-1]).bit_length()
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(taps, n=n), n=n)[..., :seq_len] + x * bias[:, None]
    return y * post if post is not None else y


def _emulate_op(u, spec, gain, out_scale, in_scale, twiddle, pre, post, y, log_n, log_r, start, first,
                peaks: list | None = None):
    """float64 stand-in for torch.ops.genoconv_fftconv.causal_conv_long: pass 1 / inner / pass 3 exactly as the kernels
    compute them (no rounding), rows k1 <= R/2 only, from the given spectrum words and input scales, writing outputs
    t >= first of each row of the (possibly strided) y (in_scale None: the op computes it, as _in_scale does).
    ``peaks`` collects each row's largest workspace value after the inner pass (fp16 must hold it)."""
    if in_scale is None:
        in_scale = cuda._in_scale(u, pre)
    n, r = 1 << log_n, 1 << log_r
    inner_log = log_n - log_r
    inner, rh = 1 << inner_log, r // 2 + 1
    batch, channels, seq_len = u.shape
    assert in_scale.shape == (channels, batch) and y.shape == u.shape and seq_len - start <= n
    g = _unpack(spec, gain, inner_log).reshape(channels, rh, inner)
    x = u.double() * (pre.double() if pre is not None else 1.0)
    k1 = torch.arange(rh)[:, None]
    n2 = torch.arange(inner)[None, :]
    tw = torch.exp(-2j * torch.pi * k1 * n2 / n)
    t = start + torch.arange(n)
    ok = t < seq_len
    keep = (t >= first) & ok
    for b in range(batch):
        for h in range(channels):
            sc = in_scale[h, b].item()
            z = torch.zeros(n, dtype=torch.float64)
            z[ok] = x[b, h, t[ok]] * sc
            # pass 1: R-point DFTs down the columns (z[N' n1 + n2]), rows k1 <= R/2, twiddle W_N^(n2 k1), 1/R
            w = torch.fft.fft(z.reshape(r, inner), dim=0)[:rh] * tw / r
            # inner: circular convolution of row k1 with the filter whose spectrum is g[h, k1]
            w = torch.fft.ifft(torch.fft.fft(w, dim=1) * g[h], dim=1)
            if peaks is not None:
                peaks.append(w.abs().max().item())
            # pass 3: conj twiddle, Hermitian completion of rows R - k1, inverse DFT over k1 (unnormalised), real part
            t_rows = w * tw.conj()
            full = torch.cat((t_rows, t_rows[1: r // 2].flip(0).conj()), dim=0)
            v = (torch.fft.ifft(full, dim=0) * r).real.reshape(n) * out_scale[h].double()
            v = v / sc if sc != 0 else torch.full_like(v, float("nan"))  # a row holding inf/NaN: NaN
            if post is not None:
                v[keep] = v[keep] * post[b, h, t[keep]].double()
            y[b, h, t[keep]] = v[keep].to(y.dtype)


def _emulate(u, filt, pre, post, plan, peaks: list | None = None):
    """The whole-row long path (cuda._long_conv) with :func:`_emulate_op` for its kernels."""
    log_n, log_r, start, first, _ = plan
    taps = cuda._spectrum_taps(filt, u.shape[-1], 1 << log_n, circular=first > 0)  # as cuda._long_conv
    spec, gain, out_scale = cuda._long_spectrum(filt, log_n, log_r, taps, torch.device("cpu"))
    y = torch.full(u.shape, float("nan"), dtype=torch.float64)
    _emulate_op(u, spec, gain, out_scale, cuda._in_scale(u, pre), None, pre, post, y, log_n, log_r, start, first,
                peaks=peaks)
    return y


@pytest.mark.parametrize("batch,seq_len,filter_len,gated", [
    (1, 40_000, 40_000, False),
    (1, 30_000, 300, True),       # short filter
    (3, 33_333, 33_333, True),
    (2, 20_000, 70_000, False),   # a filter longer than the row
])
def test_long_path_plan_and_spectrum_give_the_linear_convolution(batch, seq_len, filter_len, gated):
    gen = torch.Generator().manual_seed(seq_len + batch)
    channels = 2
    taps = torch.randn(channels, filter_len, generator=gen, dtype=torch.float64) / filter_len ** 0.5
    bias = torch.randn(channels, generator=gen, dtype=torch.float64)
    filt = LongFilter(taps, bias)
    u = torch.randn(batch, channels, seq_len, generator=gen, dtype=torch.float64) * 37.0
    pre = torch.randn(batch, channels, seq_len, generator=gen, dtype=torch.float64) if gated else None
    post = torch.randn(batch, channels, seq_len, generator=gen, dtype=torch.float64) if gated else None
    plan = cuda.long_plan(seq_len, filter_len)
    assert plan is not None and plan[2] == plan[3] == 0
    y = _emulate(u, filt, pre, post, plan)
    want = _oracle(u, taps, bias, pre, post)
    assert torch.isfinite(y).all(), "an output was never written"
    assert ((y - want).norm() / want.norm()).item() < 1e-3  # fp16 spectrum words: ~3e-4


def test_long_path_overlap_save_chunk():
    # A streamed chunk behind its K - 1 carried inputs: only outputs t >= valid_from are written, and they are exact.
    gen = torch.Generator().manual_seed(5)
    k, past, chunk = 3000, 2999, 61_001
    taps = torch.randn(1, k, generator=gen, dtype=torch.float64) / k ** 0.5
    filt = LongFilter(taps, torch.zeros(1, dtype=torch.float64))
    u = torch.randn(1, 1, past + chunk, generator=gen, dtype=torch.float64)
    plan = cuda.long_plan(past + chunk, k, valid_from=past)
    log_n, _, start, first, _ = plan
    assert (start, first) == (0, past) and (1 << log_n) < past + chunk + k - 1  # circular: N >= L only
    y = _emulate(u, filt, None, None, plan)
    want = _oracle(u, taps, filt.bias)
    assert torch.isnan(y[..., :past]).all()  # never written
    assert ((y[..., past:] - want[..., past:]).norm() / want[..., past:].norm()).item() < 1e-3


@pytest.mark.parametrize("k, past, chunk, start", [
    (1_000_002, 1_000_008, 3_194_296, 0),  # large-1m's streamed chunk: o - (K - 1) = 7, L = N = 2^22
    (3000, 3008, 61_000, 8),               # 9 rounded down to 8
    (1001, 1013, 130_069, 13),             # L - N = 10: no multiple of 8 in [10, 13], the first input stays 13
])
def test_long_path_streamed_chunk_reads_from_an_aligned_start(k, past, chunk, start):
    """A circular row's first input goes down to a multiple of 8 where the transform still holds [a, L): rows that
    start 16-byte aligned then stay aligned in both outer passes (an offset of 7 put every row of large-1m's chrX
    chunks on the element-wise loads and stores); from the aligned start the outputs are still exact."""
    plan = cuda.long_plan(past + chunk, k, valid_from=past)
    log_n, _, a, first, _ = plan
    assert (a, first) == (start, past) and past + chunk - a <= 1 << log_n and a <= past - (k - 1)
    if k > 5000:
        return
    gen = torch.Generator().manual_seed(k)
    taps = torch.randn(1, k, generator=gen, dtype=torch.float64) / k ** 0.5
    filt = LongFilter(taps, torch.zeros(1, dtype=torch.float64))
    u = torch.randn(1, 1, past + chunk, generator=gen, dtype=torch.float64)
    y = _emulate(u, filt, None, None, plan)
    want = _oracle(u, taps, filt.bias)
    assert ((y[..., past:] - want[..., past:]).norm() / want[..., past:].norm()).item() < 1e-3


@pytest.mark.parametrize("keep", [0.5, 0.25])
def test_long_path_frequency_sparse(keep):
    """F < 1: the spectrum cut at the path's N (the reference's definition there), and the output scale bounds the cut
    filter, whose l1 norm exceeds its taps' (Gibbs ringing: a delta's cut is a Dirichlet kernel, l1 ~ log N)."""
    gen = torch.Generator().manual_seed(int(keep * 8))
    seq_len, channels = 40_000, 2
    taps = torch.randn(channels, seq_len, generator=gen, dtype=torch.float64) * 1e-7
    taps[:, 0] = 1.0  # a delta plus a trace of noise: the case whose cut spectrum rings most
    bias = 0.1 * torch.randn(channels, generator=gen, dtype=torch.float64)
    filt = LongFilter(taps, bias, freq_keep=keep)
    u = torch.randn(1, channels, seq_len, generator=gen, dtype=torch.float64)
    plan = cuda.long_plan(seq_len, seq_len)
    n = 1 << plan[0]
    peaks = []
    y = _emulate(u, filt, None, None, plan, peaks)
    k_f = torch.fft.rfft(taps, n=n)
    k_f[:, filt.kept_bins(n):] = 0
    want = torch.fft.irfft(torch.fft.rfft(u, n=n) * k_f, n=n)[..., :seq_len] + u * bias[:, None]
    assert ((y - want).norm() / want.norm()).item() < 1e-3
    exact = _oracle(u, taps, bias)
    assert ((want - exact).norm() / exact.norm()).item() > 0.1  # the cut changes the result
    assert max(peaks) <= 2.0 ** 9  # within the fp16 workspace's planned range
    *_, out_scale = cuda._long_spectrum(filt, plan[0], plan[1], seq_len, torch.device("cpu"))
    cut_l1 = torch.fft.irfft(k_f, n=n).abs().sum(-1) + bias.abs()
    assert (cut_l1 > 2 * (taps.abs().sum(-1) + bias.abs())).all()  # the ringing the taps' own bound misses
    assert (out_scale.double() >= cut_l1).all()  # so the worst-case input still fits the fp16 workspace


def test_in_scale_marks_non_finite_and_zero_rows():
    u = torch.randn(2, 3, 100, dtype=torch.float64) * 1000
    u[0, 1, 5] = float("nan")
    u[1, 2] = 0.0
    s = cuda._in_scale(u, None)  # (H, B)
    assert s[1, 0] == 0 and s[2, 1] == 256  # a zero row: any finite scale
    m = u[1, 0].abs().max() * s[0, 1]
    assert 256 <= m < 512


def test_long_plan_bounds():
    assert cuda.long_plan(5_000_000, 5_000_000) is None  # past 2^23: the three-pass kernel
    assert cuda.long_plan(1_000_000, 1_000_000, smem_per_block=48 * 1024) is None  # too little shared memory
    assert cuda.long_plan(1_000_000, 1_000_000) == (21, 8, 0, 0, 1_000_000)  # R = 256 outer points
    assert cuda.long_plan(4_194_304, 4_194_304)[:2] == (23, 9)  # N' capped at 2^14
    assert cuda.long_plan(40_000, 40_000)[:2] == (17, 8)  # R = 256 around the circular kernel's r = 2 (N' = 2^9)
    assert cuda.long_plan(20_000, 20_000)[:2] == (16, 4)  # N / 256 = 2^8 has no tensor-core kernel: N' = 2^12


@pytest.mark.parametrize("batch,seq_len,filter_len,valid_from,gated", [
    (2, 600_000, 12_000, 0, False),       # head, one middle block per batch row, tail
    (1, 270_000, 16_000, 0, True),        # head and tail only
    (1, 800_000, 12_001, 0, False),       # K - 1 = 12,000: lead rounded up to 12,000 stays a multiple of 8
    (1, 300_000, 16_001, 16_000, True),   # a streamed row: every block circular, outputs from valid_from
])
def test_long_blocks_cover_every_output_once(batch, seq_len, filter_len, valid_from, gated):
    """A row with K << L as overlap-save blocks through the long path (cuda._long_blocks), with the float64 kernel
    stand-in: every output written exactly once through the strided block views, equal to the linear convolution,
    at fewer transform points than the whole row's plan; an inf/NaN row is NaN throughout, as on the whole-row path."""
    split = cuda.long_blocks_plan(seq_len, filter_len, valid_from, smem_per_block=227 << 10)
    whole = cuda.long_plan(seq_len, filter_len, valid_from)
    assert split is not None and split[0] < whole[0] and split[2] == whole[3]  # the whole row's first output
    gen = torch.Generator().manual_seed(seq_len + filter_len)
    channels = 2
    taps = torch.randn(channels, filter_len, generator=gen, dtype=torch.float64) / filter_len ** 0.5
    filt = LongFilter(taps, torch.randn(channels, generator=gen, dtype=torch.float64))
    u = torch.randn(batch, channels, seq_len, generator=gen, dtype=torch.float64)
    u[0, 0, : seq_len // 7] *= 1e-3  # rows of uneven magnitude share one scale per row
    pre = torch.randn(batch, channels, seq_len, generator=gen, dtype=torch.float64) if gated else None
    post = torch.randn(batch, channels, seq_len, generator=gen, dtype=torch.float64) if gated else None
    writes = torch.zeros(batch, channels, seq_len, dtype=torch.int64)
    points = []

    def op(uv, spec, gain, out_scale, in_scale, twiddle, prev, postv, yv, log_n, log_r, a, o):
        assert uv.stride(-1) == 1 and yv.shape == uv.shape and twiddle.shape == (1 << log_r, 2)
        points.append(uv.shape[0] << log_n)
        _emulate_op(uv, spec, gain, out_scale, in_scale, twiddle, prev, postv, yv, log_n, log_r, a, o)
        for r in range(yv.shape[0]):  # count the writes through the view's addresses
            for c in range(channels):
                begin = yv.storage_offset() + r * yv.stride(0) + c * yv.stride(1) + o
                writes.view(-1)[torch.arange(begin, begin + yv.shape[-1] - o)] += 1

    y = cuda._long_blocks(u, filt, pre, post, *split, op=op)
    kept = writes[..., valid_from:]
    assert torch.equal(kept, torch.ones_like(kept)), "every output from valid_from on written exactly once"
    assert (writes[..., :valid_from] == 0).all()
    assert sum(points) < batch * (1 << whole[0])  # the point of the split
    want = _oracle(u, taps, filt.bias, pre, post)[..., valid_from:]
    got = y[..., valid_from:]
    assert ((got - want).norm() / want.norm()).item() < 1e-3  # fp16 spectrum words: ~3e-4
    for b in range(batch):  # and per row: no block of a row is off by its scale
        assert ((got[b] - want[b]).norm() / want[b].norm()).item() < 1e-3
    if batch > 1:  # a channel-strided view of the same input: the block views follow its strides
        wide = torch.stack([u, u], dim=2).flatten(1, 2)[:, ::2]
        assert wide.stride(1) == 2 * seq_len
        yw = cuda._long_blocks(wide, filt, pre, post, *split, op=_emulate_op)
        assert torch.equal(yw[..., valid_from:], y[..., valid_from:])
    if not gated:
        bad = u.clone()
        bad[0, 1, seq_len - 5] = float("nan")  # read by the last block only
        yb = cuda._long_blocks(bad, filt, None, None, *split, op=_emulate_op)
        assert torch.isnan(yb[0, 1, valid_from:]).all()
        assert torch.equal(yb[0, 0, valid_from:], y[0, 0, valid_from:])


def test_conv_bytes_bounds_every_block_launch(monkeypatch):
    """The memory plan's workspace for a blocked row (cuda.conv_bytes) covers each launch's workspace as
    bindings.cpp allocates it: (R/2 + 1) 2 rows N' fp16 words per channel, channels in steps of <= 2^29 words."""
    monkeypatch.setattr(cuda, "_smem_per_block", lambda device: 227 << 10)
    dev = torch.device("cuda")
    cases = ((2, 64, 2_097_152, 16_384), (1, 256, 2_097_152, 262_144), (8, 3, 600_001, 13_000),
             (1, 512, 2_600_000, 16_000))  # the last: 4 middle blocks in one launch, more rows than the batch
    for batch, channels, seq_len, k in cases:
        path, (log_n, lead, _) = cuda.path_plan(seq_len, k, dev)
        assert path == "long_blocks"
        n_fft, extra = cuda.conv_bytes(batch, channels, seq_len, k, dev)
        assert n_fft == 1 << log_n

        def allocated(rows, log_n_, channels=channels):
            log_r = log_n_ - cuda._long_inner_log(log_n_)
            words = ((1 << (log_r - 1)) + 1) * 2 * rows * (1 << (log_n_ - log_r))
            return min(channels, max(1, (1 << 29) // words)) * words * 2

        step = (1 << log_n) - lead
        full, rest = divmod(seq_len, step)
        launches = [allocated(batch, log_n), allocated(full - 1, log_n) if full > 1 else 0]
        if rest:
            launches.append(allocated(batch, cuda.long_plan(rest + lead, k, lead)[0]))
        assert extra >= max(launches)


@pytest.mark.parametrize("batch,seq_len,filter_len,gated", [
    (2, 70_000, 70_000, True),      # head on the long path at 2^17, the rest a whole row of the tensor-core kernel
    (1, 150_000, 150_000, False),   # head 2^18, the rest (37,855 samples) block-Toeplitz on the tensor-core kernel
    (1, 1_100_000, 1_000_002, True),  # a gene just past 1M with HyenaDNA-large-1m's taps: 2^21 + blocks
])
def test_long_split_gives_the_linear_convolution(monkeypatch, batch, seq_len, filter_len, gated):
    """A row split by filter taps (cuda._long_split): the head part (taps [0, P), the skip term) over the whole row plus
    the rest (taps [P, K) over inputs [0, L - P)) added to outputs [P, L), with gates on the right samples, equals the
    linear convolution; it transforms fewer points than the unsplit plan; an inf/NaN input makes its row NaN
    throughout. The long path runs through the float64 kernel stand-in; the tensor-core kernel's parts (tested
    against float64 on the GPU) through the float64 oracle."""
    smem = 227 << 10
    monkeypatch.setattr(cuda, "_smem_per_block", lambda device: smem)
    path, how = cuda.path_plan(seq_len, filter_len, torch.device("cuda"), pre=gated, post=gated)
    assert path == "long_split"
    unsplit = cuda._path_plan(seq_len, filter_len, smem, 0, gated, gated, split=False)
    gen = torch.Generator().manual_seed(seq_len)
    channels = 2 if seq_len < 1_000_000 else 1
    taps = torch.randn(channels, filter_len, generator=gen, dtype=torch.float64) / filter_len ** 0.5
    filt = LongFilter(taps, torch.randn(channels, generator=gen, dtype=torch.float64))
    u = torch.randn(batch, channels, seq_len, generator=gen, dtype=torch.float64)
    pre = torch.randn(batch, channels, seq_len, generator=gen, dtype=torch.float64) if gated else None
    post = torch.randn(batch, channels, seq_len, generator=gen, dtype=torch.float64) if gated else None
    points, windows = [], []
    run_path, long_op = cuda._run_path, cuda._long_op

    def fake_run(uv, f, prev, postv, path_, how_):
        windows.append((f.lo, f.hi) if isinstance(f, cuda._TapWindow) else None)
        if path_ in ("monarch", "blocks", "toeplitz"):
            points.append(cuda._plan_cost(uv.shape[-1], f.filter_len, path_, how_) / cuda._MONARCH_POINT_COST)
            return _oracle(uv, f.taps, f.bias, prev, postv)
        return run_path(uv, f, prev, postv, path_, how_)

    def fake_op(filt_, uv, *args, op=None):  # (filter, u, pre, post, y, in_scale, log_n, a, o, taps)
        points.append(uv.shape[0] << args[4])
        return long_op(filt_, uv, *args[:8], op=_emulate_op)

    monkeypatch.setattr(cuda, "_run_path", fake_run)
    monkeypatch.setattr(cuda, "_long_op", fake_op)
    y = cuda._run_path(u, filt, pre, post, path, how)
    want = _oracle(u, taps, filt.bias, pre, post)
    assert torch.isfinite(y).all()
    assert ((y - want).norm() / want.norm()).item() < 1e-3
    k = min(filter_len, seq_len)
    lo_hi = sorted(w for w in windows if w is not None and w[1] - w[0] < k)
    assert lo_hi[0][0] == 0 and max(hi for _, hi in lo_hi) == k  # the parts' taps tile [0, K)
    whole_points = batch * (1 << cuda.long_plan(seq_len, filter_len)[0])
    assert sum(points) < whole_points
    assert cuda._plan_cost(seq_len, filter_len, path, how) < cuda._plan_cost(seq_len, filter_len, *unsplit)
    if batch > 1:  # a channel-strided view of the same input: every part follows its strides
        wide = torch.stack([u, u], dim=2).flatten(1, 2)[:, ::2]
        assert wide.stride(1) == 2 * seq_len
        assert torch.equal(cuda._run_path(wide, filt, pre, post, path, how), y)
    if not gated:
        bad = u.clone()
        bad[0, 0, seq_len - 3] = float("nan")  # read by the head part only
        yb = cuda._run_path(bad, filt, None, None, path, how)
        assert torch.isnan(yb[0, 0]).all() and torch.equal(yb[0, 1], y[0, 1])


def test_long_split_plans_and_memory(monkeypatch):
    """Where the filter split applies (L + K - 1 just past a power of two, exact filters, linear rows) and what the
    memory plan counts for it: every part's spectrum points, and the larger of the head's workspace and the rest's
    workspace plus its output temporary."""
    smem = 227 << 10
    monkeypatch.setattr(cuda, "_smem_per_block", lambda device: smem)
    dev = torch.device("cuda")
    dmd = 2_220_382
    path, (split, head, rest) = cuda.path_plan(dmd, dmd, dev)
    assert path == "long_split" and split == (1 << 22) - dmd + 1
    assert head == ("long", (22, 8, 0, 0, split)) and rest[0] == "long" and rest[1][0] == 19
    assert cuda.path_plan(dmd, dmd, dev, exact=False)[0] == "long"  # a cut spectrum: one transform per row
    assert cuda.path_plan(dmd, 1_000_002, dev)[0] == "long"  # 2^22 already fits L + K - 1 tightly
    assert cuda.path_plan(dmd + 1_000_000, 1_000_002, dev, valid_from=1_000_001)[0] == "long"  # streamed: circular
    assert cuda.path_plan(1_200_000, 1_000_002, dev)[0] == "long_split"  # 2^21 + 2^19 instead of 2^22
    n_fft, extra = cuda.conv_bytes(1, 256, dmd, dmd, dev)
    assert n_fft == (1 << 22) + (1 << 19)
    _, head_work = cuda._plan_bytes(1, 256, dmd, *head)
    _, rest_work = cuda._plan_bytes(1, 256, dmd - split, *rest)
    assert extra == max(head_work, rest_work + 2 * 256 * (dmd - split))


def test_tap_window_keeps_its_own_spectra():
    """A part's taps share the whole filter's cache under keys of their own: the same plan run on the window and on
    the whole filter gives each its own convolution (a shared key would hand one the other's spectrum)."""
    gen = torch.Generator().manual_seed(11)
    seq_len, k = 40_000, 30_000
    taps = torch.randn(1, k, generator=gen, dtype=torch.float64) / k ** 0.5
    filt = LongFilter(taps, torch.ones(1, dtype=torch.float64))
    u = torch.randn(1, 1, seq_len, generator=gen, dtype=torch.float64)
    window = cuda._TapWindow(cuda._TapWindow(filt, 0, 20_000), 5_000, 20_000)  # a part of a part: taps [5000, 20000)
    assert (window.lo, window.hi, window.filter_len) == (5_000, 20_000, 15_000) and (window.bias == 0).all()
    plan = cuda.long_plan(seq_len, 15_000)
    got_window = _emulate(u, window, None, None, plan)
    got_whole = _emulate(u, filt, None, None, cuda.long_plan(seq_len, k))
    assert ((got_window - _oracle(u, taps[:, 5_000:20_000], window.bias)).norm() / got_window.norm()) < 1e-3
    want = _oracle(u, taps, filt.bias)
    assert ((got_whole - want).norm() / want.norm()) < 1e-3
    assert len(filt._cache) == 0  # _emulate builds spectra directly; the cache keys are checked below
    key = ("cuda_long", 17, 8, 15_000, "cpu")
    window.cached(key, lambda: "window")
    assert filt.cached(key, lambda: "whole") == "whole"


def test_no_plan_costs_far_more_than_the_simplest_one():
    """Every plan the dispatch picks, over lengths 1 .. 4M and filters from 1 tap to longer than the row, costs at most
    1.25x (in transform points weighted by each path's measured per-point cost) the simplest plan that fits: one
    transform of the whole row on the long path, or on the scalar fused kernel where it fits (N <= 2^15). Rows of
    <= 256 samples once took the long path's 2^16 points for their 2^3-2^9 (up to 14,552x in these units), unnoticed
    for two sessions, and filters of 6K-12K taps the tensor-core blocks at up to 1.7x."""
    fused_cost = 0.76  # the scalar fused kernel per point (7.4 ps at 2^15 against ~9.7 ps for the long path)
    worst = []
    for smem in (227 << 10, 163 << 10):  # H100/H200, A100
        for log_l in range(23):
            for seq_len in {max(1, (1 << log_l) - 1), 1 << log_l, (1 << log_l) + 1, int(1.3 * (1 << log_l)) + 1}:
                for k in {1, 64, 1026, 12_288, 16_386, max(1, seq_len // 2), seq_len, 2 * seq_len}:
                    path, how = cuda._path_plan(seq_len, k, smem)
                    log_n = cuda.fft_plan(seq_len, k)
                    if path == "3-pass":  # no device here: the fused kernel when N <= 2^15, else three passes
                        cost = (1 << log_n) * (fused_cost if log_n <= 15 else cuda._THREE_PASS_POINT_COST)
                    else:
                        cost = cuda._plan_cost(seq_len, k, path, how)
                    options = [(1 << log_n) * fused_cost] if log_n <= 15 else []
                    whole = cuda.long_plan(seq_len, k, smem_per_block=smem)
                    if whole is not None:
                        options.append(cuda._long_cost(whole[0]))
                    if options:
                        worst.append((cost / min(options), seq_len, k, smem, path))
    ratio, *case = max(worst)
    assert ratio <= 1.25, f"plan {case} costs {ratio:.1f}x the simplest"
