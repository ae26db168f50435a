#!/bin/bash
# One device call for a csrc change: the old csrc (.devdata/old_csrc, see tools/device_build_old.sh) and this
# checkout's are built side by side (old in the background), then tools/device_kernel_ab.sh times both at SIZES,
# interleaved ROUNDS times; the new library comes back in parts (SAVE_SO) for a later call's PREBUILT=1.
#   SIZES=512,2048 ROUNDS=3 bash tools/device_old_new_ab.sh      (carry [".devdata", ".whl"])
# OLD_CSRC picks another old csrc folder; EXTRA_OLD_SO adds a second A/B against a carried library.
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; export OUT; mkdir -p "$OUT"
nvidia-smi -L
bash tools/device_build_old.sh > "$OUT/oldbuild.txt" 2>&1 & old=$!
export MAX_JOBS=16 GENOCONV_CUDA_ARCHS=${GENOCONV_CUDA_ARCHS:-sm_90} SAVE_SO=1
source tools/device_install.sh /tmp/build.log
wait $old; tail -3 "$OUT/oldbuild.txt"
PREBUILT=1 OLD_SO=.devdata/kernel_so_old.xz CAP=${CAP:-90} bash tools/device_kernel_ab.sh > "$OUT/ab_sweep.txt" 2>&1
grep -v "^\[" "$OUT/ab_sweep.txt" | head -150
# EXTRA_OLD_SO: a second A/B of the new library, against a library carried in (e.g. main's, when OLD_CSRC was a variant)
if [ -n "${EXTRA_OLD_SO:-}" ]; then
  PREBUILT=1 OLD_SO="$EXTRA_OLD_SO" CAP=${CAP:-90} bash tools/device_kernel_ab.sh > "$OUT/ab_sweep_extra.txt" 2>&1
  echo "=== against $EXTRA_OLD_SO"; grep -v "^\[" "$OUT/ab_sweep_extra.txt" | head -150
fi
