#!/usr/bin/env bash
# Regenerate the Python stubs in src/v1 from proto/. CI runs it and fails on a diff.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
inc=$($PY -c 'import os, google.protobuf as p; print(os.path.dirname(os.path.dirname(os.path.dirname(p.__file__))))')
$PY -m grpc_tools.protoc -Iproto -I"$inc" --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" proto/onshi/v1/*.proto
rm -f src/v1/*_pb2*.py src/v1/*_pb2*.pyi
cp "$out"/onshi/v1/*.py "$out"/onshi/v1/*.pyi src/v1/
printf '"""Generated from proto/onshi/v1 by scripts/proto.sh; do not edit."""\n' > src/v1/__init__.py
