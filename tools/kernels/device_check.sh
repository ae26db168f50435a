#!/bin/bash
# One device call: build (setup.py, ahead of time, in place), GPU tests, compute-sanitizer, benchmark.
#   bash tools/kernels/device_check.sh [build] [monarch] [ncu_tc] [test] [sanitize] [bench] [quickbench] [ncu] [ncu_sass]
# Logs go under $LOG, packed at the end into $OUT/logs.tgz (the device tool brings back only a few files per call).
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}
LOG=${LOG:-/tmp/genoconv_logs}
mkdir -p "$OUT" "$LOG"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
stages=${*:-build test sanitize bench}
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
for s in $stages; do
  echo "=== $s $(date +%T)"
  case $s in
    build)
      ( time python3 setup.py build_ext --inplace ) > "$LOG/build.log" 2>&1
      tail -5 "$LOG/build.log"; ls genoconv/_fftconv_C* || { echo BUILD FAILED; tail -60 "$LOG/build.log"; }
      cuobjdump --list-elf genoconv/_fftconv_C*.so 2>&1 | head -20 ;;
    test)
      python3 -m pytest tests/ops/test_fftconv_cuda.py tests/ops/test_cuda_build.py -q -x -rs --durations=8 \
        > "$LOG/pytest.log" 2>&1; tail -40 "$LOG/pytest.log" ;;
    sanitize)
      compute-sanitizer --tool memcheck --error-exitcode 3 python3 tools/kernels/sanitize_case.py 1 777 3000 16384 40000 \
        > "$LOG/sanitize.log" 2>&1; echo "memcheck rc=$?"; tail -8 "$LOG/sanitize.log"
      compute-sanitizer --tool racecheck --error-exitcode 3 python3 tools/kernels/sanitize_case.py 777 3000 \
        >> "$LOG/sanitize.log" 2>&1; echo "racecheck rc=$?"; tail -4 "$LOG/sanitize.log"
      # the tensor-core kernel's gated form and several units per block (cp.async staging), forced
      GENOCONV_FFTCONV_PATH=monarch compute-sanitizer --tool memcheck --error-exitcode 3 python3 tools/kernels/sanitize_case.py \
        777 16384 --many >> "$LOG/sanitize.log" 2>&1; echo "memcheck tc rc=$?"; tail -3 "$LOG/sanitize.log"
      GENOCONV_FFTCONV_PATH=monarch compute-sanitizer --tool racecheck --error-exitcode 3 python3 tools/kernels/sanitize_case.py \
        777 --many >> "$LOG/sanitize.log" 2>&1; echo "racecheck tc rc=$?"; tail -3 "$LOG/sanitize.log"
      GENOCONV_FFTCONV_PATH=monarch compute-sanitizer --tool synccheck --error-exitcode 3 python3 tools/kernels/sanitize_case.py \
        777 --many >> "$LOG/sanitize.log" 2>&1; echo "synccheck tc rc=$?"; tail -2 "$LOG/sanitize.log"
      # partial convolution: overlapping strided blocks through the tensor-core kernel (out_from, shared rows)
      compute-sanitizer --tool memcheck --error-exitcode 3 python3 tools/kernels/sanitize_case.py 40001 70000 --taps=1000 \
        >> "$LOG/sanitize.log" 2>&1; echo "memcheck blocks rc=$?"; tail -3 "$LOG/sanitize.log"
      compute-sanitizer --tool racecheck --error-exitcode 3 python3 tools/kernels/sanitize_case.py 40001 --taps=1000 \
        >> "$LOG/sanitize.log" 2>&1; echo "racecheck blocks rc=$?"; tail -2 "$LOG/sanitize.log" ;;
    bench)
      python3 benchmarks/bench_fftconv.py --section-out "$LOG/bench_section.md" > "$LOG/bench.log" 2>&1
      cat "$LOG/bench.log" | head -12; tail -16 "$LOG/bench.log" ;;
    ncu)
      ncu --clock-control none -k regex:"fused|inner|outer" --section SpeedOfLight --section Occupancy \
        python3 tools/kernels/profile_case.py 512 16384 65536 1048576 > "$LOG/ncu.txt" 2>&1
      grep -E "^  [a-z].*kernel|Duration|Compute \(SM\) Th|DRAM Th|L1/TEX Cache Th|Achieved Occ" "$LOG/ncu.txt" ;;
    diag)
      for c in ok dtype cpu log_n spec; do python3 -X faulthandler tools/kernels/diag_errors.py $c 2>&1 | tail -3; done
      cuda-gdb -batch -ex run -ex bt --args python3 tools/kernels/diag_errors.py spec 2>&1 | grep -E "^#|signal" | head -30
      python3 -m pytest tests/ops/test_fftconv_cuda.py -q -rs --deselect tests/ops/test_fftconv_cuda.py::test_errors_are_exceptions \
        > "$LOG/pytest.log" 2>&1; tail -5 "$LOG/pytest.log" ;;
    monarch)  # the tensor-core Monarch path first: its tests, then an A/B timing against the scalar kernel
      python3 -m pytest tests/ops/test_fftconv_cuda.py -q -x --tb=short -k monarch > "$LOG/monarch_tests.log" 2>&1
      tail -30 "$LOG/monarch_tests.log"
      python3 benchmarks/bench_fftconv.py --sizes ${MONARCH_SIZES:-512,1024,2048,4096,8192,16384} > "$LOG/monarch_bench.log" 2>&1
      head -8 "$LOG/monarch_bench.log" ;;
    ncu_tc)  # profile of the tensor-core kernel (one launch per size after a warm-up launch)
      ncu --clock-control none -k regex:monarch --launch-skip 1 --launch-count 1 --section SpeedOfLight --section Occupancy \
        --section WarpStateStats --section InstructionStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section SourceCounters python3 tools/kernels/profile_case.py 16384 > "$LOG/ncu_tc.txt" 2>&1
      grep -E "Duration|Compute \(SM\) Th|DRAM Th|L1/TEX Cache Th|Achieved Occ|Issue Slots Busy|Executed Ipc A|Registers Per|Warp Cycles Per Issued|Executed Instructions  |Bank" "$LOG/ncu_tc.txt" | head -30 ;;
    ncu_sass)  # per-SASS counters of the tensor-core kernel (16K and 2K plain), joined per phase: one script for it
      SIZES="16384 2048" PREBUILT=1 OUT="$LOG" bash tools/kernels/device_ncu_short.sh ;;
    quickbench)
      python3 benchmarks/bench_fftconv.py --quick > "$LOG/bench.log" 2>&1; cat "$LOG/bench.log" | head -8 ;;
  esac
done
tar czf "$OUT/logs.tgz" --exclude='*.ncu-rep' -C "$LOG" . && ls -la "$LOG"
echo "=== done $(date +%T)"
