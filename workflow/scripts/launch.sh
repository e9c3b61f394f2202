#!/usr/bin/env bash
# Run one workflow step under the interpreter of its runtime stack, its output in a log.
#
# usage: launch.sh PYTHON MISSING_SENTENCE SCRIPT LOG [ARGS...]
#
# If PYTHON does not exist, print MISSING_SENTENCE (which names the config key and the fix)
# and fail. If the step fails, repeat its one-sentence error ("infbench: ...") on stderr,
# where Snakemake shows it, so the user need not open the log. The log's last line is the
# step's exit status ("infbench-exit: N"); a log without it is a step that was killed. The
# tables of a failed or interrupted run read it (aggregate.py --what-ran). The step starts
# through gpu_slot.py, which gives a GPU step a GPU of its own (infbench/slots.py) and sets
# INFBENCH_LAUNCHED (when the step's process started, for the start-up time its result records).
set -u
python=$1 missing=$2 script=$3 log=$4
shift 4
mkdir -p "$(dirname "$log")"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "infbench: $missing" | tee "$log" >&2
    echo "infbench-exit: 127" >>"$log"
    exit 1
fi
"$python" "$(dirname "$0")/gpu_slot.py" "$python" "$script" "$@" >"$log" 2>&1
status=$?
echo "infbench-exit: $status" >>"$log"
if [ "$status" -ne 0 ]; then
    grep '^infbench:' "$log" >&2 || tail -n 20 "$log" >&2
else
    grep '^infbench note:' "$log" >&2 || true  # what the user should act on, e.g. a digest to pin
fi
exit "$status"
