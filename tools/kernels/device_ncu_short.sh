#!/bin/bash
# Where the tensor-core kernel's instructions and stalls go at the short sizes, phase by phase (barrier-delimited),
# by opcode and by CUDA line: ncu's per-SASS counters joined with nvdisasm -g of the same cubin (ncu_phases.py).
# One device call (carry [".devdata", ".whl"]): SIZES="2048 16384" GATED=0 PREBUILT=1 bash tools/kernels/device_ncu_short.sh
# Results under $OUT: phases_<L>.txt (the summary), details_<L>.txt (ncu's sections), sass_<L>.csv (per instruction).
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 GENOCONV_CUDA_ARCHS=${GENOCONV_CUDA_ARCHS:-sm_90}
source tools/device_install.sh /tmp/build.log
so=$(realpath genoconv/_fftconv_C*.so) || { echo "no library"; exit 1; }
mkdir -p /tmp/cub && (cd /tmp/cub && cuobjdump -xelf all "$so" > /dev/null) && ls /tmp/cub | head -20
gated=$([ "${GATED:-0}" = 1 ] && echo --gated)
for c in ${SIZES:-2048 16384}; do
  tag=$c${gated:+_gated}
  timeout 150 ncu --section SourceCounters --section WarpStateStats --section SpeedOfLight --section InstructionStats \
    --section Occupancy --section LaunchStats --print-kernel-base mangled -k regex:monarch --launch-skip 1 --launch-count 1 \
    -f -o "/tmp/ncu_$tag" python3 tools/kernels/profile_case.py $gated "$c" > "/tmp/ncu_$tag.log" 2>&1
  echo "ncu $tag rc=$?"; tail -2 "/tmp/ncu_$tag.log"
  ncu -i "/tmp/ncu_$tag.ncu-rep" --page source --csv --print-source sass > "/tmp/sass_$tag.csv" 2>&1
  ncu -i "/tmp/ncu_$tag.ncu-rep" --page details --print-kernel-base mangled > "$OUT/details_$tag.txt" 2>&1
  grep -E "Duration|Issue Slots Busy|Executed Instructions  |Warp Cycles Per Issued|Achieved Occ|Registers Per|Stall" \
    "$OUT/details_$tag.txt" | head -30
  name=$(grep -m1 -oE "_Z[0-9A-Za-z_]+" "$OUT/details_$tag.txt"); echo "kernel $name"
  # nvdisasm's -fun takes symbol indices, not names: disassemble the cubin and keep the kernel's own section
  nvdisasm -g -c /tmp/cub/fftconv_monarch.sm_90.cubin 2> /dev/null \
    | awk -v fn=".text.$name:" 'index($0, fn) == 1 {p = 1; next} p && /^[ \t]*\.section/ {exit} p' > /tmp/k.sass
  echo "$(grep -c '/\*[0-9a-f]*\*/' /tmp/k.sass) instructions disassembled"
  cp "/tmp/sass_$tag.csv" "$OUT/"  # for ncu_phases.py here later (with "-": phases and opcodes, no source lines)
  python3 tools/kernels/ncu_phases.py "/tmp/sass_$tag.csv" /tmp/k.sass csrc/fftconv/fftconv_monarch.cu \
    > "$OUT/phases_$tag.txt" 2>&1 \
    || python3 tools/kernels/ncu_phases.py "/tmp/sass_$tag.csv" - > "$OUT/phases_$tag.txt" 2>&1
  echo "phases rc=$?"; head -60 "$OUT/phases_$tag.txt"
done
