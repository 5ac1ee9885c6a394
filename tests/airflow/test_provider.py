"""maggy-airflow is an Airflow provider: Airflow's CLI lists it and its [maggy] settings.

The CLI runs in a fresh AIRFLOW_HOME per test, as a user's ``airflow`` would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maggy_airflow import settings
from maggy_airflow.get_provider_info import CONFIG_OPTIONS, get_provider_info

pytestmark = pytest.mark.airflow

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def _airflow(tmp_path: Path, *args: str, **env: str) -> str:
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__MAGGY__")},
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **env,
    }
    out = subprocess.run(
        [AIRFLOW, *args], capture_output=True, text=True, env=full, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_the_provider_info_is_valid_for_airflow():
    import jsonschema
    from airflow.providers_manager import _create_provider_info_schema_validator

    info = get_provider_info()
    _create_provider_info_schema_validator().validate(info)  # raises when it is not
    assert info["package-name"] == "maggy-airflow"
    assert set(info["config"]["maggy"]["options"]) == {
        "results_dir",
        "results_conn_id",
        "redis_conn_id",
        "follower_lease",
        "default_workers",
        "allow_local_deferral",
    }
    with pytest.raises(jsonschema.ValidationError):
        _create_provider_info_schema_validator().validate({**info, "plugins": "maggy"})


def test_every_module_and_class_the_provider_names_imports():
    from importlib import import_module

    def import_string(path: str) -> object:
        module, _, name = path.rpartition(".")
        return getattr(import_module(module), name)

    info = get_provider_info()
    for kind in ("operators", "hooks", "triggers"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                import_module(module)
    for path in [*info["extra-links"], *(p["plugin-class"] for p in info["plugins"])]:
        assert import_string(path) is not None


def test_airflow_lists_the_provider(tmp_path):
    providers = json.loads(_airflow(tmp_path, "providers", "list", "-o", "json"))
    ours = [p for p in providers if p["package_name"] == "maggy-airflow"]
    assert len(ours) == 1
    assert "hyperparameter" in ours[0]["description"]


def test_airflow_config_shows_the_maggy_section_and_its_defaults(tmp_path):
    out = _airflow(tmp_path, "config", "list", "--section", "maggy", "--show-values")
    assert "[maggy]" in out
    lines = {
        line.split("=", 1)[0].strip(): line.split("=", 1)[1].strip()
        for line in out.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert lines["redis_conn_id"] == CONFIG_OPTIONS["redis_conn_id"]["default"] == "redis_default"
    assert lines["follower_lease"] == "600"
    assert set(CONFIG_OPTIONS) <= set(lines)


def test_a_setting_comes_from_the_environment_as_airflow_reads_it(tmp_path):
    out = _airflow(
        tmp_path,
        "config",
        "get-value",
        "maggy",
        "results_dir",
        AIRFLOW__MAGGY__RESULTS_DIR="s3://ml-results/maggy",
    )
    assert out.strip() == "s3://ml-results/maggy"


@pytest.mark.parametrize("lazy", ["True", "False"])
def test_the_plugin_loads_once_however_providers_are_discovered(tmp_path, lazy):
    plugins = json.loads(
        _airflow(tmp_path, "plugins", "-o", "json", AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS=lazy)
    )
    assert [p["name"] for p in plugins].count("maggy") == 1


def test_settings_precedence(monkeypatch, tmp_path):
    for name in ("AIRFLOW__MAGGY__RESULTS_DIR", "MAGGY_RESULTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert settings.results_dir() == str(tmp_path / "maggy-results")
    monkeypatch.setenv("MAGGY_RESULTS_DIR", "/data/maggy")
    assert settings.results_dir() == "/data/maggy"
    monkeypatch.setenv("AIRFLOW__MAGGY__RESULTS_DIR", "s3://bucket/prefix")
    assert settings.results_dir() == "s3://bucket/prefix"

    monkeypatch.delenv("AIRFLOW__MAGGY__REDIS_CONN_ID", raising=False)
    assert settings.redis_conn_id() == "redis_default"
    monkeypatch.setenv("AIRFLOW__MAGGY__REDIS_CONN_ID", "redis_maggy")
    assert settings.redis_conn_id() == "redis_maggy"
    monkeypatch.setenv("AIRFLOW__MAGGY__RESULTS_CONN_ID", "aws_default")
    assert settings.results_conn_id() == "aws_default"


@pytest.mark.parametrize(
    ("option", "value", "read"),
    [
        ("FOLLOWER_LEASE", "soon", settings.follower_lease),
        ("FOLLOWER_LEASE", "-5", settings.follower_lease),
        ("DEFAULT_WORKERS", "0", settings.default_workers),
        ("DEFAULT_WORKERS", "two", settings.default_workers),
    ],
)
def test_a_bad_setting_names_the_option(monkeypatch, option, value, read):
    monkeypatch.setenv(f"AIRFLOW__MAGGY__{option}", value)
    with pytest.raises(ValueError, match=rf"\[maggy\] {option.lower()} must be"):
        read()


def test_numeric_settings(monkeypatch):
    monkeypatch.setenv("AIRFLOW__MAGGY__FOLLOWER_LEASE", "120")
    monkeypatch.setenv("AIRFLOW__MAGGY__DEFAULT_WORKERS", "4")
    assert settings.follower_lease() == 120.0
    assert settings.default_workers() == 4
    monkeypatch.setenv("AIRFLOW__MAGGY__DEFAULT_WORKERS", "")
    assert settings.default_workers() is None


class TestTheOperatorTakesItsDefaultsFromTheSection:
    CONFIG = {"searchspace": {"x": ["DOUBLE", [0, 1]]}, "num_trials": 2, "train_fn": "m:f"}

    @staticmethod
    def op(**kwargs):
        from maggy_airflow.operators import MaggyOperator

        return MaggyOperator(task_id="study", **kwargs)

    def test_redis_connection_and_lease(self, monkeypatch):
        monkeypatch.delenv("AIRFLOW__MAGGY__REDIS_CONN_ID", raising=False)
        monkeypatch.delenv("AIRFLOW__MAGGY__FOLLOWER_LEASE", raising=False)
        plain = self.op(config=self.CONFIG)
        assert plain.redis_conn_id == "redis_default" and plain.follower_lease == 600.0
        monkeypatch.setenv("AIRFLOW__MAGGY__REDIS_CONN_ID", "redis_maggy")
        monkeypatch.setenv("AIRFLOW__MAGGY__FOLLOWER_LEASE", "90")
        configured = self.op(config=self.CONFIG)
        assert configured.redis_conn_id == "redis_maggy" and configured.follower_lease == 90.0
        # Said in the DAG wins; None keeps meaning "none".
        explicit = self.op(config=self.CONFIG, redis_conn_id=None, follower_lease=None)
        assert explicit.redis_conn_id is None and explicit.follower_lease is None
        assert self.op(config=self.CONFIG, redis_conn_id="mine").redis_conn_id == "mine"

    def test_default_workers(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW__MAGGY__DEFAULT_WORKERS", "3")
        assert self.op(config=self.CONFIG).build_spec("e").workers == 3
        assert self.op(config={**self.CONFIG, "workers": 1}).build_spec("e").workers == 1
        assert self.op(config=self.CONFIG, num_workers=4).build_spec("e").workers == 4
        monkeypatch.setenv("AIRFLOW__MAGGY__DEFAULT_WORKERS", "many")
        from airflow.sdk.exceptions import AirflowFailException

        with pytest.raises(AirflowFailException, match=r"workers.*\[maggy\] default_workers"):
            self.op(config=self.CONFIG).build_spec("e")

    def test_results_dir(self, monkeypatch, tmp_path):
        from maggy_airflow.operators.maggy_operator import default_results_dir

        monkeypatch.setenv("AIRFLOW__MAGGY__RESULTS_DIR", str(tmp_path / "r"))
        assert default_results_dir() == str(tmp_path / "r")


def test_the_spark_providers_private_members_the_hook_uses_are_there(monkeypatch):
    """operators/hooks.py builds on SparkSubmitHook's private members, in the
    provider range setup.cfg pins (>=6.3,<7): a release that renames one fails here,
    not in a user's DAG."""
    import inspect
    import json

    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    for name in ("_build_spark_submit_command", "_resolve_connection", "_mask_cmd"):
        assert callable(getattr(SparkSubmitHook, name, None)), name
    assert list(inspect.signature(SparkSubmitHook._build_spark_submit_command).parameters) == [
        "self",
        "application",
    ]
    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGGY_LOCAL_SPARK", json.dumps({"conn_type": "spark", "host": "local[2]"})
    )
    hook = SparkSubmitHook(conn_id="maggy_local_spark", conf={"a": "b"}, env_vars={"X": "1"})
    for name in ("_conf", "_conn_id", "_connection", "_env_vars"):
        assert hasattr(hook, name), name
    assert hook._conf == {"a": "b"} and hook._connection["master"] == "local[2]"
    command = hook._build_spark_submit_command("app.py")
    assert command[0].endswith("spark-submit") and command[-1] == "app.py"
    # Locally env_vars stay off the command line and go to _env; on YARN they become
    # --conf arguments, which is why secrets travel in a properties file instead.
    assert hook._env == {"X": "1"} and "X=1" not in " ".join(command)
    yarn = SparkSubmitHook(conn_id="maggy_no_such_spark", env_vars={"X": "1"})
    assert "spark.yarn.appMasterEnv.X=1" in yarn._build_spark_submit_command("app.py")
