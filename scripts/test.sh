#!/usr/bin/env bash
# The test command: set up (with the test, terminal, bench and cluster extras), check the stubs are fresh,
# lint and type-check (scripts/check), run pytest. Arguments go to pytest (-m "not slow": the fast lane).
set -euo pipefail
cd "$(dirname "$0")/.."
# terminal: pcscd + vpcd for the card E2E tests; bench: locust for the load smoke test;
# cluster: the NATS server and client for the replicated log's tests
ONSHI_EXTRAS=${ONSHI_EXTRAS:-test,terminal,bench,cluster} scripts/setup.sh
# A stale generated stub fails here, not in production.
before=$(cat src/v1/*.py src/v1/*.pyi | sha1sum)
PY=.venv/bin/python scripts/proto.sh
after=$(cat src/v1/*.py src/v1/*.pyi | sha1sum)
if [ "$before" != "$after" ]; then
  echo "src/v1 was stale: regenerated from proto/ (commit the result)" >&2
  [ "${CI:-}" = "true" ] && exit 1
fi
scripts/check
# The slowest tests are listed at the end, so a test that grows slow is seen.
exec .venv/bin/python -m pytest -q --durations=15 "$@"
