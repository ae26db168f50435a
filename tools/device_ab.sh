#!/bin/bash
# A/B(/C...) of Python-level changes on one device build: run bench_e2e cases for variant B (this checkout) and each
# other variant (this checkout with the files under its folder swapped in, same relative paths), interleaved ROUNDS
# times, so machine warm-up and drift fall on every side. Usage (after tools/prepare_device_files.sh; carry
# [".devdata", ".whl"]):
#   A_DIR=.devdata/ab_main CASES=cli_chrx,cli_dmd ROUNDS=2 PREBUILT=1 bash tools/device_ab.sh
#   VARIANTS="main=.devdata/ab_main pf=.devdata/ab_pf" CASES=... bash tools/device_ab.sh   (several; B is this checkout)
# Each variant folder holds its version of every file that any variant swaps (a file missing there is removed).
# Writes $OUT/ab_<name>_<round>.json and prints each run's table rows.
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 GENOCONV_CUDA_ARCHS=${GENOCONV_CUDA_ARCHS:-sm_90}
source tools/device_install.sh /tmp/build.log
source tools/e2e_files.sh  # e2e_run
VARIANTS=${VARIANTS:-A=$A_DIR}
files=$(for v in $VARIANTS; do (cd "${v#*=}" && find . -name "*.py" | sed 's|^\./||'); done | sort -u)
mkdir -p /tmp/ab_B && for f in $files; do mkdir -p "/tmp/ab_B/$(dirname "$f")"; cp "$f" "/tmp/ab_B/$f" 2>/dev/null || true; done
use() { local src=$1; for f in $files; do if [ -f "$src/$f" ]; then cp "$src/$f" "$f"; else rm -f "$f"; fi; done; }
for r in $(seq 1 "${ROUNDS:-2}"); do
  for v in $VARIANTS B=/tmp/ab_B; do
    name=${v%%=*}; use "${v#*=}"
    e2e_run "$name round $r" "$CASES" "${CAP:-150}" "$OUT/ab_${name}_$r.json" "/tmp/ab_${name}_$r.log"
  done
done
use /tmp/ab_B
