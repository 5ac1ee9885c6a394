"""The Airflow plugin: it loads (entry point, or plugins folder) and its pages work.

The pages are driven through the app mounted at ``/maggy`` under a parent app, as
Airflow's API server mounts it. The experiments they show are written by maggy's
own code (the coordinator's trials and result, the results store's journal and
logs, the ablation report), so the fixtures have the shape the engine writes.
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
import xml.etree.ElementTree as ET
from collections.abc import Sequence
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
SVG = "{http://www.w3.org/2000/svg}"
STARTED = 1_700_000_000.0
XSS = "<script>alert(1)</script>"


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
        }
    ]


def test_the_navigation_entry_is_what_the_api_server_serves():
    """The UI reads the plugin from /api/v2/plugins, which drops a plugin whose
    entry does not validate, and shows an entry in the navigation only with
    destination "nav"; with a url_route it frames the pages in the UI."""
    from airflow.api_fastapi.core_api.datamodels.plugins import PluginResponse
    from airflow.plugins_manager import get_plugin_info

    from maggy_airflow.plugins.maggy_plugin import MaggyPlugin

    info = next(p for p in get_plugin_info() if p["name"] == "maggy")
    response = PluginResponse.model_validate(info)
    views = [v for v in response.external_views if v.name == "Maggy experiments"]
    assert len(views) == 1
    assert views[0].destination == "nav" and views[0].url_route == "maggy"
    assert views[0].href == "/maggy/experiments"
    assert MaggyPlugin.external_views[0]["href"] == views[0].href


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """The results folder, one level below tmp_path so that tmp_path can hold
    files a path traversal would reach."""
    root = tmp_path / "results"
    root.mkdir()
    monkeypatch.setenv("MAGGY_RESULTS_DIR", str(root))
    return root


@pytest.fixture
def client(results):
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from maggy_airflow.operators.links import URL_PREFIX
    from maggy_airflow.plugins.maggy_plugin import create_app

    app = create_app()
    # Who is there is Airflow's question (its API server answers it: see
    # test_pages_need_a_login and the end-to-end tests); here, somebody is.
    app.dependency_overrides[get_user] = lambda: "a user"
    server = FastAPI()
    server.mount(URL_PREFIX, app)  # as Airflow's API server mounts it
    return TestClient(server, base_url=f"http://testserver{URL_PREFIX}/")


def test_pages_need_a_login(results):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from maggy_airflow.operators.links import URL_PREFIX
    from maggy_airflow.plugins.maggy_plugin import create_app

    server = FastAPI()
    server.mount(URL_PREFIX, create_app())
    anonymous = TestClient(server, base_url=f"http://testserver{URL_PREFIX}/")
    for path in ("experiments", "experiments/x", "api/experiments/x", "experiments/x/ablation.csv"):
        reply = anonymous.get(path)
        assert reply.status_code == 401, (path, reply.status_code)


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


def svgs(page: str) -> list[ET.Element]:
    """The inline SVG charts of a page, parsed as XML (so each is well formed)."""
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", page, re.DOTALL)]


def curves(chart: ET.Element) -> dict[str, ET.Element]:
    """Trial id -> its line in a learning-curve chart."""
    out = {}
    for shape in chart.iter():
        if (
            shape.tag in (f"{SVG}polyline", f"{SVG}circle")
            and shape.find(f"{SVG}title") is not None
        ):
            out.setdefault(shape.find(f"{SVG}title").text.split()[0], shape)
    return out


# ---------------------------------------------------------------- experiment pages


def test_pages_show_an_ended_experiment(client, results):
    write_hpo(results)
    listing = client.get("/experiments")
    assert listing.status_code == 200 and "exp-hpo" in listing.text
    assert "href='/maggy/experiments/exp-hpo'" in listing.text
    page = client.get("/experiments/exp-hpo")
    assert page.status_code == 200
    assert "finished" in page.text and "t0003" in page.text and "0.86" in page.text
    assert "http-equiv='refresh'" not in page.text  # it has ended
    for trial_id in ("t0000", "t0001", "t0002", "t0003"):
        assert f"href='/maggy/experiments/exp-hpo/trials/{trial_id}'" in page.text
    assert client.get("/api/experiments/exp-hpo").json()["best"]["trial_id"] == "t0000"


def test_learning_curves_tell_the_statuses_and_the_best_apart(client, results):
    write_hpo(results)
    page = client.get("/experiments/exp-hpo").text
    charts = svgs(page)
    assert len(charts) == 1
    lines = curves(charts[0])
    # t0003 reported no history: it has no curve
    assert set(lines) == {"t0000", "t0001", "t0002"}
    best, stopped, failed = lines["t0000"], lines["t0001"], lines["t0002"]
    assert float(best.get("stroke-width")) > float(stopped.get("stroke-width"))
    assert "(best)" in best.find(f"{SVG}title").text
    dashes = {line.get("stroke-dasharray") for line in (best, stopped, failed)}
    colours = {line.get("stroke") for line in (best, stopped, failed)}
    assert len(dashes) == 3 and len(colours) == 3
    # every point of a curve is drawn: ten steps for t0000
    assert len(best.get("points").split()) == 10
    links = [a.get("href") for a in charts[0].iter(f"{SVG}a")]
    assert "/maggy/experiments/exp-hpo/trials/t0001" in links


def test_no_history_means_no_chart(client, results):
    trials = [make_trial("t0000", {"lr": 0.01}, "finished", metric=0.7)]
    store, result = write_experiment(results, "exp-flat", hpo_spec(), trials)
    store.write_result(result)
    page = client.get("/experiments/exp-flat")
    assert page.status_code == 200 and "t0000" in page.text
    assert "<svg" not in page.text and "Learning curves" not in page.text


def test_five_hundred_trials_stay_readable(client, results):
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
    (chart,) = svgs(page.text)
    lines = [e for e in chart.iter(f"{SVG}polyline")]
    assert len(lines) == 500
    points = sum(len(line.get("points").split()) for line in lines)
    assert points <= 20_000  # not the 366 800 reported points
    # thin, faint lines, the best one drawn last, over them; a marker only on the
    # best trial's last point
    assert "(best)" in lines[-1].find(f"{SVG}title").text
    assert max(float(line.get("stroke-opacity")) for line in lines[:-1]) < 0.35
    assert {line.get("stroke-width") for line in lines[:-1]} == {"1"}
    assert len(list(chart.iter(f"{SVG}circle"))) <= 2
    assert len(page.text) < 1_000_000


def test_thinning_keeps_the_ends_and_the_spikes():
    from maggy_airflow.plugins._curves import thin

    points = [(float(s), 0.0) for s in range(10_000)]
    points[5_003] = (5_003.0, 9.0)
    kept = thin(points, 100)
    assert len(kept) <= 100
    assert kept[0] == points[0] and kept[-1] == points[-1] and (5_003.0, 9.0) in kept
    assert [p[0] for p in kept] == sorted(p[0] for p in kept)


def test_the_chart_escapes_what_it_draws():
    from maggy_airflow.plugins._curves import learning_curves_svg

    trial = {"trial_id": "<b>t'1\"</b>", "status": "<i>x</i>", "history": [[0, 1.0], [1, 2.0]]}
    chart = learning_curves_svg(
        [trial, {"trial_id": "t2", "status": "finished", "history": [[0, float("nan")]]}],
        metric=XSS,
        best_id="t2",
        href=lambda t: f"/x?a='{t}'",
    )
    assert "<script" not in chart and "<b>" not in chart and "<i>" not in chart
    root = ET.fromstring(chart)
    assert XSS in root.find(f"{SVG}title").text  # as text, back from its escaped form
    assert [a.get("href") for a in root.iter(f"{SVG}a")] == ["/x?a='<b>t'1\"</b>'"]
    assert learning_curves_svg([trial | {"history": []}], metric="m") == ""


# ---------------------------------------------------------------- trial pages


def test_a_trial_page_shows_a_failed_trial(client, results):
    write_hpo(results)
    page = client.get("/experiments/exp-hpo/trials/t0002")
    assert page.status_code == 200
    text = page.text
    assert "failed" in text and "ValueError: lr" in text
    assert "File &quot;fit.py&quot;, line 3" in text  # the traceback, escaped
    assert "<th>attempts</th><td>2</td>" in text
    assert "epoch 0: diverging" in text
    assert "{&quot;lr&quot;: 0.1}" in text
    (chart,) = svgs(text)
    assert set(curves(chart)) == {"t0002"}
    assert "href='/maggy/experiments/exp-hpo'" in text


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
    assert "<svg" not in page.text


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


def test_an_ablation_study_shows_its_table_and_chart(client, results):
    result = write_ablation(results)
    page = client.get("/experiments/exp-abl")
    assert page.status_code == 200
    table = page.text.split("<h2>Ablation study</h2>")[1].split("</table>")[0]
    rows = re.findall(r"<tr[^>]*><td>\d+</td><td>([^<]*)</td>", table)
    assert rows == [c["component"] for c in result["ablation"]["components"]]
    assert rows[0] == "batchnorm"
    assert "<td>yes</td>" in table  # batchnorm's effect is significant
    assert "src='/maggy/experiments/exp-abl/ablation.svg'" in page.text
    assert "href='/maggy/experiments/exp-abl/ablation.csv'" in page.text

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


def test_an_effect_that_changed_since_the_last_run_is_flagged(client, results):
    first = write_ablation(results, "exp-abl-1")
    second = write_ablation(results, "exp-abl-2", batchnorm=0.3)
    assert client.get("/experiments/exp-abl-1").text.count("(was ") == 0
    entry = next(c for c in second["ablation"]["components"] if c["component"] == "batchnorm")
    assert entry["changed"]
    page = client.get("/experiments/exp-abl-2").text
    before = next(c for c in first["ablation"]["components"] if c["component"] == "batchnorm")
    assert f"<b>changed</b> (was {before['delta']:+.4g})" in page
    assert "compared with 1 earlier run(s)" in page


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


# ---------------------------------------------------------------- running experiments


def test_a_running_experiment_is_shown_from_its_journal(client, results):
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


def test_a_running_experiment_refreshes_and_shows_live_trials(client, results):
    spec = hpo_spec()
    store = ResultStore(results, "exp-live")
    store.append(
        {"type": "experiment", "experiment_id": "exp-live", "epoch": 1, "spec": spec.to_dict()}
    )
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

    page = client.get("/experiments/exp-live")
    assert page.status_code == 200
    assert "<meta http-equiv='refresh' content='5'>" in page.text
    assert "best: t0000" in page.text  # the best so far, from the journal
    assert set(curves(svgs(page.text)[0])) == {"t0000"}
    assert "<td class='running'>running</td>" in page.text
    assert "exp-live" in client.get("/experiments").text  # listed without result.json

    live = client.get("/experiments/exp-live/trials/t0001")
    assert live.status_code == 200
    assert "epoch 3 &lt;loss&gt;=0.25" in live.text
    assert "http-equiv='refresh'" in live.text
    assert client.get("/api/experiments/exp-live").json()["status"] == "running"

    # once it has ended, the pages stop reloading
    store = ResultStore(results, "exp-live")
    store.append({"type": "ended", "status": "finished", "reason": ""})
    store.close()
    assert "http-equiv='refresh'" not in client.get("/experiments/exp-live").text


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
    assert "SIGTERM" in page and "http-equiv='refresh'" not in page

    # the retry, as Coordinator.open() starts it on a journal that exists
    store = ResultStore(results, "exp-again")
    store.retire_result()
    store.append({"type": "experiment", "experiment_id": "exp-again", "spec": spec.to_dict()})
    store.append({"type": "resumed", "kept": 1, "requeued": 0})
    store.append(
        {"type": "trial_started", "trial_id": "t0001", "attempt": 1, "params": {"lr": 0.02}}
    )
    store.close()
    page = client.get("/experiments/exp-again").text
    assert "<b class='running'>running</b>" in page and "http-equiv='refresh'" in page
    assert "SIGTERM" not in page  # the end of the try before is not this run's
    assert "t0000" in page and "<td class='running'>running</td>" in page


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
    assert "<b class='finished'>finished</b>" in page and "http-equiv='refresh'" not in page


# ---------------------------------------------------------------- escaping and ids


def test_what_an_experiment_holds_is_escaped(client, results):
    trials = [
        make_trial(
            "t0000",
            {"name": XSS, "lr": 0.01},
            "failed",
            [(0, 0.1), (1, 0.2)],
            error="<img src=x onerror=alert(2)>",
            traceback="Traceback\n</pre><script>alert(3)</script>",
        ),
        make_trial("t0001", {"name": "ok"}, "finished", [(0, 0.5)], metric=0.5),
    ]
    store, result = write_experiment(
        results,
        "exp-xss",
        hpo_spec(optimization_key="<i>acc</i>"),
        trials,
        status="failed",
        reason="<b>stopped</b>",
    )
    store.trial_log("t0000", "</pre><script>alert(4)</script>")
    store.write_result(result)
    for path in ("/experiments", "/experiments/exp-xss", "/experiments/exp-xss/trials/t0000"):
        page = client.get(path)
        assert page.status_code == 200
        for raw in ("<script", "<img src=x", "<i>acc", "<b>stopped"):
            assert raw not in page.text, (path, raw)
        for chart in svgs(page.text):
            assert chart.find(f"{SVG}title").text == "learning curves: <i>acc</i> per step"
    page = client.get("/experiments/exp-xss").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;stopped&lt;/b&gt;" in page
    trial = client.get("/experiments/exp-xss/trials/t0000").text
    assert "&lt;/pre&gt;&lt;script&gt;alert(4)&lt;/script&gt;" in trial
    assert "&lt;img src=x onerror=alert(2)&gt;" in trial


@pytest.mark.parametrize("bad", ["nope", "..", "%2E%2E", "a%2Fb", "..%2F..%2Fetc"])
def test_unknown_or_unsafe_ids_are_not_found(client, results, bad):
    # a result.json where a traversal from the results folder would find one
    (results.parent / "result.json").write_text(json.dumps({"status": "finished"}))
    assert client.get(f"/experiments/{bad}").status_code == 404
    assert client.get(f"/api/experiments/{bad}").status_code == 404
