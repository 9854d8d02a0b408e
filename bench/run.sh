#!/usr/bin/env bash
# The fast-path benchmark: bidfilter vs MLServer vs a Thrift thread-pool server, one core each.
# Usage: bench/run.sh [python -m bench options]   e.g. bench/run.sh --smoke, bench/run.sh --help
# Uses ./.venv (scripts/install) when there is one, else $PYTHON or python3.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m bench "$@"
