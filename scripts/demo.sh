#!/usr/bin/env bash
# The demo is the main job end to end: it sets up the environment, then runs the HPO
# experiment in examples/digits-hpo.yaml (a Keras MLP on scikit-learn's bundled digits)
# on local Spark with two workers and the default Redis, and prints its results.
# Later it will run the example Airflow DAG instead.
#
# Extra arguments go to `maggy run` (e.g. --redis-url URL). Results are written to
# $MAGGY_RESULTS_DIR, by default results/ in the repository.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"

# Spark's Python workers start `python3` from PATH unless PYSPARK_PYTHON says otherwise:
# make that the virtualenv's interpreter, which has this package and its dependencies.
export PATH="$ROOT/.venv/bin:$PATH"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$ROOT/.venv/bin/python}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$ROOT/.venv/bin/python}"
# Local Spark binds to loopback, not to whatever address the hostname resolves to.
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"

exec "$ROOT/.venv/bin/maggy" run examples/digits-hpo.yaml --master 'local[2]' \
  --results-dir "${MAGGY_RESULTS_DIR:-$PWD/results}" "$@"
