#!/usr/bin/env bash
# Sets up .venv (see setup.sh) and runs the default test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
