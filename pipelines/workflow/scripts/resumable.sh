#!/usr/bin/env bash
# Run a resumable genoconv command (embed or merge) that writes PARTIAL, then move PARTIAL to FINAL.
#
#   resumable.sh [--stop-after SECONDS] [--grace SECONDS] [--python PY] PARTIAL FINAL -- COMMAND [ARG...]
#
# Why a path Snakemake does not own: Snakemake deletes a job's declared outputs before it runs and again
# when it fails, so a half-written shard declared as the output would be thrown away before the retry that
# should resume it. COMMAND therefore writes PARTIAL (not declared anywhere; genoconv keeps its journal
# beside it), and only a finished file is renamed (atomically, same folder tree) to FINAL, the declared
# output. A rerun of the same COMMAND resumes PARTIAL; see pipelines/README.md "Resume after walltime".
#
# --stop-after: send COMMAND SIGUSR1 after SECONDS (genoconv then commits, closes and exits 3), and SIGKILL
#   --grace seconds later if it is still running (the store survives a kill; only the current record is
#   redone). The workflow derives SECONDS from the job's walltime.
# --python: an interpreter with genoconv, used to see whether PARTIAL is already complete (a job killed
#   between genoconv finishing and the rename): then it is only moved. Without genoconv there, the check
#   says "no" and COMMAND runs (and refuses the complete file with exit 2: delete PARTIAL or move it by hand).
#
# Exit status: COMMAND's (0 ok, 1 failure, 2 bad input, 3 interrupted but resumable), or 1 for bad usage.
set -euo pipefail

stop_after="" grace=60 python="python3"
while [ $# -gt 0 ]; do
    case "$1" in
        --stop-after) stop_after="$2"; shift 2 ;;
        --grace) grace="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        *) break ;;
    esac
done
if [ $# -lt 4 ] || [ "$3" != "--" ]; then
    echo "usage: resumable.sh [--stop-after S] [--grace S] [--python PY] PARTIAL FINAL -- COMMAND..." >&2
    exit 1
fi
partial="$1" final="$2"
shift 3

mkdir -p "$(dirname "$partial")" "$(dirname "$final")"

is_complete() {
    [ -e "$1" ] || return 1
    "$python" - "$1" 2>/dev/null <<'EOF'
import sys
from genoconv import open_embeddings
with open_embeddings(sys.argv[1]) as f:
    sys.exit(0 if f.complete else 1)
EOF
}

if is_complete "$partial"; then
    echo "resumable.sh: $partial was finished by an earlier attempt; keeping it" >&2
else
    if [ -e "$partial" ]; then
        echo "resumable.sh: resuming $partial" >&2
    fi
    rc=0
    if [ -n "$stop_after" ]; then
        # --foreground: stay in the caller's process group, so a Ctrl-C or a kill of the job reaches COMMAND.
        timeout --foreground --preserve-status --signal=USR1 --kill-after="${grace}s" "${stop_after}s" "$@" || rc=$?
    else
        "$@" || rc=$?
    fi
    if [ "$rc" -eq 3 ] || [ "$rc" -gt 128 ]; then
        echo "resumable.sh: stopped early (exit $rc); $partial keeps the committed records and the next" \
             "attempt of this job resumes it" >&2
    fi
    if [ "$rc" -ne 0 ]; then
        exit "$rc"
    fi
fi
mv -f "$partial" "$final"
