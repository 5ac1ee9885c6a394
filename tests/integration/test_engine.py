"""The engine end to end on a real Redis and a real Spark ``local[2]``.

One SparkContext serves the module (the runner uses an active context when there
is one), so the tests pay Spark's start-up once; ``test_cli.py`` covers the path
where ``maggy run`` starts its own.
"""

from __future__ import annotations

import json
import logging

import pytest

from maggy_core import redis_server
from maggy_core.exceptions import SpecError
from maggy_core.lagom import lagom
from maggy_core.results import load_result
from maggy_core.runner import run_experiment
from maggy_core.spec import ExperimentSpec, HyperparameterOptConfig

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_spark")]

TERMINAL = {"finished", "early_stopped", "failed"}


def spec(**fields) -> ExperimentSpec:
    base = {
        "name": "it",
        "train_fn": "maggy_core.examples.sleep:train",
        "searchspace": {"seconds": ["DOUBLE", [0.02, 0.1]], "x": ["DOUBLE", [-2, 2]]},
        "num_trials": 8,
        "workers": 2,
        "es_policy": "none",
        "hb_interval": 0.5,
        "seed": 3,
    }
    base.update(fields)
    return ExperimentSpec.from_dict(base)


def run(s: ExperimentSpec, redis_url, tmp_path, **kw):
    return run_experiment(s, redis_url=redis_url, results_dir=tmp_path, **kw)


@pytest.mark.slow
def test_keras_hpo_records_every_trial(redis_url, tmp_path):
    s = spec(
        name="digits",
        train_fn="maggy_core.examples.digits:train",
        searchspace={
            "lr": ["DOUBLE", [0.001, 0.05], "log"],
            "units": ["INTEGER", [16, 64]],
            "activation": ["CATEGORICAL", ["relu", "tanh"]],
            "epochs": ["DISCRETE", [2, 3]],
        },
        num_trials=4,
        direction="max",
        optimization_key="accuracy",
        es_policy="median",
        es_min=5,
    )
    result = run(s, redis_url, tmp_path)
    assert result["status"] == "finished", result["reason"]
    assert result["num_trials"] == 4 and len(result["trials"]) == 4
    on_disk = load_result(result["results_dir"])
    assert on_disk["experiment_id"] == result["experiment_id"]
    for t in on_disk["trials"]:
        assert t["status"] == "finished"
        assert 0.5 < t["metric"] <= 1.0  # digits is easy: any of these settings learns it
        assert t["metrics"]["accuracy"] == t["metric"] and "loss" in t["metrics"]
        assert [step for step, _ in t["history"]] == list(range(t["params"]["epochs"]))
        assert t["duration"] > 0
    best = max(on_disk["trials"], key=lambda t: t["metric"])
    assert on_disk["best"]["trial_id"] == best["trial_id"]
    assert on_disk["best"]["params"] == best["params"]
    log_file = tmp_path / result["experiment_id"] / "trials" / f"{best['trial_id']}.log"
    assert "digits: lr=" in log_file.read_text()


def test_median_rule_stops_poor_trials_early(redis_url, tmp_path):
    # Curves rise to their quality; the median of four finished ones is high, so the
    # many low-quality trials fall below it and must be stopped.
    s = spec(
        train_fn="maggy_core.examples.sleep:curve",
        searchspace={
            "quality": ["DISCRETE", [0.9, 0.95, 1.0, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.22]]
        },
        optimizer="gridsearch",
        num_trials=10,
        es_policy="median",
        es_min=3,
    )
    result = run(s, redis_url, tmp_path)
    assert result["status"] == "finished"
    by_status = {t["params"]["quality"]: t for t in result["trials"]}
    stopped = [t for t in result["trials"] if t["status"] == "early_stopped"]
    assert len(stopped) >= 1
    for t in stopped:
        assert t["params"]["quality"] <= 0.22  # only poor trials are stopped
    # Once three trials have finished, a poor trial is stopped at its first report
    # (and ends at the next): far before its curve's 20th step.
    assert min(len(t["history"]) for t in stopped) <= 3
    assert by_status[1.0]["status"] == "finished"
    assert all(lat >= 0 for lat in result["engine"]["stop_latencies"])


