"""What Airflow's providers manager learns about maggy-airflow.

The ``apache_airflow_provider`` entry point (``setup.cfg``) names
:func:`get_provider_info`; ``airflow providers list`` then shows the package, and
its ``[maggy]`` config section is registered with Airflow's configuration, so
``airflow config list --section maggy`` shows the settings with their defaults and
``airflow.cfg`` or ``AIRFLOW__MAGGY__<OPTION>`` set them. The plugin is listed
here as well, which is how Airflow loads a provider's plugin: there is no
separate ``airflow.plugins`` entry point (it would register the plugin twice).

This module imports nothing: the providers manager calls it in every Airflow
process.
"""

from __future__ import annotations

from typing import Any

_PACKAGE = "maggy-airflow"
_OPERATORS = "maggy_airflow.operators"

# The [maggy] section. Empty defaults mean "derived" (see maggy_airflow.settings):
# results_dir falls back to $MAGGY_RESULTS_DIR, then $AIRFLOW_HOME/maggy-results.
CONFIG_OPTIONS: dict[str, dict[str, Any]] = {
    "results_dir": {
        "description": (
            "Where experiments write their journal, result.json and trial logs: a local "
            "path, or an fsspec URL (s3://bucket/prefix, gs://..., abfs://..., file://...). "
            "Empty: $MAGGY_RESULTS_DIR, else $AIRFLOW_HOME/maggy-results. The plugin's "
            "pages read the same place."
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "s3://ml-results/maggy",
        "default": "",
    },
    "results_conn_id": {
        "description": (
            "Airflow connection whose credentials reach results_dir when it is an object "
            "store URL (as ObjectStoragePath uses one). Empty: the store's own default "
            "credentials (the cluster's identity, environment variables)."
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "aws_default",
        "default": "",
    },
    "redis_conn_id": {
        "description": "Airflow connection of the Redis server that carries metrics and control.",
        "version_added": "0.1.0",
        "type": "string",
        "example": "redis_maggy",
        "default": "redis_default",
    },
    "follower_lease": {
        "description": (
            "Seconds after which an experiment stops itself when the Airflow task (or "
            "trigger) following it has not said it is there: the task is gone."
        ),
        "version_added": "0.1.0",
        "type": "float",
        "example": "300",
        "default": "600",
    },
    "default_workers": {
        "description": (
            "Parallel trials (Spark tasks) of an experiment whose spec and operator do not "
            "say. Empty: the spec's default."
        ),
        "version_added": "0.1.0",
        "type": "integer",
        "example": "4",
        "default": "",
    },
    "allow_local_deferral": {
        "description": (
            "Let MaggyOperator(deferrable=True) submit in client mode (local Spark "
            "included): the Spark driver then runs on the worker machine, detached from "
            "the task, without the worker slot that deferring gives back. For an Airflow "
            "on one machine; on a cluster use deploy-mode cluster instead."
        ),
        "version_added": "0.1.0",
        "type": "boolean",
        "example": "True",
        "default": "False",
    },
}


def get_provider_info() -> dict[str, Any]:
    """The provider's description, in the shape of Airflow's ``provider_info.schema.json``."""
    return {
        "package-name": _PACKAGE,
        "name": "Maggy",
        "description": (
            "Asynchronous hyperparameter search and ablation studies on Spark, with Redis as "
            "the metric and control channel."
        ),
        "integrations": [
            {
                "integration-name": "Maggy",
                "external-doc-url": "https://pypi.org/project/maggy-airflow/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {"integration-name": "Maggy", "python-modules": [f"{_OPERATORS}.maggy_operator"]}
        ],
        "hooks": [{"integration-name": "Maggy", "python-modules": [f"{_OPERATORS}.hooks"]}],
        "triggers": [{"integration-name": "Maggy", "python-modules": [f"{_OPERATORS}.triggers"]}],
        "extra-links": [f"{_OPERATORS}.links.MaggyExperimentLink"],
        "plugins": [
            {"name": "maggy", "plugin-class": "maggy_airflow.plugins.maggy_plugin.MaggyPlugin"}
        ],
        "config": {
            "maggy": {
                "description": "Defaults of MaggyOperator and of the plugin's pages.",
                "options": CONFIG_OPTIONS,
            }
        },
    }
