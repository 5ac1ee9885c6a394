"""The FastAPI app of maggy's pages and JSON API, mounted at ``/maggy`` by Airflow's API server.

Imported by the API server only (through :class:`maggy_airflow.plugins.maggy_plugin.LazyApp`
at its first request), never by a task process. Pages are Jinja2 templates with
autoescape on; the charts and the trials table are drawn in the browser by the
bundled ECharts (``static/echarts.min.js``) and ``static/maggy.js`` from the same
JSON the API serves, which they poll while the experiment runs. Every response
carries a Content-Security-Policy that allows scripts from this app only.

Routes (below ``/maggy``); every one needs a signed-in user (401), and each
experiment the read permission of its DAG (403; see :mod:`._access`):

- ``GET /experiments``: the list (``dag_id``, ``status``, ``page`` parameters);
- ``GET /experiments/<id>``: one experiment; ``/trials/<trial_id>``: one trial;
- ``GET /task/<dag_id>/<run_id>/<task_id>/<map_index>``: the task instance's tab,
  a redirect to its experiment's page (the operator's extra link goes there too);
- ``GET /experiments/<id>/ablation.svg`` and ``ablation.csv``: a study's files;
- ``GET /api/experiments``, ``/api/experiments/<id>`` (``result.json``, or the
  journal's view while it runs), ``/api/experiments/<id>/live`` (the same with the
  running trials' curves so far), ``/importance``, ``/ablation-history``;
- ``POST /api/experiments/<id>/stop`` and ``/api/experiments/<id>/trials/<trial_id>/stop``:
  need the DAG's edit permission and, with a session cookie, the CSRF token.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from maggy_airflow.operators.links import experiment_id_for
from maggy_airflow.plugins import _data
from maggy_airflow.plugins._access import (
    CSRF_COOKIE,
    CSRF_HEADER,
    Access,
    csrf_problem,
    csrf_token,
)

HERE = Path(__file__).resolve().parent
#: Experiments per page of the list.
PER_PAGE = 25
#: Milliseconds between two polls of a running experiment's JSON.
POLL_MS = 2000
#: Files of an ablation study that the plugin serves, with their content types.
_ABLATION_FILES = {"ablation.svg": "image/svg+xml", "ablation.csv": "text/csv; charset=utf-8"}
#: The bundled files under /static, with their content types.
_STATIC = {
    "echarts.min.js": "text/javascript; charset=utf-8",
    "maggy.js": "text/javascript; charset=utf-8",
    "maggy.css": "text/css; charset=utf-8",
}
#: Scripts only from this app; styles inline too (ECharts sets style attributes);
#: framed by the Airflow UI (same origin) and nobody else.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(seconds: Any) -> str:
    """Seconds since the epoch as a UTC date and time; ``-`` for anything else."""
    from datetime import UTC, datetime

    if not _data.number(seconds):
        return "-"
    return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: Any, fmt: str = ".6g") -> str:
    """A number for a cell; ``-`` for none; anything else as its text (escaped by Jinja)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return str(value)
    return format(value, fmt)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str)


