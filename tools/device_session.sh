#!/bin/bash
# One device call that measures what a GPU user gets, in priority order under a deadline (BUDGET seconds, default 585):
# install as a user does (pip, sm_90 only to halve the build), `doctor --check`, the kernel sweep (issue 13 section),
# the GPU tests, end to end through the CLI / Embedder, compute-sanitizer memcheck and racecheck, then per-kernel and
# streamed-record profiles with what is left. Each stage is cut at what is left, and writes its log under $OUT as
# it goes, so a short lease still returns the first stages.
# Needs tools/prepare_device_files.sh run first (carry [".devdata", ".whl"]). E2E=<cases> picks bench_e2e cases;
# BENCH_CAP / TEST_CAP cap those stages' seconds.
# STAGES=doctor,bench,tests,l2,gemm,embedab,cliprof,onepass,dmdlayers,e2e,sanitize,ncu,ncusrc,profiles (default: all but
# l2, gemm, embedab, cliprof, onepass, dmdlayers, ncusrc) picks stages; BENCH_LONG=1: the bench stage's L = 2M table
# only; ONEPASS_LENGTHS: one_pass_ab.py's record lengths; DMDLAYERS_ARGS: dmd_layers.py's options (default --check-conv).
# BENCH_SIZES=512,... times those lengths only; TEST_K picks GPU tests (pytest -k) and TEST_FILES their files,
# TEST_ENV="VAR=value ..." sets variables for the tests alone. A lease has calls of at most
# 600 s and a warm machine is given back after 30 s idle, so a session's later calls usually start a bare machine:
# SAVE_SO=1 returns the built kernel library in 15 MiB parts ($OUT/kernel_so.part*); before the next call,
# `cat <files_at>/kernel_so.part* | xz -c > .devdata/kernel_so.xz` (5.5 MB: the .so itself, 19.7 MB, with .devdata and
# .whl passes the 64 MiB a call carries) and set PREBUILT=1: tools/device_install.sh unpacks it and installs the
# package around it without the ~80-100 s build.
# $OUT gets at most the 8 files a device call brings back; the build log stays in /tmp (its tail is printed).
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; mkdir -p "$OUT"
T0=$(date +%s); DEADLINE=$((T0 + ${BUDGET:-585}))
on() { [[ ",${STAGES:-doctor,bench,tests,e2e,sanitize,ncu,profiles}," == *",$1,"* ]]; }  # STAGES picks stages
left() { echo $(( DEADLINE - $(date +%s) )); }
cap() { local l; l=$(left); [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }
export PYTHONUNBUFFERED=1 MAX_JOBS=16 GENOCONV_CUDA_ARCHS=sm_90
source tools/e2e_files.sh  # e2e_file NAME: the path of one of bench_e2e's inputs
nvidia-smi -L; nproc
echo "=== build $(date +%T)"
source tools/device_install.sh /tmp/build.log
if on doctor; then echo "=== doctor $(date +%T) left $(left)"
timeout $(cap 60) python3 -m genoconv doctor --check 2>&1 | tail -25
fi; if on bench; then echo "=== bench_fftconv $(date +%T) left $(left)"
timeout $(cap ${BENCH_CAP:-170}) python3 benchmarks/bench_fftconv.py $([ -n "${BENCH_LONG:-}" ] && echo --long-only || { [ -n "${BENCH_SIZES:-}" ] && echo --sizes "$BENCH_SIZES" || echo --section-out "$OUT/bench_section.md"; }) > "$OUT/bench_fftconv.log" 2>&1
echo "bench rc=$?"; grep -E "^\| (kernel plain|plain, %|gated, %|rel. L2 err plain|path)" "$OUT/bench_fftconv.log"
sed -n '/^Partial, streamed/,$p' "$OUT/bench_fftconv.log" | cut -c1-200
[ -n "${BENCH_LONG:-}" ] && grep -E "^ *partial|^ *K = |^ *freq|^ *streamed|^copy" "$OUT/bench_fftconv.log" | cut -c1-200
fi; if on tests; then echo "=== tests $(date +%T) left $(left)"
timeout $(cap ${TEST_CAP:-170}) env ${TEST_ENV:-} python3 -m pytest ${TEST_FILES:-tests/ops/test_fftconv_cuda.py tests/ops/test_fused.py tests/test_gpu.py} \
  ${TEST_K:+-k "$TEST_K"} -q -rs --maxfail=8 --durations=6 -p no:cacheprovider > "$OUT/pytest_gpu.log" 2>&1; echo "pytest rc=$?"
tail -25 "$OUT/pytest_gpu.log"
fi; if on l2; then echo "=== long path, launch blocks sized to L2 $(date +%T) left $(left)"
timeout $(cap ${L2_CAP:-150}) python3 tools/kernels/long_l2_sweep.py ${L2_ARGS:-} > "$OUT/long_l2.log" 2>&1; echo "l2 rc=$?"
cat "$OUT/long_l2.log" | cut -c1-200
fi; if on gemm; then echo "=== projection GEMM layouts $(date +%T) left $(left)"
timeout $(cap 60) python3 tools/kernels/gemm_layouts.py > "$OUT/gemm_layouts.log" 2>&1; echo "gemm rc=$?"; cat "$OUT/gemm_layouts.log" | cut -c1-220
fi; if on embedab; then echo "=== Embedder.embed 1 Mbp: scales A/B, cache misses, kernels $(date +%T) left $(left)"
timeout $(cap 120) python3 tools/kernels/embed_ab.py "$(e2e_file ckpt)" "$(e2e_file seq_1m)" > "$OUT/embed_ab.log" 2>&1; echo "embedab rc=$?"
cut -c1-160 "$OUT/embed_ab.log" | grep -v "^-*$" | head -90
fi; if on cliprof; then echo "=== torch profiler around genoconv embed (chrX, large-1m shape) $(date +%T) left $(left)"
timeout $(cap ${CLIPROF_CAP:-120}) python3 tools/kernels/cli_profile.py "$(e2e_file ${CLIPROF_INPUT:-chrx})" "$(e2e_file ckpt)" > "$OUT/cli_profile.txt" 2>&1
echo "cliprof rc=$?"; head -40 "$OUT/cli_profile.txt" | cut -c1-200
fi; if on onepass; then echo "=== a record past the activation budget: one pass with the caches emptied vs streamed $(date +%T) left $(left)"
timeout $(cap ${ONEPASS_CAP:-150}) python3 tools/kernels/one_pass_ab.py "$(e2e_file ckpt)" ${ONEPASS_LENGTHS:-2600000 3100000 3900000} > "$OUT/one_pass_ab.log" 2>&1
echo "onepass rc=$?"; cut -c1-200 "$OUT/one_pass_ab.log" | tail -20
fi; if on dmdlayers; then echo "=== bf16 kernel vs fp32 reference error layer by layer, DMD (large-1m shape) $(date +%T) left $(left)"
timeout $(cap 150) python3 tools/kernels/dmd_layers.py "$(e2e_file ckpt)" "$(e2e_file dmd)" ${DMDLAYERS_ARGS---check-conv} > "$OUT/dmd_layers.log" 2>&1
echo "dmdlayers rc=$?"; cut -c1-200 "$OUT/dmd_layers.log"
fi; if on e2e; then echo "=== e2e $(date +%T) left $(left)"
timeout $(cap ${E2E_CAP:-$(( $(left) > 100 ? $(left) - 60 : 40 ))}) python3 benchmarks/bench_e2e.py --data .devdata --work /tmp/e2e $([ -d .devdata/official ] && echo --official .devdata/official) \
  --cases "${E2E:-cli_reads_demo,cli_reads_demo_long,cli_dmd,embed_1_2m_tensor,embed_1_2m_tensor_nosplit,cli_demo_bf16,cli_chrx}" \
  --json "$OUT/e2e.json" > "$OUT/e2e.log" 2>&1; echo "e2e rc=$?"; tail -30 "$OUT/e2e.log"
fi; if on sanitize; then echo "=== sanitize $(date +%T) left $(left)"
timeout $(cap 35) compute-sanitizer --tool memcheck --error-exitcode 3 python3 tools/kernels/sanitize_case.py 152 40000 70000 \
  > "$OUT/sanitize.log" 2>&1; echo "memcheck rc=$?"; tail -3 "$OUT/sanitize.log"
timeout $(cap 30) compute-sanitizer --tool memcheck --error-exitcode 3 python3 tools/kernels/sanitize_case.py 300000 --taps=16385 \
  >> "$OUT/sanitize.log" 2>&1; echo "memcheck (long-path blocks) rc=$?"; tail -2 "$OUT/sanitize.log"
timeout $(cap 35) compute-sanitizer --tool racecheck --error-exitcode 3 python3 tools/kernels/sanitize_case.py 152 70000 \
  >> "$OUT/sanitize.log" 2>&1; echo "racecheck rc=$?"; tail -2 "$OUT/sanitize.log"
fi; if on ncu; then echo "=== ncu $(date +%T) left $(left)"  # what bounds the long path: bytes, instructions, occupancy
  timeout $(cap 90) ncu --clock-control none -k regex:"long_|monarch_conv" --launch-count 12 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
    --metrics dram__bytes_read.sum,dram__bytes_write.sum,smsp__inst_executed.sum,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active \
    python3 tools/kernels/profile_case.py 65536 2097152 > "$OUT/ncu_long.txt" 2>&1; echo "ncu rc=$?"
  grep -E "^  [a-zA-Z_].*\(|Duration|Compute \(SM\) Th|DRAM Th|Memory Th|Achieved Occ|Theoretical Occ|Registers Per|Shared Memory Config|dram__bytes|smsp__inst_executed.sum|tensor_cycles|Grid Size|Block Size" "$OUT/ncu_long.txt" | cut -c1-150 | head -90
fi; if on ncusrc; then echo "=== ncu source counters: the long path's instructions by CUDA line, 2M $(date +%T) left $(left)"
  timeout $(cap 150) ncu --clock-control none -k regex:"long_fwd_tc|long_inv_tc|monarch_conv" --launch-count 3 \
    --section SourceCounters --section InstructionStats --import-source yes -f -o /tmp/ncu_src \
    python3 tools/kernels/profile_case.py 2097152 > /tmp/ncu_src.log 2>&1; echo "ncu rc=$?"; tail -3 /tmp/ncu_src.log
  ncu -i /tmp/ncu_src.ncu-rep --page source --csv --print-source cuda > "$OUT/ncu_source.csv" 2>&1 \
    || ncu -i /tmp/ncu_src.ncu-rep --page source --csv > "$OUT/ncu_source.csv" 2>&1
  python3 tools/kernels/ncu_lines.py "$OUT/ncu_source.csv" 30 2>&1 | cut -c1-170 | head -100
fi; if on profiles; then echo "=== profiles $(date +%T) left $(left)"  # what is left: per-kernel times (inner r = 2 at 64K, 2M) and a chrX chunk
[ "$(left)" -gt 40 ] && timeout $(cap 60) python3 tools/kernels/long_profile.py 8,256,65536,65536 1,64,2097152,2097152 \
  > "$OUT/long_profile.log" 2>&1; tail -12 "$OUT/long_profile.log" 2>/dev/null
[ "$(left)" -gt 40 ] && timeout $(cap 120) python3 benchmarks/profile_model.py --length 9600000 --stream 3194303 \
  --out "$OUT/profile_stream.txt" > /tmp/profile_stream.log 2>&1; head -30 "$OUT/profile_stream.txt" 2>/dev/null
fi; echo "=== done $(date +%T) left $(left)"
