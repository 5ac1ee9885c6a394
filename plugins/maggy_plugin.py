"""The Airflow plugin: maggy's pages in the API server, and the task's extra link.

Loaded through the ``airflow.plugins`` entry point of the installed package, or
from this folder when it is Airflow's plugins folder. The pages read the results
folder (``$MAGGY_RESULTS_DIR``, else ``$AIRFLOW_HOME/maggy-results``), the same
default as the operator's.

Pages (under ``/maggy``):

- ``/experiments``: every experiment, ended or running;
- ``/experiments/<id>``: one experiment: status, best, learning curves, the
  ablation study's table and chart (if any), every trial; it reloads itself while
  the experiment runs;
- ``/experiments/<id>/trials/<trial_id>``: one trial: params, outcome, error and
  traceback, its curve and the last lines of its log;
- ``/experiments/<id>/ablation.svg`` and ``ablation.csv``: the study's chart and table;
- ``/api/experiments/<id>``: the experiment's ``result.json``.

The plugin also puts "Maggy experiments" in the Airflow UI's navigation.
Everything read from the results folder is escaped before it goes into a page.

Every page asks who is there as Airflow's own API does (``get_user``: the JWT of
the ``Authorization: Bearer`` header, else the session cookie the UI's login sets),
and answers 401 to nobody: trial parameters, logs and tracebacks are not for
whoever reaches the API server.
"""

from __future__ import annotations

import html
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from airflow.plugins_manager import AirflowPlugin

# At module level, not in create_app: FastAPI resolves the handlers' annotations
# (strings, with the __future__ import) in this module's globals.
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

# Absolute import: when this file is loaded from Airflow's plugins folder it is a
# top-level module, and a relative import would fail.
from maggy_airflow.operators.links import URL_PREFIX, MaggyExperimentLink
from maggy_airflow.operators.maggy_operator import default_results_dir
from maggy_airflow.plugins._curves import learning_curves_svg

_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
#: Seconds between reloads of a page whose experiment (or trial) is running.
REFRESH_SECONDS = 5
#: Lines of a trial's log shown on its page (the end of the log).
LOG_LINES = 500
#: Files of an ablation study that the plugin serves, with their content types.
_ABLATION_FILES = {"ablation.svg": "image/svg+xml", "ablation.csv": "text/csv; charset=utf-8"}
_TERMINAL = ("finished", "early_stopped", "failed")


def _valid_id(value: str) -> bool:
    """Whether ``value`` can name an experiment or a trial: one path segment of
    safe characters, never ``.`` or ``..``, so it cannot leave the results folder."""
    return bool(_ID.fullmatch(value)) and value not in (".", "..")


def _folder(experiment_id: str) -> Path | None:
    """The experiment's results folder, or ``None`` for an id that is not safe."""
    if not _valid_id(experiment_id):
        return None
    return Path(default_results_dir()) / experiment_id


def _result(experiment_id: str) -> dict[str, Any] | None:
    """The experiment's ``result.json``; while it runs (or if its driver was
    killed), what its journal says so far."""
    folder = _folder(experiment_id)
    if folder is None:
        return None
    # A resumed run moves the earlier run's result.json aside as it starts
    # (ResultStore.retire_result), so a result.json is always the latest run's.
    try:
        result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _journal_result(experiment_id, folder)
    return result if isinstance(result, dict) else None


def _journal_result(experiment_id: str, folder: Path) -> dict[str, Any] | None:
    """A partial result rebuilt from ``journal.jsonl`` (the engine's one reader of
    the journal): the ended trials, the ones that started and have not ended, and
    the best so far."""
    from maggy_core.results import result_from_journal

    return result_from_journal(folder)


