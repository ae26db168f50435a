"""Named models: the bundled ``genoconv-demo`` and the official HyenaDNA checkpoints on the Hugging Face hub.

The list lives in ``genoconv/models/registry.json`` (shipped in the wheel, so ``--model NAME`` works after
``pip install``). A model argument resolves as follows (:func:`resolve_model`):

1. an existing directory -> used as is (a checkpoint directory in either official layout);
2. ``genoconv-demo`` (the default) -> the copy inside the installed package;
3. an official name (``hyenadna-large-1m``, short ``large-1m``, or the hub repo id) -> its snapshot in the
   Hugging Face cache, found without any network access. The cache is the one huggingface_hub uses, read from the
   environment at call time: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``.

Only :func:`download_model` (``genoconv models download NAME``) touches the network, through huggingface_hub, into
that same cache; it refuses when ``HF_HUB_OFFLINE`` is set. When a model is absent the error says exactly how to
fetch it on a connected machine and where to copy the cache folder.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import GenoconvError, InputError

DEFAULT_MODEL = "genoconv-demo"
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
REGISTRY_FILE = MODELS_DIR / "registry.json"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}
PROBE_SECONDS = 5.0  # how long `genoconv models download` waits for the hub to answer before giving up


@dataclass(frozen=True)
class ModelEntry:
    """One row of the registry (sizes are of ``model.safetensors``; ``approx`` when not measured exactly)."""

    name: str
    source: str  # "bundled" | "huggingface"
    max_seq_len: int
    d_model: int
    n_layer: int
    d_inner: int
    params: int
    size_bytes: int
    description: str
    path: str | None = None  # bundled: folder under genoconv/models/
    sha256: str | None = None  # of model.safetensors, where known
    repo_id: str | None = None
    revision: str | None = None  # a 40-hex commit (pinned) or a branch ("main")
    note: str = ""
    files: tuple[str, ...] = ("config.json", "model.safetensors")

    @property
    def short_name(self) -> str:
        return self.name.removeprefix("hyenadna-")


@lru_cache(maxsize=1)
def _load_registry() -> dict[str, ModelEntry]:
    raw = json.loads(REGISTRY_FILE.read_text())
    entries = {}
    for name, fields in raw["models"].items():
        fields = dict(fields)
        if "files" in fields:
            fields["files"] = tuple(fields["files"])
        entries[name] = ModelEntry(name=name, **fields)
    return entries


def list_models() -> list[ModelEntry]:
    """All named models, the bundled default first."""
    return list(_load_registry().values())


def get_entry(name: str) -> ModelEntry | None:
    """The registry entry for a name, short name (``large-1m``) or hub repo id; None when unknown."""
    reg = _load_registry()
    if name in reg:
        return reg[name]
    for entry in reg.values():
        if name in (entry.short_name, entry.repo_id):
            return entry
    return None


# ---- the Hugging Face cache ---------------------------------------------------------------------------------
def hf_cache_dir() -> Path:
    """The hub cache huggingface_hub would use, read from the environment now (not at import time)."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(env[var]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def repo_cache_folder(entry: ModelEntry, cache: Path | None = None) -> Path:
    """``<cache>/models--Owner--name``: the folder to copy between machines."""
    return (cache or hf_cache_dir()) / ("models--" + entry.repo_id.replace("/", "--"))


def _snapshot(repo_dir: Path, revision: str) -> Path | None:
    """The snapshot folder of ``revision`` (a commit, or a ref under refs/) when it holds a checkpoint. A ref that
    is not a commit hash, or a snapshot whose files lead out of the cache, is refused (InputError)."""
    commit = revision
    if not _COMMIT.match(revision):
        ref = repo_dir / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text(errors="replace").strip()
        if not _COMMIT.match(commit):
            raise InputError(f"{ref}: holds {commit[:60]!r}, not a commit hash; refusing to follow it (delete the "
                             "file, or download the model again)")
    snap = repo_dir / "snapshots" / commit
    files = [snap / f for f in ("config.json", "model.safetensors", "pytorch_model.bin")]
    cache = hf_cache_dir().resolve()
    outside = [f for f in [snap, *files] if f.exists() and not f.resolve().is_relative_to(cache)]
    if outside:
        raise InputError(f"{outside[0]} leads out of the Hugging Face cache {cache} (to {outside[0].resolve()}); "
                         "refusing it")
    has_weights = any(f.is_file() for f in files[1:])
    return snap if files[0].is_file() and has_weights else None


def cached_path(entry: ModelEntry) -> Path | None:
    """The cached snapshot of an official model (the pinned revision, else the one ``main`` points to)."""
    repo_dir = repo_cache_folder(entry)
    snap = _snapshot(repo_dir, entry.revision or "main")
    if snap is None and entry.revision != "main":
        snap = _snapshot(repo_dir, "main")
        if snap is not None:
            warnings.warn(f"{entry.name}: using the cached 'main' snapshot {snap.name[:7]}; the registry pins "
                          f"{entry.revision[:7]}", stacklevel=3)
    return snap


