#!/usr/bin/env bash
# Idempotent set-up on Debian 12: apt packages, venv, pip packages, native build.
# Used by scripts/run.sh and scripts/test.sh; safe to run any number of times.
# ONSHI_EXTRAS (e.g. "test,bench,terminal") selects optional extras.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${ONSHI_EXTRAS:-}

APT_PACKAGES=(liblmdb-dev gcc python3-venv python3-dev)
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
    case "$p" in python3-venv|python3-dev) python3 -c 'import venv, sysconfig, os; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' 2>/dev/null || need+=("$p") ;; *) need+=("$p") ;; esac
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.onshi-installed
want="$(cat pyproject.toml setup.py | sha1sum | cut -c1-12) extras=$EXTRAS"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp" ; then
  echo "setup: pip install -e .${EXTRAS:+[$EXTRAS]}"
  .venv/bin/pip install -q --upgrade pip setuptools wheel Cython >/dev/null
  .venv/bin/pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
  echo "$want" > "$stamp"
fi
# Rebuild the native engine in place whenever its sources change (cheap when unchanged).
.venv/bin/python setup.py -q build_ext --inplace >/dev/null 2>&1 || .venv/bin/python setup.py build_ext --inplace
