#!/usr/bin/env bash
# The main job: set up, make a test PKI and the default dataset once, then serve
# EligibilityService over mTLS on 127.0.0.1:${ONSHI_PORT:-50051} until Ctrl-C.
#   ONSHI_PERSONS (default 100000)  ONSHI_DATA (default var/demo)  ONSHI_PORT
# Extra arguments go to `onshi serve` (e.g. --workers 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
DATA=${ONSHI_DATA:-var/demo}
PKI=${ONSHI_PKI_DIR:-var/pki}
PORT=${ONSHI_PORT:-50051}
PERSONS=${ONSHI_PERSONS:-100000}
ONSHI=.venv/bin/onshi

[ -f "$PKI/manifest.json" ] || $ONSHI pki init --out "$PKI" >/dev/null
if [ ! -f "$DATA/.complete" ]; then   # a half-written dataset is rebuilt, never served
  rm -rf "$DATA"
  $ONSHI gen --persons "$PERSONS" --out "$DATA" --progress
  touch "$DATA/.complete"
fi

.venv/bin/python - "$DATA/gen.json" "$PKI" "$PORT" <<'PY'
import json, sys
gen, pki, port = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
s = gen["samples"]
card = next(c for c in s["cards"] if c["kind"] == "valid")
dual = next((c for c in s["cards"] if c["kind"] == "dual_enrolled"), card)
num = next(n for n in s["numbers"] if n["kind"] == "lost_newer_exists")
q = lambda v: v if v and " " not in v else repr(v)
print(f"""
onshi: {gen['persons']:,} synthetic persons in {sys.argv[1].rsplit('/', 1)[0]}; serving on 127.0.0.1:{port} over mTLS.
In another shell (Ctrl-C here stops the server):

  export ONSHI_PKI={pki} ONSHI_TARGET=127.0.0.1:{port}
  .venv/bin/onshi check --card {card['card_serial']}                 # {card.get('name', '')}: valid
  .venv/bin/onshi check --card {dual['card_serial']}                 # dual enrollment: multiple
  .venv/bin/onshi check --number {num['insurer_number']} {q(num['symbol'])} {q(num['number'])} {q(num['branch'])} --birth {num['birth_date']}   # lost, newer exists
  grpcurl -cacert {pki}/onshi/ca.pem -cert {pki}/onshi/operator.pem -key {pki}/onshi/operator.key.pem \\
    -d '{{"card_serial": "{card['card_serial']}"}}' 127.0.0.1:{port} onshi.v1.EligibilityService/CheckByCard

More samples: {sys.argv[1]} ("samples"). Clinic terminal: docs/TERMINAL.md.
""")
PY
exec $ONSHI serve --data "$DATA" --port "$PORT" --pki "$PKI" --audit-dir "$DATA/audit" "$@"
