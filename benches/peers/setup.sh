#!/usr/bin/env bash
# Installs the peers the comparison benchmark runs against (DuckDB, Polars, pyarrow,
# DataFusion's Python bindings) into a virtual environment outside the clone, and prints its
# Python's path.
set -euo pipefail
venv="${AQUEDUCT_PEERS_VENV:-$HOME/.cache/aqueduct/peers-venv}"
requirements="$(dirname "$0")/requirements.txt"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
if ! cmp -s "$requirements" "$venv/requirements.txt"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$venv/requirements.txt"
fi
echo "$venv/bin/python"
