"""Named models: the registry, resolution through a fake offline Hugging Face cache, the bundled demo model."""

import json
import re

import pytest
from typer.testing import CliRunner

from genoconv import Embedder
from genoconv.cli.models import app
from genoconv.errors import GenoconvError, InputError
from genoconv.model import HyenaConfig, HyenaDNA
from genoconv.model.checkpoint import load_checkpoint, save_checkpoint, sha256_file
from genoconv.model.registry import (DEFAULT_MODEL, MODELS_DIR, download_model, get_entry, hf_cache_dir, list_models,
                               resolve_model)

TINY_REPO = "LongSafari/hyenadna-tiny-1k-seqlen-hf"
OFFICIAL = {"hyenadna-tiny-1k": 1026, "hyenadna-tiny-16k": 16386, "hyenadna-small-32k": 32770,
            "hyenadna-medium-160k": 160002, "hyenadna-medium-450k": 450002, "hyenadna-large-1m": 1000002}


def _fake_snapshot(cache, repo, commit, ref="main"):
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    save_checkpoint(HyenaDNA(HyenaConfig(d_model=16, n_layer=2, d_inner=32, max_seq_len=1026)).init_weights(1), snap)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """An offline HF cache under tmp_path holding tiny-1k at its pinned revision (a small random model)."""
    home = tmp_path / "hf"
    cache = home / "hub"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = _fake_snapshot(cache, TINY_REPO, get_entry("hyenadna-tiny-1k").revision)
    return cache, snap


def test_registry_lists_the_official_checkpoints():
    entries = {e.name: e for e in list_models()}
    assert list(entries)[0] == DEFAULT_MODEL == "genoconv-demo"
    for name, max_len in OFFICIAL.items():
        e = entries[name]
        assert re.fullmatch(r"LongSafari/hyenadna-[a-z0-9-]+-seqlen(-d128)?-hf", e.repo_id), e.repo_id
        assert e.max_seq_len == max_len and e.source == "huggingface" and e.size_bytes > 1e6
        assert re.fullmatch(r"[0-9a-f]{40}", e.revision) or (e.revision == "main" and "not pinned" in e.note)
    assert entries["hyenadna-large-1m"].revision == "0a629abf9c7f85b4ec9aa6a1aefa3adcf1907446"
    assert (entries["hyenadna-small-32k"].d_model, entries["hyenadna-small-32k"].n_layer) == (256, 4)
    assert get_entry("large-1m") is get_entry("LongSafari/hyenadna-large-1m-seqlen-hf") is entries["hyenadna-large-1m"]


def test_resolve_from_fake_offline_cache(fake_hub):
    cache, snap = fake_hub
    assert hf_cache_dir() == cache
    for name in ("hyenadna-tiny-1k", "tiny-1k", TINY_REPO):
        assert resolve_model(name) == snap
    hub = pytest.importorskip("huggingface_hub")  # the layout is the one huggingface_hub itself reads
    found = hub.try_to_load_from_cache(TINY_REPO, "config.json", cache_dir=str(cache),
                                       revision=get_entry("tiny-1k").revision)
    assert str(found) == str(snap / "config.json")
    emb = Embedder.from_pretrained(resolve_model("tiny-1k"), device="cpu")
    assert emb.embed("ACGTN" * 10).shape == (50, 16)


