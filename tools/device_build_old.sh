#!/bin/bash
# Build an earlier csrc (carried as .devdata/old_csrc, e.g. `git archive <commit> csrc | tar -x -C /tmp && cp -r
# /tmp/csrc .devdata/old_csrc`) beside this checkout on a device machine, for tools/device_kernel_ab.sh's OLD_SO:
# the old library is compiled in /tmp/oldrepo with this checkout's setup.py and Python (the ops' signatures must
# match) and packed as .devdata/kernel_so_old.xz. Run it in the background before device_kernel_ab.sh builds the new
# one (both fit 16 cores), then wait for it:
#   bash tools/device_build_old.sh & old=$!; ...; wait $old; OLD_SO=.devdata/kernel_so_old.xz bash tools/device_kernel_ab.sh
set -uo pipefail
src=${OLD_CSRC:-.devdata/old_csrc}
[ -d "$src" ] || { echo "no $src"; exit 1; }
rm -rf /tmp/oldrepo && mkdir -p /tmp/oldrepo
cp -r setup.py pyproject.toml README.md genoconv /tmp/oldrepo/ && cp -r "$src" /tmp/oldrepo/csrc
rm -f /tmp/oldrepo/genoconv/_fftconv_C*.so
( cd /tmp/oldrepo && MAX_JOBS=8 GENOCONV_CUDA_ARCHS=${GENOCONV_CUDA_ARCHS:-sm_90} \
    python3 setup.py build_ext --inplace > /tmp/oldbuild.log 2>&1 ) || { echo "old build failed"; tail -20 /tmp/oldbuild.log; exit 1; }
xz -T0 -c /tmp/oldrepo/genoconv/_fftconv_C*.so > .devdata/kernel_so_old.xz && echo "old library: $(ls -la .devdata/kernel_so_old.xz)"
