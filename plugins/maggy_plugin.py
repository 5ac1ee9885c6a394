"""The Airflow plugin: maggy's pages in the API server, their entries in the UI, the task's link.

Loaded through the ``airflow.plugins`` entry point of the installed package, or
from this folder when it is Airflow's plugins folder. Every Airflow process loads
plugins, task processes included, so this module imports nothing of the API
server: the FastAPI app (``_app``, with FastAPI, Jinja2 and the auth manager) is
built by :class:`LazyApp` at the API server's first request to ``/maggy``.

The pages (see ``_app`` and docs/ui.md) read the results folder
(``$MAGGY_RESULTS_DIR``, else ``$AIRFLOW_HOME/maggy-results``), the operator's default.
In the UI:

- "Maggy experiments" in the Browse menu (the list, framed by the UI);
- a "Maggy experiment" tab on every task instance, which opens that task's
  experiment (``/maggy/task/<dag>/<run>/<task>/<map index>`` redirects to the
  page the operator's "Maggy experiment" extra link opens);
- the extra link itself, on MaggyOperator tasks.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin

# Absolute import: when this file is loaded from Airflow's plugins folder it is a
# top-level module, and a relative import would fail.
from maggy_airflow.operators.links import URL_PREFIX, MaggyExperimentLink

#: The placeholders the UI fills in for a task instance's tab (URL-encoded).
TASK_PLACEHOLDERS = "{DAG_ID}/{RUN_ID}/{TASK_ID}/{MAP_INDEX}"


class LazyApp:
    """An ASGI app that builds maggy's FastAPI app at its first request.

    Airflow's API server mounts it at ``/maggy`` like any sub-application; the
    cost of importing FastAPI, the templates and the auth manager's modules is
    paid there, once, and never in a task process that only loads the plugin.
    """

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def app(self) -> Any:
        """The FastAPI app (built on the first call)."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from maggy_airflow.plugins._app import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app()(scope, receive, send)


def _base_path() -> str:
    """The path of ``[api] base_url`` when Airflow is served below one."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


class MaggyPlugin(AirflowPlugin):
    """Registers maggy's pages, their entries in the UI's navigation and task
    instances, and the "Maggy experiment" link of MaggyOperator."""

    name = "maggy"
    operator_extra_links = [MaggyExperimentLink()]
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "maggy"}]
    # With a url_route the UI shows the pages inside its own frame (without one it
    # would open them in a new tab); "browse" puts the entry in the Browse menu.
    # A task_instance view is a tab of every task instance: the UI fills in the
    # placeholders (URL-encoded) and frames the page it opens.
    external_views = [
        {
            "name": "Maggy experiments",
            "href": f"{_base_path()}{URL_PREFIX}/experiments",
            "destination": "nav",
            "url_route": "maggy",
            "category": "browse",
        },
        {
            "name": "Maggy experiment",
            "href": f"{_base_path()}{URL_PREFIX}/task/" + TASK_PLACEHOLDERS,
            "destination": "task_instance",
            "url_route": "maggy-task",
        },
    ]
