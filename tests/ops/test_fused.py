"""The fused block steps (genoconv/ops/fused.py) against their PyTorch references.

On the CPU the Triton kernels run in Triton's interpreter (TRITON_INTERPRET=1, in a child process so the setting
cannot leak into other tests) and the kernel library's in the emulator (tests/ops/test_kernels_emulated.py); on a GPU
both run compiled, in bf16, against float64.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genoconv.ops import fused

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, sys, torch
from genoconv.ops import fused
cases = json.loads(sys.argv[1])
out = []
with torch.inference_mode():
    for d, length, batch, with_past, seed in cases:
        g = torch.Generator().manual_seed(seed)
        p = torch.randn(batch, 3 * d, length, generator=g)
        w, b = torch.randn(3 * d, 1, 3, generator=g), torch.randn(3 * d, generator=g)
        past = torch.randn(batch, 3 * d, 2, generator=g) if with_past else None
        assert fused.fused_available(p)
        x0, gated = fused.short_conv_gate(p, w, b, past)
        r0, rg = fused.short_conv_gate_ref(p, w, b, past)
        ln = torch.nn.LayerNorm(d * 8)
        ln.weight.normal_(generator=g); ln.bias.normal_(generator=g)
        x = torch.randn(batch, length, d * 8, generator=g)
        y = torch.randn(batch, length, d * 8, generator=g)
        r1, r2 = x.clone(), x.clone()
        a = fused.add_layer_norm_cast(r1, y, ln, torch.float32)
        c = fused.add_layer_norm_cast_ref(r2, y, ln, torch.float32)
        n = fused.layer_norm_cast(x, ln, torch.float32)
        out.append([float((x0 - r0).abs().max()), float((gated - rg).abs().max()), float((a - c).abs().max()),
                    float((r1 - r2).abs().max()), float((n - fused.layer_norm_cast_ref(x, ln, torch.float32)).abs().max()),
                    float(rg.abs().max())])
print(json.dumps(out))
"""


@pytest.mark.skipif(fused._triton() is None, reason="Triton is not installed")
def test_triton_kernels_match_references_in_the_interpreter():
    cases = [(8, 1, 1, False, 1), (8, 37, 2, True, 2), (5, 1100, 1, False, 3), (5, 1025, 2, True, 4),
             (3, 2, 1, True, 5)]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cases)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for case, (e0, eg, eln_add, eres, eln, scale) in zip(cases, json.loads(proc.stdout)):
        assert e0 <= 1e-5 and eg <= 1e-5 * max(1.0, scale), case  # fp32 sums in another order only
        assert eln_add <= 1e-5 and eres == 0.0 and eln <= 1e-5, case


_MODEL_CHILD = r"""
import json, os, torch
from genoconv.model import ConvSettings, HyenaConfig, HyenaDNA
from genoconv.model.hyena import StreamState
cfg = HyenaConfig(d_model=16, n_layer=2, d_inner=32, max_seq_len=700)
model = HyenaDNA(cfg).init_weights(seed=3).eval()
ids = torch.randint(7, 12, (2, 600), generator=torch.Generator().manual_seed(0))
out = {}
with torch.inference_mode():
    fused = model.hidden_states(ids, [1, 3])
    one = model.hidden_states(ids[:1], [3])[3]
    conv = ConvSettings(filter_len=200)
    whole = model.hidden_states(ids[:1], [3], conv=conv)[3]
    state, parts = StreamState.empty(2), []
    for s in range(0, 600, 128):
        parts.append(model.hidden_states(ids[:1, s:s + 128], [3], state, conv)[3])
    os.environ["GENOCONV_FUSED"] = "0"
    ref = model.hidden_states(ids, [1, 3])
rel = lambda a, b: float((a - b).norm() / b.norm())
out["batch"] = max(rel(fused[k], ref[k]) for k in (1, 3))
out["single"] = rel(one, ref[3][:1])
out["stream"] = rel(torch.cat(parts, 1), whole)
print(json.dumps(out))
"""


@pytest.mark.skipif(fused._triton() is None, reason="Triton is not installed")
def test_model_on_the_fused_path_equals_the_reference_path():
    # The whole block through the kernels (in_proj bias folded into the short conv, addmm out_proj for one row,
    # in-place residual): equal to the reference path in fp32, and streaming stays exact on it.
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _MODEL_CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout)
    assert errors["batch"] < 1e-5 and errors["single"] < 1e-5 and errors["stream"] < 1e-5, errors


