#!/usr/bin/env bash
# Runs the test suite; extra arguments go to pytest (e.g. bash scripts/test.sh -k checkpoint -x).
# When an argument names a test file or folder (tests/test_data.py, tests/test_model.py::test_x) only that runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"   # also cd's to the repository root
targets=(tests)
for a in "$@"; do
    case "$a" in -*) continue ;; esac
    if [ -e "${a%%::*}" ]; then targets=(); break; fi
done
exec "$PY" -m pytest -q "${targets[@]}" "$@"
