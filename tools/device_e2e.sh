#!/bin/bash
# One device call for the end-to-end work: install as a GPU user does, GPU tests, profile, memory model, benchmark.
#   bash tools/device_e2e.sh [install] [test] [profile] [memory] [bench] [bench_quick]
# Needs .devdata (DMD, chrX, E. coli; official code in .devdata/official) and .whl (pysam, biopython) carried.
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16
stages=${*:-install test profile memory bench}
nvidia-smi -L
for s in $stages; do
  echo "=== $s $(date +%T)"
  case $s in
    install)
      source tools/device_install.sh "$OUT/build.log"
      python3 -m genoconv doctor 2>&1 | tail -12 ;;
    diag)
      python3 -c "import importlib.metadata as m; print({k: m.version(k) for k in ('torch', 'typer', 'click', 'rich', 'h5py', 'triton')})"
      python3 -m genoconv -v embed reference_data/example.fa -o /tmp/diag.h5 --device cuda --dtype bfloat16 \
        --overwrite 2>&1 | tail -8 ;;
    test)
      timeout 300 python3 -m pytest tests/ops/test_fftconv_cuda.py tests/ops/test_fused.py tests/test_gpu.py \
        -q -rs --durations=5 > "$OUT/pytest_gpu.log" 2>&1
      echo "pytest rc=$?"; tail -15 "$OUT/pytest_gpu.log" ;;
    profile)
      timeout 150 python3 benchmarks/profile_model.py --length 1000000 --out "$OUT/profile_1m.txt" 2>&1 | head -45 ;;
    memory)
      timeout 200 python3 benchmarks/memory_plan.py ${MEMORY_ARGS:-} 2>&1 | tail -30 ;;
    bench)
      timeout ${BENCH_TIMEOUT:-400} python3 benchmarks/bench_e2e.py --data .devdata --official .devdata/official \
        --cases "${BENCH_CASES:-cli_chrx,cli_dmd,embed_1m,embed_1m_tensor,embed_100k,cli_demo_bf16,cli_demo_fp32,embed_many_4m_twice,fidelity,cli_dmd_per_nt,embed_1m_fp32_reference,official_100k,official_1m,official_1m_bf16}" \
        --json "$OUT/e2e.json" 2>&1 | tail -30 ;;
  esac
done
echo "=== done $(date +%T)"
