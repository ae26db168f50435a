"""genoconv.runner: what a resume checks (issue 16): the inputs by content, every option that changes a number,
the model, the arithmetic; and what it lets through (the same file by another path)."""

from __future__ import annotations

import dataclasses
import inspect
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from genoconv import Embedder, open_embeddings
from genoconv.engine import Engine
from genoconv.io import open_records
from genoconv.model import HyenaConfig
from genoconv.options import OPTION_SETS


def _fasta(path: Path, n: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(f">r{i:02d}\n{''.join(rng.choice(list('ACGT'), size=int(rng.integers(300, 700))))}\n")
    return path


def _embed(*extra):
    return ["-q", "embed", *extra, "--device", "cpu", "--commit-interval", "0", "--tokens-per-batch", "1400"]


def _datasets(path: Path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _partial(cli, stop_after_batches, out, model, *args):
    """An interrupted run of ``args`` into ``out``: exit 3 with some of the 24 records committed."""
    stop_after_batches(3)
    code, _, err = cli(*_embed(*args, "-o", out, "--model", model))
    assert code == 3, err
    assert 0 < len(open_embeddings(out)) < 24


# ---- case 1: an input changed between the interruption and the resume ------------------------------------------
@pytest.mark.filterwarnings("ignore:.*unfinished")
def test_resume_refuses_a_changed_input_and_accepts_the_same_file_by_another_path(
        tmp_path, small_model_dir, cli, stop_after_batches, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fasta = _fasta(tmp_path / "in.fa")
    code, _, err = cli(*_embed(fasta, "-o", tmp_path / "ref.h5", "--model", small_model_dir))
    assert code == 0, err
    _partial(cli, stop_after_batches, "out.h5", small_model_dir, "in.fa")
    original = fasta.read_bytes()
    edited = bytearray(original)
    at = original.index(b"\n", original.index(b">r20")) + 5
    edited[at:at + 1] = b"A" if edited[at:at + 1] != b"A" else b"C"  # the same size, one base differs
    fasta.write_bytes(bytes(edited))
    code, _, err = cli(*_embed("in.fa", "-o", "out.h5", "--model", small_model_dir))
    assert code == 2 and "in.fa is not the file the unfinished run out.h5 started from" in err, err
    assert "same size, different content" in err and len(err.strip().splitlines()) == 1
    fasta.write_bytes(original[:-40] + b"\n")
    code, _, err = cli(*_embed("in.fa", "-o", "out.h5", "--model", small_model_dir))
    assert code == 2 and "bytes then" in err, err
    # the original content, named by another relative path and with a new modification time: resumes
    (tmp_path / "copy").mkdir()
    shutil.copyfile(tmp_path / "ref.h5", tmp_path / "copy" / "unused")
    fasta.unlink()
    (tmp_path / "copy" / "in.fa").write_bytes(original)
    code, _, err = cli(*_embed("copy/../copy/in.fa", "-o", "out.h5", "--model", small_model_dir))
    assert code == 0, err
    a, b = _datasets(tmp_path / "out.h5"), _datasets(tmp_path / "ref.h5")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.filterwarnings("ignore:.*unfinished")
def test_resume_refuses_a_changed_regions_file(tmp_path, small_model_dir, cli, stop_after_batches):
    ref = _fasta(tmp_path / "genome.fa", n=3, seed=4)
    bed = tmp_path / "genes.bed"
    bed.write_text("".join(f"r0{i % 3}\t{2 * i}\t{2 * i + 250}\tg{i}\n" for i in range(24)))
    _partial(cli, stop_after_batches, tmp_path / "out.h5", small_model_dir, "--reference", ref, "--regions", bed)
    bed.write_text(bed.read_text().replace("\t252\tg1\n", "\t253\tg1\n"))
    code, _, err = cli(*_embed("-o", tmp_path / "out.h5", "--model", small_model_dir, "--reference", ref,
                               "--regions", bed))
    assert code == 2 and "genes.bed is not the file the unfinished run" in err, err


# ---- case 2: every setting that changes a number is in the run config -----------------------------------------
@pytest.mark.filterwarnings("ignore:.*unfinished")
def test_resume_refuses_another_modulation_shift(tmp_path, small_model_dir, cli, stop_after_batches):
    fasta = _fasta(tmp_path / "in.fa")
    _partial(cli, stop_after_batches, tmp_path / "out.h5", small_model_dir, fasta)
    code, _, err = cli(*_embed(fasta, "-o", tmp_path / "out.h5", "--model", small_model_dir,
                               "--modulation-shift", "0.0"))
    assert code == 2 and "modulation_shift: 0.05 vs 0.0" in err, err
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert '"modulation_shift":0.05' in f.attrs["run_config"]


# How each `genoconv embed` parameter that is not an option field reaches the run config.
CLI_TO_RUN_CONFIG = {"inputs": "inputs", "model": "model_sha256", "device": "convolution", "dtype": "compute_dtype",
                     "strict_tokenizer": "tokenizer", "modulation_shift": "modulation_shift", "layer": "layers",
                     "pool": "pools", "shard": "shard"}


@pytest.fixture(scope="module")
def run_config_of(small_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rc")
    fasta = _fasta(folder / "a.fa", n=4)
    genome = _fasta(folder / "g.fa", n=2, seed=3)
    (folder / "r.bed").write_text("r00\t0\t100\tx\n")
    emb = Embedder.from_pretrained(small_model_dir, device="cpu")

    def run_config(embedder=emb, inputs=(fasta,), shard=None, **options):
        from genoconv.runner import build_run_config

        embed, read, store = (cls(**{k: v for k, v in options.items() if k in cls.__dataclass_fields__})
                              for cls in OPTION_SETS)
        source = open_records(list(inputs), **read.as_kwargs())
        source.lengths()
        return build_run_config(embedder, Engine(embedder, embed), read, store, shard, source.identities())

    run_config.folder = folder
    return run_config


def test_every_option_is_in_the_run_config_or_listed_as_changing_no_number(run_config_of):
    """A new field of genoconv.options or a new `genoconv embed` parameter fails here until it is either recorded
    in the run config or listed in runner.NOT_IN_RUN_CONFIG with the reason it changes no number."""
    from genoconv.cli.embed import embed
    from genoconv.runner import NOT_IN_RUN_CONFIG

    rc = run_config_of()
    assert all(isinstance(why, str) and len(why) > 10 for why in NOT_IN_RUN_CONFIG.values())
    fields = {f.name for cls in OPTION_SETS for f in dataclasses.fields(cls)}
    for name in fields:
        assert (name in rc) != (name in NOT_IN_RUN_CONFIG), f"option {name}: record it or say why it changes nothing"
    for name in inspect.signature(embed).parameters:
        key = name if name in fields else CLI_TO_RUN_CONFIG.get(name, name)
        assert key in rc or key in NOT_IN_RUN_CONFIG, f"`genoconv embed` parameter {name!r} is not accounted for"


def test_changing_any_recorded_option_changes_the_run_config(run_config_of, small_model_dir):
    from genoconv.runner import NOT_IN_RUN_CONFIG

    folder = run_config_of.folder
    base = run_config_of()
    changed = {"layers": (0,), "per_nucleotide": False, "pools": ("max",), "window": 7, "rc_average": True,
               "filter_len": 100, "chunk_size": 5000, "freq_keep": 0.5, "tokens_per_batch": 3000,
               "feature": "exon", "strand_aware": False, "include_secondary": True, "include_supplementary": True,
               "dedupe_ids": True, "store_dtype": "float32", "compression": "gzip"}
    recorded = {f.name for cls in OPTION_SETS for f in dataclasses.fields(cls)} - set(NOT_IN_RUN_CONFIG)
    assert recorded - {"reference", "regions"} == set(changed), "give a changed value for every recorded option"
    for name, value in changed.items():
        assert run_config_of(**{name: value}) != base, name
    with_regions = run_config_of(inputs=(), reference=folder / "g.fa", regions=folder / "r.bed")
    other = folder / "g2.fa"
    _fasta(other, n=2, seed=5)
    assert run_config_of(inputs=(), reference=other, regions=folder / "r.bed") != with_regions
    (folder / "r2.bed").write_text("r00\t0\t101\tx\n")
    assert run_config_of(inputs=(), reference=folder / "g.fa", regions=folder / "r2.bed") != with_regions
    assert run_config_of(shard=(1, 2)) != base
    for kwargs in ({"dtype": "bfloat16"}, {"tokenizer": "strict"}, {"shift": 0.0}):
        assert run_config_of(Embedder.from_pretrained(small_model_dir, device="cpu", **kwargs)) != base, kwargs


def test_regions_that_select_a_bams_reads_are_recorded(run_config_of, shared_data, tmp_path):
    # `embed reads.bam --regions sel.bed`: the BED decides which reads are records. It was not recorded, so a
    # resume (or a merge) with another BED went on with exit 0 and mixed two selections in one file.
    bam = shared_data / "celegans_range.bam"
    (tmp_path / "a.bed").write_text("CHROMOSOME_I\t1000\t3500\n")
    (tmp_path / "b.bed").write_text("CHROMOSOME_I\t5000\t6234\n")
    a = run_config_of(inputs=(bam,), regions=tmp_path / "a.bed")
    assert a["regions"] is not None and a != run_config_of(inputs=(bam,))
    assert a != run_config_of(inputs=(bam,), regions=tmp_path / "b.bed")
    (tmp_path / "b.bed").write_text("CHROMOSOME_I\t1000\t3500\n")  # the same regions in another file: the same
    assert a == run_config_of(inputs=(bam,), regions=tmp_path / "b.bed")


def test_every_model_setting_is_recorded():
    base = HyenaConfig().to_hf_dict()
    for field in dataclasses.fields(HyenaConfig):
        value = getattr(HyenaConfig(), field.name)
        other = (not value if isinstance(value, bool) else value * 2 + 1 if isinstance(value, int)
                 else value * 2 if isinstance(value, float) else 3 * 128 + 1)
        assert HyenaConfig(**{field.name: other}).to_hf_dict() != base, field.name


def test_the_arithmetic_is_recorded(run_config_of, monkeypatch):
    base = run_config_of()
    import torch

    from genoconv.ops.fused import onednn_enabled

    assert base["convolution"] == {"device_type": "cpu", "fft_sizes": "smooth", "backend": "reference",
                                   "fused_block": False, "onednn_mlp": onednn_enabled("cpu", torch.float32)}
    monkeypatch.setenv("GENOCONV_FFT_SIZES", "pow2")
    assert run_config_of()["convolution"]["fft_sizes"] == "pow2"
    monkeypatch.setenv("GENOCONV_FUSED", "0")  # the plain CPU GEMMs round differently: recorded
    assert run_config_of()["convolution"]["onednn_mlp"] is False


def test_embed_to_file_with_default_options(run_config_of, small_model_dir, tmp_path):
    from genoconv.runner import embed_to_file

    emb = Embedder.from_pretrained(small_model_dir, device="cpu")
    embed_to_file(emb, [run_config_of.folder / "a.fa"], tmp_path / "out.h5")
    with open_embeddings(tmp_path / "out.h5") as f:
        assert f.complete and len(f) == 4


def test_the_cuda_arithmetic_is_recorded_without_a_gpu(monkeypatch):
    """The CUDA branch of ops.arithmetic, with the device facts faked: kernels vs reference, path, shared memory."""
    import torch

    from genoconv.ops import arithmetic, cuda, fused

    class FakeKernels:
        @staticmethod
        def max_fused_points(index):
            return 8192

    monkeypatch.setattr(cuda, "_device_props", lambda index: (9, 232448))  # compute capability 9.x
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda, "_load", lambda: (FakeKernels, "faked"))
    monkeypatch.setattr(cuda, "_smem_per_block", lambda device: 232448)
    monkeypatch.setattr(fused, "_triton", lambda: object())  # Triton importable: the library's kernels still run
    gpu = torch.device("cuda", 0)
    assert arithmetic(gpu, torch.bfloat16) == {"device_type": "cuda", "fft_sizes": "pow2", "backend": "cuda",
                                               "fused_block": "csrc", "onednn_mlp": False, "kernel_path": "auto",
                                               "smem_per_block": 232448, "max_fused_points": 8192}
    assert arithmetic(gpu, torch.float32)["backend"] == "reference"  # the kernels take bf16/fp16 only
    monkeypatch.setattr(cuda, "_smem_per_block", lambda device: 167936)  # an A100: other sizes on the scalar kernels
    assert arithmetic(gpu, torch.bfloat16)["smem_per_block"] == 167936
    monkeypatch.setenv("GENOCONV_FFTCONV_PATH", "scalar")
    assert arithmetic(gpu, torch.float16)["kernel_path"] == "scalar"
    monkeypatch.setenv("GENOCONV_CONV_BACKEND", "reference")
    assert arithmetic(gpu, torch.float16)["backend"] == "reference"
    monkeypatch.setattr(cuda, "_load", lambda: (None, "no nvcc"))
    monkeypatch.delenv("GENOCONV_CONV_BACKEND")
    assert arithmetic(gpu, torch.float16)["backend"] == "reference"
    # The fused block: the library's kernels where it loads, else Triton's; each recorded by name (they round apart)
    assert arithmetic(gpu, torch.float16)["fused_block"] == "triton"
    monkeypatch.setattr(cuda, "_load", lambda: (FakeKernels, "faked"))
    assert arithmetic(gpu, torch.float16)["fused_block"] == "csrc"
    monkeypatch.setenv("GENOCONV_FUSED_IMPL", "csrc")
    assert arithmetic(gpu, torch.float16)["fused_block"] == "csrc"
    monkeypatch.setenv("GENOCONV_FUSED_IMPL", "triton")
    assert arithmetic(gpu, torch.bfloat16)["fused_block"] == "triton"
    monkeypatch.setenv("GENOCONV_FUSED", "0")
    assert arithmetic(gpu, torch.bfloat16)["fused_block"] is False
