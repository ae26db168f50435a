# Sourced by the device scripts (tools/device_session.sh, tools/device_e2e.sh): install genoconv on a device machine
# as a GPU user does: the carried wheels (tools/device_wheels.sh), then the package built from this checkout with the
# image's torch (no build isolation). Usage: source tools/device_install.sh BUILD_LOG
# SAVE_SO=1 copies the built kernel library to $OUT; PREBUILT=1 installs around a carried genoconv/_fftconv_C*.so.
source tools/device_wheels.sh
# A carried library may come as .devdata/kernel_so.xz (`xz -c` of the parts an earlier call returned: 5.5 MB where the
# library is 19.7 MB, so it fits the 64 MiB a call carries beside the data and wheels).
if [ -n "${PREBUILT:-}" ] && [ -f .devdata/kernel_so.xz ] && ! compgen -G "genoconv/_fftconv_C*.so" > /dev/null; then
  xz -dc .devdata/kernel_so.xz > genoconv/_fftconv_C.cpython-312-x86_64-linux-gnu.so
fi
if [ -n "${PREBUILT:-}" ] && compgen -G "genoconv/_fftconv_C*.so" > /dev/null; then
  # a kernel library an earlier call built here (carried back in): install the package around it, no rebuild
  GENOCONV_SKIP_CUDA=1 python3 -m pip install -q --no-build-isolation --no-deps -e . > "$1" 2>&1; echo "prebuilt install rc=$?"
else
  ( time python3 -m pip install --no-build-isolation --no-deps -e . ) > "$1" 2>&1; echo "build rc=$?"
  tail -4 "$1"
  # keep the library for a later call of this session (it comes back under $OUT; carry it in as genoconv/...)
  # in 15 MiB parts (a file back is at most 16 MiB): cat "$OUT"/kernel_so.part* > genoconv/<the .so's name>
  [ -n "${SAVE_SO:-}" ] && [ -n "${OUT:-}" ] && split -b 15M genoconv/_fftconv_C*.so "$OUT/kernel_so.part" \
    && ls genoconv/_fftconv_C*.so "$OUT"/kernel_so.part*
fi
