# Sourced by the device scripts: e2e_file NAME prints the path of one of bench_e2e's inputs (checkpoint, chrX, a
# 1 Mbp region, the demo set, ...), made in /tmp/e2e from .devdata once per call; e2e_run runs bench_e2e's cases and
# prints their table rows.
e2e_file() {
  [ -s /tmp/e2e/files.json ] || python3 -c "import sys, json; sys.path.insert(0, 'benchmarks'); from pathlib import Path; \
from bench_e2e import prepare; f = prepare(Path('/tmp/e2e'), Path('.devdata')); json.dump(f, open('/tmp/e2e/files.json', 'w'))"
  python3 -c "import json, sys; print(json.load(open('/tmp/e2e/files.json'))[sys.argv[1]])" "$1"
}

# e2e_run LABEL CASES CAP JSON LOG [NAME=VALUE ...]: bench_e2e.py --cases CASES (inputs from .devdata) within CAP
# seconds, with the variables given set, its JSON to JSON and its output to LOG; prints "--- LABEL rc=N" and the
# cases' table rows (the A/B scripts' one line per case and side).
e2e_run() {
  local label=$1 cases=$2 cap=$3 json=$4 log=$5
  shift 5
  env "$@" timeout "$cap" python3 benchmarks/bench_e2e.py --data .devdata --work /tmp/e2e --cases "$cases" \
    --json "$json" > "$log" 2>&1
  echo "--- $label rc=$?"; grep -E "^\| [a-z]" "$log" | grep -v "^| case" | cut -c1-150
}
