"""Both official checkpoint layouts: key-for-key round trips, safety against pickled code, clear key errors."""

import json
import os
import sys
import types

import pytest
import torch
from safetensors.torch import load_file, save_file

from genoconv.errors import CheckpointError, UnsafeCheckpointError
from genoconv.model import HyenaConfig, HyenaDNA
from genoconv.model.checkpoint import load_checkpoint, save_checkpoint

CFG = HyenaConfig(d_model=16, n_layer=2, d_inner=64, max_seq_len=130)


@pytest.fixture()
def model():
    return HyenaDNA(CFG, lm_head=True).init_weights(seed=1).eval()


def _same_outputs(a, b):
    ids = torch.randint(7, 12, (1, 130), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return torch.equal(a(ids), b(ids))


def test_hf_round_trip_key_for_key(model, tmp_path):
    save_checkpoint(model, tmp_path / "a")
    first = load_file(str(tmp_path / "a" / "model.safetensors"))
    assert all(k.startswith("hyena.backbone.") or k == "lm_head.weight" for k in first)
    assert sum(".freq" in k for k in first) == CFG.n_layer  # the shared Sin frequency stored once per layer
    assert sum(k.startswith("hyena.backbone.layers.0.") for k in first) == 26  # as in the official -hf files
    loaded, info = load_checkpoint(tmp_path / "a")
    assert info.format == "hf" and info.has_lm_head and len(info.sha256) == 64
    save_checkpoint(loaded, tmp_path / "b")
    second = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == json.loads((tmp_path / "b" / "config.json").read_text())
    assert _same_outputs(model, loaded)


def test_hf_pytorch_model_bin(model, tmp_path):
    save_checkpoint(model, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    loaded, info = load_checkpoint(tmp_path)
    assert info.weights_file.name == "pytorch_model.bin"
    assert _same_outputs(model, loaded)


@pytest.mark.parametrize("checkpointed", [False, True])
def test_original_round_trip_key_for_key(model, tmp_path, checkpointed):
    save_checkpoint(model, tmp_path / "a", fmt="original", checkpointed_keys=checkpointed)
    first = torch.load(tmp_path / "a" / "weights.ckpt", weights_only=True)["state_dict"]
    assert all(k.startswith("model.") for k in first)
    assert any(".mixer.layer." in k for k in first) == checkpointed
    loaded, info = load_checkpoint(tmp_path / "a")
    assert info.format == "original" and info.checkpointed_keys == checkpointed
    save_checkpoint(loaded, tmp_path / "b", fmt="original", checkpointed_keys=info.checkpointed_keys)
    second = torch.load(tmp_path / "b" / "weights.ckpt", weights_only=True)["state_dict"]
    assert list(first) == list(second)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert _same_outputs(model, loaded)


def test_original_config_flags_do_not_matter(model, tmp_path):
    # hyena-dna issue #30: keys without .layer but the config says checkpoint_mixer=true. Both forms load.
    save_checkpoint(model, tmp_path, fmt="original", checkpointed_keys=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(checkpoint_mixer=True, checkpoint_mlp=True)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert _same_outputs(model, load_checkpoint(tmp_path)[0])


def _fake_module(name):
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    return mod


def test_lightning_checkpoint_with_config_objects_loads_without_omegaconf(model, tmp_path):
    """A Lightning pickle holds omegaconf objects; they become inert placeholders, tensors load."""
    pkg, sub = _fake_module("omegaconf"), _fake_module("omegaconf.dictconfig")

    class DictConfig:
        def __init__(self, content):
            self._content = content

        def __getstate__(self):
            return {"_content": self._content}

    DictConfig.__module__, DictConfig.__qualname__ = "omegaconf.dictconfig", "DictConfig"
    sub.DictConfig = DictConfig
    pkg.dictconfig = sub
    save_checkpoint(model, tmp_path, fmt="original", checkpointed_keys=True)
    blob = torch.load(tmp_path / "weights.ckpt", weights_only=True)
    blob.update(epoch=3, global_step=1000, hyper_parameters=DictConfig({"lr": 6e-4}),
                optimizer_states=[{"state": {}}])
    blob["state_dict"]["model.train_torchmetrics.perplexity.total"] = torch.tensor(1.0)
    torch.save(blob, tmp_path / "weights.ckpt")
    del sys.modules["omegaconf"], sys.modules["omegaconf.dictconfig"]
    with pytest.raises(Exception):
        torch.load(tmp_path / "weights.ckpt", weights_only=True)  # PyTorch's own safe mode refuses it
    loaded, _ = load_checkpoint(tmp_path)
    assert _same_outputs(model, loaded)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_pickled_callable_is_refused_and_never_run(model, tmp_path, payload):
    marker = tmp_path / "pwned"
    save_checkpoint(model, tmp_path / "ck", fmt="original")
    blob = torch.load(tmp_path / "ck" / "weights.ckpt", weights_only=True)
    blob["callbacks"] = _Evil(marker) if payload == "system" else _EvilEval()
    torch.save(blob, tmp_path / "ck" / "weights.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="refused to load.*(system|eval)"):
        load_checkpoint(tmp_path / "ck")
    assert not marker.exists()


def test_evil_pytorch_model_bin_refused(model, tmp_path):
    save_checkpoint(model, tmp_path)
    tensors = dict(load_file(str(tmp_path / "model.safetensors")))
    tensors["extra"] = _Evil(tmp_path / "pwned")
    (tmp_path / "model.safetensors").unlink()
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(tmp_path)
    assert not (tmp_path / "pwned").exists()


def _rewrite(tmp_path, edit):
    tensors = dict(load_file(str(tmp_path / "model.safetensors")))
    edit(tensors)
    save_file(tensors, str(tmp_path / "model.safetensors"))


def test_missing_unknown_and_misshaped_tensors_are_named(model, tmp_path):
    save_checkpoint(model, tmp_path)
    key = "hyena.backbone.layers.1.mlp.fc1.weight"
    _rewrite(tmp_path, lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=r"missing backbone\.layers\.1\.mlp\.fc1\.weight"):
        load_checkpoint(tmp_path)
    save_checkpoint(model, tmp_path)
    _rewrite(tmp_path, lambda t: t.update({"hyena.backbone.layers.0.mixer.mystery": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected backbone\.layers\.0\.mixer\.mystery"):
        load_checkpoint(tmp_path)
    save_checkpoint(model, tmp_path)
    _rewrite(tmp_path, lambda t: t.update({"hyena.backbone.ln_f.weight": torch.zeros(17)}))
    with pytest.raises(CheckpointError, match=r"mis-shaped backbone\.ln_f\.weight \(17,\) \(expected \(16,\)\)"):
        load_checkpoint(tmp_path)


def test_derived_buffers_may_be_absent(model, tmp_path):
    # hyena-dna issue #17: checkpoints without pos_emb buffers; they are a function of the config.
    save_checkpoint(model, tmp_path)
    _rewrite(tmp_path, lambda t: [t.pop(k) for k in list(t) if k.endswith(("pos_emb.z", "pos_emb.t"))])
    assert _same_outputs(model, load_checkpoint(tmp_path)[0])


def test_layout_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(CFG.to_hf_dict()))
    with pytest.raises(CheckpointError, match="model.safetensors or pytorch_model.bin"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path)


def test_hf_config_fields_map(tmp_path, model):
    save_checkpoint(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["max_seq_len"] == 130 and cfg["d_inner"] == 64 and cfg["short_filter_order"] == 3
    assert HyenaConfig.from_hf_dict(cfg) == CFG
    assert HyenaConfig.from_original_dict(CFG.to_original_dict()) == CFG
    assert load_checkpoint(tmp_path, shift=0.0)[0].config.shift == 0.0


# ---- issue 16, case 4: non-finite weights are refused at load, naming the tensor ------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(model, tmp_path, bad):
    save_checkpoint(model, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    key = "hyena.backbone.layers.1.mlp.fc1.weight"
    tensors[key][3, 5] = bad
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor backbone.layers.1.mlp.fc1.weight holds NaN"):
        load_checkpoint(tmp_path)


# ---- issue 16, case 11: config.json is validated before anything is built (exit 2 naming config.json and field) -
_HF_BAD = [  # (what is done to the -hf config.json, what the message must name)
    ({"d_model": -16}, "d_model"), ({"d_model": "16"}, "d_model"), ({"d_model": None}, "d_model"),
    ({"d_model": {"a": 1}}, "d_model"), ({"d_model": 32}, "d_model"),
    ({"pad_vocab_size_multiple": 0}, "pad_vocab_size_multiple"), ({"vocab_size": 0}, "vocab_size"),
    ({"n_layer": 10**9}, "n_layer"), ({"n_layer": 10**100}, "n_layer"), ({"n_layer": True}, "n_layer"),
    ({"n_layer": 2.5}, "n_layer"), ({"n_layer": 3}, "n_layer"),
    ({"num_inner_mlps": 10**9}, "num_inner_mlps"), ({"num_inner_mlps": 3}, "num_inner_mlps"),
    ({"emb_dim": 10**9 + 1}, "emb_dim"), ({"emb_dim": 4}, "emb_dim"), ({"emb_dim": 7}, "emb_dim"),
    ({"filter_order": 10**9}, "filter_order"), ({"filter_order": 32}, "filter_order"),
    ({"max_seq_len": 0}, "max_seq_len"), ({"max_seq_len": 10**12}, "max_seq_len"),
    ({"d_inner": -1}, "d_inner"), ({"d_inner": 65}, "d_inner"), ({"short_filter_order": 0}, "short_filter_order"),
    ({"hyena_order": 1}, "hyena_order"), ({"hyena_order": 3}, "hyena_order"),
    ({"activation_freq": float("nan")}, "activation_freq"), ({"modulation_shift": float("inf")}, "modulation_shift"),
    ({"layer_norm_epsilon": -1}, "layer_norm_epsilon"), ({"modulate": "yes"}, "modulate"),
]


def _checkpoint_with_config(tmp_path, text: bytes):
    save_checkpoint(HyenaDNA(CFG).init_weights(seed=2), tmp_path / "m")
    (tmp_path / "m" / "config.json").write_bytes(text)
    return tmp_path / "m"


def _refused(cli, tmp_path, model_dir, *named):
    (tmp_path / "in.fa").write_text(">r\nACGTACGT\n")
    code, _, err = cli("-q", "embed", tmp_path / "in.fa", "-o", tmp_path / "out.h5", "--model", model_dir,
                       "--device", "cpu")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "config.json" in lines[0] and all(n in lines[0] for n in named), err
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("change, field", _HF_BAD, ids=[f"{next(iter(c))}={next(iter(c.values()))!r}"[:40]
                                                        for c, _ in _HF_BAD])
def test_malformed_hf_config_exits_2_naming_the_field(tmp_path, cli, change, field):
    cfg = {**CFG.to_hf_dict(), **change}
    _refused(cli, tmp_path, _checkpoint_with_config(tmp_path, json.dumps(cfg).encode()), field)


@pytest.mark.parametrize("text, named", [
    (b"[1, 2]", "JSON list"), (b'"d_model"', "JSON str"), (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"\xff\xfe{}", "UTF-8"), (b'{"d_model": 16', "not valid JSON"), (b" " * (2 << 20), "bytes"),
], ids=["list", "string", "deep nesting", "not UTF-8", "truncated", "2 MiB"])
def test_config_that_is_not_a_json_object_exits_2(tmp_path, cli, text, named):
    _refused(cli, tmp_path, _checkpoint_with_config(tmp_path, text), named)


@pytest.mark.parametrize("layer, field", [({"l_max": "big"}, "layer.l_max"), ({"l_max": 130, "w": None, "order": 9},
                                                                                 "layer.order"), ([1], "layer")])
def test_malformed_original_config_exits_2_naming_the_field(tmp_path, cli, layer, field):
    save_checkpoint(HyenaDNA(CFG).init_weights(seed=2), tmp_path / "m", fmt="original")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["layer"] = {**cfg["layer"], **layer} if isinstance(layer, dict) else layer
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    _refused(cli, tmp_path, tmp_path / "m", field)
