"""MaggyOperator, its trigger and its extra link (installed as ``maggy_airflow.operators``).

Imports are light: DAG files that use the operator parse quickly; Spark, Redis
and the engine are imported when a task runs.
"""

from __future__ import annotations

from maggy_airflow.operators.links import MaggyExperimentLink, experiment_id_for
from maggy_airflow.operators.maggy_operator import MaggyOperator
from maggy_airflow.operators.triggers import MaggyTrigger

__all__ = ["MaggyExperimentLink", "MaggyOperator", "MaggyTrigger", "experiment_id_for"]
