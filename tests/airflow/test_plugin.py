"""The Airflow plugin: it loads cheaply (entry point or plugins folder); its pages and API work.

The app is driven through the mount at ``/maggy`` under a parent app, as Airflow's
API server mounts it, with Airflow's simple auth manager extended by per-user DAG
grants (``DagGrants``: what a deployment's auth manager answers per DAG), so the
per-DAG rules of the plugin are exercised without a database. The experiments the
pages show are written by maggy's own code (the coordinator's trials and result,
the results store's journal and logs, the ablation report), so the fixtures have
the shape the engine writes. The browser test (tests/browser) drives the same
pages in a real Airflow.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from maggy_core.coordinator import Coordinator
from maggy_core.records import TrialRecord
from maggy_core.results import ResultStore
from maggy_core.spec import ExperimentSpec
from maggy_core.trial import TrialStatus

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
STARTED = 1_700_000_000.0
XSS = "<script>alert(1)</script>"
QUOTES = "\"quoted\" & 'single'"
TASK_VIEW = "/maggy/task/{DAG_ID}/{RUN_ID}/{TASK_ID}/{MAP_INDEX}"


@pytest.mark.parametrize("plugins_folder", [None, str(ROOT / "plugins")])
def test_airflow_loads_the_plugin_once(plugins_folder, tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    if plugins_folder:
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = plugins_folder
    out = subprocess.run(
        [AIRFLOW, "plugins", "-o", "json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    plugins = [p for p in json.loads(out.stdout) if p["name"] == "maggy"]
    assert len(plugins) == 1
    assert plugins[0]["fastapi_apps"][0]["url_prefix"] == "/maggy"
    assert "MaggyExperimentLink" in plugins[0]["operator_extra_links"][0]
    assert plugins[0]["external_views"] == [
        {
            "name": "Maggy experiments",
            "href": "/maggy/experiments",
            "destination": "nav",
            "url_route": "maggy",
            "category": "browse",
        },
        {
            "name": "Maggy experiment",
            "href": TASK_VIEW,
            "destination": "task_instance",
            "url_route": "maggy-task",
        },
    ]


def test_the_ui_entries_are_what_the_api_server_serves():
    """The UI reads the plugin from /api/v2/plugins, which drops a plugin whose
    entry does not validate; it shows "nav" entries in the navigation and
    "task_instance" ones as a tab of every task instance, framed (url_route)."""
    from airflow.api_fastapi.core_api.datamodels.plugins import PluginResponse
    from airflow.plugins_manager import get_plugin_info

    info = next(p for p in get_plugin_info() if p["name"] == "maggy")
    response = PluginResponse.model_validate(info)
    views = {v.destination: v for v in response.external_views if v.name.startswith("Maggy")}
    assert set(views) == {"nav", "task_instance"}
    assert views["nav"].href == "/maggy/experiments" and views["nav"].url_route == "maggy"
    assert views["task_instance"].href == TASK_VIEW and views["task_instance"].url_route


def test_a_task_process_loads_the_plugin_without_the_api_server():
    """Every task process loads the plugins: beyond what a task has loaded already,
    the module imports neither FastAPI, nor Jinja2, nor the API server; the app is
    built at its first request."""
    code = (
        "import sys, airflow.sdk, airflow.plugins_manager, maggy_airflow.operators\n"
        "before = set(sys.modules)\n"
        "import maggy_airflow.plugins.maggy_plugin as p\n"
        "new = sorted(set(sys.modules) - before)\n"
        "heavy = [m for m in new if m.split('.')[0] in ('fastapi', 'jinja2', 'starlette')"
        " or m.startswith('airflow.api_fastapi')]\n"
        "print(repr((new, heavy, p.MaggyPlugin.fastapi_apps[0]['app']._app)))\n"
    )
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    new, heavy, app = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr
    assert heavy == [], heavy
    assert app is None
    assert len(new) <= 5, new


# ---------------------------------------------------------------- users and clients

USERS = {
    # name: (simple auth manager role, {dag_id: methods})
    "admin": ("admin", {}),
    "alice": ("viewer", {"dag_a": {"GET", "PUT"}, "dag_b": {"GET"}}),
    "bob": ("viewer", {"dag_b": {"GET"}}),
}


def _grants_manager():
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    class DagGrants(SimpleAuthManager):
        """The simple auth manager (roles, admin) with per-user grants per DAG, as
        a deployment's auth manager (FAB, Keycloak) answers per DAG."""

        def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
            if self._is_admin(user):
                return True
            grants = USERS[user.username][1]
            return details is not None and method in grants.get(details.id, set())

    return DagGrants()


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """The results folder, one level below tmp_path so that tmp_path can hold
    files a path traversal would reach."""
    root = tmp_path / "results"
    root.mkdir()
    monkeypatch.setenv("MAGGY_RESULTS_DIR", str(root))
    return root


@pytest.fixture
def as_user(results, monkeypatch):
    """``as_user(name)``: a client of the app signed in as that user (see USERS)."""
    from airflow.api_fastapi import app as api_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from maggy_airflow.operators.links import URL_PREFIX
    from maggy_airflow.plugins._app import create_app

    monkeypatch.setattr(api_app._AuthManagerState, "instance", _grants_manager())

    def make(name: str) -> TestClient:
        app = create_app()
        user = SimpleAuthManagerUser(username=name, role=USERS[name][0])
        # Who is there is Airflow's question (get_user: see test_pages_need_a_login
        # and the browser test); here, this user is.
        app.dependency_overrides[get_user] = lambda: user
        server = FastAPI()
        server.mount(URL_PREFIX, app)  # as Airflow's API server mounts it
        return TestClient(server, base_url=f"http://testserver{URL_PREFIX}/")

    return make


@pytest.fixture
def client(as_user):
    return as_user("admin")


