#!/usr/bin/env bash
# The whole test suite from nothing: install, lint, type-check, then pytest (most tests use the lab).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== import contract"; .venv/bin/lint-imports --no-cache
echo "== pytest"
# The lab is shared by the whole session (one bring-up) and torn down at the end by the fixture.
exec .venv/bin/pytest "$@"
