#!/bin/bash
# One device call for compile-time variants of the tensor-core kernel built into one library (GENOCONV_MONARCH_VAR,
# an experiment branch's build: tools/kernels/variant_ab.py says how): build as a user does, interleaved timings of
# VARIANTS at SIZES (variant_ab.py), ncu's instruction counts, registers and occupancy per variant, then the GPU
# tests, memcheck and racecheck (device_gpu_checks.sh) with TESTVAR (a variant that holds every changed line).
#   VARIANTS=0,1,5 TESTVAR=5 SIZES=2048,16384 BUDGET=480 bash tools/kernels/device_variants.sh   (carry [".whl"])
#   Long sizes: GENE=1 (adds the DMD shape), NCU_SIZES (ncu at fewer sizes), NCU_KERNELS (a regex, e.g. "monarch_conv_kernel|long_").
#   VARIANT_ENV: the variable the variants set (default GENOCONV_MONARCH_VAR; another an experiment branch reads at
#   every call, e.g. branch s23-fused's GENOCONV_LONG_SLOTS). E2E_CASES: bench_e2e.py cases per variant of
#   E2E_VARIANTS (default VARIANTS), E2E_ROUNDS rounds (carry .devdata too).
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; export OUT; mkdir -p "$OUT"
export MAX_JOBS=16 GENOCONV_CUDA_ARCHS=${GENOCONV_CUDA_ARCHS:-sm_90} PYTHONUNBUFFERED=1
end=$((SECONDS + ${BUDGET:-480}))
left() { echo $((end - SECONDS)); }
nvidia-smi -L
source tools/device_install.sh /tmp/build.log
source tools/e2e_files.sh  # e2e_run
timeout 240 python3 tools/kernels/variant_ab.py --sizes "${SIZES:-2048,8192,16384}" --variants "${VARIANTS:-0,1}" \
  --env "${VARIANT_ENV:-GENOCONV_MONARCH_VAR}" --rounds "${ROUNDS:-3}" ${GENE:+--gene} 2>&1 | tee "$OUT/variants.txt"
# E2E_CASES (bench_e2e.py cases, data in .devdata): each variant end to end, through the CLI and Embedder, in
# alternating order for E2E_ROUNDS rounds (the variable is read at every call, so the same library serves all).
# Only its table comes back ($OUT/e2e_variants.txt): a call returns at most 8 files, and with the JSONs there the
# twenty-third session's first call lost the variants table and the test log (the tool kept the first 8 by name).
if [ -n "${E2E_CASES:-}" ]; then
  for r in $(seq 1 "${E2E_ROUNDS:-2}"); do
    vs=${E2E_VARIANTS:-${VARIANTS:-0,1}}; [ $((r % 2)) -eq 0 ] && vs=$(echo "$vs" | tr , '\n' | tac | paste -sd,)
    for v in ${vs//,/ }; do
      e2e_run "e2e variant $v round $r" "$E2E_CASES" "${E2E_CAP:-150}" "/tmp/e2e_${v}_$r.json" "/tmp/e2e_${v}_$r.log" \
        "${VARIANT_ENV:-GENOCONV_MONARCH_VAR}=$v"
    done
  done 2>&1 | tee "$OUT/e2e_variants.txt"
fi
echo "=== ncu, $(left) s left"
timeout 120 ncu --kernel-name "regex:${NCU_KERNELS:-monarch_conv_kernel}" --metrics \
  smsp__inst_executed.sum,gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__average_warp_latency_issue_stalled_barrier,launch__registers_per_thread \
  python3 tools/kernels/variant_ab.py --once --sizes "${NCU_SIZES:-${SIZES:-2048,8192,16384}}" --variants "${VARIANTS:-0,1}" \
  --env "${VARIANT_ENV:-GENOCONV_MONARCH_VAR}" > "$OUT/ncu_variants.txt" 2>&1; echo "ncu rc=$?"
python3 - "$OUT/ncu_variants.txt" <<'PY'
import re, sys
name = None
for line in open(sys.argv[1]):
    m = re.match(r"\s+void \S*?(monarch_conv_kernel|long_\w+)<(.*?)>\(", line)  # ncu drops the outer namespaces
    if m: name = m.group(1) + "<" + m.group(2) + ">"; continue
    m = re.match(r"\s+(smsp__inst_executed.sum|gpu__time_duration.sum|sm__warps_active\S+|launch__registers_per_thread)\s+(\S+)\s+(\S+)", line)
    if m and name: print(f"{name:60s} {m.group(1):50s} {m.group(2):8s} {m.group(3)}")
PY
GENOCONV_MONARCH_VAR=${TESTVAR:-1} SAN_SIZES=${SAN_SIZES:-1500 2048 16000} LEFT=$(left) bash tools/kernels/device_gpu_checks.sh
echo "=== done, $(left) s left"
