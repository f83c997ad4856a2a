#!/usr/bin/env bash
# Installs Python packages into a virtual environment outside the clone and prints its
# Python's path. With no arguments: the independent readers the cross-check tests compare
# against (DuckDB, pyarrow, from requirements.txt here). With arguments: REQUIREMENTS VENV.
set -euo pipefail
requirements="${1:-$(dirname "$0")/requirements.txt}"
venv="${2:-${AQUEDUCT_ORACLE_VENV:-$HOME/.cache/aqueduct/venv}}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
if ! cmp -s "$requirements" "$venv/requirements.txt"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$venv/requirements.txt"
fi
echo "$venv/bin/python"