def _fetch_instructions(entry: ModelEntry) -> str:
    cache = hf_cache_dir()
    folder = repo_cache_folder(entry, cache)
    files = " ".join(entry.files)
    return (f"on a machine with network run `genoconv models download {entry.name}` (or `hf download "
            f"{entry.repo_id} {files} --revision {entry.revision}`), then copy the folder "
            f"{folder.name} from that machine's Hugging Face cache (~/.cache/huggingface/hub, or $HF_HOME/hub) "
            f"into {cache} here (or point HF_HOME or HF_HUB_CACHE at the copied cache)")


# ---- public API ---------------------------------------------------------------------------------------------
def bundled_path(entry: ModelEntry) -> Path:
    path = MODELS_DIR / entry.path
    if not (path / "config.json").is_file():
        raise GenoconvError(f"model {entry.name!r}: the bundled files are missing from this installation "
                            f"({path}); reinstall genoconv")
    return path


def resolve_model(name_or_dir: str | os.PathLike = DEFAULT_MODEL, *, download: bool = False) -> Path:
    """A checkpoint directory for a model argument: a directory, ``genoconv-demo`` or an official model name.

    Never touches the network unless ``download=True`` (and HF_HUB_OFFLINE is unset), in which case an official
    model missing from the cache is downloaded first. Raises :class:`InputError` with fetch instructions when the
    model is not available.
    """
    text = os.fspath(name_or_dir)
    shown = text if len(text) <= 120 else f"{text[:60]}... ({len(text):,} characters)"
    path = Path(text).expanduser()
    try:
        if path.is_dir():
            return path
    except OSError as exc:  # a name longer than the filesystem allows (ENAMETOOLONG), ...
        raise InputError(f"--model {shown}: not a usable path ({exc.strerror})") from None
    entry = get_entry(text)
    if entry is None:
        if os.sep in text or text.startswith((".", "~")) or path.suffix:
            raise InputError(f"--model {shown}: no such checkpoint directory")
        known = ", ".join(e.name for e in list_models())
        raise InputError(f"--model {shown}: neither a checkpoint directory nor a known model name ({known})")
    if entry.source == "bundled":
        return bundled_path(entry)
    snap = cached_path(entry)
    if snap is not None:
        return snap
    if download and not hf_offline():
        return download_model(entry.name)
    why = "offline (HF_HUB_OFFLINE is set) and it is" if hf_offline() else "it is"
    raise InputError(f"model {entry.name!r} ({entry.repo_id}): {why} not in the Hugging Face cache {hf_cache_dir()}; "
                     + _fetch_instructions(entry))


def download_model(name: str) -> Path:
    """Download an official model (config + safetensors at the pinned revision) into the Hugging Face cache."""
    entry = get_entry(name)
    if entry is None:
        raise InputError(f"unknown model {name!r}; `genoconv models list` shows the names")
    if entry.source == "bundled":
        return bundled_path(entry)
    if hf_offline():
        raise InputError(f"cannot download {entry.name!r}: HF_HUB_OFFLINE is set; " + _fetch_instructions(entry))
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InputError("downloading needs huggingface_hub: pip install 'genoconv[hub]'") from None
    # One short connection first: without network huggingface_hub spends ~30 s in retries before a bare error.
    unreachable = hub_unreachable()
    if unreachable:
        raise GenoconvError(f"cannot download {entry.name!r}: {unreachable}; " + _fetch_instructions(entry))
    try:
        path = snapshot_download(entry.repo_id, revision=entry.revision, cache_dir=str(hf_cache_dir()),
                                 allow_patterns=list(entry.files))
    except Exception as exc:  # noqa: BLE001 - network and hub errors of many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GenoconvError(f"download of {entry.repo_id}@{entry.revision} failed: {first}; "
                            + _fetch_instructions(entry)) from None
    return Path(path)


def hub_unreachable(timeout: float = PROBE_SECONDS) -> str | None:
    """Why the Hugging Face hub (``HF_ENDPOINT``, through the proxy the environment names) cannot be reached, from
    one TCP connection of at most ``timeout`` seconds, name lookup included; None when it answers."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urllib.parse.urlsplit(endpoint)
    proxy = urllib.request.getproxies().get(url.scheme)
    target = urllib.parse.urlsplit(proxy) if proxy and not urllib.request.proxy_bypass(url.hostname or "") else url
    host, port = target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or str(exc) or type(exc).__name__)

    probe = threading.Thread(target=connect, daemon=True)  # a thread: a name lookup ignores socket timeouts
    probe.start()
    probe.join(timeout)
    via = f" through the proxy {host}:{port}" if target is not url else ""
    if not outcome:
        return f"no answer from {endpoint}{via} within {timeout:.0f} s (no network?)"
    return f"cannot reach {endpoint}{via} ({outcome[0]}; no network?)" if outcome[0] else None
