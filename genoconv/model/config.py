"""HyenaDNA hyper-parameters, with readers for both official config.json layouts.

Field names follow the `-hf` checkpoints (``LongSafari/hyenadna-*-seqlen-hf``); the original (Lightning) layout
nests the operator's fields under ``"layer"`` with older names (``l_max``, ``local_order``, ``w``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import CheckpointError

# What each field may hold, checked before anything is built: (kind, lowest, highest). The bounds are far beyond every
# released HyenaDNA (d_model <= 256, n_layer <= 8, max_seq_len 1,000,002, emb_dim 5, filter_order 64) and keep a
# hostile config.json from making the loader allocate gigabytes; the shapes it implies are also checked against the
# weights before the model is built (genoconv.model.checkpoint).
FIELDS = {
    "d_model": ("int", 1, 16_384),
    "n_layer": ("int", 1, 256),
    "d_inner": ("int", 1, 262_144),
    "vocab_size": ("int", 12, 65_536),  # the tokenizer's ids go up to 11
    "pad_vocab_size_multiple": ("int", 1, 65_536),
    "max_seq_len": ("int", 2, 1 << 24),
    "emb_dim": ("int", 3, 1_023),
    "filter_order": ("int", 1, 16_384),
    "short_filter_order": ("int", 1, 1_024),
    "hyena_order": ("int", 2, 16),
    "num_inner_mlps": ("int", 0, 64),
    "activation_freq": ("float", -1e6, 1e6),
    "modulate": ("bool", None, None),
    "shift": ("float", -1e6, 1e6),
    "layer_norm_epsilon": ("float", 1e-30, 1.0),
}
# Field names as the original (Lightning) layout's config.json spells them.
ORIGINAL_NAMES = {"max_seq_len": "layer.l_max", "emb_dim": "layer.emb_dim", "filter_order": "layer.filter_order",
                  "short_filter_order": "layer.local_order", "hyena_order": "layer.order",
                  "num_inner_mlps": "layer.num_inner_mlps", "activation_freq": "layer.w",
                  "modulate": "layer.modulate", "shift": "layer.shift"}
HF_NAMES = {"shift": "modulation_shift"}


def check_fields(values: Mapping[str, object], where: str, names: Mapping[str, str]) -> None:
    """Raise CheckpointError naming ``where`` and the field (as ``names`` spells it) for the first value of the wrong
    type or out of range."""
    for name, value in values.items():
        kind, low, high = FIELDS[name]
        label = f"{where}: {names.get(name, name)}"
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        if name == "d_inner" and value is None:
            continue
        if kind == "bool":
            if not isinstance(value, bool):
                raise CheckpointError(f"{label} must be true or false, got {shown}")
            continue
        number = isinstance(value, int) if kind == "int" else isinstance(value, (int, float))
        if isinstance(value, bool) or not number or not math.isfinite(value) or not low <= value <= high:
            what = "an integer" if kind == "int" else "a finite number"
            raise CheckpointError(f"{label} must be {what} in [{low:,}, {high:,}], got {shown}")
    if "emb_dim" in values and values["emb_dim"] % 2 == 0:
        raise CheckpointError(f"{where}: {names.get('emb_dim', 'emb_dim')} must be odd (t + cos/sin bands), "
                              f"got {values['emb_dim']}")


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
        check_fields({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "HyenaConfig", {})
        if self.d_inner is None:
            object.__setattr__(self, "d_inner", 4 * self.d_model)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return int(math.ceil(self.vocab_size / m) * m)

    # ---- readers / writers of the two official layouts -------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, cfg: dict, where: str = "config.json") -> "HyenaConfig":
        """Read an ``-hf`` config.json's fields; a missing, mistyped or out-of-range one is a CheckpointError naming
        ``where`` and the field."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: cfg[k] for k in known if k in cfg}
        if "modulation_shift" in cfg:  # our own extra field, written only when shift differs from 0.05
            kwargs["shift"] = cfg["modulation_shift"]
        _require(kwargs, ("d_model", "n_layer", "max_seq_len"), f"{where} (-hf layout)")
        check_fields(kwargs, where, HF_NAMES if "modulation_shift" in cfg else {})
        return cls(**kwargs)

    @classmethod
    def from_original_dict(cls, cfg: dict, where: str = "config.json") -> "HyenaConfig":
        """Read an original-layout config.json (operator fields under ``layer``), checked like ``from_hf_dict``."""
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
        _require(kwargs, ("d_model", "n_layer", "max_seq_len"), f"{where} (original layout: layer.l_max)")
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        check_fields(kwargs, where, ORIGINAL_NAMES)
        return cls(**kwargs)

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