def test_unpinned_cache_falls_back_to_main(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snap = _fake_snapshot(tmp_path, TINY_REPO, "f" * 40)
    with pytest.warns(UserWarning, match="cached 'main' snapshot"):
        assert resolve_model("tiny-1k") == snap


def test_offline_and_absent_says_how_to_fetch(fake_hub):
    cache, _ = fake_hub
    with pytest.raises(InputError) as err:
        resolve_model("large-1m")
    msg = str(err.value)
    assert "\n" not in msg and "offline" in msg
    for part in ("genoconv models download hyenadna-large-1m",
                 "hf download LongSafari/hyenadna-large-1m-seqlen-hf config.json model.safetensors",
                 "--revision 0a629abf9c7f85b4ec9aa6a1aefa3adcf1907446",
                 "models--LongSafari--hyenadna-large-1m-seqlen-hf", str(cache)):
        assert part in msg
    with pytest.raises(InputError, match="HF_HUB_OFFLINE is set"):
        download_model("large-1m")
    with pytest.raises(InputError, match="HF_HUB_OFFLINE"):
        resolve_model("large-1m", download=True)  # offline: never reaches the network


def test_directories_and_unknown_names(tmp_path, fake_hub):
    _, snap = fake_hub
    assert resolve_model(str(snap)) == snap
    with pytest.raises(InputError, match="no such checkpoint directory"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(InputError, match="known model name.*genoconv-demo"):
        resolve_model("hyenadna-giant")
    with pytest.raises(InputError, match="unknown model"):
        download_model("hyenadna-giant")


def test_models_list_command(fake_hub):
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert set(OFFICIAL) | {DEFAULT_MODEL} <= set(rows)
    assert rows["hyenadna-tiny-1k"].rstrip(" │").endswith("yes")
    assert rows["hyenadna-large-1m"].rstrip(" │").endswith("no")


def test_bundled_demo_model_matches_registry():
    entry = get_entry(DEFAULT_MODEL)
    path = resolve_model()
    assert path == MODELS_DIR / "genoconv-demo"
    weights = path / "model.safetensors"
    assert sha256_file(weights) == entry.sha256
    assert weights.stat().st_size == entry.size_bytes < 8_000_000
    model, info = load_checkpoint(path)
    cfg = model.config
    assert (cfg.d_model, cfg.n_layer, cfg.d_inner, cfg.max_seq_len) == (entry.d_model, entry.n_layer, entry.d_inner,
                                                                        entry.max_seq_len)
    assert sum(p.numel() for p in model.parameters()) == entry.params
    training = json.loads((path / "training.json").read_text())
    assert training["heldout"]["region"] == "X:31137345-33357726"
    assert training["validation_bits_per_base"]["heldout"]["bits_per_base"] < 1.95
    assert "ecoli" in training["validation_bits_per_base"]
    assert (path / "README.md").is_file()


def test_from_pretrained_takes_what_model_takes(fake_hub, tmp_path):
    """Embedder.from_pretrained(name_or_path=None): no name, the demo's name, an official name, a directory."""
    import genoconv

    _, snap = fake_hub
    default = Embedder.from_pretrained(device="cpu")
    assert default.name == DEFAULT_MODEL and default.sha256 == get_entry(DEFAULT_MODEL).sha256
    by_name = Embedder.from_pretrained("genoconv-demo", device="cpu")
    seq = "ACGTTGCA" * 8
    assert by_name.sha256 == default.sha256 and (by_name.embed(seq) == default.embed(seq)).all()
    official = Embedder.from_pretrained("hyenadna-tiny-1k", device="cpu")
    assert official.name == "hyenadna-tiny-1k" and official.max_seq_len == 1026 and official.d_model == 16
    from_dir = Embedder.from_pretrained(snap, device="cpu")
    assert from_dir.sha256 == official.sha256 and (from_dir.embed(seq) == official.embed(seq)).all()
    assert genoconv.resolve_model is resolve_model and genoconv.resolve_model("tiny-1k") == snap  # exported
    with pytest.raises(InputError, match="offline.*genoconv models download hyenadna-large-1m"):
        Embedder.from_pretrained("hyenadna-large-1m")


def test_download_without_network_fails_fast_with_the_same_advice(tmp_path, monkeypatch):
    """No network (an endpoint nothing listens on): one short try, then the advice `--model NAME` gives."""
    import time

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    pytest.importorskip("huggingface_hub")
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["download", "hyenadna-tiny-1k"])
    assert time.monotonic() - t0 < 10 and result.exit_code == 1
    with pytest.raises(GenoconvError) as err:
        download_model("hyenadna-tiny-1k")
    message = str(err.value)
    assert "\n" not in message and "cannot reach http://127.0.0.1:9" in message
    with pytest.raises(InputError) as absent:
        resolve_model("hyenadna-tiny-1k")
    advice = str(absent.value).split("; ", 1)[1]
    assert message.endswith(advice) and f"`hf download {TINY_REPO} config.json model.safetensors --revision " in advice


# ---- issue 16, case 12: a refs/main that leads out of the cache is refused ----------------------------------------
@pytest.mark.parametrize("escape", ["path", "symlink"])
def test_a_ref_or_snapshot_leading_out_of_the_cache_is_refused(tmp_path, monkeypatch, escape):
    home = tmp_path / "hf"
    cache = home / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    elsewhere = tmp_path / "elsewhere"
    save_checkpoint(HyenaDNA(HyenaConfig(d_model=16, n_layer=2, d_inner=32, max_seq_len=1026)).init_weights(1),
                    elsewhere)
    repo_dir = cache / ("models--" + TINY_REPO.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    if escape == "path":  # the pinned snapshot is absent: 'main' is consulted, and points outside
        (repo_dir / "refs" / "main").write_text("../../../../elsewhere")
        match = "refs/main: holds '../../../../elsewhere', not a commit hash"
    else:  # a snapshot folder that is a link out of the cache
        (repo_dir / "snapshots").mkdir()
        (repo_dir / "snapshots" / get_entry("hyenadna-tiny-1k").revision).symlink_to(elsewhere)
        match = "leads out of the Hugging Face cache"
    with pytest.raises(InputError, match=match):
        resolve_model("hyenadna-tiny-1k")