def test_pages_need_a_login(results):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from maggy_airflow.operators.links import URL_PREFIX
    from maggy_airflow.plugins._app import create_app

    server = FastAPI()
    server.mount(URL_PREFIX, create_app())
    anonymous = TestClient(server, base_url=f"http://testserver{URL_PREFIX}/")
    for path in (
        "experiments",
        "experiments/x",
        "api/experiments",
        "api/experiments/x",
        "api/experiments/x/live",
        "experiments/x/ablation.csv",
        "task/d/r/t/-1",
    ):
        reply = anonymous.get(path, follow_redirects=False)
        assert reply.status_code == 401, (path, reply.status_code)
    for path in ("api/experiments/x/stop", "api/experiments/x/trials/t0000/stop"):
        assert anonymous.post(path).status_code == 401, path


def test_no_api_docs_or_schema(results, client):
    """FastAPI's /docs, /redoc and /openapi.json are off: refused to nobody and
    not found for a signed-in user."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from maggy_airflow.plugins._app import create_app

    server = FastAPI()
    server.mount("/maggy", create_app())
    anonymous = TestClient(server, base_url="http://testserver/maggy/")
    for path in ("docs", "redoc", "openapi.json", "docs/oauth2-redirect"):
        for who in (anonymous, client):
            reply = who.get(path)
            assert reply.status_code in (401, 404), (path, reply.status_code)
            assert "openapi" not in reply.text.lower() and "swagger" not in reply.text.lower()


def hpo_spec(**changes: Any) -> ExperimentSpec:
    return ExperimentSpec.from_dict(
        {
            "name": "hpo",
            "train_fn": "mypkg.train:fit",
            "searchspace": {"lr": ["DOUBLE", [1e-4, 1e-1], "log"]},
            "num_trials": 4,
            "direction": "max",
            "optimization_key": "accuracy",
            **changes,
        }
    )


def make_trial(
    trial_id: str,
    params: dict[str, Any],
    status: str,
    history: Sequence[tuple[int, float]] = (),
    *,
    metric: float | None = None,
    attempts: int = 1,
    error: str | None = None,
    traceback: str | None = None,
) -> TrialRecord:
    """A trial as the coordinator holds it when it has ended."""
    trial = TrialRecord(trial_id, params)
    trial.status = TrialStatus(status)
    trial.attempts = attempts
    trial.worker = "e1-w0.0"
    trial.history = [(int(s), float(v)) for s, v in history]
    trial.metric = metric
    trial.metrics = {} if metric is None else {"loss": round(1.0 - metric, 4)}
    trial.start = STARTED + int(trial_id.lstrip("t"))
    trial.duration = 1.25
    trial.error, trial.traceback = error, traceback
    return trial


def write_experiment(
    root: Path,
    experiment_id: str,
    spec: ExperimentSpec,
    trials: list[TrialRecord],
    *,
    status: str = "finished",
    reason: str = "",
) -> tuple[ResultStore, dict[str, Any]]:
    """The coordinator's result of these trials (not written yet), and its store."""
    store = ResultStore(root, experiment_id)
    coordinator = Coordinator(spec, experiment_id, None, store, None, None)  # type: ignore[arg-type]
    coordinator.table.restore(trials)
    coordinator.status, coordinator.reason = status, reason
    return store, coordinator.result()


FAILED_TRACEBACK = 'Traceback (most recent call last):\n  File "fit.py", line 3\nValueError: lr'


def write_hpo(root: Path, experiment_id: str = "exp-hpo") -> dict[str, Any]:
    """An HPO experiment: two finished trials (one without a history), one early
    stopped, one failed; with logs."""
    trials = [
        make_trial(
            "t0000", {"lr": 0.01}, "finished", [(s, 0.5 + 0.04 * s) for s in range(10)], metric=0.86
        ),
        make_trial(
            "t0001", {"lr": 0.09}, "early_stopped", [(0, 0.3), (1, 0.32), (2, 0.33)], metric=0.33
        ),
        make_trial(
            "t0002",
            {"lr": 0.1},
            "failed",
            [(0, 0.2), (1, 0.1)],
            attempts=2,
            error="ValueError: lr",
            traceback=FAILED_TRACEBACK,
        ),
        make_trial("t0003", {"lr": 0.001}, "finished", metric=0.5),
    ]
    store, result = write_experiment(root, experiment_id, hpo_spec(), trials)
    store.trial_log("t0002", "epoch 0: diverging")
    store.write_result(result)
    store.close()
    return result


def write_ablation(
    root: Path, experiment_id: str = "exp-abl", batchnorm: float = 0.1
) -> dict[str, Any]:
    """A finished LOCO study of three switches, three repeats, analysed and
    charted by maggy's ablation report (which also appends it to the study's
    history, that the next run compares itself with)."""
    from maggy_core.ablation.ablators import get_ablator
    from maggy_core.ablation.report import finish_study

    spec = ExperimentSpec.from_dict(
        {
            "name": "abl",
            "train_fn": "mypkg.train:fit",
            "ablation": {"components": ["batchnorm", "dropout", "aug"]},
            "ablator": {"name": "loco", "repeats": 3},
            "direction": "max",
            "optimization_key": "accuracy",
            "seed": 7,
        }
    )
    assert spec.ablation is not None
    plan = get_ablator(
        "loco", spec.ablation.plan(), direction="max", seed=7, options={"repeats": 3}
    ).plan()
    # batchnorm helps a lot, dropout a little, aug not at all; plus some noise
    effect = {None: 0.0, "batchnorm": -batchnorm, "dropout": -0.01, "aug": 0.0}
    noise = random.Random(3)
    trials = []
    for i, params in enumerate(plan):
        metric = 0.9 + effect[params["ablated"]] + noise.gauss(0.0, 0.003)
        history = [(s, metric - 0.1 * (3 - s)) for s in range(4)]
        trials.append(make_trial(f"t{i:04d}", params, "finished", history, metric=metric))
    store, result = write_experiment(root, experiment_id, spec, trials)
    result["ablation"] = finish_study(
        spec.ablation,
        result,
        name=spec.name,
        direction=spec.direction,
        results_root=root,
        experiment_dir=store.root,
    )
    store.write_result(result)
    return result


