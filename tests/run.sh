#!/usr/bin/env bash
# Runs every test of the project: the README's second command, and what CI runs.
#
# Sets up what the tests need on a fresh machine (iproute2 for the IP
# multicast tests; a Python virtual environment with grpcio and grpcio-tools,
# whose protoc checks every emitted .proto and whose grpc runtime is the
# foreign peer of the interop tests), then runs the whole cargo test suite and
# the protoc check.
#
# Every step runs whatever happened before it, and the script always ends with
# one closing line, `tests: N passed, N failed`, counted over every
# `test result:` line cargo printed; a test binary that crashed (no result
# line) or a build that failed counts as at least one failure. Exit status:
# non-zero if anything failed.
#
# Arguments, if any, replace `--workspace` as the selection given to
# `cargo test` (for example `bash tests/run.sh -p rpc-codegen`).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

export CARGO_TERM_COLOR=never
VENV="$ROOT/target/pyenv"
PY="$VENV/bin/python"
OUT="$ROOT/target/test-output.txt"
mkdir -p "$ROOT/target"

step() { printf '\n==> %s\n' "$*"; }

step "system tools (iproute2 for the IP multicast tests in their own network namespaces)"
if ! command -v ip >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq iproute2) || echo "could not install iproute2: the IP multicast tests will say so"
fi
command -v ip || echo "no \`ip\` command: the IP multicast tests will fail and say so"

step "python environment (grpcio, grpcio-tools) in $VENV"
if ! "$PY" -c 'import grpc, grpc_tools' 2>/dev/null; then
  python3 -m venv "$VENV" \
    && "$PY" -m pip install --quiet --disable-pip-version-check 'grpcio>=1.60,<2' 'grpcio-tools>=1.60,<2' 'protobuf>=4.25' \
    || echo "could not set up the Python environment: the gRPC interop tests and the protoc check will fail and say so"
fi
if "$PY" -c 'import grpc; print("grpcio", grpc.__version__)'; then
  export RPC_TEST_PYTHON="$PY"
fi

selection=("$@")
if [ "${#selection[@]}" -eq 0 ]; then
  selection=(--workspace)
fi
step "cargo test ${selection[*]} --no-fail-fast"
cargo test "${selection[@]}" --no-fail-fast 2>&1 | tee "$OUT"
status=${PIPESTATUS[0]}

step "every .proto emitted from idl/ compiles with the official protoc"
proto_failed=0
PROTO_OUT="$ROOT/target/proto-check"
rm -rf "$PROTO_OUT" && mkdir -p "$PROTO_OUT/proto" "$PROTO_OUT/py"
mapfile -t IDLS < <(find idl -name '*.idl' | sort)
if cargo run --quiet -p rpc-codegen --bin rpcgen -- proto "${IDLS[@]}" -o "$PROTO_OUT/proto"; then
  mapfile -t PROTOS < <(cd "$PROTO_OUT/proto" && find . -name '*.proto' | sort)
  if [ "${#PROTOS[@]}" -eq 0 ]; then
    echo "no .proto emitted"; proto_failed=1
  elif (cd "$PROTO_OUT/proto" && "$PY" -m grpc_tools.protoc -I. -I"$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')" \
        --python_out="$PROTO_OUT/py" --grpc_python_out="$PROTO_OUT/py" "${PROTOS[@]}"); then
    echo "protoc accepted ${#PROTOS[@]} file(s): ${PROTOS[*]}"
  else
    proto_failed=1
  fi
else
  proto_failed=1
fi

# One closing line over everything cargo ran. Each test binary (`Running ...`
# or `Doc-tests ...`) ends with one `test result:` line; a binary whose result
# line never came (it crashed, or was killed) counts as one failure, and so
# does every crate that did not compile.
read -r passed failed crashed unbuilt < <(awk '
  /^ +Running .*\(.*\)$/ || /^ +Doc-tests [A-Za-z0-9_-]+$/ { if (open) crashed++; open = 1; next }
  /^test result: / {
    for (i = 1; i <= NF; i++) {
      if ($i ~ /^passed;?$/) passed += $(i - 1)
      if ($i ~ /^failed;?$/) failed += $(i - 1)
    }
    open = 0
    next
  }
  /^error: could not compile / { unbuilt++ }
  END { if (open) crashed++; print passed + 0, failed + 0, crashed + 0, unbuilt + 0 }
' "$OUT")
failed=$((failed + crashed + unbuilt))
[ "$crashed" -eq 0 ] || echo "$crashed test binary(ies) ended without a result line (crashed): counted as failures"
[ "$unbuilt" -eq 0 ] || echo "$unbuilt crate(s) did not compile: counted as failures"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "cargo test exited with $status without a failed test: counted as a failure"
  failed=1
fi
if [ "$proto_failed" -ne 0 ]; then failed=$((failed + 1)); else passed=$((passed + 1)); fi
echo
echo "tests: $passed passed, $failed failed"
if [ "$failed" -ne 0 ] || [ "$status" -ne 0 ]; then
  exit 1
fi
