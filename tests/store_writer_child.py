"""Child process for the SIGKILL torture test in test_store.py: writes a deterministic run, resuming.

Usage: python store_writer_child.py OUT.h5 N_RECORDS SEED COMPRESSION [SLEEP_S [COMMIT_INTERVAL_S]]

Prints "resumed <n>" once the writer is open (n = records skipped), then "done" after finish().
SLEEP_S > 0 sleeps before and after each journal write, so kills also land between the data flush and the
journal line, and right after it.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

# genoconv's package root imports lazily, so genoconv.store loads without torch (~2.5 s saved per child start).
from genoconv import store  # noqa: E402
from genoconv.store import journal, layout  # noqa: E402

D_MODEL = int(os.environ.get("STORE_CHILD_D_MODEL", 8))
LAYERS = (0, 3)
WINDOW = 100


def records(n: int, seed: int):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 5000, size=n)
    for i, length in enumerate(lengths):
        yield f"rec{i}", int(length)


def record_arrays(i: int, length: int, seed: int):
    rng = np.random.default_rng([seed, i])
    per_nt = {layer: rng.standard_normal((length, D_MODEL)).astype(np.float32) for layer in LAYERS}
    return per_nt


def spec(compression):
    return store.StoreSpec(D_MODEL, LAYERS, pools=("mean", "max", "last"), window=WINDOW, compression=compression)


def main() -> None:
    out, n, seed, compression = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    compression = None if compression == "none" else compression
    sleep = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    interval = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    layout.CHUNK_BYTES = int(os.environ.get("STORE_CHILD_CHUNK_BYTES", 2**12))  # 256 rows at d=8: many chunks per record
    if sleep:
        write = journal.Journal.write

        write_many = journal.Journal.write_many

        def slow_write(self, obj, sync=False):
            time.sleep(sleep)
            write(self, obj, sync)
            time.sleep(sleep)

        def slow_write_many(self, objs):
            time.sleep(sleep)
            write_many(self, objs)
            time.sleep(sleep)

        journal.Journal.write = slow_write
        journal.Journal.write_many = slow_write_many
    provenance = {"model_name": "test-model", "checkpoint_sha256": "0" * 64, "compute_dtype": "float32",
                  "command_line": "genoconv embed in.fa -o out.h5", "run_config": {"seed": seed, "n": n}}
    with store.EmbeddingWriter.open(out, spec(compression), provenance, commit_interval=interval) as writer:
        done = set(writer.committed)
        print("resumed", len(done), flush=True)
        for i, (rid, length) in enumerate(records(n, seed)):
            if rid in done:
                continue
            per_nt = record_arrays(i, length, seed)
            rec = writer.begin(rid, length, "exact" if length < 3000 else "partial:K=3000")
            pooled = {}
            for layer, rows in per_nt.items():
                for a in range(0, length, 700):  # several appends per record, not chunk-aligned
                    rec.append(layer, rows[a : a + 700])
                pad = -length % WINDOW
                padded = np.concatenate([rows, np.full((pad, D_MODEL), np.nan, np.float32)])
                rec.append_windows(layer, np.nanmean(padded.reshape(-1, WINDOW, D_MODEL), axis=1))
                stored = rows.astype(np.float16).astype(np.float32)
                pooled[("mean", layer)] = rows.mean(0)
                pooled[("max", layer)] = stored.max(0)
                pooled[("last", layer)] = rows[-1]
            rec.commit(pooled)
        writer.finish()
    print("done", flush=True)


if __name__ == "__main__":
    main()
