"""Load and save HyenaDNA checkpoints in both official layouts, never executing pickled code.

Layouts (a checkpoint is a directory):
- ``-hf`` (``LongSafari/hyenadna-*-seqlen-hf``): ``config.json`` with HF field names, and ``model.safetensors`` or
  ``pytorch_model.bin`` with keys ``hyena.backbone.…``; the shared Sin frequency is stored once
  (``implicit_filter.1.freq``); ``lm_head.weight`` optional.
- original (``LongSafari/hyenadna-*-seqlen``): ``config.json`` with a nested ``layer`` block and a Lightning
  ``weights.ckpt`` whose ``state_dict`` keys are ``model.backbone.…``, with ``.mixer.layer.``/``.mlp.layer.`` when
  the model was trained with activation checkpointing (both forms are accepted whatever the config says).

Safety: ``.bin``/``.ckpt`` pickles are read with ``torch.load(weights_only=True)``; Lightning checkpoints whose pickle
also holds configuration objects (omegaconf, typing.Any, …) are read with a restricted unpickler that builds
tensors and plain containers, turns known configuration classes into inert placeholders, and refuses every other
global (any callable) with :class:`UnsafeCheckpointError` before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError, UnsafeCheckpointError
from .config import HF_NAMES, ORIGINAL_NAMES, HyenaConfig, check_fields
from .hyena import HyenaDNA

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
ORIGINAL_WEIGHTS = "weights.ckpt"
_FREQ_ALIAS = re.compile(r"(\.implicit_filter\.)(\d+)(\.freq)$")
# Buffers that are a pure function of the config: recomputed when a checkpoint lacks them (hyena-dna issue #17).
_DERIVED_BUFFERS = (".filter_fn.pos_emb.z", ".filter_fn.pos_emb.t", ".filter_fn.modulation.deltas")
# Task heads of fine-tuned checkpoints: not part of the embedding model, ignored on load.
_IGNORED_HEADS = re.compile(r"^(score\.weight|head\.|classifier\.)")
_LAYER_KEY = re.compile(r"^backbone\.layers\.(\d+)\.")
_FILTER_LINEAR = re.compile(r"^backbone\.layers\.0\.mixer\.filter_fn\.implicit_filter\.(\d+)\.weight$")
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class CheckpointInfo:
    """Where weights came from: for provenance and for saving back in the same style."""

    path: Path
    format: str  # "hf" | "original"
    weights_file: Path
    sha256: str
    checkpointed_keys: bool  # original layout with .mixer.layer./.mlp.layer. keys
    has_lm_head: bool


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---- restricted unpickling -----------------------------------------------------------------------------------
class _Inert(dict):
    """Stands in for a configuration object (omegaconf DictConfig, AttributeDict…): holds its state, runs nothing."""

    def __init__(self, *args, **kwargs):  # noqa: D401 - swallow constructor arguments
        super().__init__()
        self._args = args

    def __setstate__(self, state):
        self._state = state

    def append(self, item):  # list-like configuration objects are rebuilt with APPEND(S)
        self.setdefault("_items", []).append(item)

    def extend(self, items):
        self.setdefault("_items", []).extend(items)


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "int"), ("builtins", "float"), ("builtins", "str"),
    ("builtins", "bytes"), ("builtins", "bytearray"), ("builtins", "complex"), ("builtins", "bool"),
    ("builtins", "slice"), ("builtins", "range"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"), ("torch", "device"),
    ("torch.serialization", "_get_layout"), ("torch", "strided"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
}
_INERT_MODULES = ("omegaconf", "pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics")
_INERT_GLOBALS = {("typing", "Any"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("argparse", "Namespace")}


class _RestrictedUnpickler(pickle.Unpickler):
    source = "checkpoint"

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) in _INERT_GLOBALS or module.split(".")[0] in _INERT_MODULES:
            return _Inert
        raise UnsafeCheckpointError(
            f"{self.source}: refused to load: its pickle references {module}.{name}, which is neither a tensor nor "
            "a plain container; genoconv never runs code from a checkpoint"
        )


def _restricted_pickle_module(source: str) -> types.ModuleType:
    mod = types.ModuleType("genoconv_restricted_pickle")
    unpickler = type("Unpickler", (_RestrictedUnpickler,), {"source": source})
    mod.Unpickler = unpickler  # type: ignore[attr-defined]
    mod.load = lambda fh, **kw: unpickler(fh, **kw).load()  # type: ignore[attr-defined]
    mod.__name__ = "genoconv_restricted_pickle"
    return mod


def safe_torch_load(path: Path):
    """torch.load that never executes code: weights_only first, then the restricted unpickler."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # a Lightning pickle with configuration objects: retry with our own allowlist
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_restricted_pickle_module(str(path)))
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure is a malformed file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})") from None