def with_origin(result: dict[str, Any], dag_id: str, task_id: str = "search") -> dict[str, Any]:
    """``result`` as the operator's experiment records where it came from."""
    return {
        **result,
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": "manual__1",
        "map_index": None,
    }


def page_data(page: str) -> dict[str, Any]:
    """The JSON a page carries for its scripts (charts, table)."""
    match = re.search(r'<script type="application/json" id="maggy-data">(.*?)</script>', page, re.S)
    assert match, page[:2000]
    return json.loads(match.group(1))


# ---------------------------------------------------------------- experiment pages


def test_pages_show_an_ended_experiment(client, results):
    result = write_hpo(results)
    listing = client.get("/experiments")
    assert listing.status_code == 200 and "exp-hpo" in listing.text
    assert 'href="/maggy/experiments/exp-hpo"' in listing.text
    page = client.get("/experiments/exp-hpo")
    assert page.status_code == 200
    assert 'class="status finished">finished</b>' in page.text
    assert "best: t0000 accuracy=0.86" in page.text
    assert "Content-Security-Policy" in page.headers or "content-security-policy" in page.headers
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'src="/maggy/static/echarts.min.js"' in page.text
    # the table and the charts are drawn from the page's data: result.json's trials
    data = page_data(page.text)
    assert [t["trial_id"] for t in data["trials"]] == [t["trial_id"] for t in result["trials"]]
    assert data["trials"][0]["history"] == result["trials"][0]["history"]
    assert 'data-trial-base="/maggy/experiments/exp-hpo/trials/"' in page.text
    # the search space and the spec as given
    assert "&#34;lr&#34;: [\n    &#34;DOUBLE&#34;" in page.text


def test_the_json_is_result_json(client, results):
    write_hpo(results)
    stored = (results / "exp-hpo" / "result.json").read_bytes()
    reply = client.get("/api/experiments/exp-hpo")
    assert reply.status_code == 200 and reply.content == stored
    live = client.get("/api/experiments/exp-hpo/live").json()
    expected = json.loads(stored)
    for key in ("status", "best", "counts", "num_trials", "trials", "spec"):
        assert live[key] == expected[key], key
    assert live["can_edit"] is True  # the admin may stop experiments started outside Airflow


def test_a_results_connection_that_does_not_exist_is_named_not_a_500(client, results, monkeypatch):
    from maggy_airflow.plugins import _data

    missing = f"no_such_store_{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("MAGGY_RESULTS_DIR", "s3://bucket/results")
    monkeypatch.setenv("AIRFLOW__MAGGY__RESULTS_CONN_ID", missing)
    monkeypatch.setattr(_data, "_store", None)
    reply = client.get("/api/experiments")
    assert reply.status_code == 503
    assert missing in reply.json()["detail"] and "results_conn_id" in reply.json()["detail"]


def test_static_files_are_the_bundled_ones(client):
    for name, kind in (
        ("echarts.min.js", "javascript"),
        ("maggy.js", "javascript"),
        ("maggy.css", "css"),
    ):
        reply = client.get(f"/static/{name}")
        assert reply.status_code == 200 and kind in reply.headers["content-type"], name
        assert reply.content == (ROOT / "plugins" / "static" / name).read_bytes()
    assert b"echarts" in client.get("/static/echarts.min.js").content[:2000].lower()
    assert client.get("/static/..%2Fmaggy_plugin.py").status_code == 404
    assert client.get("/static/echarts.LICENSE").status_code == 404


def test_thinning_keeps_the_ends_and_the_spikes():
    from maggy_airflow.plugins._data import thin

    points = [[float(s), 0.0] for s in range(10_000)]
    points[5_003] = [5_003.0, 9.0]
    kept = thin(points, 100)
    assert len(kept) <= 100
    assert kept[0] == points[0] and kept[-1] == points[-1] and [5_003.0, 9.0] in kept
    assert [p[0] for p in kept] == sorted(p[0] for p in kept)


def test_five_hundred_trials_stay_light(client, results):
    trials = [
        make_trial(
            f"t{i:04d}",
            {"lr": i / 1000},
            "finished" if i % 3 else "early_stopped",
            [(s, (i % 50) / 50 + s / 1000) for s in range(0, 1000 if i % 3 else 200)],
            metric=(i % 50) / 50 + 0.999,
        )
        for i in range(500)
    ]
    store, result = write_experiment(results, "exp-big", hpo_spec(num_trials=500), trials)
    store.write_result(result)
    page = client.get("/experiments/exp-big")
    assert page.status_code == 200
    data = page_data(page.text)
    assert len(data["trials"]) == 500
    points = sum(len(t["history"]) for t in data["trials"])
    assert points <= 25_000  # not the 366 800 reported points
    assert data["trials"][1]["history"][-1] == [999, 1 / 50 + 0.999]  # the last point is kept
    assert len(page.text) < 1_500_000


def test_the_task_tab_opens_the_tasks_experiment(client, results):
    from maggy_airflow.operators.links import experiment_id_for, experiment_url

    for map_index, index in (("-1", -1), ("3", 3), ("{MAP_INDEX}", -1)):
        reply = client.get(
            f"/task/hparam_search/manual__2026-01-01T00%3A00%3A00%2B00%3A00/search/{map_index}",
            follow_redirects=False,
        )
        assert reply.status_code == 307
        expected = experiment_id_for(
            "hparam_search", "search", "manual__2026-01-01T00:00:00+00:00", index
        )
        assert reply.headers["location"] == f"/maggy/experiments/{expected}"
        # the operator's extra link opens the same page
        assert experiment_url(expected).endswith(reply.headers["location"])


# ---------------------------------------------------------------- trial pages


