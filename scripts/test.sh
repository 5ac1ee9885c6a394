#!/usr/bin/env bash
# Sets up the environment, then runs the tests: `scripts/test.sh [pytest args...]`.
# pytest's exit code passes through; "no tests collected" (exit 5) is a failure.
# Prints the line coverage of maggy_core at the end (pytest-cov; MAGGY_COVERAGE=0
# turns it off).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"

# Spark's Python workers start `python3` from PATH unless PYSPARK_PYTHON says otherwise.
export PATH="$ROOT/.venv/bin:$PATH"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$ROOT/.venv/bin/python}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$ROOT/.venv/bin/python}"
# Local Spark binds to loopback, not to whatever address the hostname resolves to.
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"

cov=()
if [[ "${MAGGY_COVERAGE:-1}" != "0" ]]; then
  cov=(--cov=maggy_core --cov-report=term:skip-covered)
fi

rc=0
"$ROOT/.venv/bin/pytest" -q -ra "${cov[@]}" "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
  echo "test: error: pytest collected no tests (exit 5); that counts as a failure" >&2
fi
exit "$rc"
