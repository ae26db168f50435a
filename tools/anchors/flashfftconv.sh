#!/bin/bash
# FlashFFTConv (HazyResearch/flash-fft-conv) as an anchor beside genoconv's kernels in the same process
# (benchmarks/bench_fftconv.py --flashfftconv). Its code is never committed here: it lives in the git-ignored
# .anchors/flash-fft-conv, and only its build flags are changed there.
#   bash tools/anchors/flashfftconv.sh fetch <git dir or URL>   # here: a snapshot of its repository into .anchors/
#   bash tools/anchors/flashfftconv.sh build                    # on the device: build its extension monarch_cuda
#   source tools/anchors/flashfftconv.sh env                    # PYTHONPATH for `import flashfftconv`
# Its setup.py builds PTX for compute_80 only, which the driver would JIT-compile for sm_90 at the first call (minutes,
# and code that was never built for the device); `build` asks nvcc for native code of the device's own architecture
# (ARCH, default from torch.cuda.get_device_capability) instead. It needs ninja (carried in .whl, on PATH through
# tools/device_wheels.sh: without it BuildExtension compiles its 24 files one after another, ~25 min) and einops (its
# Python imports it).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir="$root/.anchors/flash-fft-conv"
case "${1:-}" in
  fetch)
    src=${2:?a clone, a bare git directory or a URL of HazyResearch/flash-fft-conv}
    rm -rf "$dir" && mkdir -p "$dir"
    [ -d "$src/.git" ] && src="$src/.git"
    if [ ! -d "$src" ]; then git clone -q --depth 1 "$src" "$dir.git" || exit 1; src="$dir.git/.git"; fi
    git --git-dir "$src" archive HEAD csrc flashfftconv LICENSE | tar -x -C "$dir" || exit 1
    git --git-dir "$src" rev-parse HEAD > "$dir/COMMIT"  # bench_fftconv.py names it beside the rows
    rm -rf "$dir.git"
    du -sh "$dir";;
  build)
    [ -d "$dir/csrc/flashfftconv" ] || { echo "no $dir: run 'fetch' first (here, then carry .anchors)"; exit 1; }
    command -v ninja > /dev/null || echo "warning: no ninja on PATH; the build runs one file at a time"
    arch=${ARCH:-$(python3 -c "import torch; a, b = torch.cuda.get_device_capability(); print(f'{a}{b}')")}
    cd "$dir/csrc/flashfftconv" || exit 1
    sed -i "s/^cc_flag = .*/cc_flag = ['-gencode', 'arch=compute_${arch},code=sm_${arch}']/" setup.py
    grep -n "^cc_flag" setup.py
    ( time MAX_JOBS=${MAX_JOBS:-16} python3 setup.py build_ext --inplace ) > "${LOG:-/tmp/ffc_build.log}" 2>&1
    rc=$?; echo "flashfftconv build rc=$rc"; tail -3 "${LOG:-/tmp/ffc_build.log}"; ls monarch_cuda*.so 2>/dev/null
    exit $rc;;
  env)
    export PYTHONPATH="$dir:$dir/csrc/flashfftconv${PYTHONPATH:+:$PYTHONPATH}";;
  *) echo "usage: $0 fetch <src> | build | env (sourced)"; exit 2;;
esac
