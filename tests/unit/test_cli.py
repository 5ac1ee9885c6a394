"""``maggy --version`` and ``maggy validate`` (no Spark needed)."""

from __future__ import annotations

import pytest

from maggy_core import __version__
from maggy_core.cli import EXIT_BAD_SPEC, EXIT_OK, main

GOOD = """\
name: ok
train_fn: maggy_core.examples.sleep:train
searchspace:
  seconds: [DOUBLE, [0.01, 0.1]]
num_trials: 3
"""


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_validate_accepts_a_good_spec(tmp_path, capsys):
    assert main(["validate", write(tmp_path, GOOD)]) == EXIT_OK
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (GOOD.replace("num_trials: 3", "num_trials: 0"), "num_trials"),
        (GOOD.replace("DOUBLE", "FLOAT"), "searchspace.seconds"),
        (GOOD + "directon: max\n", "directon"),
        (GOOD.replace("sleep:train", "sleep:nothing"), "train_fn"),
        (GOOD.replace("maggy_core.examples.sleep", "no_such_module"), "train_fn"),
        # train() needs 'seconds'; the space gives only 'lr'.
        (GOOD.replace("seconds: [DOUBLE", "lr: [DOUBLE"), "'seconds'"),
        ("name: [unclosed\n", "spec"),
    ],
)
def test_validate_names_the_field(tmp_path, capsys, text, needle):
    assert main(["validate", write(tmp_path, text)]) == EXIT_BAD_SPEC
    err = capsys.readouterr().err
    assert needle in err


def test_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == EXIT_BAD_SPEC
    assert "nope.yaml" in capsys.readouterr().err


def test_show_prints_a_result(tmp_path, capsys):
    import json

    result = {
        "experiment_id": "e1",
        "status": "finished",
        "reason": "",
        "optimization_key": "acc",
        "direction": "max",
        "num_trials": 2,
        "duration": 3.5,
        "results_dir": str(tmp_path),
        "counts": {"finished": 1, "early_stopped": 0, "failed": 1},
        "best": {"trial_id": "t0000", "params": {"x": 1}, "metric": 0.5},
        "trials": [
            {
                "trial_id": "t0000",
                "status": "finished",
                "metric": 0.5,
                "duration": 1.0,
                "params": {"x": 1},
            },
            {
                "trial_id": "t0001",
                "status": "failed",
                "metric": None,
                "duration": 0.1,
                "params": {"x": 2},
            },
        ],
    }
    (tmp_path / "result.json").write_text(json.dumps(result))
    assert main(["show", str(tmp_path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "experiment e1: finished" in out and "best: t0000 acc=0.5" in out
    assert out.index("t0000") < out.index("t0001")  # the finished trial ranks first
    assert main(["show", str(tmp_path / "missing")]) == 1


def test_run_skips_the_last_garbage_collection_at_exit(tmp_path, capsys, monkeypatch):
    import atexit
    import gc

    import maggy_core.runner

    def fake_run(spec, **kwargs):
        assert kwargs["end_jvm"] is True  # this process needs no JVM after the run
        return {
            "experiment_id": "x",
            "status": "finished",
            "reason": None,
            "optimization_key": "metric",
            "direction": "max",
            "num_trials": 0,
            "counts": {"finished": 0, "early_stopped": 0, "failed": 0},
            "duration": 0.0,
            "best": None,
            "results_dir": str(tmp_path),
            "trials": [],
        }

    registered = []
    monkeypatch.setattr(maggy_core.runner, "run_experiment", fake_run)
    monkeypatch.setattr(atexit, "register", lambda fn, *a, **k: registered.append(fn))
    assert main(["run", write(tmp_path, GOOD), "-q"]) == EXIT_OK
    assert gc.freeze in registered