def test_a_trial_page_shows_a_failed_trial(client, results):
    write_hpo(results)
    page = client.get("/experiments/exp-hpo/trials/t0002")
    assert page.status_code == 200
    text = page.text
    assert "failed" in text and "ValueError: lr" in text
    assert "File &#34;fit.py&#34;, line 3" in text  # the traceback, escaped
    assert "<th>attempts</th><td>2</td>" in text
    assert "epoch 0: diverging" in text
    assert '<code>{"lr": 0.1}</code>' in text
    assert page_data(text)["trial"]["history"] == [[0, 0.2], [1, 0.1]]
    assert 'id="curve"' in text
    assert 'href="/maggy/experiments/exp-hpo"' in text


def test_a_trial_page_shows_the_end_of_a_long_log(client, results):
    write_hpo(results)
    pad = "x" * 200  # 600 lines of this are more than one block read from the end
    log = results / "exp-hpo" / "trials" / "t0000.log"
    log.write_text("".join(f"log line {i:04d} {pad}\n" for i in range(600)), encoding="utf-8")
    page = client.get("/experiments/exp-hpo/trials/t0000")
    assert page.status_code == 200
    shown = re.findall(r"log line (\d{4})", page.text)
    assert shown == [f"{i:04d}" for i in range(100, 600)]
    assert "The last 500 lines" in page.text
    assert "The best trial of the experiment" in page.text


def test_a_trial_without_log_or_history(client, results):
    write_hpo(results)
    page = client.get("/experiments/exp-hpo/trials/t0003")
    assert page.status_code == 200
    assert "No log lines" in page.text and "No metric history" in page.text
    assert 'id="curve"' not in page.text


@pytest.mark.parametrize(
    "path",
    [
        "/experiments/exp-hpo/trials/t9999",
        "/experiments/exp-hpo/trials/%2E%2E",
        "/experiments/exp-hpo/trials/..%2F..%2Fresult.json",
        "/experiments/exp-hpo/trials/a%2Fb",
        "/experiments/%2E%2E/trials/t0000",
        "/experiments/nope/trials/t0000",
    ],
)
def test_unknown_or_unsafe_trials_are_not_found(client, results, path):
    write_hpo(results)
    assert client.get(path).status_code == 404


# ---------------------------------------------------------------- ablation


def test_an_ablation_study_shows_its_table_and_chart(client, results):
    result = write_ablation(results)
    page = client.get("/experiments/exp-abl")
    assert page.status_code == 200
    table = page.text.split("<h2>Ablation study</h2>")[1].split("</table>")[0]
    rows = re.findall(r"<tr[^>]*>\s*<td>\d+</td><td>([^<]*)</td>", table)
    assert rows == [c["component"] for c in result["ablation"]["components"]]
    assert rows[0] == "batchnorm"
    assert "<td>yes</td>" in table  # batchnorm's effect is significant
    assert 'src="/maggy/experiments/exp-abl/ablation.svg"' in page.text
    assert 'href="/maggy/experiments/exp-abl/ablation.csv"' in page.text
    assert 'id="ablation-history"' in page.text and 'id="importance"' not in page.text

    chart = client.get("/experiments/exp-abl/ablation.svg")
    assert chart.status_code == 200
    assert chart.headers["content-type"] == "image/svg+xml"
    assert chart.content == (results / "exp-abl" / "ablation.svg").read_bytes()
    assert "script-src" not in chart.headers["content-security-policy"]
    assert chart.headers["content-security-policy"].startswith("default-src 'none'")

    table_csv = client.get("/experiments/exp-abl/ablation.csv")
    assert table_csv.status_code == 200 and table_csv.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(table_csv.text)))
    assert [r["component"] for r in parsed] == rows


def test_the_effects_over_a_studys_runs(client, results):
    """Each run of a nightly study appends to its history; the chart's data is
    every run's effects and intervals, with the runs flagged ``changed``."""
    first = write_ablation(results, "exp-abl-1")
    second = write_ablation(results, "exp-abl-2", batchnorm=0.3)
    assert client.get("/experiments/exp-abl-1").text.count("(was ") == 0
    entry = next(c for c in second["ablation"]["components"] if c["component"] == "batchnorm")
    assert entry["changed"]
    page = client.get("/experiments/exp-abl-2").text
    before = next(c for c in first["ablation"]["components"] if c["component"] == "batchnorm")
    assert f"<b>changed</b> (was {before['delta']:+.4g})" in page
    assert "compared with 1 earlier run(s)" in page

    history = client.get("/api/experiments/exp-abl-2/ablation-history").json()
    runs = history["runs"]
    assert [r["experiment_id"] for r in runs] == ["exp-abl-1", "exp-abl-2"]
    for run, result in zip(runs, (first, second), strict=True):
        for c in result["ablation"]["components"]:
            shown = run["components"][c["component"]]
            assert shown["delta"] == pytest.approx(c["delta"])
            assert shown["ci_low"] == pytest.approx(c["ci_low"])
            assert shown["changed"] == bool(c.get("changed"))
    assert runs[1]["components"]["batchnorm"]["changed"] is True
    assert runs[0]["components"]["batchnorm"]["changed"] is False
    # a search has no such history
    write_hpo(results)
    assert client.get("/api/experiments/exp-hpo/ablation-history").json()["runs"] == []


def test_a_failed_analysis_shows_its_error(client, results):
    trials = [make_trial("t0000", {"ablated": None, "repeat": 0}, "finished", metric=0.9)]
    store, result = write_experiment(results, "exp-abl-err", hpo_spec(), trials)
    result["ablation"] = {"error": "SpecError: ablation.components: <bad> & worse"}
    store.write_result(result)
    page = client.get("/experiments/exp-abl-err")
    assert page.status_code == 200
    assert "The analysis failed: SpecError: ablation.components: &lt;bad&gt; &amp; worse" in (
        page.text
    )
    assert "<img" not in page.text
    missing = client.get("/experiments/exp-abl-err/ablation.svg")
    assert missing.status_code == 404 and "ablation.svg" in missing.json()["detail"]


