#!/usr/bin/env bash
# Runs the whole suite (`bash tests/run.sh`) several times in a row while busy
# loops occupy the cores, as on a loaded CI machine: the proof that no test
# depends on how fast the machine is.
#
# usage: bash tests/stress.sh [RUNS]      (default 5)
#
# Environment:
#   STRESS_BUSY         busy loops to start (default 2: both cores of a 2-core machine)
#   STRESS_RUN_TIMEOUT  seconds one run may take before it is stopped and counted
#                       as failed (default 3600)
#
# The busy loops are started by this script, bounded in time (they stop by
# themselves after RUNS x STRESS_RUN_TIMEOUT seconds at the latest) and killed
# when the script exits, however it exits. Each run's full output is kept in
# target/stress/run-<i>.txt. Prints each run's closing line and a summary; exits
# non-zero if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

RUNS=${1:-5}
BUSY=${STRESS_BUSY:-2}
RUN_TIMEOUT=${STRESS_RUN_TIMEOUT:-3600}
case "$RUNS$BUSY$RUN_TIMEOUT" in
  *[!0-9]*) echo "usage: bash tests/stress.sh [RUNS] (whole numbers; see the header for the environment)" >&2; exit 2 ;;
esac
if [ "$RUNS" -lt 1 ]; then
  echo "RUNS must be at least 1" >&2
  exit 2
fi

LOGS="$ROOT/target/stress"
mkdir -p "$LOGS"

busy_pids=()
stop_busy() {
  for pid in "${busy_pids[@]}"; do
    kill "$pid" 2>/dev/null
  done
  for pid in "${busy_pids[@]}"; do
    wait "$pid" 2>/dev/null
  done
  busy_pids=()
}
trap stop_busy EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

busy_limit=$((RUNS * RUN_TIMEOUT + 60))
for _ in $(seq 1 "$BUSY"); do
  timeout "$busy_limit" sh -c 'while :; do :; done' &
  busy_pids+=("$!")
done
echo "stress: $RUNS run(s) of tests/run.sh with $BUSY busy loop(s) (pids ${busy_pids[*]:-none}) on $(nproc) core(s)"

failed_runs=0
summary=()
for i in $(seq 1 "$RUNS"); do
  log="$LOGS/run-$i.txt"
  echo
  echo "==> stress run $i/$RUNS (output in $log)"
  start=$(date +%s)
  timeout "$RUN_TIMEOUT" bash "$ROOT/tests/run.sh" >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  closing=$(grep -E '^tests: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
  if [ "$rc" -eq 124 ]; then
    closing="timed out after ${RUN_TIMEOUT}s${closing:+ (last: $closing)}"
  elif [ -z "$closing" ]; then
    closing="no closing line (exit $rc)"
  fi
  if [ "$rc" -ne 0 ]; then
    failed_runs=$((failed_runs + 1))
    grep -E '^test .* FAILED$|^failures:$|^    [a-z_:0-9]+$' "$log" | sort -u | head -n 20
  fi
  line="run $i: $closing (exit $rc, ${took}s)"
  echo "$line"
  summary+=("$line")
done

stop_busy
echo
echo "stress summary ($BUSY busy loop(s)):"
printf '  %s\n' "${summary[@]}"
echo "stress: $((RUNS - failed_runs))/$RUNS runs passed"
[ "$failed_runs" -eq 0 ]
