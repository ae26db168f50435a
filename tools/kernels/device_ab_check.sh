#!/bin/bash
# One device call for a tensor-core kernel change, in order of what matters when the call may be cut short: this
# checkout's library built and timed against OLD_SO at SIZES (device_kernel_ab.sh), the GPU tests, memcheck and
# racecheck (device_gpu_checks.sh: SAN_SIZES, LONG_SAN), then (if BUDGET seconds leave room) ncu per phase at NCU_SIZES.
#   BUDGET=480 OLD_SO=.devdata/kernel_so.xz SIZES=2048,16384 ROUNDS=2 bash tools/kernels/device_ab_check.sh
# OLD_CSRC=<folder> instead of OLD_SO builds the old side from that csrc in the same call (device_old_new_ab.sh);
# LONG_SAN="300000" adds sanitizer runs at lengths the dispatch sends elsewhere (the long path's circular inner pass).
# (carry [".devdata", ".whl"]). The new library comes back as $OUT/kernel_so_new.xz (for a later PREBUILT=1).
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; export OUT; mkdir -p "$OUT"
export GENOCONV_CUDA_ARCHS=${GENOCONV_CUDA_ARCHS:-sm_90} PYTHONUNBUFFERED=1
end=$((SECONDS + ${BUDGET:-480}))
left() { echo $((end - SECONDS)); }
nvidia-smi -L
# OLD_CSRC: the old side built from a carried csrc in the same call (device_old_new_ab.sh); else OLD_SO's library
ab=tools/device_kernel_ab.sh; [ -n "${OLD_CSRC:-}" ] && ab=tools/device_old_new_ab.sh
CAP=${CAP:-60} bash "$ab" 2>&1 | tee "$OUT/ab.txt" | grep -E "^(---|\| (L |kernel|plain, %|gated, %|rel))|rc="
xz -T16 -c genoconv/_fftconv_C*.so > "$OUT/kernel_so_new.xz"
LEFT=$(left) bash tools/kernels/device_gpu_checks.sh
if [ "$(left)" -gt 100 ]; then
  SIZES="${NCU_SIZES:-2048 16384}" PREBUILT=1 timeout $(( $(left) - 10 )) bash tools/kernels/device_ncu_short.sh \
    > "$OUT/ncu_short.txt" 2>&1
  grep -E "rc=|Duration|Executed Instructions|Warp Cycles Per Issued|Achieved Occ|total executed|^seg" "$OUT/ncu_short.txt"
fi
echo "=== done, $(left) s left"
