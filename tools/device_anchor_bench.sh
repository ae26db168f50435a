#!/bin/bash
# One device call: the kernel sweep (benchmarks/bench_fftconv.py) with FlashFFTConv built from its own repository
# beside genoconv's kernels in the same process. genoconv is installed as a GPU user does (tools/device_install.sh)
# while FlashFFTConv builds (tools/anchors/flashfftconv.sh) on the other half of the cores; the sweep starts when both
# are built, so no compiler competes with its timings. Before the call, here:
#   bash tools/prepare_device_files.sh && bash tools/anchors/flashfftconv.sh fetch <its git dir or URL>
# and carry [".devdata", ".whl", ".anchors"] (ninja and einops among the wheels). SAVE_SO=1 returns genoconv's
# library for a later PREBUILT call. Output: $OUT/bench_fftconv.log and bench_section.md (--section-out), the builds'
# log tails on stdout. BUDGET: seconds for the whole call (default 585).
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; mkdir -p "$OUT"
T0=$(date +%s); DEADLINE=$((T0 + ${BUDGET:-585}))
left() { echo $(( DEADLINE - $(date +%s) )); }
export PYTHONUNBUFFERED=1 GENOCONV_CUDA_ARCHS=${GENOCONV_CUDA_ARCHS:-sm_90}
nvidia-smi -L; nproc
source tools/device_wheels.sh  # before the FlashFFTConv build: its ninja comes from them
echo "=== builds $(date +%T)"
( MAX_JOBS=${FFC_JOBS:-8} LOG=/tmp/ffc_build.log bash tools/anchors/flashfftconv.sh build > /tmp/ffc_build.out 2>&1 ) &
ffc_pid=$!
MAX_JOBS=${GENOCONV_JOBS:-8} source tools/device_install.sh /tmp/build.log
echo "genoconv built $(date +%T), left $(left)"
wait $ffc_pid; echo "flashfftconv build rc=$? $(date +%T), left $(left)"; cat /tmp/ffc_build.out
grep -E "real|error" /tmp/ffc_build.log | head -5
source tools/anchors/flashfftconv.sh env
python3 -c "import flashfftconv, monarch_cuda; print('flashfftconv imports from', flashfftconv.__file__)" 2>&1 | tail -1
echo "=== bench_fftconv $(date +%T) left $(left)"
timeout $(( $(left) - 10 )) python3 benchmarks/bench_fftconv.py --flashfftconv --section-out "$OUT/bench_section.md" \
  > "$OUT/bench_fftconv.log" 2>&1
echo "bench rc=$?"
grep -E "^\| (kernel plain|kernel gated|plain, %|gated, %|plain / gated|rel. L2 err plain|FlashFFTConv|back to back|speed-up)" "$OUT/bench_fftconv.log" | cut -c1-240
sed -n '/^Partial, streamed/,$p' "$OUT/bench_fftconv.log" | cut -c1-160 | head -40
tail -5 "$OUT/bench_fftconv.log" | cut -c1-300
echo "=== done $(date +%T) left $(left)"
