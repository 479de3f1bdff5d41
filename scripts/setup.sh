#!/usr/bin/env bash
# Create .venv and install the pinned dependencies (torch first: the pin takes the CPU build).
# Re-runs are quick: nothing is installed again unless requirements*.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-}
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python_bin=$candidate
      break
    fi
  done
fi
if [ -z "$python_bin" ]; then
  echo "setup: Python 3.11 is needed (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installing dependencies into .venv (a few minutes the first time)..."
  quiet() { "$@" 2>&1 | { grep -v -e '^WARNING: Location' -e '^\[notice\]' || true; }; return "${PIPESTATUS[0]}"; }
  quiet .venv/bin/python -m pip install -q --upgrade pip
  # --no-compile: Python compiles what is imported, once, on first import (a few hundred of the
  # 25,000 files here), instead of pip compiling all of them: about a minute of CPU saved.
  quiet .venv/bin/python -m pip install -q --no-compile torch==2.13.0 "setuptools<81"
  quiet .venv/bin/python -m pip install -q --no-compile -r requirements.txt -r requirements-dev.txt
  .venv/bin/python -m pip check
  echo "$wanted" > "$stamp"
fi