def test_an_experiment_without_a_study_has_no_ablation_files(client, results):
    write_hpo(results)
    assert "Ablation study" not in client.get("/experiments/exp-hpo").text
    for name in ("ablation.svg", "ablation.csv"):
        response = client.get(f"/experiments/exp-hpo/{name}")
        assert response.status_code == 404 and name in response.json()["detail"]


@pytest.mark.parametrize("bad", ["%2E%2E", "..%2Fexp-abl", "exp-abl%2F..%2F..", "nope"])
@pytest.mark.parametrize("name", ["ablation.svg", "ablation.csv"])
def test_ablation_files_do_not_leave_the_results_folder(client, results, bad, name):
    write_ablation(results)
    # what a path traversal would reach: the results folder's parent
    (results.parent / name).write_text("secret", encoding="utf-8")
    response = client.get(f"/experiments/{bad}/{name}")
    assert response.status_code == 404
    assert "secret" not in response.text


def test_symlinks_in_the_results_folder_are_not_followed(client, results):
    """Whoever can write into the results folder must not make the API server
    serve another file: a planted link is not followed, wherever it is."""
    write_ablation(results)
    write_hpo(results)
    secret = results.parent / "secret.txt"
    secret.write_text("top secret <3", encoding="utf-8")
    folder = results / "exp-abl"
    (folder / "ablation.csv").unlink()
    (folder / "ablation.csv").symlink_to(secret)
    reply = client.get("/experiments/exp-abl/ablation.csv")
    assert reply.status_code == 404 and "top secret" not in reply.text
    # a trial's log
    log = results / "exp-hpo" / "trials" / "t0000.log"
    log.unlink(missing_ok=True)
    log.symlink_to(secret)
    page = client.get("/experiments/exp-hpo/trials/t0000")
    assert page.status_code == 200 and "top secret" not in page.text and "No log lines" in page.text
    # a whole experiment folder, and a result.json
    (results / "exp-link").symlink_to(results / "exp-hpo")
    os.mkdir(results / "exp-file")
    (results / "exp-file" / "result.json").symlink_to(results / "exp-hpo" / "result.json")
    for experiment_id in ("exp-link", "exp-file"):
        assert client.get(f"/experiments/{experiment_id}").status_code == 404
        assert client.get(f"/api/experiments/{experiment_id}").status_code == 404
    listed = [e["experiment_id"] for e in client.get("/api/experiments").json()["experiments"]]
    assert sorted(listed) == ["exp-abl", "exp-hpo"]


# ---------------------------------------------------------------- the list


def test_the_list_filters_sorts_and_pages(client, results):
    from maggy_airflow.plugins._app import PER_PAGE

    for i in range(PER_PAGE + 5):
        dag = "dag_a" if i % 2 else "dag_b"
        status = "finished" if i % 3 else "failed"
        trials = [
            make_trial("t0000", {"lr": 0.01}, "finished", metric=0.5 + i / 100),
            make_trial("t0001", {"lr": 0.02}, "failed"),
        ]
        store, result = write_experiment(
            results, f"exp-{i:02d}", hpo_spec(num_trials=3), trials, status=status
        )
        store.write_result(with_origin(result, dag, task_id=f"task{i}"))
        stamp = STARTED + i
        os.utime(store.root / "result.json", (stamp, stamp))
    first = client.get("/api/experiments").json()
    assert first["total"] == PER_PAGE + 5 and first["pages"] == 2
    ids = [e["experiment_id"] for e in first["experiments"]]
    assert ids == [f"exp-{i:02d}" for i in range(PER_PAGE + 4, 4, -1)]  # newest first
    second = client.get("/api/experiments", params={"page": 2}).json()
    assert [e["experiment_id"] for e in second["experiments"]] == [
        f"exp-{i:02d}" for i in range(4, -1, -1)
    ]
    row = first["experiments"][0]
    assert row == {
        "experiment_id": "exp-29",
        "name": "hpo",
        "dag_id": "dag_a",
        "task_id": "task29",
        "run_id": "manual__1",
        "kind": "search",
        "status": "finished",
        "trials_ended": 2,
        "trials_total": 3,
        "best": pytest.approx(0.79),
        "started": row["started"],
        "duration": row["duration"],
    }
    assert row["started"] > 0 and row["duration"] >= 0
    only = client.get("/api/experiments", params={"dag_id": "dag_a", "status": "failed"}).json()
    expected = [f"exp-{i:02d}" for i in range(PER_PAGE + 4, -1, -1) if i % 2 and not i % 3]
    assert [e["experiment_id"] for e in only["experiments"]] == expected
    page = client.get("/experiments", params={"dag_id": "dag_a", "status": "failed"}).text
    assert re.findall(r"<div class=\"note\">(exp-\d\d)</div>", page) == expected
    for header in (
        "DAG",
        "task",
        "run",
        "kind",
        "status",
        "trials ended",
        "best",
        "start",
        "duration",
    ):
        assert f"<th>{header}" in page
    assert "<td>2 of 3</td>" in page


# ---------------------------------------------------------------- per-DAG access


def write_dag_experiments(results: Path) -> None:
    for experiment_id, dag in (("exp-a", "dag_a"), ("exp-b", "dag_b"), ("exp-cli", None)):
        store, result = write_experiment(
            results,
            experiment_id,
            hpo_spec(),
            [make_trial("t0000", {"lr": 0.01}, "finished", metric=0.5)],
        )
        store.write_result(with_origin(result, dag) if dag else result)


