# Sourced by the device scripts (tools/device_install.sh, tools/device_anchor_bench.sh): the carried wheels (.whl:
# packages the device image lacks; its pip reaches no index) go to /tmp/site, ahead of the image's own on PYTHONPATH
# and on the .pth path of child processes; their scripts (ninja) on PATH. Installed once per set of wheels: a second
# source with the same .whl (device_anchor_bench.sh, then device_install.sh) only sets the variables again.
if compgen -G ".whl/*.whl" > /dev/null; then
  wheels=$(ls .whl/*.whl | md5sum | cut -c1-32)
  if [ "$(cat /tmp/site/.genoconv_wheels 2> /dev/null)" != "$wheels" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "wheel install failed"; exit 1; }
    echo "$wheels" > /tmp/site/.genoconv_wheels
  fi
  export PYTHONPATH=/tmp/site
  [ -d /tmp/site/bin ] && export PATH="/tmp/site/bin:$PATH"
  echo "/tmp/site" > "$(python3 -c 'import site; print(site.getsitepackages()[0])')/genoconv_wheels.pth"
fi
