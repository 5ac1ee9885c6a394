#!/usr/bin/env bash
# The main job end to end: sets up the environment, then runs the example Airflow DAG
# `nightly_ablation` once with `airflow dags test` (Airflow with SQLite in
# ./airflow-home): its first task writes the day's table (scikit-learn's bundled
# breast-cancer data, as Parquet), MaggyOperator submits the study to local Spark and
# follows it through the default Redis (MAGGY_REDIS_URL, else 127.0.0.1:6379, else a
# private server), and the last task reads the XCom summary. Progress lines stream
# here; the whole Airflow log is kept in airflow-home/demo.log. At the end the
# experiment's summary table is printed.
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

export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/airflow-home}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export MAGGY_RESULTS_DIR="${MAGGY_RESULTS_DIR:-$ROOT/results}"
mkdir -p "$AIRFLOW_HOME" "$MAGGY_RESULTS_DIR"

echo "demo: preparing Airflow's database in $AIRFLOW_HOME" >&2
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || {
  tail -n 30 "$AIRFLOW_HOME/db-migrate.log" >&2
  exit 1
}

echo "demo: running the DAG nightly_ablation (full log: $AIRFLOW_HOME/demo.log)" >&2
status=0
airflow dags test nightly_ablation 2>&1 | tee "$AIRFLOW_HOME/demo.log" |
  grep --line-buffered -E "maggy experiment|maggy: |DagRun Finished|ERROR|Traceback" |
  sed -u -E 's/^[0-9T:.-]+Z \[[a-z]+ *\] //; s/ \[airflow[^]]*\] loc=[^ ]*$//' || status=$?
if ! grep -q "state=success" "$AIRFLOW_HOME/demo.log"; then
  echo "demo: the DAG run did not succeed; see $AIRFLOW_HOME/demo.log" >&2
  exit 1
fi

latest="$(ls -td "$MAGGY_RESULTS_DIR"/nightly_ablation.study.*/ | head -n 1)"
echo
maggy show "$latest"
exit "$status"