def test_each_user_sees_the_experiments_of_the_dags_they_may_read(as_user, results):
    write_dag_experiments(results)
    admin, alice, bob = as_user("admin"), as_user("alice"), as_user("bob")

    def listed(who) -> list[str]:
        return sorted(e["experiment_id"] for e in who.get("/api/experiments").json()["experiments"])

    assert listed(admin) == ["exp-a", "exp-b", "exp-cli"]
    assert listed(alice) == ["exp-a", "exp-b"]
    assert listed(bob) == ["exp-b"]
    assert "exp-a" not in bob.get("/experiments").text
    for path in (
        "/experiments/exp-a",
        "/api/experiments/exp-a",
        "/api/experiments/exp-a/live",
        "/experiments/exp-a/trials/t0000",
        "/api/experiments/exp-a/importance",
    ):
        reply = bob.get(path)
        assert reply.status_code == 403, path
        assert "dag_a" in reply.json()["detail"]
        assert alice.get(path).status_code == 200, path
    # started outside Airflow: administrators only
    for who, expected in ((admin, 200), (alice, 403), (bob, 403)):
        assert who.get("/experiments/exp-cli").status_code == expected


def test_experiments_outside_airflow_can_be_shown_to_everybody(as_user, results, monkeypatch):
    write_dag_experiments(results)
    monkeypatch.setenv("AIRFLOW__MAGGY__OUTSIDE_AIRFLOW_READERS", "all")
    bob = as_user("bob")
    assert bob.get("/experiments/exp-cli").status_code == 200
    assert "exp-cli" in [
        e["experiment_id"] for e in bob.get("/api/experiments").json()["experiments"]
    ]
    assert 'data-can-edit="no"' in bob.get("/experiments/exp-cli").text  # reading, not stopping
    monkeypatch.setenv("AIRFLOW__MAGGY__OUTSIDE_AIRFLOW_READERS", "some")
    with pytest.raises(ValueError, match="outside_airflow_readers must be 'admin' or 'all'"):
        bob.get("/experiments/exp-cli")


# ---------------------------------------------------------------- running experiments


def write_running(
    results: Path, experiment_id: str = "exp-live", dag_id: str | None = "dag_a"
) -> ResultStore:
    """A running experiment's journal: t0000 ended, t0001 running."""
    spec = hpo_spec()
    store = ResultStore(results, experiment_id)
    record = {
        "type": "experiment",
        "experiment_id": experiment_id,
        "epoch": 1,
        "spec": spec.to_dict(),
    }
    if dag_id:
        record.update(dag_id=dag_id, task_id="search", run_id="manual__1", map_index=None)
    store.append(record)
    ended = make_trial("t0000", {"lr": 0.01}, "finished", [(0, 0.6), (1, 0.7)], metric=0.7)
    for trial_id, params in (("t0000", {"lr": 0.01}), ("t0001", {"lr": 0.02})):
        store.append(
            {
                "type": "trial_started",
                "trial_id": trial_id,
                "attempt": 1,
                "params": params,
                "budget": None,
                "info": {},
                "worker": "e1-w0.0",
            }
        )
    store.append({"type": "trial_ended", "trial_id": "t0000", "trial": ended.to_json()})
    store.trial_log("t0001", "epoch 3 <loss>=0.25")
    store.close()
    return store


@pytest.fixture
def live_redis(redis_url, monkeypatch) -> Iterator[Any]:
    """The plugin's Redis (MAGGY_REDIS_URL: no Airflow connection is configured)."""
    import redis

    monkeypatch.setenv("MAGGY_REDIS_URL", redis_url)
    monkeypatch.setenv("AIRFLOW__MAGGY__REDIS_CONN_ID", "")
    client = redis.Redis.from_url(redis_url)
    yield client
    from maggy_core.channel import key_prefix

    for experiment_id in ("exp-live", "exp-cli-live"):
        keys = list(client.scan_iter(match=key_prefix(experiment_id) + "*"))
        if keys:
            client.delete(*keys)
    client.close()


def test_a_running_experiment_updates_in_place_with_its_live_curves(
    client, results, live_redis, redis_url
):
    """While it runs, the page polls /live (no reload), which carries the running
    trial's reports so far, read from the experiment's event stream."""
    from maggy_core.channel import WorkerChannel

    write_running(results)
    page = client.get("/experiments/exp-live")
    assert page.status_code == 200
    assert "http-equiv" not in page.text  # updated in place, never reloaded
    assert 'class="status running">running</b>' in page.text
    assert 'data-poll-ms="2000"' in page.text
    assert "best: t0000" in page.text  # the best so far, from the journal
    assert "exp-live" in client.get("/experiments").text  # listed without result.json

    worker = WorkerChannel(redis_url, "exp-live", "e1-w0.0", 1)
    seen = []
    for step in range(1, 4):
        worker.report("t0001", 1, step, 0.1 * step)
        worker.report("t0000", 1, step, 9.0)  # an ended trial: its curve is result's
        live = client.get("/api/experiments/exp-live/live").json()
        running = next(t for t in live["trials"] if t["trial_id"] == "t0001")
        assert running["status"] == "running"
        seen.append(running["history"])
        assert next(t for t in live["trials"] if t["trial_id"] == "t0000")["history"] == [
            [0, 0.6],
            [1, 0.7],
        ]
    worker.close()
    assert seen == [[[s, pytest.approx(0.1 * s)] for s in range(1, n + 1)] for n in (1, 2, 3)]

    trial = client.get("/experiments/exp-live/trials/t0001")
    assert trial.status_code == 200 and "epoch 3 &lt;loss&gt;=0.25" in trial.text
    assert page_data(trial.text)["trial"]["history"][-1] == [3, pytest.approx(0.3)]

    store = ResultStore(results, "exp-live")
    store.append({"type": "ended", "status": "finished", "reason": ""})
    store.close()
    assert 'class="status finished"' in client.get("/experiments/exp-live").text


