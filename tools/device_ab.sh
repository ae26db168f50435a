#!/bin/bash
# A/B of a Python-level change on one device build: run bench_e2e cases for variant B (this checkout) and variant A
# (this checkout with the files under $A_DIR swapped in, same relative paths), interleaved ROUNDS times, so machine
# warm-up and drift fall on both sides. Usage (after tools/prepare_device_files.sh; carry [".devdata", ".whl"]):
#   A_DIR=.devdata/ab_main CASES=cli_chrx,cli_dmd ROUNDS=2 PREBUILT=1 bash tools/device_ab.sh
# Writes $OUT/ab_<A|B>_<round>.json and prints each run's table rows.
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 GENOCONV_CUDA_ARCHS=${GENOCONV_CUDA_ARCHS:-sm_90}
source tools/device_install.sh /tmp/build.log
files=$(cd "$A_DIR" && find . -name "*.py" | sed 's|^\./||')
mkdir -p /tmp/ab_B && for f in $files; do mkdir -p "/tmp/ab_B/$(dirname "$f")"; cp "$f" "/tmp/ab_B/$f" 2>/dev/null || true; done
use() { local src=$1; for f in $files; do if [ -f "$src/$f" ]; then cp "$src/$f" "$f"; else rm -f "$f"; fi; done; }
for r in $(seq 1 "${ROUNDS:-2}"); do
  for v in A B; do
    [ $v = A ] && use "$A_DIR" || use /tmp/ab_B
    timeout "${CAP:-150}" python3 benchmarks/bench_e2e.py --data .devdata --work /tmp/e2e --cases "$CASES" \
      --json "$OUT/ab_${v}_$r.json" > "/tmp/ab_${v}_$r.log" 2>&1
    echo "--- $v round $r rc=$?"; grep -E "^\| [a-z]" "/tmp/ab_${v}_$r.log" | grep -v "^| case" | cut -c1-150
  done
done
use /tmp/ab_B
