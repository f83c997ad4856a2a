#!/usr/bin/env bash
# The test suite: installs the cross-check readers (DuckDB, pyarrow) into a virtual
# environment outside the clone, then runs every Rust test.
set -euo pipefail
cd "$(dirname "$0")/.."
AQUEDUCT_ORACLE_PYTHON="$(bash tests/oracle/setup.sh)"
export AQUEDUCT_ORACLE_PYTHON
exec cargo test "$@"
