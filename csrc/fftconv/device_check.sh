#!/bin/bash
# One device call: build (setup.py, ahead of time, in place), GPU tests, compute-sanitizer, benchmark.
#   bash csrc/fftconv/device_check.sh [build] [monarch] [ncu_tc] [test] [sanitize] [bench] [quickbench] [ncu]
# Logs go under $OUT (the device tool brings them back).
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
stages=${*:-build test sanitize bench}
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
for s in $stages; do
  echo "=== $s $(date +%T)"
  case $s in
    build)
      ( time python3 setup.py build_ext --inplace ) > "$OUT/build.log" 2>&1
      tail -5 "$OUT/build.log"; ls genoconv/_fftconv_C* || { echo BUILD FAILED; tail -60 "$OUT/build.log"; }
      cuobjdump --list-elf genoconv/_fftconv_C*.so 2>&1 | head -20 ;;
    test)
      python3 -m pytest tests/ops/test_fftconv_cuda.py tests/ops/test_cuda_build.py -q -x -rs --durations=8 \
        > "$OUT/pytest.log" 2>&1; tail -40 "$OUT/pytest.log" ;;
    sanitize)
      compute-sanitizer --tool memcheck --error-exitcode 3 python3 csrc/fftconv/sanitize_case.py 1 777 3000 16384 40000 \
        > "$OUT/sanitize.log" 2>&1; echo "memcheck rc=$?"; tail -8 "$OUT/sanitize.log"
      compute-sanitizer --tool racecheck --error-exitcode 3 python3 csrc/fftconv/sanitize_case.py 777 3000 \
        >> "$OUT/sanitize.log" 2>&1; echo "racecheck rc=$?"; tail -4 "$OUT/sanitize.log" ;;
    bench)
      python3 benchmarks/bench_fftconv.py --section-out "$OUT/bench_section.md" > "$OUT/bench.log" 2>&1
      cat "$OUT/bench.log" | head -12; tail -16 "$OUT/bench.log" ;;
    ncu)
      ncu --clock-control none -k regex:"fused|inner|outer" --section SpeedOfLight --section Occupancy \
        python3 csrc/fftconv/profile_case.py 512 16384 65536 1048576 > "$OUT/ncu.txt" 2>&1
      grep -E "^  [a-z].*kernel|Duration|Compute \(SM\) Th|DRAM Th|L1/TEX Cache Th|Achieved Occ" "$OUT/ncu.txt" ;;
    diag)
      for c in ok dtype cpu log_n spec; do python3 -X faulthandler csrc/fftconv/diag_errors.py $c 2>&1 | tail -3; done
      cuda-gdb -batch -ex run -ex bt --args python3 csrc/fftconv/diag_errors.py spec 2>&1 | grep -E "^#|signal" | head -30
      python3 -m pytest tests/ops/test_fftconv_cuda.py -q -rs --deselect tests/ops/test_fftconv_cuda.py::test_errors_are_exceptions \
        > "$OUT/pytest.log" 2>&1; tail -5 "$OUT/pytest.log" ;;
    monarch)  # the tensor-core Monarch path first: its tests, then an A/B timing against the scalar kernel
      python3 -m pytest tests/ops/test_fftconv_cuda.py -q -x --tb=short -k monarch > "$OUT/monarch_tests.log" 2>&1
      tail -30 "$OUT/monarch_tests.log"
      python3 benchmarks/bench_fftconv.py --sizes ${MONARCH_SIZES:-512,1024,2048,4096,8192,16384} > "$OUT/monarch_bench.log" 2>&1
      head -8 "$OUT/monarch_bench.log" ;;
    ncu_tc)  # profile of the tensor-core kernel (one launch per size after a warm-up launch)
      ncu --clock-control none -k regex:monarch --launch-skip 1 --launch-count 1 --section SpeedOfLight --section Occupancy \
        --section WarpStateStats --section InstructionStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section SourceCounters python3 csrc/fftconv/profile_case.py 16384 > "$OUT/ncu_tc.txt" 2>&1
      grep -E "Duration|Compute \(SM\) Th|DRAM Th|L1/TEX Cache Th|Achieved Occ|Issue Slots Busy|Executed Ipc A|Registers Per|Warp Cycles Per Issued|Executed Instructions  |Bank" "$OUT/ncu_tc.txt" | head -30 ;;
    quickbench)
      python3 benchmarks/bench_fftconv.py --quick > "$OUT/bench.log" 2>&1; cat "$OUT/bench.log" | head -8 ;;
  esac
done
echo "=== done $(date +%T)"
