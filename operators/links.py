"""The extra link from a MaggyOperator task to its experiment's page."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink, conf

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey

#: Where the plugin mounts its pages (see ``maggy_airflow.plugins``).
URL_PREFIX = "/maggy"


def experiment_id_for(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """The experiment id of one task instance: the same on every try, so a retry
    finds the journal of the try before it and resumes.

    Readable where possible, with a digest of the exact ids so two runs whose ids
    differ only in characters an experiment id cannot hold never collide.
    """
    raw = f"{dag_id}.{task_id}.{run_id}" + (
        f".{map_index}" if map_index is not None and map_index >= 0 else ""
    )
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-.")[:80]
    return f"{readable}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"


def experiment_url(experiment_id: str) -> str:
    """The page of an experiment in the plugin (relative when no base URL is set)."""
    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{URL_PREFIX}/experiments/{experiment_id}"


class MaggyExperimentLink(BaseOperatorLink):
    """ "Maggy experiment" button on the task: the experiment's trials, curves and best."""

    name = "Maggy experiment"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        return experiment_url(
            experiment_id_for(ti_key.dag_id, ti_key.task_id, ti_key.run_id, ti_key.map_index)
        )