# ---- key mapping --------------------------------------------------------------------------------------------
def _from_hf_keys(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in raw.items():
        out[key[len("hyena."):] if key.startswith("hyena.") else key] = value
    return out


def _from_original_keys(raw: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    out, checkpointed = {}, False
    for key, value in raw.items():
        if not key.startswith("model.") or "torchmetrics" in key:
            continue  # optimizer-side / metric state of the Lightning module, not weights
        new = key[len("model."):]
        if ".mixer.layer." in new or ".mlp.layer." in new:
            checkpointed = True
            new = new.replace(".mixer.layer.", ".mixer.").replace(".mlp.layer.", ".mlp.")
        out[new] = value
    return out, checkpointed


def _canonicalise(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Match a loaded state dict to the model's (``expected``: shapes only, e.g. on the meta device): fill shared
    entries, name every mismatch. Derived buffers the checkpoint lacks are left out (the built model has them)."""
    state = {k: v for k, v in state.items() if not _IGNORED_HEADS.match(k)}
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{where}: entries that are not tensors: {_short_list(not_tensors)}")
    # The Sin module is shared at implicit_filter.1/.3/.5: any stored alias serves all three.
    for key in expected:
        m = _FREQ_ALIAS.search(key)
        if m and key not in state:
            alias = next((_FREQ_ALIAS.sub(rf"\g<1>{i}\g<3>", key) for i in (1, 3, 5)
                          if _FREQ_ALIAS.sub(rf"\g<1>{i}\g<3>", key) in state), None)
            if alias is not None:
                state[key] = state[alias]
    derived = {k for k in expected if k not in state and k.endswith(_DERIVED_BUFFERS)}
    missing = [k for k in expected if k not in state and k not in derived]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
                 for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {_short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected {_short_list(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped {_short_list(misshaped)}")
    if problems:
        raise CheckpointError(f"{where}: tensors do not match the config: " + "; ".join(problems))
    state = {k: state[k] for k in expected if k not in derived}
    for key, value in state.items():  # a NaN/Inf weight would make every output NaN, with exit 0
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{where}: tensor {key} holds NaN or Inf values; refusing to load these weights")
    return state


def _short_list(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


# ---- public API ---------------------------------------------------------------------------------------------
def _read_config(directory: Path) -> dict:
    """config.json as a dict, or a CheckpointError naming it: too large, not UTF-8, not JSON, nested too deeply (a
    RecursionError in the parser), or not a JSON object."""
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{directory}: no config.json (expected a HyenaDNA checkpoint directory)")
    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{cfg_path}: {cfg_path.stat().st_size:,} bytes; a HyenaDNA config.json has a few "
                              "hundred (refusing to parse it)")
    try:
        cfg = json.loads(cfg_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{cfg_path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{cfg_path}: JSON nested too deeply") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object of fields, got a JSON {type(cfg).__name__}")
    if "layer" in cfg and cfg["layer"] is not None and not isinstance(cfg["layer"], dict):
        raise CheckpointError(f"{cfg_path}: field layer must be an object (the original layout's operator fields)")
    return cfg


def _safetensors_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header, without reading any tensor."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None


# The config fields that size the model's tensors. When the weights pin every one of them (the tensors are there
# and agree), the model is no larger than what the file holds and can be built before its shapes are compared;
# otherwise the shapes are compared on the meta device first (which costs ~0.9 s of torch imports per process).
_SIZE_FIELDS = frozenset({"d_model", "vocab_size", "n_layer", "d_inner", "hyena_order", "short_filter_order",
                          "filter_order", "emb_dim", "num_inner_mlps", "max_seq_len"})


def _check_against_weights(cfg: HyenaConfig, shapes: dict[str, tuple[int, ...]], cfg_path: Path, weights: Path,
                           names: dict[str, str]) -> frozenset[str]:
    """The fields the weights' shapes determine must agree with config.json (before anything is built). Returns
    the fields they determined."""
    def shape(key: str, ndim: int) -> tuple[int, ...] | None:
        value = shapes.get(key)
        return value if value is not None and len(value) == ndim else None

    pairs: list[tuple[str, object, object]] = []
    if emb := shape("backbone.embeddings.word_embeddings.weight", 2):
        pairs += [("d_model", cfg.d_model, emb[1]),
                  ("vocab_size (padded to a multiple of pad_vocab_size_multiple)", cfg.padded_vocab_size, emb[0])]
    if layers := {int(m.group(1)) for k in shapes if (m := _LAYER_KEY.match(k))}:
        pairs.append(("n_layer", cfg.n_layer, max(layers) + 1))
    first = "backbone.layers.0."
    if fc1 := shape(first + "mlp.fc1.weight", 2):
        pairs.append(("d_inner", cfg.d_inner, fc1[0]))
    if (in_proj := shape(first + "mixer.in_proj.weight", 2)) and in_proj[1]:
        pairs.append(("hyena_order", cfg.hyena_order, in_proj[0] // in_proj[1] - 1))
    if short := shape(first + "mixer.short_filter.weight", 3):
        pairs.append(("short_filter_order", cfg.short_filter_order, short[2]))
    if mlp := shape(first + "mixer.filter_fn.implicit_filter.0.weight", 2):
        pairs += [("filter_order", cfg.filter_order, mlp[0]), ("emb_dim", cfg.emb_dim, mlp[1])]
    if linears := [int(m.group(1)) for k in shapes if (m := _FILTER_LINEAR.match(k))]:
        pairs.append(("num_inner_mlps", cfg.num_inner_mlps, max(linears) // 2 - 1))
    if z := shape(first + "mixer.filter_fn.pos_emb.z", 3):
        pairs.append(("max_seq_len", cfg.max_seq_len, z[1]))
    for field, in_config, in_weights in pairs:
        if in_config != in_weights:
            raise CheckpointError(f"{cfg_path}: {names.get(field, field)} is {in_config} but the tensors in "
                                  f"{weights.name} are shaped for {in_weights}")
    return frozenset(field.split(" ")[0] for field, _, _ in pairs)


def load_checkpoint(path: str | Path, *, shift: float | None = None) -> tuple[HyenaDNA, CheckpointInfo]:
    """Build a HyenaDNA from a checkpoint directory (either layout), in eval mode on the CPU, fp32.

    ``shift`` overrides the exponential-modulation shift (0.05 = the official inference code; 0.0 = training code).
    """
    directory = Path(path)
    if directory.is_file():
        directory = directory.parent
    if not directory.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    raw_cfg = _read_config(directory)
    cfg_path = directory / "config.json"
    original = isinstance(raw_cfg.get("layer"), dict)
    names = ORIGINAL_NAMES if original else HF_NAMES
    if original:
        cfg = HyenaConfig.from_original_dict(raw_cfg, str(cfg_path))
        weights = directory / ORIGINAL_WEIGHTS
        if not weights.is_file():
            raise CheckpointError(f"{directory}: config.json is in the original layout but {ORIGINAL_WEIGHTS} is missing")
        blob = safe_torch_load(weights)
        state_raw = blob.get("state_dict", blob) if isinstance(blob, dict) else None
        if not isinstance(state_raw, dict):
            raise CheckpointError(f"{weights}: no state_dict inside")
        state, checkpointed = _from_original_keys(state_raw)
    else:
        cfg = HyenaConfig.from_hf_dict(raw_cfg, str(cfg_path))
        weights = next((directory / n for n in HF_WEIGHTS if (directory / n).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{directory}: no {' or '.join(HF_WEIGHTS)} beside config.json")
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            # the header's shapes first: a config that disagrees with them is refused before any tensor is read
            _check_against_weights(cfg, _from_hf_keys(_safetensors_shapes(weights)), cfg_path, weights, names)
            try:
                state_raw = load_file(str(weights))
            except Exception as exc:  # noqa: BLE001
                raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None
        else:
            state_raw = safe_torch_load(weights)
        state, checkpointed = _from_hf_keys(state_raw), False
    if shift is not None:
        check_fields({"shift": shift}, "--modulation-shift", {"shift": "the shift"})
        cfg = HyenaConfig(**{**cfg.__dict__, "shift": shift})
    pinned = _check_against_weights(cfg, {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)},
                                    cfg_path, weights, names)
    has_head = "lm_head.weight" in state
    if pinned >= _SIZE_FIELDS:  # no larger than the file's tensors: build, then compare every shape
        model = HyenaDNA(cfg, lm_head=has_head)
        state = _canonicalise(state, model.state_dict(), str(weights))
    else:
        with torch.device("meta"):  # every shape checked before a byte is allocated for the model
            expected = HyenaDNA(cfg, lm_head=has_head).state_dict()
        state = _canonicalise(state, expected, str(weights))
        model = HyenaDNA(cfg, lm_head=has_head)
    model.load_state_dict({**model.state_dict(), **state})
    model.eval()
    info = CheckpointInfo(directory, "original" if original else "hf", weights, sha256_file(weights),
                          checkpointed, has_head)
    return model, info


def save_checkpoint(model: HyenaDNA, directory: str | Path, *, fmt: str = "hf", checkpointed_keys: bool = False) -> Path:
    """Write ``model`` as a checkpoint directory in the ``-hf`` layout (safetensors) or the original layout."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().clone() if v.is_floating_point() else v.detach().clone()
             for k, v in model.state_dict().items()}
    if fmt == "hf":
        from safetensors.torch import save_file

        tensors = {}
        for key, value in state.items():
            m = _FREQ_ALIAS.search(key)
            if m and m.group(2) != "1":
                continue  # shared Sin frequency: stored once, as the -hf checkpoints do
            tensors[key if key.startswith("lm_head.") else "hyena." + key] = value
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(model.config.to_hf_dict(), indent=2, sort_keys=True) + "\n")
        return out / "model.safetensors"
    if fmt == "original":
        sd = {}
        for key, value in state.items():
            if checkpointed_keys:
                key = key.replace(".mixer.", ".mixer.layer.", 1).replace(".mlp.", ".mlp.layer.", 1)
            sd["model." + key] = value
        torch.save({"state_dict": sd}, out / ORIGINAL_WEIGHTS)
        cfg = model.config.to_original_dict()
        if checkpointed_keys:
            cfg.update(checkpoint_mixer=True, checkpoint_mlp=True)
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        return out / ORIGINAL_WEIGHTS
    raise ValueError(f"fmt must be 'hf' or 'original', got {fmt!r}")
