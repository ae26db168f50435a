#!/bin/bash
# The GPU checks after a kernel build on a device machine, within LEFT seconds (default 300): the GPU tests, then
# compute-sanitizer memcheck and racecheck of the tensor-core kernel at SAN_SIZES (default "1500 2048"; "--many" adds
# persistent blocks serving several units) and, with LONG_SAN, at lengths on the paths the dispatch picks (e.g.
# 300000: the long path, whose inner pass is the kernel's circular form). Called by device_ab_check.sh and
# device_variants.sh; logs under $OUT (tests.txt, <tool>.txt, <tool>_long.txt).
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; mkdir -p "$OUT"
# The architectures the device builds asked for (every device script builds sm_90 only unless told otherwise); the
# build test reads it. Run on its own after a build in another process (device_kernel_ab.sh), the tests otherwise
# expected sm_80 too and test_status_reports_built failed on a correct library (twenty-first session, call 2).
export GENOCONV_CUDA_ARCHS=${GENOCONV_CUDA_ARCHS:-sm_90}
end=$((SECONDS + ${LEFT:-300}))
left() { echo $((end - SECONDS)); }
echo "=== tests${GENOCONV_MONARCH_VAR:+ (GENOCONV_MONARCH_VAR=$GENOCONV_MONARCH_VAR)}, $(left) s left"
timeout $(( $(left) > 160 ? 160 : $(left) )) python3 -m pytest -q tests/ops/test_fftconv_cuda.py tests/ops/test_fused.py \
  tests/test_gpu.py > "$OUT/tests.txt" 2>&1; echo "tests rc=$?"; tail -2 "$OUT/tests.txt"
for tool in memcheck racecheck; do
  [ "$(left)" -gt 40 ] || break
  GENOCONV_FFTCONV_PATH=monarch timeout 70 compute-sanitizer --tool $tool --error-exitcode 3 \
    python3 tools/kernels/sanitize_case.py ${SAN_SIZES:-1500 2048} > "$OUT/$tool.txt" 2>&1; echo "$tool rc=$?"
  tail -1 "$OUT/$tool.txt"
  if [ -n "${LONG_SAN:-}" ] && [ "$(left)" -gt 40 ]; then
    timeout 90 compute-sanitizer --tool $tool --error-exitcode 3 python3 tools/kernels/sanitize_case.py $LONG_SAN \
      > "$OUT/${tool}_long.txt" 2>&1; echo "$tool (long) rc=$?"; tail -1 "$OUT/${tool}_long.txt"
  fi
done
