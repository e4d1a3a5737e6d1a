#!/usr/bin/env bash
# The main job: set up, make a test PKI and the default dataset once, then serve
# EligibilityService over mTLS on 127.0.0.1:${ONSHI_PORT:-50051} until Ctrl-C.
#   ONSHI_PERSONS (default 100000)  ONSHI_DATA (default var/demo)  ONSHI_PORT  ONSHI_PKI_DIR (default var/pki)
# Extra arguments go to `onshi serve` (e.g. --workers 2, --port 50060).
#
# ONSHI_DATA holding a store (from `onshi gen --out`, or ingest) is served as it
# is. A dataset is generated only into a new or empty directory. run.sh deletes
# nothing but the files `onshi gen` writes, and only in a directory whose dataset
# run.sh itself began and did not finish; anything else there, it leaves alone.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${ONSHI_DATA:-var/demo}
PKI=${ONSHI_PKI_DIR:-var/pki}
PORT=${ONSHI_PORT:-50051}
PERSONS=${ONSHI_PERSONS:-100000}
ONSHI=.venv/bin/onshi
MINE=.onshi-run                        # marks a directory whose dataset run.sh began
GENERATED=(data.mdb lock.mdb gen.json) # what `onshi gen` writes

refuse() { echo "run.sh: $*" >&2; exit 2; }

# Decide about ONSHI_DATA before doing any work.
if [ -f "$DATA/.complete" ]; then
  generate=no                          # a dataset run.sh finished
elif [ -f "$DATA/data.mdb" ] && [ ! -e "$DATA/$MINE" ]; then
  generate=no                          # a store of yours: served as it is
elif [ -e "$DATA" ] && [ ! -d "$DATA" ]; then
  refuse "ONSHI_DATA=$DATA is not a directory"
else
  generate=yes
  ours=("$MINE"); [ -e "$DATA/$MINE" ] && ours+=("${GENERATED[@]}")
  foreign=()
  if [ -d "$DATA" ]; then
    while IFS= read -r -d '' path; do
      name=${path##*/}
      case " ${ours[*]} " in *" $name "*) ;; *) foreign+=("$name") ;; esac
    done < <(find "$DATA" -mindepth 1 -maxdepth 1 -print0)
  fi
  if [ ${#foreign[@]} -gt 0 ]; then
    refuse "ONSHI_DATA=$DATA holds files run.sh did not make (${foreign[*]:0:5}); it generates a dataset" \
           "only into a new or empty directory and never deletes what it did not make." \
           "Set ONSHI_DATA to a new directory, or to a store from \`onshi gen --out DIR\` to serve that."
  fi
fi

scripts/setup.sh
[ -f "$PKI/manifest.json" ] || $ONSHI pki init --out "$PKI" >/dev/null
if [ $generate = yes ]; then           # a half-written dataset is made again, never served
  mkdir -p "$DATA"
  touch "$DATA/$MINE"
  for f in "${GENERATED[@]}"; do rm -f "$DATA/$f"; done   # only run.sh's own, unfinished
  $ONSHI gen --persons "$PERSONS" --out "$DATA" --progress
  touch "$DATA/.complete"
fi

# Where the server will listen, as it will see its arguments (the last one wins).
host=127.0.0.1 portfile=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --host) host=${args[i + 1]:-$host} ;;
    --host=*) host=${args[i]#--host=} ;;
    --port-file) portfile=${args[i + 1]:-} ;;
    --port-file=*) portfile=${args[i]#--port-file=} ;;
  esac
done
case "$host" in 0.0.0.0|::|"[::]") host=127.0.0.1 ;; esac
own_portfile=no
if [ -z "$portfile" ]; then
  portfile=$(mktemp "${TMPDIR:-/tmp}/onshi-run-port.XXXXXX")
  own_portfile=yes
  set -- --port-file "$portfile" "$@"
fi
rm -f "$portfile"

$ONSHI serve --data "$DATA" --port "$PORT" --pki "$PKI" --audit-dir "$DATA/audit" "$@" &
server=$!
stop() { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
cleanup() { [ $own_portfile = no ] || rm -f "$portfile"; }
trap 'stop; cleanup; exit 130' INT
trap 'stop; cleanup; exit 143' TERM
trap cleanup EXIT

# The banner only once the server answers SERVING, with the port it bound.
until [ -s "$portfile" ]; do
  if ! kill -0 "$server" 2>/dev/null; then
    wait "$server" && status=0 || status=$?
    echo "run.sh: onshi serve exited ($status) before serving" >&2
    exit $((status ? status : 1))
  fi
  sleep 0.1
done
port=$(cat "$portfile")
if ! $ONSHI health --target "$host:$port" --pki "$PKI" --wait --timeout 60 >/dev/null; then
  stop
  exit 1
fi

.venv/bin/python - "$DATA" "$PKI" "$host" "$port" <<'PY'
import json, os, sys
data, pki, host, port = sys.argv[1:]
try:
    with open(os.path.join(data, "gen.json")) as f:
        gen = json.load(f)
except (OSError, ValueError):
    gen = None
q = lambda v: v if v and " " not in v else repr(v)
lines = [""]
if gen:
    s = gen["samples"]
    card = next(c for c in s["cards"] if c["kind"] == "valid")
    dual = next((c for c in s["cards"] if c["kind"] == "dual_enrolled"), card)
    num = next(n for n in s["numbers"] if n["kind"] == "lost_newer_exists")
    lines.append(f"onshi: {gen['persons']:,} synthetic persons in {data}; serving on {host}:{port} over mTLS.")
else:
    card = dual = num = None
    lines.append(f"onshi: the store in {data}; serving on {host}:{port} over mTLS.")
lines += ["In another shell (Ctrl-C here stops the server):", "",
          f"  export ONSHI_PKI={pki} ONSHI_TARGET={host}:{port}"]
if gen:
    lines += [
        f"  .venv/bin/onshi check --card {card['card_serial']}                 # {card.get('name', '')}: valid",
        f"  .venv/bin/onshi check --card {dual['card_serial']}                 # dual enrollment: multiple",
        f"  .venv/bin/onshi check --number {num['insurer_number']} {q(num['symbol'])} {q(num['number'])} "
        f"{q(num['branch'])} --birth {num['birth_date']}   # lost, newer exists",
        f"  grpcurl -cacert {pki}/onshi/ca.pem -cert {pki}/onshi/operator.pem -key {pki}/onshi/operator.key.pem \\",
        f"    -d '{{\"card_serial\": \"{card['card_serial']}\"}}' {host}:{port} onshi.v1.EligibilityService/CheckByCard",
        "", f"More samples: {data}/gen.json (\"samples\"). Clinic terminal: docs/TERMINAL.md. "
            "Load: bench/README.md (locust).",
    ]
else:
    lines += ["  .venv/bin/onshi check --card SERIAL   (or --number INSURER SYMBOL NUMBER BRANCH --birth YYYY-MM-DD)",
              "", "Clinic terminal: docs/TERMINAL.md."]
print("\n".join(lines) + "\n", flush=True)
PY
wait "$server" && status=0 || status=$?
exit $status
