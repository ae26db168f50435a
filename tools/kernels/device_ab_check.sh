#!/bin/bash
# One device call for a tensor-core kernel change, in order of what matters when the call may be cut short: this
# checkout's library built and timed against OLD_SO at SIZES (device_kernel_ab.sh), the GPU tests, memcheck and
# racecheck of the tensor-core kernel at SAN_SIZES, then (if BUDGET seconds leave room) ncu per phase at NCU_SIZES.
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
if [ -n "${OLD_CSRC:-}" ]; then  # the old side built from a carried csrc in the same call (device_old_new_ab.sh)
  CAP=${CAP:-60} bash tools/device_old_new_ab.sh 2>&1 | tee "$OUT/ab.txt" | grep -E "^(---|\| (L |kernel|plain, %|gated, %|rel))|rc="
else
  CAP=${CAP:-60} bash tools/device_kernel_ab.sh 2>&1 | tee "$OUT/ab.txt" | grep -E "^(---|\| (L |kernel|plain, %|gated, %|rel))|rc="
fi
xz -T16 -c genoconv/_fftconv_C*.so > "$OUT/kernel_so_new.xz"
echo "=== tests, $(left) s left"
timeout $(( $(left) > 150 ? 150 : $(left) )) python3 -m pytest -q tests/ops/test_fftconv_cuda.py tests/ops/test_fused.py \
  tests/test_gpu.py > "$OUT/tests.txt" 2>&1; echo "tests rc=$?"; tail -2 "$OUT/tests.txt"
for tool in memcheck racecheck; do
  [ "$(left)" -gt 40 ] || break
  GENOCONV_FFTCONV_PATH=monarch timeout 60 compute-sanitizer --tool $tool --error-exitcode 3 \
    python3 tools/kernels/sanitize_case.py ${SAN_SIZES:-1500 2048} > "$OUT/$tool.txt" 2>&1; echo "$tool rc=$?"
  tail -1 "$OUT/$tool.txt"
  # LONG_SAN: lengths on the paths the dispatch picks (e.g. the long path, whose inner pass is this kernel's circular form)
  if [ -n "${LONG_SAN:-}" ] && [ "$(left)" -gt 40 ]; then
    timeout 90 compute-sanitizer --tool $tool --error-exitcode 3 python3 tools/kernels/sanitize_case.py $LONG_SAN \
      > "$OUT/${tool}_long.txt" 2>&1; echo "$tool (long) rc=$?"; tail -1 "$OUT/${tool}_long.txt"
  fi
done
if [ "$(left)" -gt 100 ]; then
  SIZES="${NCU_SIZES:-2048 16384}" PREBUILT=1 timeout $(( $(left) - 10 )) bash tools/kernels/device_ncu_short.sh \
    > "$OUT/ncu_short.txt" 2>&1
  grep -E "rc=|Duration|Executed Instructions|Warp Cycles Per Issued|Achieved Occ|total executed|^seg" "$OUT/ncu_short.txt"
fi
echo "=== done, $(left) s left"
