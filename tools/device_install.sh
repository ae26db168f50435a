# Sourced by the device scripts (tools/device_session.sh, tools/device_e2e.sh): install genoconv on a device machine
# as a GPU user does. The carried wheels (.whl: packages the image lacks; its pip reaches no index) go to /tmp/site,
# ahead of the image's own on PYTHONPATH and on the .pth path of child processes; then the package is built from this
# checkout with the image's torch (no build isolation). Usage: source tools/device_install.sh BUILD_LOG
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
  echo "/tmp/site" > "$(python3 -c 'import site; print(site.getsitepackages()[0])')/genoconv_wheels.pth"
fi
( time python3 -m pip install --no-build-isolation --no-deps -e . ) > "$1" 2>&1; echo "build rc=$?"
tail -4 "$1"
