"""maggy-airflow's Airflow side: ``maggy_airflow.operators`` (the operator, its
trigger and link; sources in ``operators/``) and ``maggy_airflow.plugins`` (the
Airflow plugin; sources in ``plugins/``). The engine is ``maggy_core``."""