_templates.filters.update(when=_when, num=_num, pretty=_pretty)


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as ``None`` (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _redis_client() -> Any:
    """A client of the Redis the experiments use: the connection ``[maggy]
    redis_conn_id`` (default ``redis_default``), else ``MAGGY_REDIS_URL``, else the
    engine's default server."""
    from airflow.configuration import conf

    from maggy_airflow.operators.hooks import redis_url_from_connection
    from maggy_core.channel import connect
    from maggy_core.redis_server import DEFAULT_URL

    conn_id = conf.get("maggy", "redis_conn_id", fallback="redis_default")
    try:
        url = redis_url_from_connection(conn_id)
    except Exception:  # noqa: BLE001 - an unreadable connection: fall back as the operator does
        url = None
    return connect(url or os.environ.get("MAGGY_REDIS_URL") or DEFAULT_URL)


class _Page:
    """What every page's template needs: URLs under the mount path, the user, the token."""

    def __init__(self, request: Request, access: Access) -> None:
        self.root = str(request.scope.get("root_path", "")).rstrip("/")
        self.access = access
        self.csrf = csrf_token(access.name)

    def experiments(self) -> str:
        return f"{self.root}/experiments"

    def experiment(self, experiment_id: str) -> str:
        return f"{self.root}/experiments/{quote(experiment_id, safe='')}"

    def trial(self, experiment_id: str, trial_id: str) -> str:
        return f"{self.experiment(experiment_id)}/trials/{quote(trial_id, safe='')}"

    def api(self, experiment_id: str) -> str:
        return f"{self.root}/api/experiments/{quote(experiment_id, safe='')}"

    def static(self, name: str) -> str:
        return f"{self.root}/static/{name}"

    def render(self, template: str, **context: Any) -> HTMLResponse:
        html = _templates.get_template(template).render(
            page=self, user=self.access.name, csrf=self.csrf, poll_ms=POLL_MS, **context
        )
        response = HTMLResponse(html, headers={"Content-Security-Policy": _CSP})
        response.set_cookie(
            CSRF_COOKIE,
            self.csrf,
            path=self.root or "/",
            httponly=True,
            samesite="strict",
            max_age=12 * 3600,
        )
        return response


def _live(result: dict[str, Any], experiment_id: str) -> dict[str, Any]:
    """``result`` with the curves so far of its running trials (from Redis)."""
    running = {
        t["trial_id"]
        for t in result.get("trials") or []
        if isinstance(t, dict)
        and t.get("status") == "running"
        and isinstance(t.get("trial_id"), str)
    }
    if not running or result.get("status") != "running":
        return result
    try:
        client = _redis_client()
        try:
            histories = _data.live_histories(client, experiment_id, running)
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - Redis away: the page still shows the journal
        return {**result, "live_error": f"live curves unavailable: {type(exc).__name__}"}
    trials = [
        {**t, "history": histories[t["trial_id"]]} if t.get("trial_id") in histories else t
        for t in result.get("trials") or []
    ]
    return {**result, "trials": trials}


def _access(user: Annotated[Any, Depends(get_user)]) -> Access:
    return Access(user)


# At module level: FastAPI resolves the handlers' annotations (strings, with the
# __future__ import) in this module's globals.
Who = Annotated[Access, Depends(_access)]


def create_app() -> FastAPI:
    """The app of the pages and the JSON API (see the module's docstring)."""
    # No /docs, /redoc or /openapi.json: the API is documented in docs/ui.md, and
    # its schema is not for whoever reaches the API server.
    app = FastAPI(
        title="maggy",
        dependencies=[Depends(get_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(_data.ResultsStoreError)
    async def store_unavailable(request: Request, exc: _data.ResultsStoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    def found(experiment_id: str, who: Access) -> tuple[dict[str, Any], _data.Origin | None]:
        result = _data.load_result(experiment_id)
        if result is None:
            raise HTTPException(404, f"no results for experiment {experiment_id!r}")
        where = _data.origin(result)
        if not who.can_read(where):
            what = f"DAG {where.dag_id!r}" if where else "experiments started outside Airflow"
            raise HTTPException(403, f"{who.name} may not read {what}")
        return result, where

    def listing(who: Access, dag_id: str | None, status: str | None, page: int) -> dict[str, Any]:
        rows = []
        for experiment_id in _data.experiment_ids():
            result = _data.load_result(experiment_id)
            if result is not None:
                rows.append(_data.summary(experiment_id, result))
        readable = who.readable_dag_ids({r["dag_id"] for r in rows if r["dag_id"]})
        outside = who.can_read(None)
        rows = [r for r in rows if (outside if r["dag_id"] is None else r["dag_id"] in readable)]
        dags = {r["dag_id"] or "" for r in rows}
        rows = [
            r
            for r in rows
            if (dag_id is None or (r["dag_id"] or "") == dag_id)
            and (not status or r["status"] == status)
        ]
        pages = max(1, math.ceil(len(rows) / PER_PAGE))
        page = min(max(page, 1), pages)
        return {
            "experiments": _json_safe(rows[(page - 1) * PER_PAGE : page * PER_PAGE]),
            "total": len(rows),
            "page": page,
            "pages": pages,
            "per_page": PER_PAGE,
            "dag_ids": sorted(dags),
        }

    # ---------------------------------------------------------------- pages

    @app.get("/experiments", response_class=HTMLResponse)
    def experiments(
        request: Request,
        who: Who,
        dag_id: str | None = None,
        status: str | None = None,
        page: Annotated[int, Query(ge=1)] = 1,
    ) -> HTMLResponse:
        data = listing(who, dag_id or None, status or None, page)
        return _Page(request, who).render(
            "experiments.html",
            data=data,
            dag_id=dag_id or "",
            status=status or "",
            statuses=("running", "finished", "stopped", "failed"),
        )

    @app.get("/experiments/{experiment_id}", response_class=HTMLResponse)
    def experiment(experiment_id: str, request: Request, who: Who) -> HTMLResponse:
        result, where = found(experiment_id, who)
        spec = result.get("spec") if isinstance(result.get("spec"), dict) else {}
        return _Page(request, who).render(
            "experiment.html",
            experiment_id=experiment_id,
            result=result,
            origin=where,
            kind=_data.kind(result),
            spec=spec,
            searchspace=spec.get("searchspace") or {},
            ablation=result.get("ablation"),
            has_svg=_data.is_file(experiment_id, "ablation.svg"),
            can_edit=who.can_edit(where),
            data=_json_safe(_data.thinned(_live(result, experiment_id))),
        )

    @app.get("/experiments/{experiment_id}/trials/{trial_id}", response_class=HTMLResponse)
    def trial(experiment_id: str, trial_id: str, request: Request, who: Who) -> HTMLResponse:
        if not _data.valid_id(trial_id):
            raise HTTPException(404, f"no trial {trial_id!r}")
        result, where = found(experiment_id, who)
        result = _live(result, experiment_id)
        match = next((t for t in result.get("trials") or [] if t.get("trial_id") == trial_id), None)
        if match is None:
            raise HTTPException(404, f"experiment {experiment_id!r} has no trial {trial_id!r}")
        log = _data.tail(experiment_id, "trials", f"{trial_id}.log")
        return _Page(request, who).render(
            "trial.html",
            experiment_id=experiment_id,
            result=result,
            trial=match,
            best_id=(result.get("best") or {}).get("trial_id"),
            log=log,
            log_lines=_data.LOG_LINES,
            can_edit=who.can_edit(where),
            data=_json_safe({"experiment": {"status": result.get("status")}, "trial": match}),
        )

    @app.get("/task/{dag_id}/{run_id}/{task_id}/{map_index}")
    def task_tab(dag_id: str, run_id: str, task_id: str, map_index: str, request: Request):
        try:
            index = int(map_index)
        except ValueError:
            index = -1  # the UI leaves the placeholder as it is for an unmapped task
        experiment_id = experiment_id_for(dag_id, task_id, run_id, index)
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return RedirectResponse(f"{root}/experiments/{quote(experiment_id, safe='')}", 307)

    def ablation_file(experiment_id: str, name: str, who: Access) -> Response:
        found(experiment_id, who)
        data = _data.read_bytes(experiment_id, name)
        if data is None:
            raise HTTPException(
                404,
                f"no {name} for experiment {experiment_id!r}: it is not an ablation study, "
                "it has not ended, or its analysis failed",
            )
        return Response(
            data,
            media_type=_ABLATION_FILES[name],
            # Opened on its own, an SVG is a document of this origin: allow it no
            # script and no fetch, whatever the file holds.
            headers={
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @app.get("/experiments/{experiment_id}/ablation.svg")
    def ablation_svg(experiment_id: str, who: Who) -> Response:
        return ablation_file(experiment_id, "ablation.svg", who)

    @app.get("/experiments/{experiment_id}/ablation.csv")
    def ablation_csv(experiment_id: str, who: Who) -> Response:
        return ablation_file(experiment_id, "ablation.csv", who)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(
            (HERE / "static" / name).read_bytes(),
            media_type=_STATIC[name],
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    # ---------------------------------------------------------------- JSON

    @app.get("/api/experiments")
    def experiments_json(
        who: Who,
        dag_id: str | None = None,
        status: str | None = None,
        page: Annotated[int, Query(ge=1)] = 1,
    ) -> dict[str, Any]:
        return listing(who, dag_id, status or None, page)

    @app.get("/api/experiments/{experiment_id}")
    def experiment_json(experiment_id: str, who: Who) -> Response:
        result, _ = found(experiment_id, who)
        # As stored: the bytes of result.json when there is one.
        raw = _data.read_bytes(experiment_id, "result.json")
        if raw is not None and isinstance(_data.read_json(experiment_id, "result.json"), dict):
            return Response(raw, media_type="application/json")
        return Response(json.dumps(_json_safe(result)), media_type="application/json")

    @app.get("/api/experiments/{experiment_id}/live")
    def experiment_live(experiment_id: str, who: Who) -> dict[str, Any]:
        result, where = found(experiment_id, who)
        live = _data.thinned(_live(result, experiment_id))
        return _json_safe({**live, "can_edit": who.can_edit(where)})

    @app.get("/api/experiments/{experiment_id}/importance")
    def experiment_importance(experiment_id: str, who: Who) -> dict[str, Any]:
        result, _ = found(experiment_id, who)
        return {"importance": _data.importance(result)}

    @app.get("/api/experiments/{experiment_id}/ablation-history")
    def experiment_history(experiment_id: str, who: Who) -> dict[str, Any]:
        result, _ = found(experiment_id, who)
        return _json_safe({"name": result.get("name"), "runs": _data.ablation_history(result)})

    def editable(experiment_id: str, request: Request, who: Access) -> dict[str, Any]:
        problem = csrf_problem(request, who.name)
        if problem is not None:
            raise HTTPException(403, problem)
        result, where = found(experiment_id, who)
        if not who.can_edit(where):
            what = f"DAG {where.dag_id!r}" if where else "experiments started outside Airflow"
            raise HTTPException(403, f"{who.name} may not stop experiments of {what}")
        if result.get("status") != "running":
            raise HTTPException(409, f"experiment {experiment_id!r} is not running")
        return result

    @app.post("/api/experiments/{experiment_id}/stop")
    def stop_experiment(experiment_id: str, request: Request, who: Who) -> dict[str, Any]:
        from maggy_core.channel import request_experiment_stop

        editable(experiment_id, request, who)
        reason = f"stopped from the UI by {who.name}"
        client = _redis_client()
        try:
            accepted = request_experiment_stop(client, experiment_id, reason)
        finally:
            client.close()
        if not accepted:
            raise HTTPException(409, f"experiment {experiment_id!r} is not running in Redis")
        return {"experiment_id": experiment_id, "requested": True, "reason": reason}

    @app.post("/api/experiments/{experiment_id}/trials/{trial_id}/stop")
    def stop_trial(experiment_id: str, trial_id: str, request: Request, who: Who) -> dict[str, Any]:
        result = editable(experiment_id, request, who)
        trial = next((t for t in result.get("trials") or [] if t.get("trial_id") == trial_id), None)
        if trial is None:
            raise HTTPException(404, f"experiment {experiment_id!r} has no trial {trial_id!r}")
        if trial.get("status") != "running":
            raise HTTPException(409, f"trial {trial_id!r} is {trial.get('status')}, not running")
        from maggy_core.channel import request_trial_stop

        reason = f"stopped from the UI by {who.name}"
        client = _redis_client()
        try:
            accepted = request_trial_stop(client, experiment_id, trial_id, reason)
        finally:
            client.close()
        if not accepted:
            raise HTTPException(409, f"experiment {experiment_id!r} is not running in Redis")
        return {
            "experiment_id": experiment_id,
            "trial_id": trial_id,
            "requested": True,
            "reason": reason,
        }

    return app


__all__ = ["CSRF_HEADER", "create_app"]