def test_a_raising_trial_fails_and_the_others_finish(redis_url, tmp_path):
    s = spec(
        searchspace={
            "seconds": ["DISCRETE", [0.02]],
            "fail": ["CATEGORICAL", [False, True]],
            "x": ["DISCRETE", [0, 1, 2]],
        },
        optimizer="gridsearch",
        num_trials=6,
        max_consecutive_failures=10,
    )
    result = run(s, redis_url, tmp_path)
    assert result["status"] == "finished"
    assert result["counts"] == {"finished": 3, "early_stopped": 0, "failed": 3}
    for t in result["trials"]:
        if t["params"]["fail"]:
            assert t["status"] == "failed"
            assert "RuntimeError: boom" in t["error"] and "Traceback" in t["traceback"]
        else:
            assert t["status"] == "finished" and t["metric"] is not None
    assert result["best"]["params"]["fail"] is False


def test_consecutive_failures_end_a_hopeless_experiment(redis_url, tmp_path):
    s = spec(
        searchspace={"fail": ["CATEGORICAL", [True]], "seconds": ["DOUBLE", [0, 0.01]]},
        num_trials=50,
        max_consecutive_failures=3,
    )
    result = run(s, redis_url, tmp_path)
    assert result["status"] == "failed"
    assert "max_consecutive_failures=3" in result["reason"] and "boom" in result["reason"]
    assert result["counts"]["failed"] >= 3
    assert result["num_trials"] < 50
    assert load_result(result["results_dir"])["status"] == "failed"  # recorded all the same


def test_bad_return_values_fail_the_trial_with_the_reason(redis_url, tmp_path):
    def returns_wrong_key(x, reporter):
        return {"acc": x}

    result = lagom(
        returns_wrong_key,
        HyperparameterOptConfig(
            num_trials=2,
            optimizer="randomsearch",
            searchspace={"x": ["DOUBLE", [0, 1]]},
            optimization_key="accuracy",
            es_policy="none",
        ),
        redis_url=redis_url,
        results_dir=tmp_path,
    )
    assert result["counts"]["failed"] == 2
    assert "no key 'accuracy'" in result["trials"][0]["error"]


def test_lagom_runs_a_callable(redis_url, tmp_path):
    offset = 10.0  # a closure: Spark ships the function by value

    def train(x, reporter):
        for step in range(3):
            reporter.broadcast(offset - (x - step) ** 2, step)
        return offset - x**2

    config = HyperparameterOptConfig(
        num_trials=6,
        optimizer="randomsearch",
        es_policy="none",
        searchspace={"x": ["DOUBLE", [-1, 1]]},
        direction="max",
    )
    result = lagom(train, config, redis_url=redis_url, results_dir=tmp_path)
    assert result["status"] == "finished" and result["num_trials"] == 6
    for t in result["trials"]:
        assert t["metric"] == pytest.approx(offset - t["params"]["x"] ** 2)
        assert len(t["history"]) == 3