def test_a_running_experiment_is_shown_from_a_minimal_journal(client, results):
    """A minimal journal, as an older coordinator wrote it: the pages cope."""
    folder = results / "exp-run"
    folder.mkdir()
    records = [
        {"type": "experiment", "spec": {"optimization_key": "loss"}},
        {
            "type": "trial_ended",
            "trial_id": "t0000",
            "trial": {
                "trial_id": "t0000",
                "status": "finished",
                "metric": 0.5,
                "duration": 2.0,
                "params": {"x": 1},
            },
        },
    ]
    (folder / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    page = client.get("/experiments/exp-run")
    assert page.status_code == 200 and "running" in page.text and "t0000" in page.text
    assert client.get("/experiments/exp-run/trials/t0000").status_code == 200


def test_a_resumed_experiment_is_shown_running_not_as_its_last_result(client, results):
    """A retry of the task resumes the experiment; the coordinator moves the
    result.json of the try before aside as it starts (ResultStore.retire_result)."""
    spec = hpo_spec()
    store, result = write_experiment(
        results,
        "exp-again",
        spec,
        [make_trial("t0000", {"lr": 0.01}, "finished", [(0, 0.5)], metric=0.5)],
        status="failed",
        reason="stopped: SIGTERM",
    )
    store.append({"type": "experiment", "experiment_id": "exp-again", "spec": spec.to_dict()})
    store.append({"type": "trial_ended", "trial_id": "t0000", "trial": result["trials"][0]})
    store.write_result(result)
    store.append({"type": "ended", "status": "failed", "reason": "stopped: SIGTERM"})
    store.close()
    page = client.get("/experiments/exp-again").text
    assert "SIGTERM" in page and 'class="status failed"' in page

    store = ResultStore(results, "exp-again")
    store.retire_result()
    store.append({"type": "experiment", "experiment_id": "exp-again", "spec": spec.to_dict()})
    store.append({"type": "resumed", "kept": 1, "requeued": 0})
    store.append(
        {"type": "trial_started", "trial_id": "t0001", "attempt": 1, "params": {"lr": 0.02}}
    )
    store.close()
    page = client.get("/experiments/exp-again").text
    assert 'class="status running">running</b>' in page
    assert "SIGTERM" not in page  # the end of the try before is not this run's
    statuses = {t["trial_id"]: t["status"] for t in page_data(page)["trials"]}
    assert statuses == {"t0000": "finished", "t0001": "running"}


def test_a_result_newer_than_its_journal_is_shown(client, results):
    """A driver killed after it wrote result.json but before it journalled the
    end: result.json is the truth."""
    spec = hpo_spec()
    trial = make_trial("t0000", {"lr": 0.01}, "finished", [(0, 0.5)], metric=0.5)
    store, result = write_experiment(results, "exp-cut", spec, [trial])
    store.append({"type": "experiment", "experiment_id": "exp-cut", "spec": spec.to_dict()})
    store.append({"type": "trial_ended", "trial_id": "t0000", "trial": trial.to_json()})
    store.write_result(result)
    store.close()
    later = time.time() + 60
    os.utime(store.root / "result.json", (later, later))
    page = client.get("/experiments/exp-cut").text
    assert 'class="status finished">finished</b>' in page


# ---------------------------------------------------------------- stopping


def csrf_of(client, path: str = "/experiments/exp-live") -> str:
    """The CSRF token a page carries (its cookie is now in the client's jar)."""
    page = client.get(path)
    assert page.status_code == 200, page.text[:500]
    return re.search(r'<meta name="maggy-csrf" content="([^"]+)">', page.text).group(1)


def test_stopping_needs_the_dags_edit_permission(as_user, results, live_redis):
    write_running(results)  # of dag_a: alice may edit it, bob may not even read it
    write_running(results, "exp-b-live", dag_id="dag_b")  # alice and bob may only read it
    alice, bob = as_user("alice"), as_user("bob")
    token = csrf_of(alice, "/experiments/exp-b-live")
    for path in (
        "/api/experiments/exp-b-live/stop",
        "/api/experiments/exp-b-live/trials/t0001/stop",
    ):
        reply = alice.post(path, headers={"X-Maggy-CSRF": token})
        assert reply.status_code == 403, (path, reply.text)
        assert "may not stop" in reply.json()["detail"]
    token = csrf_of(bob, "/experiments/exp-b-live")
    assert (
        bob.post("/api/experiments/exp-live/stop", headers={"X-Maggy-CSRF": token}).status_code
        == 403
    )
    assert 'data-can-edit="no"' in bob.get("/experiments/exp-b-live").text
    assert 'id="stop-experiment"' not in bob.get("/experiments/exp-b-live").text
    assert 'id="stop-experiment"' in alice.get("/experiments/exp-live").text


def test_a_post_without_the_csrf_token_is_refused(as_user, results, live_redis):
    write_running(results)
    alice = as_user("alice")
    token = csrf_of(alice)  # the page set the cookie
    cases = {
        "no header": {},
        "another value": {"X-Maggy-CSRF": token[:-2] + "xx"},
    }
    for why, headers in cases.items():
        reply = alice.post("/api/experiments/exp-live/stop", headers=headers)
        assert reply.status_code == 403, why
        assert "CSRF" in reply.json()["detail"], why
    # header and cookie the same, but signed for another user
    from maggy_airflow.plugins._access import CSRF_COOKIE, csrf_token

    forged = csrf_token("bob")
    alice.cookies.set(CSRF_COOKIE, forged, path="/maggy")
    reply = alice.post("/api/experiments/exp-live/stop", headers={"X-Maggy-CSRF": forged})
    assert reply.status_code == 403 and "another user" in reply.json()["detail"]
    assert live_redis.hget("maggy:{exp-live}:meta", "stop_request") is None


def test_the_stop_button_asks_the_coordinator(as_user, results, live_redis):
    """With the token, the stop goes through the channel the coordinator reads;
    the reason names the user."""
    from maggy_core.channel import key_prefix

    write_running(results)
    alice = as_user("alice")
    token = csrf_of(alice)
    meta = key_prefix("exp-live") + "meta"
    reply = alice.post("/api/experiments/exp-live/stop", headers={"X-Maggy-CSRF": token})
    assert reply.status_code == 409  # no coordinator says it runs
    live_redis.hset(meta, "state", "running")
    reply = alice.post("/api/experiments/exp-live/stop", headers={"X-Maggy-CSRF": token})
    assert reply.status_code == 200, reply.text
    assert reply.json()["reason"] == "stopped from the UI by alice"
    assert live_redis.hget(meta, "stop_request") == b"stopped from the UI by alice"
    # a trial that is not running cannot be stopped
    reply = alice.post(
        "/api/experiments/exp-live/trials/t0000/stop", headers={"X-Maggy-CSRF": token}
    )
    assert reply.status_code == 409 and "finished" in reply.json()["detail"]
    reply = alice.post(
        "/api/experiments/exp-live/trials/t9999/stop", headers={"X-Maggy-CSRF": token}
    )
    assert reply.status_code == 404
    # an ended experiment cannot be stopped
    write_hpo(results)
    admin = as_user("admin")
    token = csrf_of(admin, "/experiments/exp-hpo")
    reply = admin.post("/api/experiments/exp-hpo/stop", headers={"X-Maggy-CSRF": token})
    assert reply.status_code == 409 and "not running" in reply.json()["detail"]


# ---------------------------------------------------------------- importance


def test_hyperparameter_importance_of_an_ended_search(client, results):
    """PED-ANOVA over the trials: the parameter that drives the metric comes first."""
    spec = hpo_spec(
        searchspace={
            "lr": ["DOUBLE", [1e-4, 1e-1], "log"],
            "units": ["INTEGER", [16, 256]],
            "act": ["CATEGORICAL", ["relu", "tanh"]],
        },
        num_trials=40,
    )
    rng = random.Random(5)
    trials = []
    for i in range(40):
        params = {
            "lr": 10 ** rng.uniform(-4, -1),
            "units": rng.randint(16, 256),
            "act": rng.choice(["relu", "tanh"]),
        }
        metric = params["units"] / 256 + rng.gauss(0, 0.01)
        trials.append(make_trial(f"t{i:04d}", params, "finished", metric=metric))
    store, result = write_experiment(results, "exp-imp", spec, trials)
    store.write_result(result)
    found = client.get("/api/experiments/exp-imp/importance").json()["importance"]
    assert found["evaluator"] == "PED-ANOVA"
    shares = found["importances"]
    assert set(shares) == {"lr", "units", "act"}
    assert max(shares, key=shares.get) == "units"
    assert sum(shares.values()) == pytest.approx(1.0)
    # one hyperparameter, or a running search: nothing to rank
    write_hpo(results)
    assert "error" in client.get("/api/experiments/exp-hpo/importance").json()["importance"]


# ---------------------------------------------------------------- escaping and ids


def test_what_an_experiment_holds_is_escaped(client, results):
    trials = [
        make_trial(
            "t0000",
            {"name": XSS, "lr": 0.01, "q": QUOTES},
            "failed",
            [(0, 0.1), (1, 0.2)],
            error="<img src=x onerror=alert(2)>",
            traceback="Traceback\n</pre><script>alert(3)</script>",
        ),
        make_trial("t0001", {"name": "ok", "q": "x"}, "finished", [(0, 0.5)], metric=0.5),
    ]
    store, result = write_experiment(
        results,
        "exp-xss",
        hpo_spec(description=f"d{XSS}{QUOTES}", optimization_key="<i>acc</i>"),
        trials,
        status="failed",
        reason="<b>stopped</b>",
    )
    store.trial_log("t0000", "</pre><script>alert(4)</script>" + QUOTES)
    # names are checked by the spec, but a result.json is a file anyone may edit
    result["name"] = f"n{XSS}{QUOTES}"
    store.write_result(with_origin(result, "dag_a", task_id="<b>task</b>"))
    for path in ("/experiments", "/experiments/exp-xss", "/experiments/exp-xss/trials/t0000"):
        page = client.get(path)
        assert page.status_code == 200
        # the only script elements are the page's own
        scripts = re.findall(r"<script[^>]*>", page.text)
        assert set(scripts) <= {
            '<script src="/maggy/static/maggy.js">',
            '<script src="/maggy/static/echarts.min.js">',
            '<script type="application/json" id="maggy-data">',
        }, (path, scripts)
        for raw in ("<img src=x", "<i>acc", "<b>stopped", "<b>task", "'single'"):
            assert raw not in page.text, (path, raw)
        if "maggy-data" in page.text:
            data = page_data(page.text)  # the JSON still parses back to the values
            assert "</script" not in page.text.split('id="maggy-data">')[1].split("</script>")[0]
            assert json.dumps(data)  # and is JSON
    page = client.get("/experiments/exp-xss").text
    assert "&lt;b&gt;stopped&lt;/b&gt;" in page
    assert "&lt;i&gt;acc&lt;/i&gt;" in page
    described = "d&lt;script&gt;alert(1)&lt;/script&gt;\\&#34;quoted\\&#34; &amp; &#39;single&#39;"
    assert described in page  # the spec as given, its JSON text escaped
    assert page_data(page)["trials"][0]["params"]["name"] == XSS
    assert page_data(page)["trials"][0]["params"]["q"] == QUOTES
    trial = client.get("/experiments/exp-xss/trials/t0000").text
    assert (
        "&lt;/pre&gt;&lt;script&gt;alert(4)&lt;/script&gt;&#34;quoted&#34; &amp; &#39;single&#39;"
        in trial
    )
    assert "&lt;img src=x onerror=alert(2)&gt;" in trial
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in trial  # params, as escaped JSON
    listing = client.get("/experiments").text
    assert "&lt;b&gt;task&lt;/b&gt;" in listing and "n&lt;script&gt;" in listing


@pytest.mark.parametrize("bad", ["nope", "..", "%2E%2E", "a%2Fb", "..%2F..%2Fetc"])
def test_unknown_or_unsafe_ids_are_not_found(client, results, bad):
    # a result.json where a traversal from the results folder would find one
    (results.parent / "result.json").write_text(json.dumps({"status": "finished"}))
    assert client.get(f"/experiments/{bad}").status_code == 404
    assert client.get(f"/api/experiments/{bad}").status_code == 404
