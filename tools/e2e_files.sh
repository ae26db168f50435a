# Sourced by the device scripts: e2e_file NAME prints the path of one of bench_e2e's inputs (checkpoint, chrX, a
# 1 Mbp region, the demo set, ...), made in /tmp/e2e from .devdata once per call.
e2e_file() {
  [ -s /tmp/e2e/files.json ] || python3 -c "import sys, json; sys.path.insert(0, 'benchmarks'); from pathlib import Path; \
from bench_e2e import prepare; f = prepare(Path('/tmp/e2e'), Path('.devdata')); json.dump(f, open('/tmp/e2e/files.json', 'w'))"
  python3 -c "import json, sys; print(json.load(open('/tmp/e2e/files.json'))[sys.argv[1]])" "$1"
}
