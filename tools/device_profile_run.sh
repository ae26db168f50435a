#!/bin/bash
# Where a GPU user's time goes in `genoconv embed` (one device call): host profiles (cProfile) of the CLI, the shipped
# demo model on the demo set (E. coli + 200 genes, bench_e2e's) and the large-1m shape on chrX 1-70 Mbp, and the torch
# profiler on a streamed chromosome chunk of the large-1m shape (benchmarks/profile_model.py). PROFILE picks them.
# Needs tools/prepare_device_files.sh; PREBUILT=1 with a carried kernel library (.devdata/kernel_so.xz: `xz -c` of an
# earlier call's build, 5.5 MB where the library is 19.7 MB, so it fits the 64 MiB a call carries) skips the build.
set -uo pipefail
OUT=${OUT:-/tmp/genoconv_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 GENOCONV_CUDA_ARCHS=sm_90
source tools/device_install.sh /tmp/build.log
on() { [[ ",${PROFILE:-demo,stream}," == *",$1,"* ]]; }  # PROFILE=demo,chrx,stream picks the runs
source tools/e2e_files.sh  # e2e_file NAME: the path of one of bench_e2e's inputs
# cProfile of `genoconv embed` (pooled mean + 1 kbp windows, as bench_e2e's CLI rows); the last of RUNS runs is kept
profile_cli() {  # name input model
  for run in $(seq 1 "${RUNS:-2}"); do
    /usr/bin/time -v python3 -m cProfile -o "$OUT/$1.prof" -m genoconv embed "$2" -o "/tmp/$1_$run.h5" \
      --model "$3" --device cuda --dtype bfloat16 --no-per-nucleotide --pool mean --window 1000 2>&1 \
      | grep -E "wrote|Elapsed|Maximum resident" | cut -c1-250
  done
  python3 -c "import pstats; p = pstats.Stats('$OUT/$1.prof'); p.sort_stats('cumulative').print_stats(45); p.sort_stats('tottime').print_stats(30)" > "$OUT/$1_prof.txt" 2>&1
  grep -E "function calls|^ +[0-9]" "$OUT/$1_prof.txt" | head -${TOP:-40} | cut -c1-160
}
on demo && profile_cli demo "$(e2e_file demo)" genoconv-demo
on chrx && RUNS=1 profile_cli chrx "$(e2e_file chrx)" "$(e2e_file ckpt)"
if on stream; then
  timeout ${STREAM_CAP:-150} python3 benchmarks/profile_model.py --length 9600000 --stream 3194303 \
    --out "$OUT/profile_stream.txt" > /tmp/profile_stream.log 2>&1; echo "profile rc=$?"
  head -45 "$OUT/profile_stream.txt" 2>/dev/null | cut -c1-200; tail -5 /tmp/profile_stream.log
fi