def _number(value: Any) -> bool:
    """Whether ``value`` is a finite number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _tail(path: Path, lines: int) -> tuple[list[str], bool]:
    """The last ``lines`` lines of a text file, read from its end (a trial's log
    can be long), and whether earlier lines were left out."""
    block = min(65536, 4096 + 256 * lines)  # the last line alone needs little
    with path.open("rb") as fh:
        end = fh.seek(0, 2)
        data = b""
        position = end
        # One newline more than the lines wanted tells where the first kept line starts.
        while position > 0 and data.count(b"\n") <= lines:
            step = min(block, position)
            position -= step
            fh.seek(position)
            data = fh.read(step) + data
    text = data.decode("utf-8", errors="replace").split("\n")
    if text and text[-1] == "":
        text.pop()  # the newline that ends the last line
    # Stopping before the file's start means the first line read is a fragment,
    # and that there are more lines than wanted (the loop read one newline more).
    cut = position > 0 or len(text) > lines
    return text[-lines:], cut


# ----------------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    """``value`` as escaped HTML text (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def _num(value: Any, fmt: str = ".6g") -> str:
    """A number for a table cell; ``-`` for none, the escaped text for anything else."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)
    return _e(format(value, fmt))


def _json(value: Any) -> str:
    """``value`` as escaped JSON text (params, metrics)."""
    return _e(json.dumps(value, sort_keys=True, default=str))


def _when(seconds: Any) -> str:
    """Seconds since the epoch as a UTC date and time; ``-`` for anything else."""
    if not _number(seconds):
        return "-"
    return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2937}"
    "a{color:#1d4ed8}nav{margin-bottom:1rem;font-size:.9rem}"
    "table{border-collapse:collapse;margin-bottom:1rem}"
    "td,th{padding:.25rem .75rem;border-bottom:1px solid #e5e7eb;"
    "text-align:left;font-size:.9rem;vertical-align:top}"
    "th{background:#f3f4f6}tr.best td,tr.significant td{background:#eff6ff}"
    ".finished{color:#047857}.failed{color:#b91c1c}.early_stopped{color:#92400e}"
    ".running,.pending{color:#4b5563}.note{color:#6b7280;font-size:.85rem}"
    "pre{background:#f9fafb;border:1px solid #e5e7eb;padding:.5rem;overflow:auto;"
    "max-height:40rem;font-size:.8rem}svg.curves,img.ablation{max-width:100%;height:auto}"
)


def _page(title: str, body: str, *, refresh: int | None = None, nav: str = "") -> str:
    """A whole page; ``body`` and ``nav`` are HTML already escaped, ``title`` text.

    Args:
        title: Text of the title and heading.
        body: The page's content.
        refresh: Reload the page every this many seconds (a running experiment).
        nav: Links above the heading.
    """
    meta = f"<meta http-equiv='refresh' content='{int(refresh)}'>" if refresh else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>{meta}"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{f'<nav>{nav}</nav>' if nav else ''}<h1>{_e(title)}</h1>{body}</body></html>"
    )


class _Urls:
    """The pages' URLs, under the path the app is mounted at (``/maggy``, below
    the API server's base path when it has one)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def experiments(self) -> str:
        return f"{self.root}/experiments"

    def experiment(self, experiment_id: str) -> str:
        return f"{self.root}/experiments/{quote(experiment_id, safe='')}"

    def trial(self, experiment_id: str, trial_id: str) -> str:
        return f"{self.experiment(experiment_id)}/trials/{quote(trial_id, safe='')}"

    def file(self, experiment_id: str, name: str) -> str:
        return f"{self.experiment(experiment_id)}/{name}"

    def api(self, experiment_id: str) -> str:
        return f"{self.root}/api/experiments/{quote(experiment_id, safe='')}"


def _experiment_row(urls: _Urls, experiment_id: str, result: dict[str, Any]) -> str:
    best = result.get("best") or {}
    status = _e(result.get("status", ""))
    return (
        f"<tr><td><a href='{_e(urls.experiment(experiment_id))}'>{_e(experiment_id)}</a></td>"
        f"<td>{_e(result.get('name') or '')}</td>"
        f"<td class='{status}'>{status}</td><td>{_num(result.get('num_trials'))}</td>"
        f"<td>{_num(best.get('metric'))}</td><td>{_when(result.get('started'))}</td></tr>"
    )


def _trial_row(urls: _Urls, experiment_id: str, t: dict[str, Any], best_id: Any) -> str:
    trial_id = str(t.get("trial_id", ""))
    status = _e(t.get("status", ""))
    # Trial ids come from the coordinator ("t0007"); one that could not be a
    # page's URL is shown without a link rather than linked somewhere wrong.
    name = (
        f"<a href='{_e(urls.trial(experiment_id, trial_id))}'>{_e(trial_id)}</a>"
        if _valid_id(trial_id)
        else _e(trial_id)
    )
    duration = t.get("duration")
    return (
        f"<tr{' class=best' if trial_id == best_id else ''}><td>{name}</td>"
        f"<td class='{status}'>{status}</td><td>{_num(t.get('metric'))}</td>"
        f"<td>{_num(duration, '.2f') if _number(duration) else '-'}</td>"
        f"<td>{_num(t.get('attempts'))}</td>"
        f"<td><code>{_json(t.get('params', {}))}</code></td></tr>"
    )


def _counts(result: dict[str, Any]) -> str:
    trials = result.get("trials") or []
    counts = result.get("counts") or {
        s: sum(1 for t in trials if t.get("status") == s) for s in _TERMINAL
    }
    parts = [f"{_num(counts.get(s, 0))} {s.replace('_', '-')}" for s in _TERMINAL]
    running = sum(1 for t in trials if t.get("status") == "running")
    if running:
        parts.append(f"{running} running")
    return ", ".join(parts)


def _ablation_section(
    urls: _Urls, experiment_id: str, folder: Path, ablation: Any, key: str
) -> str:
    """The study's analysis: a table of the components, most helpful first (as
    stored), its chart, and the CSV; or why the analysis failed."""
    head = "<h2>Ablation study</h2>"
    if isinstance(ablation, dict) and "error" in ablation:
        return head + f"<p class='failed'>The analysis failed: {_e(ablation['error'])}</p>"
    # result.json holds the analysis dict; a bare list of components is read too.
    components = ablation.get("components") if isinstance(ablation, dict) else ablation
    if not isinstance(components, list):
        return head + "<p class='note'>The ablation block of result.json is not readable.</p>"
    info = ablation if isinstance(ablation, dict) else {}
    base = info.get("base") or {}
    confidence = info.get("confidence", 0.95)
    level = f"{float(confidence):.0%}" if _number(confidence) else _e(confidence)
    runs = info.get("history_runs")
    earlier = f"; compared with {_num(runs)} earlier run(s)" if runs else ""
    parts = [
        head,
        f"<p>Base: {_e(key)} = {_num(base.get('metric_mean'), '.4g')} "
        f"(mean of {_num(base.get('n', 0))} trials). A positive delta means the component "
        f"helps: leaving it out makes {_e(key)} worse. {level} intervals; "
        f"{_e(info.get('test', 'paired t-test, Holm-adjusted'))}{earlier}.</p>",
        "<table><tr><th>#</th><th>component</th><th>kind</th><th>pairs</th>"
        f"<th>{_e(key)} without it</th><th>delta</th><th>interval</th><th>p</th>"
        "<th>p (adjusted)</th><th>significant</th><th>change since last run</th></tr>",
    ]
    for i, c in enumerate(components, start=1):
        if not isinstance(c, dict):
            continue
        changed = ""
        if c.get("changed"):
            changed = f"<b>changed</b> (was {_num(c.get('previous_delta'), '+.4g')})"
        elif c.get("previous_delta") is not None:
            changed = f"no (was {_num(c.get('previous_delta'), '+.4g')})"
        interval = (
            f"[{_num(c.get('ci_low'), '+.4g')}, {_num(c.get('ci_high'), '+.4g')}]"
            if c.get("ci_low") is not None and c.get("ci_high") is not None
            else "-"
        )
        significant = bool(c.get("significant"))
        parts.append(
            f"<tr{' class=significant' if significant else ''}><td>{_num(c.get('rank', i))}</td>"
            f"<td>{_e(c.get('component', ''))}</td><td>{_e(c.get('kind', ''))}</td>"
            f"<td>{_num(c.get('n'))}</td><td>{_num(c.get('metric_mean'), '.4g')}</td>"
            f"<td>{_num(c.get('delta'), '+.4g')}</td><td>{interval}</td>"
            f"<td>{_num(c.get('p_value'), '.3g')}</td><td>{_num(c.get('p_adjusted'), '.3g')}</td>"
            f"<td>{'yes' if significant else 'no'}</td><td>{changed}</td></tr>"
        )
    parts.append("</table>")
    if not components:
        parts.append("<p class='note'>The study has no component.</p>")
    if (folder / "ablation.svg").is_file():
        src = _e(urls.file(experiment_id, "ablation.svg"))
        parts.append(
            f"<p><img class='ablation' src='{src}' alt='effect of each component, "
            f"with its interval'></p>"
        )
    if (folder / "ablation.csv").is_file():
        parts.append(
            f"<p><a href='{_e(urls.file(experiment_id, 'ablation.csv'))}'>ablation.csv</a></p>"
        )
    return "".join(parts)


def _experiment_page(urls: _Urls, experiment_id: str, result: dict[str, Any]) -> str:
    folder = Path(default_results_dir()) / experiment_id
    key = str(result.get("optimization_key", "metric"))
    best = result.get("best") or {}
    best_id = best.get("trial_id")
    status = _e(result.get("status", ""))
    running = result.get("status") == "running"
    trials = [t for t in result.get("trials") or [] if isinstance(t, dict)]
    reason = f" ({_e(result['reason'])})" if result.get("reason") else ""
    body = [
        f"<p>status <b class='{status}'>{status}</b>{reason}; "
        f"{_num(result.get('num_trials'))} trials ended: {_counts(result)}.</p>",
        f"<p>best: {_e(best_id or '-')} {_e(key)}={_num(best.get('metric'))} "
        f"<code>{_json(best.get('params', {}))}</code></p>"
        if best
        else "<p>best: none yet.</p>",
    ]
    if running:
        body.append(
            f"<p class='note'>Running: this page reloads every {REFRESH_SECONDS} s. "
            "A trial's curve appears when the trial ends.</p>"
        )
    chart = learning_curves_svg(
        trials, metric=key, best_id=best_id, href=lambda t: urls.trial(experiment_id, t)
    )
    if chart:
        body.append(f"<h2>Learning curves</h2>{chart}")
    if result.get("ablation") is not None:
        body.append(_ablation_section(urls, experiment_id, folder, result["ablation"], key))
    rows = "".join(_trial_row(urls, experiment_id, t, best_id) for t in trials)
    body.append(
        "<h2>Trials</h2><table><tr><th>trial</th><th>status</th>"
        f"<th>{_e(key)}</th><th>seconds</th><th>attempts</th><th>params</th></tr>{rows}</table>"
        f"<p class='note'><a href='{_e(urls.api(experiment_id))}'>result.json</a></p>"
    )
    return _page(
        f"maggy experiment {experiment_id}",
        "".join(body),
        refresh=REFRESH_SECONDS if running else None,
        nav=f"<a href='{_e(urls.experiments())}'>all experiments</a>",
    )


def _trial_page(urls: _Urls, experiment_id: str, result: dict[str, Any], t: dict[str, Any]) -> str:
    trial_id = str(t["trial_id"])
    key = str(result.get("optimization_key", "metric"))
    best_id = (result.get("best") or {}).get("trial_id")
    status = _e(t.get("status", ""))
    duration = t.get("duration")
    rows = [
        ("status", f"<span class='{status}'>{status}</span>"),
        (_e(key), _num(t.get("metric"))),
        ("other metrics", f"<code>{_json(t.get('metrics') or {})}</code>"),
        ("params", f"<code>{_json(t.get('params', {}))}</code>"),
        ("seconds", _num(duration, ".2f") if _number(duration) else "-"),
        ("started", _when(t.get("start"))),
        ("attempts", _num(t.get("attempts"))),
        ("worker", _e(t.get("worker") or "-")),
    ]
    if t.get("budget") is not None:
        rows.append(("budget", _num(t["budget"])))
    if t.get("info"):
        rows.append(("info", f"<code>{_json(t['info'])}</code>"))
    if t.get("error"):
        rows.append(("error", f"<span class='failed'>{_e(t['error'])}</span>"))
    body = ["<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"]
    if trial_id == best_id:
        body.insert(0, "<p><b>The best trial of the experiment.</b></p>")
    if t.get("traceback"):
        body.append(f"<h2>Traceback</h2><pre>{_e(t['traceback'])}</pre>")
    chart = learning_curves_svg([t], metric=key, best_id=best_id)
    body.append(f"<h2>Curve</h2>{chart}" if chart else "<p class='note'>No metric history.</p>")
    log = Path(default_results_dir()) / experiment_id / "trials" / f"{trial_id}.log"
    try:
        lines, cut = _tail(log, LOG_LINES)
    except OSError:
        body.append("<h2>Log</h2><p class='note'>No log lines.</p>")
    else:
        note = f"<p class='note'>The last {LOG_LINES} lines.</p>" if cut else ""
        body.append(f"<h2>Log</h2>{note}<pre>{_e(chr(10).join(lines))}</pre>")
    live = t.get("status") in ("running", "pending") and result.get("status") == "running"
    return _page(
        f"maggy trial {trial_id} of {experiment_id}",
        "".join(body),
        refresh=REFRESH_SECONDS if live else None,
        nav=(
            f"<a href='{_e(urls.experiments())}'>all experiments</a> / "
            f"<a href='{_e(urls.experiment(experiment_id))}'>{_e(experiment_id)}</a>"
        ),
    )


# ----------------------------------------------------------------------- app


def create_app() -> FastAPI:
    """The FastAPI app of the pages (mounted by Airflow's API server at ``/maggy``)."""
    from airflow.api_fastapi.core_api.security import get_user

    app = FastAPI(title="maggy", description="maggy experiments", dependencies=[Depends(get_user)])

    def urls_for(request: Request) -> _Urls:
        # The mount path (and the API server's base path) is the root path.
        return _Urls(request.scope.get("root_path", ""))

    def found(experiment_id: str) -> dict[str, Any]:
        result = _result(experiment_id)
        if result is None:
            raise HTTPException(
                404, f"no results for experiment {experiment_id!r} in {default_results_dir()}"
            )
        return result

    @app.get("/experiments", response_class=HTMLResponse)
    def experiments(request: Request) -> str:
        urls = urls_for(request)
        root = Path(default_results_dir())
        folders = {p.parent for p in root.glob("*/result.json")}
        folders |= {p.parent for p in root.glob("*/journal.jsonl")}  # still running

        def changed(folder: Path) -> float:
            try:
                return max(p.stat().st_mtime for p in folder.iterdir())
            except (OSError, ValueError):
                return 0.0

        rows, running = [], False
        for folder in sorted(folders, key=changed, reverse=True):
            result = _result(folder.name)
            if result is not None:
                rows.append(_experiment_row(urls, folder.name, result))
                running = running or result.get("status") == "running"
        table = (
            "<table><tr><th>experiment</th><th>name</th><th>status</th><th>trials</th>"
            f"<th>best</th><th>started</th></tr>{''.join(rows)}</table>"
        )
        if not rows:
            table = f"<p>No experiments in {_e(root)} yet.</p>"
        return _page("maggy experiments", table, refresh=REFRESH_SECONDS if running else None)

    @app.get("/experiments/{experiment_id}", response_class=HTMLResponse)
    def experiment(experiment_id: str, request: Request) -> str:
        return _experiment_page(urls_for(request), experiment_id, found(experiment_id))

    @app.get("/experiments/{experiment_id}/trials/{trial_id}", response_class=HTMLResponse)
    def trial(experiment_id: str, trial_id: str, request: Request) -> str:
        if not _valid_id(trial_id):
            raise HTTPException(404, f"no trial {trial_id!r}")
        result = found(experiment_id)
        match = next((t for t in result.get("trials") or [] if t.get("trial_id") == trial_id), None)
        if match is None:
            raise HTTPException(404, f"experiment {experiment_id!r} has no trial {trial_id!r}")
        return _trial_page(urls_for(request), experiment_id, result, match)

    def ablation_file(experiment_id: str, name: str) -> Response:
        folder = _folder(experiment_id)
        path = None if folder is None else folder / name
        if path is None or not path.is_file():
            raise HTTPException(
                404,
                f"no {name} for experiment {experiment_id!r}: it is not an ablation study, "
                "it has not ended, or its analysis failed",
            )
        return Response(
            path.read_bytes(),
            media_type=_ABLATION_FILES[name],
            # Opened on its own, an SVG is a document of this origin: allow it no
            # script and no fetch, whatever the file holds.
            headers={
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @app.get("/experiments/{experiment_id}/ablation.svg")
    def ablation_svg(experiment_id: str) -> Response:
        return ablation_file(experiment_id, "ablation.svg")

    @app.get("/experiments/{experiment_id}/ablation.csv")
    def ablation_csv(experiment_id: str) -> Response:
        return ablation_file(experiment_id, "ablation.csv")

    @app.get("/api/experiments/{experiment_id}")
    def experiment_json(experiment_id: str) -> dict[str, Any]:
        result = _result(experiment_id)
        if result is None:
            raise HTTPException(404, f"no results for experiment {experiment_id!r}")
        return result

    return app


def _nav_href() -> str:
    """The experiments page as the UI's navigation opens it: below the path of
    ``[api] base_url`` when Airflow is served under one."""
    from airflow.sdk import conf

    base = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{base}{URL_PREFIX}/experiments"


class MaggyPlugin(AirflowPlugin):
    """Registers maggy's pages, their entry in the UI's navigation, and the
    "Maggy experiment" link of MaggyOperator."""

    name = "maggy"
    operator_extra_links = [MaggyExperimentLink()]
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "maggy"}]
    # With a url_route the UI shows the pages inside its own frame at
    # /plugin/maggy (without one it would open them in a new tab); "browse" puts
    # the entry in the Browse menu, beside DAG runs and task instances.
    external_views = [
        {
            "name": "Maggy experiments",
            "href": _nav_href(),
            "destination": "nav",
            "url_route": "maggy",
            "category": "browse",
        }
    ]
