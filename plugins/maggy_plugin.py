"""The Airflow plugin: maggy's pages in the API server, and the task's extra link.

Loaded through the ``airflow.plugins`` entry point of the installed package, or
from this folder when it is Airflow's plugins folder. The pages read the results
folder (``$MAGGY_RESULTS_DIR``, else ``$AIRFLOW_HOME/maggy-results``), the same
default as the operator's.

Pages (under ``/maggy``): ``/experiments`` lists experiments, ``/experiments/<id>``
shows one (status, best, every trial), ``/api/experiments/<id>`` returns its
``result.json``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from maggy_airflow.operators.links import URL_PREFIX, MaggyExperimentLink
from maggy_airflow.operators.maggy_operator import default_results_dir

_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


def _result(experiment_id: str) -> dict[str, Any] | None:
    """The experiment's ``result.json``; while it runs (or if its driver was
    killed), what its journal says so far."""
    if not _ID.fullmatch(experiment_id) or experiment_id in (".", ".."):
        return None
    folder = Path(default_results_dir()) / experiment_id
    try:
        return json.loads((folder / "result.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError):
        pass
    from maggy_core.results import ResultStore

    if not (folder / "journal.jsonl").exists():
        return None
    records = ResultStore.read_journal_at(folder)
    spec = next((r["spec"] for r in records if r.get("type") == "experiment"), {})
    trials = {r["trial_id"]: r["trial"] for r in records if r.get("type") == "trial_ended"}
    ended = next((r for r in reversed(records) if r.get("type") == "ended"), None)
    return {
        "experiment_id": experiment_id,
        "status": ended["status"] if ended else "running",
        "reason": ended["reason"] if ended else "no result.json yet: trials ended so far",
        "optimization_key": spec.get("optimization_key", "metric"),
        "num_trials": len(trials),
        "best": None,
        "trials": list(trials.values()),
    }


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2937}"
        "table{border-collapse:collapse}"
        "td,th{padding:.25rem .75rem;border-bottom:1px solid #e5e7eb;"
        "text-align:left;font-size:.9rem}"
        "th{background:#f3f4f6}.finished{color:#047857}"
        ".failed{color:#b91c1c}.early_stopped{color:#92400e}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _experiment_row(experiment_id: str, result: dict[str, Any]) -> str:
    best = result.get("best") or {}
    status = html.escape(str(result["status"]))
    name = html.escape(experiment_id)
    return (
        f"<tr><td><a href='{URL_PREFIX}/experiments/{name}'>{name}</a></td>"
        f"<td class='{status}'>{status}</td><td>{result['num_trials']}</td>"
        f"<td>{html.escape(str(best.get('metric', '')))}</td></tr>"
    )


def _trial_row(t: dict[str, Any]) -> str:
    metric = "" if t["metric"] is None else f"{t['metric']:.6g}"
    seconds = "" if t["duration"] is None else f"{t['duration']:.2f}"
    status = html.escape(t["status"])
    return (
        f"<tr><td>{html.escape(t['trial_id'])}</td><td class='{status}'>{status}</td>"
        f"<td>{metric}</td><td>{seconds}</td>"
        f"<td><code>{html.escape(json.dumps(t['params']))}</code></td></tr>"
    )


def create_app() -> Any:
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse

    app = FastAPI(title="maggy", description="maggy experiments")

    @app.get("/experiments", response_class=HTMLResponse)
    def experiments() -> str:
        root = Path(default_results_dir())
        rows = []
        for path in sorted(
            root.glob("*/result.json"), key=lambda p: p.stat().st_mtime, reverse=True
        ):
            result = _result(path.parent.name)
            if result is not None:
                rows.append(_experiment_row(path.parent.name, result))
        table = "<table><tr><th>experiment</th><th>status</th><th>trials</th><th>best</th></tr>"
        return _page("maggy experiments", table + "".join(rows) + "</table>")

    @app.get("/experiments/{experiment_id}", response_class=HTMLResponse)
    def experiment(experiment_id: str) -> str:
        result = _result(experiment_id)
        if result is None:
            raise HTTPException(
                404, f"no results for experiment {experiment_id!r} in {default_results_dir()}"
            )
        key = result["optimization_key"]
        best = result.get("best") or {}
        status = html.escape(result["status"])
        head = (
            f"<p>status <b class='{status}'>{status}</b>"
            f"{' (' + html.escape(result['reason']) + ')' if result.get('reason') else ''}; "
            f"{result['num_trials']} trials; "
            f"best {html.escape(str(best.get('trial_id', '-')))} "
            f"{html.escape(key)}={html.escape(str(best.get('metric', '-')))} "
            f"<code>{html.escape(json.dumps(best.get('params', {})))}</code></p>"
        )
        rows = "".join(_trial_row(t) for t in result["trials"])
        table = (
            "<table><tr><th>trial</th><th>status</th>"
            f"<th>{html.escape(key)}</th><th>seconds</th><th>params</th></tr>{rows}</table>"
        )
        return _page(f"maggy experiment {experiment_id}", head + table)

    @app.get("/api/experiments/{experiment_id}")
    def experiment_json(experiment_id: str) -> dict[str, Any]:
        result = _result(experiment_id)
        if result is None:
            raise HTTPException(404, f"no results for experiment {experiment_id!r}")
        return result

    return app


class MaggyPlugin(AirflowPlugin):
    """Registers maggy's pages and the "Maggy experiment" link of MaggyOperator."""

    name = "maggy"
    operator_extra_links = [MaggyExperimentLink()]
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "maggy"}]
