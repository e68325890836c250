#!/usr/bin/env bash
# pytest with its "no tests collected" exit (5) treated as a failure on purpose: a suite that ran nothing
# must never pass silently.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: failing the run (exit 5 is never a pass here)" >&2
  exit 1
fi
exit "$code"
