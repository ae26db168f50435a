"""HyenaDNA hyper-parameters, with readers for both official config.json layouts.

Field names follow the `-hf` checkpoints (``LongSafari/hyenadna-*-seqlen-hf``); the original (Lightning) layout
nests the operator's fields under ``"layer"`` with older names (``l_max``, ``local_order``, ``w``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..errors import CheckpointError


@dataclass(frozen=True)
class HyenaConfig:
    d_model: int = 128
    n_layer: int = 2
    d_inner: int | None = None  # MLP width; None -> 4 * d_model
    vocab_size: int = 12
    pad_vocab_size_multiple: int = 8
    max_seq_len: int = 1026  # l_max: the implicit filter's positional embedding is normalised to this length
    emb_dim: int = 5  # positional-embedding features: t, then cos/sin bands
    filter_order: int = 64  # width of the implicit filter MLP
    short_filter_order: int = 3  # width of the causal depthwise conv after in_proj
    hyena_order: int = 2
    num_inner_mlps: int = 2
    activation_freq: float = 10.0  # Sin(freq * x) initial frequency ("w")
    modulate: bool = True
    # ExponentialModulation's additive shift. The official inference code (standalone_hyenadna.py and the HF
    # remote code) uses 0.05, the training code 0.0; outputs match the released -hf models only with 0.05.
    shift: float = 0.05
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        if self.d_inner is None:
            object.__setattr__(self, "d_inner", 4 * self.d_model)
        if self.emb_dim < 3 or self.emb_dim % 2 == 0:
            raise CheckpointError(f"emb_dim must be odd and >= 3 (t + cos/sin bands), got {self.emb_dim}")
        if self.hyena_order < 2:
            raise CheckpointError(f"hyena_order must be >= 2, got {self.hyena_order}")

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return int(math.ceil(self.vocab_size / m) * m)

    # ---- readers / writers of the two official layouts -------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, cfg: dict) -> "HyenaConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: cfg[k] for k in known if k in cfg}
        if "modulation_shift" in cfg:  # our own extra field, written only when shift differs from 0.05
            kwargs["shift"] = cfg["modulation_shift"]
        _require(kwargs, ("d_model", "n_layer", "max_seq_len"), "config.json (-hf layout)")
        return cls(**kwargs)

    @classmethod
    def from_original_dict(cls, cfg: dict) -> "HyenaConfig":
        layer = cfg.get("layer") or {}
        kwargs = {
            "d_model": cfg.get("d_model"),
            "n_layer": cfg.get("n_layer"),
            "d_inner": cfg.get("d_inner"),
            "vocab_size": cfg.get("vocab_size", 12),
            "pad_vocab_size_multiple": cfg.get("pad_vocab_size_multiple", 8),
            "max_seq_len": layer.get("l_max"),
            "emb_dim": layer.get("emb_dim", 5),
            "filter_order": layer.get("filter_order", 64),
            "short_filter_order": layer.get("local_order", layer.get("short_filter_order", 3)),
            "hyena_order": layer.get("order", 2),
            "num_inner_mlps": layer.get("num_inner_mlps", 2),
            "activation_freq": layer.get("w", 10),
            "modulate": layer.get("modulate", True),
            "shift": layer.get("shift", 0.05),
            "layer_norm_epsilon": cfg.get("layer_norm_epsilon", 1e-5),
        }
        _require(kwargs, ("d_model", "n_layer", "max_seq_len"), "config.json (original layout: layer.l_max)")
        return cls(**{k: v for k, v in kwargs.items() if v is not None})

    def to_hf_dict(self) -> dict:
        out = {
            "activation_freq": self.activation_freq,
            "architectures": ["HyenaDNAForCausalLM"],
            "d_inner": self.d_inner,
            "d_model": self.d_model,
            "emb_dim": self.emb_dim,
            "embed_dropout": 0.1,
            "filter_order": self.filter_order,
            "hyena_dropout": 0.0,
            "hyena_filter_dropout": 0.0,
            "hyena_order": self.hyena_order,
            "initializer_range": 0.02,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "max_seq_len": self.max_seq_len,
            "model_type": "hyenadna",
            "n_layer": self.n_layer,
            "num_inner_mlps": self.num_inner_mlps,
            "pad_token_id": 4,
            "pad_vocab_size_multiple": self.pad_vocab_size_multiple,
            "short_filter_order": self.short_filter_order,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "train_freq": True,
            "use_bias": True,
            "vocab_size": self.vocab_size,
        }
        if not self.modulate:
            out["modulate"] = False
        if self.shift != 0.05:
            out["modulation_shift"] = self.shift
        return out

    def to_original_dict(self) -> dict:
        layer = {
            "_name_": "hyena",
            "emb_dim": self.emb_dim,
            "filter_order": self.filter_order,
            "local_order": self.short_filter_order,
            "l_max": self.max_seq_len,
            "modulate": self.modulate,
            "w": self.activation_freq,
            "lr": 6e-4,
            "wd": 0.0,
            "lr_pos_emb": 0.0,
        }
        if self.hyena_order != 2:
            layer["order"] = self.hyena_order
        if self.num_inner_mlps != 2:
            layer["num_inner_mlps"] = self.num_inner_mlps
        if self.shift != 0.05:
            layer["shift"] = self.shift
        return {
            "d_model": self.d_model,
            "n_layer": self.n_layer,
            "d_inner": self.d_inner,
            "vocab_size": self.vocab_size,
            "resid_dropout": 0.0,
            "embed_dropout": 0.1,
            "fused_mlp": False,
            "fused_dropout_add_ln": True,
            "residual_in_fp32": True,
            "pad_vocab_size_multiple": self.pad_vocab_size_multiple,
            "return_hidden_state": True,
            "layer": layer,
        }


def _require(kwargs: dict, names: tuple[str, ...], where: str) -> None:
    missing = [n for n in names if kwargs.get(n) is None]
    if missing:
        raise CheckpointError(f"{where} lacks required field(s): {', '.join(missing)}")
