#!/bin/bash
# A/B of a kernel (csrc/) change on one device machine: build this checkout's library as a user does, then run
# bench_fftconv at SIZES (or bench_e2e's CASES, end to end) with it and with an earlier build carried in as OLD_SO (an
# `xz -c` of the parts SAVE_SO returned), interleaved ROUNDS times, so warm-up and drift fall on both sides. The new
# library stays installed afterwards (for tests in the same call); PREBUILT=1 takes the new one from
# .devdata/kernel_so.xz instead of building. Usage (after tools/prepare_device_files.sh; carry [".devdata", ".whl"]):
#   OLD_SO=.devdata/kernel_so_main.xz SIZES=65536,2097152,dmd ROUNDS=2 SAVE_SO=1 bash tools/device_kernel_ab.sh
#   OLD_SO=.devdata/kernel_so_main.xz CASES=cli_chrx,cli_dmd PREBUILT=1 bash tools/device_kernel_ab.sh
# OLD_SO=same: both sides on this build (a Python-only change).
# OLD_PY=<folder> swaps in the old side's Python files with its library (same relative paths, e.g. genoconv/ops/cuda.py
# from the commit that built OLD_SO), for a library whose ops the new Python calls and the old one lacks.
# Prints each run's table rows; logs in /tmp/kab_<old|new>_<round>.log, bench_e2e's JSON as $OUT/kab_<v>_<round>.json.
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 GENOCONV_CUDA_ARCHS=${GENOCONV_CUDA_ARCHS:-sm_90}
source tools/device_install.sh /tmp/build.log
source tools/e2e_files.sh  # e2e_run
so=$(ls genoconv/_fftconv_C*.so) || { echo "no library built"; exit 1; }
cp "$so" /tmp/new.so || exit 1
if [ "${OLD_SO:-}" = same ]; then cp /tmp/new.so /tmp/old.so  # a Python-only A/B: OLD_PY's files on this library
else xz -dc "${OLD_SO:-.devdata/kernel_so_main.xz}" > /tmp/old.so || exit 1; fi
pyfiles=$([ -n "${OLD_PY:-}" ] && cd "$OLD_PY" && find . -name "*.py" | sed 's|^\./||')
mkdir -p /tmp/kab_py/new /tmp/kab_py/old
for f in $pyfiles; do
  mkdir -p "/tmp/kab_py/new/$(dirname "$f")" "/tmp/kab_py/old/$(dirname "$f")"
  cp "$f" "/tmp/kab_py/new/$f" && cp "$OLD_PY/$f" "/tmp/kab_py/old/$f"
done
for r in $(seq 1 "${ROUNDS:-2}"); do
  for v in old new; do
    cp "/tmp/$v.so" "$so"; for f in $pyfiles; do cp "/tmp/kab_py/$v/$f" "$f"; done
    if [ -n "${CASES:-}" ]; then
      e2e_run "$v round $r" "$CASES" "${CAP:-120}" "$OUT/kab_${v}_$r.json" "/tmp/kab_${v}_$r.log"
    else
      timeout "${CAP:-120}" python3 benchmarks/bench_fftconv.py --sizes "$SIZES" > "/tmp/kab_${v}_$r.log" 2>&1
      echo "--- $v round $r rc=$?"
      grep -E "^\| (L |kernel plain|kernel gated|plain, %|gated, %|rel. L2 err plain|path)" "/tmp/kab_${v}_$r.log" | cut -c1-200
    fi
  done
done
cp /tmp/new.so "$so"; for f in $pyfiles; do cp "/tmp/kab_py/new/$f" "$f"; done
