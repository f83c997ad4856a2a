#!/usr/bin/env bash
# Installs the peers the comparison benchmark runs against (DuckDB, Polars, pyarrow,
# DataFusion's Python bindings) into a virtual environment outside the clone, and prints its
# Python's path.
set -euo pipefail
here="$(dirname "$0")"
exec bash "$here/../../tests/oracle/setup.sh" "$here/requirements.txt" \
    "${AQUEDUCT_PEERS_VENV:-$HOME/.cache/aqueduct/peers-venv}"