def test_runs_with_a_private_redis_when_none_is_configured(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(redis_server.ENV_VAR, raising=False)
    monkeypatch.setattr(
        redis_server, "DEFAULT_URL", "redis://127.0.0.1:1/0"
    )  # nothing listens there
    caplog.set_level(logging.INFO, logger="maggy")
    result = run_experiment(spec(num_trials=4), results_dir=tmp_path)
    assert result["status"] == "finished" and result["num_trials"] == 4
    started = [
        r.getMessage() for r in caplog.records if "started a private Redis" in r.getMessage()
    ]
    assert started, "the private server was not announced"
    url = started[0].split(" at ")[1].split(" ")[0]
    assert not redis_server.ping(url), "the private server is still running"


def test_resume_keeps_ended_trials(redis_url, tmp_path):
    s = spec(num_trials=8, experiment_id="resume-me")
    first = run(s, redis_url, tmp_path)
    assert first["status"] == "finished"
    journal = tmp_path / "resume-me" / "journal.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    # Cut the journal after the fourth ended trial, as if the driver died there.
    ended = [i for i, r in enumerate(records) if r["type"] == "trial_ended"]
    cut = records[: ended[3] + 1]
    kept = {r["trial_id"] for r in cut if r["type"] == "trial_ended"}
    journal.write_text(
        "".join(json.dumps(r) + "\n" for r in cut) + '{"type": "trial_st'
    )  # and a torn line
    first_result = (tmp_path / "resume-me" / "result.json").read_text()
    second = run(s, redis_url, tmp_path)
    assert second["status"] == "finished"
    assert second["num_trials"] == 8
    # The earlier run's result was moved aside when the resume began, not left as
    # this run's while it ran.
    assert (tmp_path / "resume-me" / "result.previous.json").read_text() == first_result
    assert (
        json.loads((tmp_path / "resume-me" / "result.json").read_text())["started"]
        == (second["started"])
    )
    records = [
        json.loads(line) for line in journal.read_text().splitlines() if line.startswith('{"time')
    ]
    after_resume = records[len(cut) :]
    rerun = {r["trial_id"] for r in after_resume if r["type"] == "trial_started"}
    assert not (rerun & kept), "an ended trial ran again"
    assert {t["trial_id"]: t["params"] for t in second["trials"]} == {
        t["trial_id"]: t["params"] for t in first["trials"]
    }  # the same seeded sequence


def test_invalid_spec_fails_before_spark_starts(redis_url, tmp_path):
    def train(lr, reporter):
        return lr

    with pytest.raises(SpecError, match="searchspace.units"):
        lagom(
            train,
            HyperparameterOptConfig(
                num_trials=2,
                optimizer="randomsearch",
                searchspace={"lr": ["DOUBLE", [0, 1]], "units": ["INTEGER", [1, 4]]},
            ),
            redis_url=redis_url,
            results_dir=tmp_path,
        )
    assert not any(tmp_path.iterdir()), "nothing may be written for a spec that cannot run"


def test_train_kwargs_reach_every_trial(redis_url, tmp_path):
    def train(x, data, reporter, label="none"):
        return x + len(data) + (100 if label == "y" else 0)

    config = HyperparameterOptConfig(
        num_trials=3,
        optimizer="randomsearch",
        es_policy="none",
        searchspace={"x": ["DOUBLE", [0, 1]]},
        train_kwargs={"data": "abcd", "label": "y"},
    )
    result = lagom(train, config, redis_url=redis_url, results_dir=tmp_path)
    assert result["status"] == "finished"
    for t in result["trials"]:
        assert t["metric"] == pytest.approx(t["params"]["x"] + 104)


def _long_running(experiment_id: str) -> ExperimentSpec:
    return spec(
        experiment_id=experiment_id,
        num_trials=40,
        searchspace={"seconds": ["DOUBLE", [0.2, 0.3]], "x": ["DOUBLE", [-2, 2]]},
    )


def test_an_experiment_whose_follower_is_gone_stops_itself(redis_url, tmp_path, experiment_id):
    # Nobody touches the follower key: the Airflow task that started the run is gone.
    # (3 s: long enough for Spark's Python workers to start and some trials to end.)
    result = run(_long_running(experiment_id), redis_url, tmp_path, follower_lease=3.0)
    assert result["status"] == "stopped"
    assert "follower_lease 3 s" in result["reason"]
    assert 0 < result["counts"]["finished"] < 40  # what ended before the stop is kept


def test_a_follower_that_keeps_touching_its_key_lets_the_experiment_finish(
    redis_url, tmp_path, experiment_id
):
    import threading

    from maggy_core.channel import connect, touch_follower

    client = connect(redis_url)
    touch_follower(client, experiment_id, "test", lease=1.0)
    halt = threading.Event()

    def follow() -> None:
        while not halt.wait(0.3):
            touch_follower(client, experiment_id, "test", lease=1.0)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        result = run(_long_running(experiment_id), redis_url, tmp_path, follower_lease=1.0)
    finally:
        halt.set()
        follower.join()
    assert result["status"] == "finished", result["reason"]
    assert result["counts"]["finished"] == 40
