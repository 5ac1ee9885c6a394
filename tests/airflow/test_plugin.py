"""The Airflow plugin: it loads (entry point, or plugins folder) and its pages work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


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


@pytest.fixture
def client(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("MAGGY_RESULTS_DIR", str(tmp_path))
    from maggy_airflow.plugins.maggy_plugin import create_app

    return TestClient(create_app())


def write_result(root: Path, experiment_id: str) -> None:
    folder = root / experiment_id
    folder.mkdir()
    trial = {
        "trial_id": "t0000",
        "status": "finished",
        "metric": 0.93,
        "duration": 1.5,
        "params": {"lr": 0.01},
    }
    (folder / "result.json").write_text(
        json.dumps(
            {
                "experiment_id": experiment_id,
                "status": "finished",
                "reason": "",
                "num_trials": 1,
                "optimization_key": "accuracy",
                "best": {**trial},
                "trials": [trial],
            }
        )
    )


def test_pages_show_an_ended_experiment(client, tmp_path):
    write_result(tmp_path, "exp-a")
    listing = client.get("/experiments")
    assert listing.status_code == 200 and "exp-a" in listing.text
    page = client.get("/experiments/exp-a")
    assert page.status_code == 200
    assert "finished" in page.text and "t0000" in page.text and "0.93" in page.text
    assert client.get("/api/experiments/exp-a").json()["best"]["metric"] == 0.93


def test_a_running_experiment_is_shown_from_its_journal(client, tmp_path):
    folder = tmp_path / "exp-run"
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


@pytest.mark.parametrize("bad", ["nope", "..", "a%2Fb"])
def test_unknown_or_unsafe_ids_are_not_found(client, bad):
    assert client.get(f"/experiments/{bad}").status_code == 404
    assert client.get(f"/api/experiments/{bad}").status_code == 404
