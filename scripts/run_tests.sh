#!/usr/bin/env bash
# Runs the import-rule check, then the suite; pytest's exit code 5 ("no tests collected") is a
# failure here, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
# The layering rules (scripts/check_imports.py) are cheap and fail fast: no point testing a tree
# that breaks them.
if ! .venv/bin/python scripts/check_imports.py; then
  echo "error: import rules broken (see above); fix them before the tests run" >&2
  exit 1
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$code"
