#!/bin/bash
# One device call for compile-time variants of the tensor-core kernel built into one library (GENOCONV_MONARCH_VAR,
# an experiment branch's build: tools/kernels/variant_ab.py says how): build as a user does, interleaved timings of
# VARIANTS at SIZES (variant_ab.py), ncu's instruction counts, registers and occupancy per variant, then the GPU
# tests, memcheck and racecheck (device_gpu_checks.sh) with TESTVAR (a variant that holds every changed line).
#   VARIANTS=0,1,5 TESTVAR=5 SIZES=2048,16384 BUDGET=480 bash tools/kernels/device_variants.sh   (carry [".whl"])
#   Long sizes: GENE=1 (adds the DMD shape), NCU_SIZES (ncu at fewer sizes), NCU_KERNELS (a regex, e.g. "monarch_conv_kernel|long_").
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; export OUT; mkdir -p "$OUT"
export MAX_JOBS=16 GENOCONV_CUDA_ARCHS=${GENOCONV_CUDA_ARCHS:-sm_90} PYTHONUNBUFFERED=1
end=$((SECONDS + ${BUDGET:-480}))
left() { echo $((end - SECONDS)); }
nvidia-smi -L
source tools/device_install.sh /tmp/build.log
timeout 240 python3 tools/kernels/variant_ab.py --sizes "${SIZES:-2048,8192,16384}" --variants "${VARIANTS:-0,1}" \
  --rounds "${ROUNDS:-3}" ${GENE:+--gene} 2>&1 | tee "$OUT/variants.txt"
echo "=== ncu, $(left) s left"
timeout 120 ncu --kernel-name "regex:${NCU_KERNELS:-monarch_conv_kernel}" --metrics \
  smsp__inst_executed.sum,gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__average_warp_latency_issue_stalled_barrier,launch__registers_per_thread \
  python3 tools/kernels/variant_ab.py --once --sizes "${NCU_SIZES:-${SIZES:-2048,8192,16384}}" --variants "${VARIANTS:-0,1}" \
  > "$OUT/ncu_variants.txt" 2>&1; echo "ncu rc=$?"
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
