"""ops.layout: row-padded activations for the CUDA path's GEMMs (the layouts are plain tensors, so the CPU checks
them; which cuBLAS kernel they get is measured by tools/kernels/gemm_layouts.py on a GPU)."""
import pytest
import torch

from genoconv.ops.layout import aligned_rows, carried_inputs, over_padding, padded_rows


@pytest.mark.parametrize("dtype,length", [(torch.bfloat16, 3_001), (torch.float32, 7), (torch.bfloat16, 16)])
def test_padded_rows_start_aligned_and_take_gemm_outputs(dtype, length):
    # Rows of an odd length start 16-byte aligned in a padded view, and a batched GEMM writes into that view as into
    # a contiguous tensor.
    gen = torch.Generator().manual_seed(length)
    u = torch.randn(2, length, 8, generator=gen).to(dtype)
    w = torch.randn(24, 8, generator=gen).to(dtype)
    out = padded_rows((2, 24, length), u)
    assert out.shape == (2, 24, length) and out.stride(-1) == 1 and aligned_rows(out)
    assert out.stride(1) * out.element_size() % 16 == 0 and out.stride(1) - length < 16 // out.element_size()
    assert aligned_rows(torch.empty(2, 24, length, dtype=dtype)) == (length * out.element_size() % 16 == 0)
    got = torch.bmm(w.expand(2, -1, -1), u.transpose(1, 2), out=out)
    assert got.data_ptr() == out.data_ptr()
    torch.testing.assert_close(got, torch.bmm(w.expand(2, -1, -1), u.transpose(1, 2)), rtol=0, atol=0)


@pytest.mark.parametrize("length", [3_001, 3_006])
def test_out_proj_over_the_padding_keeps_the_rows(length):
    # out_proj as one GEMM over the padded length (the fast kernel wants L % 8 == 0 too): the real rows are those of
    # the GEMM over v itself, whatever the padding holds (NaN here: it reaches only the dropped rows).
    gen = torch.Generator().manual_seed(length)
    v = padded_rows((1, 16, length), torch.empty(0))
    v.copy_(torch.randn(1, 16, length, generator=gen))
    wide = over_padding(v[0])
    assert wide is not None and wide.shape == (16, -(-length // 4) * 4) and wide.data_ptr() == v.data_ptr()
    wide[:, length:] = float("nan")
    w, b = torch.randn(8, 16, generator=gen), torch.randn(8, generator=gen)
    got = torch.addmm(b, wide.t(), w.t())[:length]
    torch.testing.assert_close(got, torch.addmm(b, v[0].t(), w.t()), rtol=1e-6, atol=1e-6)
    assert torch.isfinite(got).all()


def test_over_padding_only_where_the_storage_holds_it():
    x = torch.randn(4, 10)
    assert over_padding(x) is None  # contiguous rows: no padding to widen over
    assert over_padding(padded_rows((4, 8), x)) is None  # already a multiple of 16 bytes
    assert over_padding(torch.randn(4, 12)[:, 1:10]) is None  # misses the last row's padding: would read past it
    assert over_padding(torch.randn(4, 12)[:, :10]) is not None


@pytest.mark.parametrize("filter_len", [1, 2, 3, 9, 16_386, 1_048_577])
def test_a_streamed_chunk_behind_its_carried_inputs_starts_aligned(filter_len):
    # A stream carries K - 1 inputs rounded up to 8, so the chunk that fills an FFT size behind them is a multiple of
    # 8 too, and the model's [history | chunk] rows (padded) put the chunk's outputs on 16-byte boundaries: with
    # K - 1 = 1,000,001 carried as is (large-1m), every row of a chrX chunk was 2-byte aligned.
    def _vector_rows(t):  # every row starts 16-byte aligned: the short-conv kernel's and the GEMMs' fast paths
        return t.data_ptr() % 16 == 0 and t.stride(0) % 8 == 0 and t.stride(1) % 8 == 0

    past = carried_inputs(filter_len)
    assert filter_len - 1 <= past < filter_len + 7 and past % 8 == 0
    for chunk in ((1 << 12) - past % (1 << 12), (1 << (past + 8).bit_length()) - past):
        assert chunk % 8 == 0
        joined = padded_rows((2, 3, past + chunk), torch.empty(0, dtype=torch.bfloat16))
        assert _vector_rows(joined[..., past:])
    odd = padded_rows((2, 3, past + 3), torch.empty(0, dtype=torch.bfloat16))  # a record's last, odd chunk
    assert _vector_rows(odd[..., past:])