def test_references_are_the_unfused_arithmetic():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(2, 12, 50, generator=g)
    w, b = torch.randn(12, 1, 3, generator=g), torch.randn(12, generator=g)
    conv = torch.nn.Conv1d(12, 12, 3, padding=2, groups=12)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        want = conv(p)[..., :50]
    x0, gated = fused.short_conv_gate_ref(p, w, b)
    torch.testing.assert_close(x0, want[:, :4])
    torch.testing.assert_close(gated, want[:, 4:8] * want[:, 8:])
    assert not fused.fused_available(p)  # CPU tensors without the interpreter: always the reference


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["csrc", "triton"])
@pytest.mark.parametrize("length", [1, 777, 4096, 100_003])
def test_fused_kernels_on_the_gpu_in_bf16(length, impl, monkeypatch):
    # The kernel library's block steps (the default where it is built) and Triton's (its fallback), each against float64
    monkeypatch.setenv("GENOCONV_FUSED_IMPL", impl)
    if impl == "triton" and fused._triton() is None:
        pytest.skip("Triton is not installed")
    assert fused.fused_impl("cuda") == impl
    g = torch.Generator(device="cuda").manual_seed(length)
    d = 256
    with torch.inference_mode():
        p = torch.randn(2, 3 * d, length, device="cuda", generator=g)
        w, b = torch.randn(3 * d, 1, 3, device="cuda", generator=g), torch.randn(3 * d, device="cuda", generator=g)
        past = torch.randn(2, 3 * d, 2, device="cuda", generator=g)
        x0, gated = fused.short_conv_gate(p.bfloat16(), w.bfloat16(), b.bfloat16(), past.bfloat16())
        r0, rg = fused.short_conv_gate_ref(p.bfloat16().double(), w.bfloat16().double(), b.bfloat16().double(),
                                           past.bfloat16().double())
        for got, want in ((x0, r0), (gated, rg)):
            assert ((got.double() - want).norm() / want.norm()).item() < 4e-3
        # into views behind a carried history (a streamed chunk's [history | gated] buffer): the same values, written
        # in place, and the history in front untouched
        joined, beside = (torch.full((2, d, 5 + length), 7.0, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        o0, og = fused.short_conv_gate(p.bfloat16(), w.bfloat16(), b.bfloat16(), past.bfloat16(),
                                       out=(beside[..., 5:], joined[..., 5:]))
        assert og.data_ptr() == joined[..., 5:].data_ptr() and o0.data_ptr() == beside[..., 5:].data_ptr()
        assert torch.equal(o0, x0) and torch.equal(og, gated) and (joined[..., :5] == 7).all()
        ln = torch.nn.LayerNorm(d).cuda()
        residual = torch.randn(2, length, d, device="cuda", generator=g)
        y = torch.randn(2, length, d, device="cuda", generator=g).bfloat16()
        ref_res = residual.double() + y.double()
        want = torch.nn.functional.layer_norm(ref_res, (d,), ln.weight.double(), ln.bias.double(), ln.eps)
        got = fused.add_layer_norm_cast(residual, y, ln, torch.bfloat16)
        assert ((residual.double() - ref_res).norm() / ref_res.norm()).item() < 1e-6
        assert ((got.double() - want).norm() / want.norm()).item() < 4e-3
        x = torch.randn(3, 5, length % 300 + 1, device="cuda", generator=g)
        ln2 = torch.nn.LayerNorm(x.shape[-1]).cuda()
        got = fused.layer_norm_cast(x, ln2, torch.bfloat16)
        want = torch.nn.functional.layer_norm(x.double(), x.shape[-1:], eps=ln2.eps)
        assert ((got.double() - want).norm() / want.norm()).item() < 4e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gelu_epilogue_is_the_tanh_gelu():
    lin = torch.nn.Linear(256, 1024).cuda().bfloat16()
    x = torch.randn(3, 1000, 256, device="cuda").bfloat16()
    with torch.inference_mode():
        got = fused.gelu_linear(x, lin)
        want = torch.nn.functional.gelu(torch.nn.functional.linear(x.double(), lin.weight.double(),
                                                                    lin.bias.double()), approximate="tanh")
    assert ((got.double() - want).norm() / want.norm()).item() < 8e-3


def test_cpu_mlp_epilogues_match_float64(monkeypatch):
    # fp32 on the CPU: oneDNN GEMMs with the bias (and the tanh GELU) in the epilogue, against float64.
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(64, 256), torch.nn.Linear(256, 64)
    x = torch.randn(2, 1000, 64)
    with torch.inference_mode():
        h = fused.gelu_linear(x, fc1)
        y = fused.linear(h, fc2)
        want_h = torch.nn.functional.gelu(torch.nn.functional.linear(x.double(), fc1.weight.double(),
                                                                      fc1.bias.double()), approximate="tanh")
        want_y = torch.nn.functional.linear(h.double(), fc2.weight.double(), fc2.bias.double())
    assert h.shape == (2, 1000, 256) and y.shape == (2, 1000, 64)
    assert ((h.double() - want_h).norm() / want_h.norm()).item() < 1e-6
    assert ((y.double() - want_y).norm() / want_y.norm()).item() < 1e-6
    from genoconv.ops.fftconv import arithmetic

    assert arithmetic(torch.device("cpu"), torch.float32)["onednn_mlp"] == fused.onednn_enabled("cpu", torch.float32)
    assert not fused.onednn_enabled("cpu", torch.float64)  # the float64 oracle keeps torch's own GEMMs
    monkeypatch.setenv("GENOCONV_FUSED", "0")
    assert not fused.onednn_enabled("cpu", torch.float32)
    with torch.inference_mode():
        torch.testing.assert_close(fused.linear(h, fc2), fc2(h), rtol=0, atol=0)


@pytest.mark.parametrize("length", [1, 2, 5, 300])
@pytest.mark.parametrize("with_past", [False, True])
def test_short_conv_folds_a_missing_bias(length, with_past):
    # conv(p + b) with b folded into the constant term (and taken back where a tap reads padding or `past`, whose
    # values already carry it): equal to adding b to p first, at every length, with and without carried inputs.
    torch.manual_seed(length)
    c, width = 6, 3
    p = torch.randn(2, c, length, dtype=torch.float64)
    w = torch.randn(c, 1, width, dtype=torch.float64)
    b, in_b = torch.randn(c, dtype=torch.float64), torch.randn(c, dtype=torch.float64)
    past = torch.randn(2, c, width - 1, dtype=torch.float64) if with_past else None
    got = fused.causal_short_conv(p, w, b, past, in_bias=in_b)
    want = fused.causal_short_conv(p + in_b[:, None], w, b, past)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length", [1, 300])
def test_short_conv_gate_writes_into_given_views(length):
    # A streamed chunk's gated input goes straight behind its history (model.hyena): the reference path fills the
    # given views with exactly what it returns otherwise, and leaves the rest of the buffer alone.
    g = torch.Generator().manual_seed(length)
    d = 4
    p = torch.randn(2, 3 * d, length, generator=g)
    w, b = torch.randn(3 * d, 1, 3, generator=g), torch.randn(3 * d, generator=g)
    past = torch.randn(2, 3 * d, 2, generator=g)
    x0, gated = fused.short_conv_gate(p, w, b, past)
    joined, beside = torch.full((2, d, 3 + length), 7.0), torch.full((2, d, 3 + length), 7.0)
    o0, og = fused.short_conv_gate(p, w, b, past, out=(beside[..., 3:], joined[..., 3:]))
    assert og.data_ptr() == joined[..., 3:].data_ptr() and o0.data_ptr() == beside[..., 3:].data_ptr()
    assert torch.equal(o0, x0) and torch.equal(og, gated) and (joined[..., :3] == 7).all()
    with pytest.raises(ValueError, match="out must be two"):
        fused.short_conv_gate(p, w, b, past, out=(beside[..., 2:], joined[..., 3:]))


def test_short_conv_rows_all_go_to_the_library_kernel(monkeypatch):
    # With the library loaded ("csrc") every row takes its kernel, aligned or not (82-84% of the copy bandwidth at any
    # alignment), and outputs it allocates start 16-byte aligned; Triton's only with GENOCONV_FUSED_IMPL=triton
    # ("triton"), or for widths the library is not built for.
    calls = []
    monkeypatch.setattr(fused, "fused_impl", lambda device: impl)
    monkeypatch.setattr(fused, "csrc_short_conv_gate",
                        lambda p, w, b, past, ib, out: calls.append(("csrc", out)) or out)

    class Triton:
        @staticmethod
        def short_conv_gate(p, w, b, past, ib, out):
            calls.append(("triton", out))
            return out

    monkeypatch.setattr(fused, "_triton", lambda: Triton)
    w, b = torch.randn(24, 1, 3), torch.randn(24)
    aligned = torch.randn(2, 24, 64).bfloat16()
    odd = torch.randn(2, 24, 71).bfloat16()
    behind = torch.empty(2, 8, 5 + 71, dtype=torch.bfloat16)  # outputs behind an odd history of 5
    with torch.inference_mode():
        impl = "csrc"
        x0, gated = fused.short_conv_gate(aligned, w, b)
        assert calls[-1][0] == "csrc" and x0.shape == (2, 8, 64)
        assert all(t.data_ptr() % 16 == 0 and t.stride(1) % 8 == 0 for t in (x0, gated))
        x0, _ = fused.short_conv_gate(odd, w, b)  # input rows of 71: the outputs are padded, the input is not
        assert calls[-1][0] == "csrc" and x0.data_ptr() % 16 == 0 and x0.stride(1) == 72
        fused.short_conv_gate(aligned[..., :71 - 7].contiguous(), w, b, out=(behind[..., 5:69], behind[..., 5:69]))
        assert calls[-1][0] == "csrc" and calls[-1][1][0].data_ptr() == behind[..., 5:69].data_ptr()
        fused.short_conv_gate(odd, torch.randn(24, 1, 5), b)  # width 5: not built in the library
        assert calls[-1][0] == "triton"
        impl = "triton"
        fused.short_conv_gate(aligned, w, b)
        assert calls[-1][0] == "triton"


def test_add_layer_norm_takes_the_reference_where_no_kernel_takes_its_dtypes(monkeypatch):
    # The library's LayerNorm adds y in the output dtype only; y in another dtype went to Triton, which need not be
    # installed: then the reference runs (it raised on calling None before).
    monkeypatch.setattr(fused, "fused_impl", lambda device: "csrc")
    monkeypatch.setattr(fused, "_triton", lambda: None)
    monkeypatch.setattr(fused, "csrc_layer_norm", lambda *a: pytest.fail("the library's kernel takes y in dtype only"))
    g = torch.Generator().manual_seed(3)
    ln = torch.nn.LayerNorm(16)
    residual, y = torch.randn(2, 5, 16, generator=g), torch.randn(2, 5, 16, generator=g)
    summed = residual.clone()
    want = fused.add_layer_norm_cast_ref(summed, y, ln, torch.bfloat16)
    with torch.inference_mode():
        got = fused.add_layer_norm_cast(residual, y, ln, torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    assert torch.equal(residual, summed)  # residual += y in place, as the reference did to its copy


def test_float64_takes_the_references_wherever_a_fused_kernel_is_loaded(monkeypatch):
    # The model's exact mode (float64; `genoconv doctor --check`'s yardstick) reached the library's LayerNorm on a GPU,
    # which takes an fp32 residual only: the check ended in "x must be a contiguous float32 CUDA tensor". float64 now
    # runs the references (Triton's kernels would sum it in fp32), as under autograd.
    monkeypatch.setattr(fused, "fused_impl", lambda device: "csrc")
    monkeypatch.setattr(fused, "_triton", lambda: pytest.fail("no kernel takes float64"))
    monkeypatch.setattr(fused, "csrc_layer_norm", lambda *a: pytest.fail("the library's LayerNorm takes fp32 only"))
    monkeypatch.setattr(fused, "csrc_short_conv_gate", lambda *a: pytest.fail("float64 is the reference's"))
    g = torch.Generator().manual_seed(4)
    ln = torch.nn.LayerNorm(16).double()
    residual, y = torch.randn(2, 5, 16, generator=g).double(), torch.randn(2, 5, 16, generator=g).double()
    p, w, b = torch.randn(2, 24, 30, generator=g).double(), torch.randn(24, 1, 3).double(), torch.randn(24).double()
    with torch.inference_mode():
        assert torch.equal(fused.layer_norm_cast(residual, ln, torch.float64), ln(residual))
        want = fused.add_layer_norm_cast_ref(residual.clone(), y, ln, torch.float64)
        assert torch.equal(fused.add_layer_norm_cast(residual, y, ln, torch.float64), want)
        x0, gated = fused.short_conv_gate(p, w, b)
        r0, rg = fused.short_conv_gate_ref(p, w, b)
        assert x0.dtype == torch.float64 and torch.equal(x0, r0) and torch.equal(gated, rg)
        # fp32 still goes to the library's kernel (the rule is the dtype, not a blanket fallback)
        with pytest.raises(pytest.fail.Exception, match="fp32 only"):
            fused.layer_norm_cast(residual.float(), ln.float(), torch.bfloat16)
