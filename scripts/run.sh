#!/usr/bin/env bash
# The main job: set up, generate the default dataset once, serve it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
DATA=${ONSHI_DATA:-var/demo}
PERSONS=${ONSHI_PERSONS:-100000}
if [ ! -f "$DATA/.complete" ]; then
  rm -rf "$DATA"
  .venv/bin/onshi gen --persons "$PERSONS" --out "$DATA"
  touch "$DATA/.complete"
fi
exec .venv/bin/onshi serve --data "$DATA" "$@"
