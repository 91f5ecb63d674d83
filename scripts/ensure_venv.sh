#!/usr/bin/env bash
# Create or refresh .venv when it is missing or its requirements changed (keyed on a hash); fast otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-}
if [[ -z "$python_bin" ]]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python_bin=$candidate; break
    fi
  done
fi
[[ -n "$python_bin" ]] || { echo "AlignLab needs Python 3.11 (python3.11 not found); set PYTHON=/path/to/python3.11" >&2; exit 1; }

stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$wanted" ]]; then
  exit 0
fi

echo "Setting up .venv (first run, or requirements changed): a few minutes..."
[[ -x .venv/bin/python ]] || "$python_bin" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
.venv/bin/python -m pip install -q --no-deps -e .
echo "$wanted" > "$stamp"
echo ".venv ready."
