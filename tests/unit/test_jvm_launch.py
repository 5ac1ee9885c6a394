"""The driver JVM's command without spark-submit (maggy_core/jvm_launch.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from maggy_core import jvm_launch
from maggy_core.jvm_launch import DirectLaunch

CONF = {
    "spark.master": "local[2,3]",
    "spark.app.name": "maggy-first",
    "spark.driver.memory": "384m",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "jvm"
    monkeypatch.setenv("MAGGY_JVM_CACHE", str(folder))
    for name in ("SPARK_CONF_DIR", "PYSPARK_SUBMIT_ARGS", "SPARK_TESTING", "SPARK_SUBMIT_OPTS"):
        monkeypatch.delenv(name, raising=False)
    return folder


def test_the_launchers_command_is_kept_and_reused_with_the_apps_name(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = DirectLaunch(CONF)
    assert first.command is not None, first.why_not
    command = first.command
    assert command[0].endswith("java")
    # What Spark's launcher makes of the settings: memory and options on the JVM.
    assert "-Xmx384m" in command and "-XX:TieredStopAtLevel=1" in command
    main = command.index("org.apache.spark.deploy.SparkSubmit")
    assert "spark.app.name=maggy-first" in command[main:]
    assert command[-1] == "pyspark-shell"
    assert first.env["PYTHONHASHSEED"] == "0"  # as bin/spark-submit exports it
    assert len(list(cache.glob("launch-*.json"))) == 1

    def no_launcher(*_args: object, **_kw: object) -> None:
        raise AssertionError("the launcher ran again")

    monkeypatch.setattr(jvm_launch, "_run_launcher", no_launcher)
    second = DirectLaunch({**CONF, "spark.app.name": "maggy-second"})
    assert second.command is not None
    expected = [
        "spark.app.name=maggy-second" if c == "spark.app.name=maggy-first" else c for c in command
    ]
    assert second.command == expected


def test_other_settings_or_environment_get_their_own_command(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = DirectLaunch(CONF).command
    other = DirectLaunch({**CONF, "spark.driver.memory": "256m"}).command
    assert base is not None and other is not None
    assert "-Xmx256m" in other and "-Xmx384m" not in other
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", "-Dmaggy.test=1")
    with_opts = DirectLaunch(CONF).command
    assert with_opts is not None and "-Dmaggy.test=1" in with_opts
    assert len(list(cache.glob("launch-*.json"))) == 3


def test_spark_submit_is_used_where_its_scripts_do_more(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "spark-env.sh").write_text("export SPARK_LOCAL_IP=127.0.0.1\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(conf_dir))
    assert DirectLaunch(CONF).command is None
    monkeypatch.delenv("SPARK_CONF_DIR")
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--jars x.jar pyspark-shell")
    assert DirectLaunch(CONF).command is None


def test_a_failing_launcher_falls_back_to_spark_submit(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jvm_launch, "_run_launcher", lambda *_a, **_k: None)
    launch = DirectLaunch(CONF)
    assert launch.command is None and "launcher" in launch.why_not
    assert not list(cache.glob("launch-*.json"))


def test_a_first_run_that_writes_the_class_archive_keeps_no_command(cache: Path) -> None:
    options = "-XX:TieredStopAtLevel=1 -XX:ArchiveClassesAtExit=/tmp/x.123.tmp -Xlog:cds=off"
    launch = DirectLaunch({**CONF, "spark.driver.extraJavaOptions": options})
    assert launch.command is not None
    assert not list(cache.glob("launch-*.json"))


def test_spark_home_is_found_as_pyspark_finds_it_without_importing_pyspark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import subprocess
    import sys

    monkeypatch.delenv("SPARK_HOME", raising=False)
    code = (
        "import os, sys\n"
        "from maggy_core.jvm_archive import archive_name, spark_home\n"
        "from maggy_core.jvm_launch import DirectLaunch\n"
        "name = archive_name('-XX:TieredStopAtLevel=1')\n"
        "print('pyspark' in sys.modules, name is not None)\n"
        "print(os.path.realpath(spark_home()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SPARK_HOME"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    first, home = out.stdout.splitlines()
    # The JVM starts before the driver imports pyspark (0.2-0.3 s): nothing on the
    # way to it may import pyspark.
    assert first == "False True"
    from pyspark.find_spark_home import _find_spark_home

    assert home == os.path.realpath(_find_spark_home())


def test_a_command_with_a_secret_setting_is_used_but_not_kept(cache: Path) -> None:
    secret = {**CONF, "spark.hadoop.fs.s3a.secret.key": "do-not-keep-me"}
    launch = DirectLaunch(secret)
    assert launch.command is not None, launch.why_not
    assert list(cache.glob("launch-*.json")) == []
    DirectLaunch(CONF)
    (kept,) = cache.glob("launch-*.json")
    assert kept.stat().st_mode & 0o077 == 0  # this user's only
    assert "do-not-keep-me" not in kept.read_text()
