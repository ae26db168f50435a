#!/bin/bash
# One device call: build (setup.py, ahead of time, in place), GPU tests, compute-sanitizer, benchmark.
#   bash csrc/fftconv/device_check.sh [build] [tc] [test] [sanitize] [bench] [quickbench] [ncu]
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
      compute-sanitizer --tool memcheck --error-exitcode 3 python3 csrc/fftconv/sanitize_case.py 1 777 40000 \
        > "$OUT/sanitize.log" 2>&1; echo "memcheck rc=$?"; tail -8 "$OUT/sanitize.log"
      compute-sanitizer --tool racecheck --error-exitcode 3 python3 csrc/fftconv/sanitize_case.py 777 \
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
    tc)  # needs the tensor-core kernel built and dispatchable: patch -p1 < csrc/fftconv/tc_enable.patch first
      python3 -m pytest tests/ops/test_fftconv_cuda.py -q --tb=line -k "modes or range" > "$OUT/tc_tests.log" 2>&1
      tail -25 "$OUT/tc_tests.log"
      python3 csrc/fftconv/tc_compare.py 512 2048 8192 16384 2>&1 | tee "$OUT/tc_compare.log" ;;
    quickbench)
      python3 benchmarks/bench_fftconv.py --quick > "$OUT/bench.log" 2>&1; cat "$OUT/bench.log" | head -8 ;;
  esac
done
echo "=== done $(date +%T)"
