"""The engine: batching, exact/partial/streamed plans, pooling, windows, RC averaging — against Embedder.embed."""

import numpy as np
import pytest
import torch

from genoconv import Embedder
from genoconv.engine import Engine, Plan
from genoconv.options import EmbedOptions
from genoconv.errors import InputError
from genoconv.io import Record, reverse_complement
from genoconv.model import ConvSettings


@pytest.fixture(scope="module")
def emb(small_model_dir):
    return Embedder.from_pretrained(small_model_dir, device="cpu")


def _random_seq(n, seed):
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list("ACGT"), size=n))


def test_batched_records_equal_one_at_a_time(emb):
    # Right padding cannot change a causal model's outputs: batched rows equal each record embedded alone.
    seqs = [(f"r{i}", _random_seq(n, i)) for i, n in enumerate([500, 520, 540, 480, 2000, 33, 35])]
    out = dict(emb.embed_many(seqs, layers=[-1, 1], pools=["mean", "max", "last"], window=64))
    assert list(out) == ["r5", "r6", "r3", "r0", "r1", "r2", "r4"]  # processing order: sorted by length
    for rid, seq in seqs:
        rows = out[rid]["per_nucleotide"][3]
        np.testing.assert_allclose(rows, emb.embed(seq), atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(out[rid]["per_nucleotide"][1], emb.embed(seq, layer=1), atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(out[rid]["pooled"][("mean", 3)], rows.mean(0, dtype=np.float64), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out[rid]["pooled"][("max", 3)], rows.max(0))
        np.testing.assert_allclose(out[rid]["pooled"][("last", 3)], rows[-1])
        win = out[rid]["windowed"][3]
        assert win.shape == (-(-len(seq) // 64), 16)
        np.testing.assert_allclose(win[0], rows[:64].mean(0), atol=1e-6)
        np.testing.assert_allclose(win[-1], rows[(len(seq) - 1) // 64 * 64:].mean(0), atol=1e-6)


@pytest.mark.parametrize("rc_average", [False, True])
def test_pooled_only_batches_equal_the_per_record_accumulators(emb, rc_average):
    # Without per-nucleotide rows or windows a batch is pooled at once (batch_pools: the padding masked, one host
    # copy); the per-record accumulators (taken when rows are stored) give the same vectors for the same batch.
    seqs = [(f"r{i}", _random_seq(n, 40 + i)) for i, n in enumerate([51, 60, 48, 57, 51, 33, 64, 50])]
    pools = ["mean", "max", "last"]
    fast = dict(emb.embed_many(seqs, layers=[-1, 1], pools=pools, per_nucleotide=False, rc_average=rc_average))
    slow = dict(emb.embed_many(seqs, layers=[-1, 1], pools=pools, rc_average=rc_average))
    assert list(fast) == list(slow) and not any(v["per_nucleotide"] for v in fast.values())
    for rid, _ in seqs:
        for key, want in slow[rid]["pooled"].items():
            got = fast[rid]["pooled"][key]
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_array_equal(got, want, err_msg=f"{rid} {key}")
        rows = slow[rid]["per_nucleotide"][3]
        np.testing.assert_allclose(fast[rid]["pooled"][("mean", 3)], rows.mean(0, dtype=np.float64), rtol=1e-6)
        np.testing.assert_array_equal(fast[rid]["pooled"][("last", 3)], rows[-1])


def test_batches_sort_short_records_by_length_within_a_block(emb):
    engine = Engine(emb, EmbedOptions(tokens_per_batch=2000))
    recs = [Record.from_sequence(f"r{i}", "A" * n) for i, n in enumerate([300, 100, 105, 310, 110, 100, 1500])]
    # r6 (1,500 > half a budget) runs alone and flushes the block before it; the rest is sorted and batched
    assert [[r.id for r in b] for b in engine._batches(recs, set())] == [
        ["r1", "r5", "r2", "r4"], ["r0", "r3"], ["r6"]]


@pytest.mark.parametrize("chunk", [1000, 777, 4098, 5000])
def test_streamed_record_equals_one_pass(emb, chunk):
    seq = _random_seq(9000, 5)
    one = dict(emb.embed_many([("x", seq)], filter_len=4098, layers=[1, -1], pools=["mean", "max", "last"]))["x"]
    streamed = dict(emb.embed_many([("x", seq)], filter_len=4098, chunk_size=chunk, layers=[1, -1],
                                   pools=["mean", "max", "last"]))["x"]
    assert one["mode"] == "partial:K=4098"
    assert streamed["mode"] == (f"partial:K=4098;streamed:C={chunk}" if chunk < 9000 else "partial:K=4098")
    for layer in (1, 3):
        a, b = one["per_nucleotide"][layer], streamed["per_nucleotide"][layer]
        assert np.linalg.norm(a - b) / np.linalg.norm(a) <= 1e-6
    for key in one["pooled"]:
        np.testing.assert_allclose(one["pooled"][key], streamed["pooled"][key], rtol=1e-5, atol=1e-6)


def test_frequency_sparse_records_are_not_labelled_exact(emb):
    # --freq-keep approximates every record, short ones too: /modes must say so (it read "exact" before).
    seqs = [("short", _random_seq(700, 11)), ("long", _random_seq(6000, 12))]
    exact = dict(emb.embed_many(seqs))
    cut = dict(emb.embed_many(seqs, freq_keep=0.25))
    assert [cut[r]["mode"] for r, _ in seqs] == ["freq-sparse:F=0.25", "partial:K=4098;freq-sparse:F=0.25"]
    assert exact["short"]["mode"] == "exact"
    a, b = exact["short"]["per_nucleotide"][3], cut["short"]["per_nucleotide"][3]
    assert np.linalg.norm(a - b) / np.linalg.norm(a) > 1e-5  # a real difference (fp32 rounding: ~1e-7)


def test_record_longer_than_context_uses_partial_convolution_by_default(emb):
    seq = _random_seq(6000, 9)
    out = dict(emb.embed_many([("long", seq)]))["long"]
    assert out["mode"] == "partial:K=4098"
    # The first max_seq_len bases see the full filter: identical to the exact embedding of that prefix.
    np.testing.assert_allclose(out["per_nucleotide"][3][:4098], emb.embed(seq[:4098]), atol=2e-5, rtol=1e-4)


def test_rc_average_flips_the_reverse_pass_back(emb):
    seq = _random_seq(700, 3)
    out = dict(emb.embed_many([("s", seq)], rc_average=True))["s"]["per_nucleotide"][3]
    want = (emb.embed(seq) + emb.embed(reverse_complement(seq))[::-1]) / 2
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=1e-4)
    streamed = dict(emb.embed_many([("s", seq)], rc_average=True, chunk_size=128))["s"]["per_nucleotide"][3]
    np.testing.assert_allclose(streamed, want, atol=2e-5, rtol=1e-4)


def test_memory_budget_turns_on_streaming(emb):
    engine = Engine(emb, EmbedOptions(max_memory=64 << 20))
    plan = engine.plan(3_000_000)
    assert plan.filter_len == 4098 and plan.chunk_size is not None and plan.chunk_size < 3_000_000
    assert engine.plan(100) == Plan()


def test_a_record_past_the_activation_budget_runs_in_one_pass_when_the_whole_budget_holds_it(emb):
    # Half the budget is held back for the layers' filter caches; a record whose one pass fits the whole budget runs in
    # one pass with the caches emptied first, instead of streaming (whose chunks each transform the whole history).
    n = emb.max_seq_len  # 4,098: the longest exact record, longer than the smallest chunk (4,096)
    seq = _random_seq(n, 5)
    pooled = dict(per_nucleotide=False, pools=("mean",))
    need = Engine(emb, EmbedOptions(**pooled)).planner.forward_bytes(1, n, 0, n)
    opts = dict(pooled, max_memory=int(1.5 * need))
    plan = Engine(emb, EmbedOptions(**opts)).plan(n)
    assert plan.chunk_size is None and plan.clear_caches and plan.mode == "exact"
    filt_fn = emb.model.backbone.layers[0].mixer.filter_fn
    with torch.inference_mode():
        filt_fn.long_filter(17)  # a filter an earlier record left in the cache
    (_, out), = emb.embed_many([("x", seq)], **opts)
    assert out["mode"] == "exact" and all(key[0] != 17 for key in filt_fn._cache)
    (_, ref), = emb.embed_many([("x", seq)], **pooled)
    np.testing.assert_allclose(out["pooled"][("mean", 3)], ref["pooled"][("mean", 3)], rtol=1e-5, atol=1e-6)
    # A budget the one pass does not fit even without the caches: streamed, as before.
    small = Engine(emb, EmbedOptions(**pooled, max_memory=int(0.6 * need))).plan(n)
    assert small.chunk_size is not None and not small.clear_caches


def test_plans_are_computed_once_per_length(emb, monkeypatch):
    # A BAM of reads asks for the same few lengths 10,000s of times: the planner answers each length from its cache.
    from genoconv.engine import plan as plan_mod

    engine = Engine(emb, EmbedOptions(max_memory=64 << 20))
    first = engine.plan(3_000_000)
    calls = []
    monkeypatch.setattr(plan_mod.Planner, "forward_bytes", lambda *a: calls.append(a) or 0)
    assert engine.plan(3_000_000) is first and not calls  # the memory model is not walked again
    assert engine.plan(100) == Plan() and calls  # a new length is planned afresh
    monkeypatch.setattr(plan_mod, "_PLAN_CACHE_SIZE", 2)
    engine.plan(200)
    assert len(engine.planner._plans) <= 2  # bounded


def test_cpu_streams_partial_convolutions_in_bounded_chunks(emb):
    # Large temporaries are page-faulted afresh on every CPU chunk: whatever the budget, a record with a short filter
    # next to it streams in chunks of at most CPU_MAX_CHUNK (E. coli with the demo: 114 s -> 64 s, 12.8 -> 2.5 GB).
    from genoconv.engine.plan import CPU_MAX_CHUNK

    engine = Engine(emb, EmbedOptions(max_memory=64 << 30))
    plan = engine.plan(4_639_675)
    assert plan.filter_len == 4098 and plan.chunk_size == CPU_MAX_CHUNK
    assert engine.plan(CPU_MAX_CHUNK).chunk_size is None  # short enough for one pass
    assert Engine(emb, EmbedOptions(chunk_size=1 << 20)).plan(4_639_675).chunk_size == 1 << 20  # asked for
    assert Engine(emb, EmbedOptions(max_memory=64 << 20)).plan(3_000_000).chunk_size < CPU_MAX_CHUNK  # budget first


def test_bad_options_are_input_errors(emb):
    with pytest.raises(InputError, match="--pool"):
        EmbedOptions(pools=("median",))
    with pytest.raises(InputError, match="nothing to store"):
        EmbedOptions(per_nucleotide=False, pools=())
    with pytest.raises(InputError, match="exceeds the model's max_seq_len"):
        Engine(emb, EmbedOptions(filter_len=10_000))
    with pytest.raises(InputError, match="--layer"):
        Engine(emb, EmbedOptions(layers=(7,)))


def test_rc_average_in_a_batch_of_different_lengths(emb):
    # Records of different lengths share a padded batch; each one's reverse pass must see no leading padding.
    seqs = [(f"r{i}", _random_seq(n, 40 + i)) for i, n in enumerate([600, 640, 620])]
    out = dict(emb.embed_many(seqs, rc_average=True))
    for rid, seq in seqs:
        want = (emb.embed(seq) + emb.embed(reverse_complement(seq))[::-1]) / 2
        np.testing.assert_allclose(out[rid]["per_nucleotide"][3], want, atol=2e-5, rtol=1e-4)


def test_out_of_memory_falls_back_to_smaller_batches_then_chunks(emb, monkeypatch):
    """Documented fallback: halve the batch, then evaluate the record in chunks — same results, no traceback."""
    real = type(emb.model).hidden_states
    calls = []

    def limited(self, ids, layers=(-1,), stream=None, conv=ConvSettings()):
        calls.append(tuple(ids.shape))
        if ids.numel() > 1200:  # pretend the device holds at most 1,200 tokens at once
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, ids, layers, stream, conv)

    seqs = [(f"r{i}", _random_seq(n, 60 + i)) for i, n in enumerate([500, 520, 510, 3000])]
    want = {rid: emb.embed(seq) for rid, seq in seqs}
    monkeypatch.setattr(type(emb.model), "hidden_states", limited)
    out = dict(emb.embed_many(seqs, tokens_per_batch=4000))
    assert (3, 520) in calls and any(s[0] == 1 and s[1] <= 1200 for s in calls)  # a halved batch was tried
    assert out["r3"]["mode"] == "exact;streamed:C=1024"  # chunked evaluation is exact, and recorded as such
    for rid, rows in want.items():
        np.testing.assert_allclose(out[rid]["per_nucleotide"][3], rows, atol=3e-5, rtol=1e-4)


def test_out_of_memory_even_in_small_chunks_is_a_clear_error(emb, monkeypatch):
    from genoconv.errors import ResourceError

    def never(self, ids, layers=(-1,), stream=None, conv=ConvSettings()):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(type(emb.model), "hidden_states", never)
    with pytest.raises(ResourceError, match=r"record 'big' \(3,000 bases\): out of GPU memory"):
        list(emb.embed_many([("big", _random_seq(3000, 1))]))


def test_batches_bound_padding_by_the_smallest_member(emb):
    engine = Engine(emb, EmbedOptions(tokens_per_batch=100_000))
    recs = [Record.from_sequence(f"r{i}", "A" * n) for i, n in enumerate([110, 98, 111, 100, 124])]
    batches = [[r.length for r in b] for b in engine._batches(recs, set())]
    assert batches == [[98, 100, 110], [111, 124]]  # 111 / 98 > 1.125: a new batch starts there
    assert all(max(b) <= 1.125 * min(b) for b in batches)


def test_streamed_record_reports_each_chunk(emb):
    # A long record is not one silent step: on_progress follows every chunk with the bases done inside it.
    seen = []
    engine = Engine(emb, EmbedOptions(chunk_size=1000), on_progress=lambda p: seen.append(
        (p.records, p.bases, p.record_bases)))
    from genoconv.engine import MemorySink

    engine.run([Record.from_sequence("long", _random_seq(3500, 2)), Record.from_sequence("short", "ACGT" * 10)],
               MemorySink())
    assert seen == [(0, 0, 1000), (0, 0, 2000), (0, 0, 3000), (1, 3500, 0), (2, 3540, 0)]


def test_a_stop_during_the_reverse_strand_pass_is_taken_at_once(emb, tmp_path, monkeypatch):
    # --rc-average streams the reverse strand first and kept no checkpoint of it; a SIGTERM waited for the whole
    # strand (63 s on DMD) before the forward pass saw it. Now the next reverse chunk stops; its scratch is unnamed.
    from genoconv.engine import MemorySink
    from genoconv.errors import Interrupted

    monkeypatch.setenv("GENOCONV_SCRATCH", str(tmp_path))
    calls = []

    def stop():  # asked once before the record starts (no), then after its first reverse chunk (yes)
        calls.append(1)
        return len(calls) > 1

    engine = Engine(emb, EmbedOptions(rc_average=True, filter_len=4098, chunk_size=1000), should_stop=stop)
    with pytest.raises(Interrupted, match="reverse-strand pass .* at base 8,000"):
        engine.run([Record.from_sequence("x", _random_seq(9000, 4))], MemorySink())
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []  # one chunk, no file left behind


def test_memory_sink_copies_rows_into_one_float32_array_per_layer():
    # The in-memory sink copies each piece of rows (a piece may view a pinned block the host allocator hands out
    # again) into one float32 array per layer, allocated at the record's length: float16, float32, read-only and
    # tensor pieces land in order, the result shares no memory with any piece, more rows than the record's length
    # fail, and an abort (the engine's out-of-memory retry) starts the record's arrays afresh.
    import numpy as np

    from genoconv.engine import MemorySink

    gen = np.random.default_rng(0)
    src = gen.standard_normal((500, 16)).astype(np.float32)
    read_only = src[300:400].copy()
    read_only.flags.writeable = False
    pieces = [src[:100].astype(np.float16), src[100:300], read_only, torch.from_numpy(src[400:].copy())]
    sink = MemorySink()
    rec = sink.begin("r", 500, "exact")
    rec.append(0, src[:250])
    rec.abort()
    for piece in pieces:
        rec.append(0, piece)
    with pytest.raises(ValueError, match="more than 500 per-nucleotide rows"):
        rec.append(0, src[:1])
    rec.commit({})
    (rid, out), = sink.drain()
    rows = out["per_nucleotide"][0]
    assert rid == "r" and rows.dtype == np.float32 and rows.shape == (500, 16)
    np.testing.assert_array_equal(rows[:100], src[:100].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(rows[100:], src[100:])
    assert not any(np.shares_memory(rows, np.asarray(p)) for p in pieces)


def test_prefetched_chunks_give_the_same_record_and_read_ahead_on_a_helper_thread(emb, monkeypatch):
    # With prefetch (the CUDA default) a streamed record's next chunk is read and tokenised on a helper thread while
    # this one computes: the same outputs, and chunk 2's read is under way while chunk 1's outputs are added (a
    # handshake: each side waits for the other, which only concurrent reading can satisfy).
    import threading

    from genoconv.engine import MemorySink
    from genoconv.engine import engine as engine_mod

    seq = _random_seq(4500, 8)
    readers, handshake = set(), {}
    real_tokens, real_add = Engine._tokens, engine_mod.RecordOutput.add

    def tokens(self, rec, start=0, end=None):
        readers.add(threading.current_thread().name)
        if start == 1000 and handshake:
            handshake["reading"].set()
            assert handshake["added"].wait(10), "chunk 1 was not computed while chunk 2 was read"
        return real_tokens(self, rec, start, end)

    def add(self, layer, rows):
        if handshake and not handshake["added"].is_set():
            assert handshake["reading"].wait(10), "chunk 2 was not being read while chunk 1 was computed"
            handshake["added"].set()
        return real_add(self, layer, rows)

    monkeypatch.setattr(Engine, "_tokens", tokens)
    monkeypatch.setattr(engine_mod.RecordOutput, "add", add)
    results = {}
    for prefetch in (False, True):
        readers.clear()
        if prefetch:
            handshake.update(reading=threading.Event(), added=threading.Event())
        sink = MemorySink()
        Engine(emb, EmbedOptions(chunk_size=1000, pools=("mean",)), prefetch=prefetch).run(
            [Record.from_sequence("x", seq)], sink)
        results[prefetch] = dict(sink.drain())["x"]
        if prefetch:
            assert readers and all(name.startswith("genoconv-prefetch") for name in readers)
        else:
            assert readers == {threading.current_thread().name}
    a, b = results[False], results[True]
    assert a["mode"] == b["mode"] and a["mode"].endswith("streamed:C=1000")
    np.testing.assert_array_equal(a["per_nucleotide"][3], b["per_nucleotide"][3])
    np.testing.assert_array_equal(a["pooled"][("mean", 3)], b["pooled"][("mean", 3)])


def test_a_bad_base_in_a_prefetched_chunk_fails_its_record_when_reached(emb):
    from genoconv.engine import MemorySink

    seq = _random_seq(3000, 9)
    seq = seq[:2500] + "J" + seq[2501:]
    seen = []
    engine = Engine(emb, EmbedOptions(chunk_size=1000), prefetch=True,
                    on_progress=lambda p: seen.append(p.record_bases))
    with pytest.raises(InputError, match=r"record 'bad': character 'J' at position 2501"):
        engine.run([Record.from_sequence("bad", seq)], MemorySink())
    assert seen == [1000, 2000]  # the chunks before it were computed, as without the read-ahead
    import threading

    assert not [t for t in threading.enumerate() if t.name.startswith("genoconv-prefetch")]  # the reader ended


def test_out_of_memory_inside_a_prefetched_record_retries_it_cleanly(emb, monkeypatch):
    # An out-of-memory error in chunk 2 of a prefetched record: its reader thread ends before the retry reads the
    # record again (closing()), and the retried record equals an undisturbed one.
    import threading

    from genoconv.engine import MemorySink

    seq = _random_seq(4000, 12)
    want = dict(emb.embed_many([("x", seq)], pools=["mean"]))["x"]
    real = type(emb.model).hidden_states
    calls = []

    def flaky(self, ids, layers=(-1,), stream=None, conv=ConvSettings()):
        calls.append(ids.shape[-1])
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, ids, layers, stream, conv)

    monkeypatch.setattr(type(emb.model), "hidden_states", flaky)
    sink = MemorySink()
    Engine(emb, EmbedOptions(chunk_size=1500, pools=("mean",)), prefetch=True).run([Record.from_sequence("x", seq)],
                                                                                    sink)
    got = dict(sink.drain())["x"]
    assert calls[:3] == [1500, 1500, 1024]  # the retry halves the chunk (to at least 1,024 bases)
    assert not [t for t in threading.enumerate() if t.name.startswith("genoconv-prefetch")]
    np.testing.assert_allclose(got["pooled"][("mean", 3)], want["pooled"][("mean", 3)], rtol=1e-5, atol=1e-6)


_RSS_CHILD = r"""
import json, sys
import numpy as np, torch
from genoconv import Embedder
from genoconv.engine import Engine
from genoconv.model import HyenaConfig, HyenaDNA
from genoconv.options import EmbedOptions

length, chunk, budget_mb = (int(v) for v in sys.argv[1:4])
model = HyenaDNA(HyenaConfig(d_model=32, n_layer=2, d_inner=128, max_seq_len=1_000_002)).init_weights(seed=0)
emb = Embedder(model, device="cpu", max_memory=budget_mb << 20)
opts = dict(per_nucleotide=False, pools=("mean",), chunk_size=chunk)
plan = Engine(emb, EmbedOptions(**opts)).plan(length)
seq = "".join(np.random.default_rng(1).choice(list("ACGT"), size=length))
emb.embed_many([("warm", seq[:2000])], per_nucleotide=False, pools=("mean",))  # threads, allocator arenas
before = int(open("/proc/self/statm").read().split()[1]) * 4096
with open("/proc/self/clear_refs", "w") as f:  # VmHWM from here on
    f.write("5")
(_, out), = emb.embed_many([("x", seq)], **opts)
# VmHWM, not ru_maxrss: Linux keeps the larger of the two across exec, i.e. the forking pytest process's own RSS
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
peak = int(hwm.split()[1]) * 1024 - before
print(json.dumps({"mode": out["mode"], "peak": peak, "plan": plan.peak_bytes}))
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="/proc/self/statm")
@pytest.mark.parametrize("budget_mb", [256, 2048])
def test_a_streamed_record_stays_within_its_memory_budget_on_the_cpu(budget_mb):
    # A record shorter than the filter (K = 1M), streamed in 8,192-base chunks: what the process grows by during the
    # record stays within --max-memory. Measured (32 channels, 2 layers, 40 kbp; 2 cores): when every chunk asked the
    # implicit filter for all 1M taps, 3.6 GB under a 256 MB budget; when all 1M taps (cached under a 2 GB budget)
    # came from one MLP pass over 1M positions, 2.6 GB under 2 GB. Now 190 and 380 MB (plans: 69 and 315 MB).
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, "40000", "8192", str(budget_mb)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["mode"] == "exact;streamed:C=8192"
    assert got["peak"] <= budget_mb << 20, (got["peak"] >> 20, got["plan"] >> 20)
