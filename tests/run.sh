#!/usr/bin/env bash
# Runs every test of the project: the README's second command, and what CI runs.
#
# Sets up what the tests need on a fresh machine (a Python virtual environment
# with grpcio and grpcio-tools, whose protoc checks every emitted .proto and
# whose grpc runtime is the foreign peer of the interop tests), then runs the
# whole cargo test suite and the protoc check. Exit status: non-zero if
# anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

export CARGO_TERM_COLOR=never
VENV="$ROOT/target/pyenv"
PY="$VENV/bin/python"

step() { printf '\n==> %s\n' "$*"; }

step "system tools (iproute2 for the IP multicast tests in their own network namespaces)"
if ! command -v ip >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq iproute2) || echo "could not install iproute2: the IP multicast tests will say so"
fi
command -v ip

step "python environment (grpcio, grpcio-tools) in $VENV"
if ! "$PY" -c 'import grpc, grpc_tools' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check 'grpcio>=1.60,<2' 'grpcio-tools>=1.60,<2' 'protobuf>=4.25'
fi
"$PY" -c 'import grpc; print("grpcio", grpc.__version__)'
export RPC_TEST_PYTHON="$PY"

step "cargo test --workspace"
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
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

# One closing line over everything cargo ran.
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' target/test-output.txt | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo 'test result: [a-zA-Z]+. [0-9]+ passed; [0-9]+ failed' target/test-output.txt | awk '{print $6}' | awk '{s+=$1} END {print s+0}')
if [ "$proto_failed" -ne 0 ]; then failed=$((failed + 1)); else passed=$((passed + 1)); fi
echo
echo "tests: $passed passed, $failed failed"
if [ "$status" -ne 0 ] || [ "$proto_failed" -ne 0 ]; then
  exit 1
fi
