"""Per-experiment Redis users on a real Redis server with ``requirepass``: an
experiment's workers reach their own keys through the channel, and nothing else."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis
from waiting import wait_for  # tests/, on sys.path

from maggy_core.acl import WORKER_COMMANDS, drop_worker_user, username_for, worker_credentials
from maggy_core.channel import WorkerChannel, key_prefix, request_experiment_stop
from maggy_core.results import read_records
from maggy_core.runner import run_experiment
from maggy_core.spec import ExperimentSpec

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-pw-4f1c"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PasswordRedis:
    """A Redis of the test's own whose default user needs a password, without
    persistence: :meth:`restart` brings it back empty (users included) on its port."""

    def __init__(self, folder) -> None:
        self.exe = shutil.which("redis-server")
        if self.exe is None:
            from maggy_core.redis_server import PrivateRedis

            self.exe = PrivateRedis.executable()
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--requirepass",
                ADMIN_PASSWORD,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self, down: float) -> None:
        self.stop()
        time.sleep(down)
        self.start()


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory) -> Iterator[PasswordRedis]:
    server = PasswordRedis(tmp_path_factory.mktemp("redis-acl"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(password_redis) -> str:
    """The admin URL of the module's password-protected Redis."""
    return password_redis.url


def _denied(call) -> bool:
    try:
        call()
    except redis.ResponseError as exc:  # NOPERM, in every Redis that has ACLs
        return "NOPERM" in str(exc) or "no permissions" in str(exc).lower()
    return False


def test_workers_reach_their_own_experiment_and_nothing_else(server, caplog):
    admin = redis.Redis.from_url(server)
    with caplog.at_level(logging.INFO, logger="maggy"):
        mine = worker_credentials(admin, server, "exp-a.1")
        other = worker_credentials(admin, server, "exp-b.2")
    assert mine is not None and other is not None
    assert mine.username == username_for("exp-a.1") and mine.url != server
    assert ADMIN_PASSWORD not in mine.url
    password = mine.url.split(":", 2)[2].split("@")[0]
    assert password not in caplog.text and password not in repr(mine)

    # Everything a worker does through the channel works under its user.
    admin.hset(key_prefix("exp-a.1") + "meta", "state", "running")
    admin.rpush(key_prefix("exp-a.1") + "assign:w0", b'{"v":1,"type":"done","reason":"x"}')
    channel = WorkerChannel(mine.url, "exp-a.1", "w0", epoch=1)
    channel.register("host", 1)
    channel.heartbeat()
    assert channel.report("t0000", 1, 1, 0.5) is False
    channel.send("log", trial="t0000", attempt=1, msg="hello")
    assert channel.next_message(timeout=1)["type"] == "done"
    assert channel.experiment_state() == "running"
    assert admin.xlen(key_prefix("exp-a.1") + "events") == 3
    channel.close()

    # Another experiment's keys, and the server itself, are out of reach.
    worker = redis.Redis.from_url(mine.url)
    theirs = key_prefix("exp-b.2")
    admin.hset(theirs + "meta", "state", "running")
    assert _denied(lambda: worker.hset(theirs + "meta", "stop_request", "forged"))
    assert _denied(lambda: worker.hget(theirs + "meta", "state"))
    assert _denied(lambda: worker.xadd(theirs + "events", {"m": "{}"}))
    assert _denied(lambda: worker.delete(key_prefix("exp-a.1") + "meta"))  # not a worker's command
    assert _denied(lambda: worker.flushall())
    assert _denied(lambda: worker.keys("*"))
    assert _denied(lambda: worker.config_get("*"))
    assert _denied(lambda: worker.execute_command("ACL", "LIST"))
    assert _denied(lambda: worker.eval("return 1", 0))
    assert _denied(lambda: worker.publish(theirs + "x", "y"))
    assert admin.hget(theirs + "meta", "stop_request") is None

    drop_worker_user(admin, "exp-a.1")
    drop_worker_user(admin, "exp-a.1")  # gone already: nothing happens
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(mine.url).ping()


def test_a_new_run_of_the_experiment_resets_its_user(server):
    admin = redis.Redis.from_url(server)
    first = worker_credentials(admin, server, "exp-c")
    second = worker_credentials(admin, server, "exp-c")
    assert first and second and first.url != second.url
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(first.url).ping()
    assert redis.Redis.from_url(second.url).ping()


def test_a_coordinator_not_allowed_to_make_users_says_so_and_goes_on(server, caplog):
    admin = redis.Redis.from_url(server)
    admin.execute_command(
        "ACL", "SETUSER", "plain", "reset", "on", ">plain-pw", "~*", "+@all", "-@admin"
    )
    url = server.replace(f":{ADMIN_PASSWORD}@", "plain:plain-pw@")
    with caplog.at_level(logging.WARNING, logger="maggy"):
        assert worker_credentials(redis.Redis.from_url(url), url, "exp-d") is None
    assert "may not make users" in caplog.text and "exp-d" in caplog.text
    assert "plain-pw" not in caplog.text


def test_the_command_list_is_what_the_worker_channel_sends():
    import inspect

    from maggy_core import channel

    source = inspect.getsource(channel.WorkerChannel)
    used = {
        c
        for c in ("xadd", "hget", "zadd", "blpop", "hset", "delete", "lpop", "rpush")
        if f".{c}(" in source
    }
    allowed = {c.split("|")[0] for c in WORKER_COMMANDS}
    assert used <= allowed, f"WorkerChannel sends {sorted(used - allowed)}, which the user lacks"


# ------------------------------------------------------------------ whole experiments


def _acl_users(admin: redis.Redis) -> set[str]:
    return {u.decode() for u in admin.execute_command("ACL", "USERS")}


def _probing_spec(name: str, num_trials: int, seconds: float = 0.1) -> ExperimentSpec:
    return ExperimentSpec.from_dict(
        {
            "name": name,
            "searchspace": {"x": ["DOUBLE", [0.0, 1.0]]},
            "num_trials": num_trials,
            "workers": 2,
            "es_policy": "none",
            "hb_interval": 0.2,
            "seed": 3,
            "train_kwargs": {"seconds": seconds},
        },
        require_train_fn=False,
    )


def _probing_train(experiment_id: str, other_key: str):
    """A training function that looks at the Redis connection its worker holds:
    which user it is, and whether it can touch another experiment's key."""

    def train(x, seconds, reporter):
        import time as _time

        import redis as _redis

        client = reporter._channel.client  # the worker's own connection
        username = client.connection_pool.connection_kwargs.get("username")
        # A command the user has, on another experiment's key (the key pattern
        # refuses it), and a command it lacks: both NOPERM.
        refused = 0
        for attempt in (
            lambda: client.xadd(other_key.replace(":meta", ":events"), {"m": "{}"}),
            lambda: client.hget(other_key, "state"),
            lambda: client.hset(other_key, "stop_request", "forged by a worker"),
        ):
            try:
                attempt()
            except _redis.exceptions.NoPermissionError:
                refused += 1
        denied = float(refused == 3)
        for step in range(3):
            _time.sleep(seconds / 3)
            reporter.broadcast(x, step=step)
        return {
            "metric": x,
            "own_user": float(username == f"maggy-worker:{experiment_id}"),
            "denied": denied,
        }

    return train


@pytest.mark.usefixtures("local_spark")
def test_an_experiment_runs_with_its_workers_on_their_own_user(server, tmp_path, caplog):
    admin = redis.Redis.from_url(server)
    exp = f"acl-run-{uuid.uuid4().hex[:6]}"
    other = key_prefix(f"acl-other-{uuid.uuid4().hex[:6]}") + "meta"
    admin.hset(other, "state", "running")
    with caplog.at_level(logging.INFO, logger="maggy"):
        result = run_experiment(
            _probing_spec(exp, 6),
            train_fn=_probing_train(exp, other),
            redis_url=server,
            results_dir=tmp_path,
            experiment_id=exp,
        )
    assert result["status"] == "finished", result["reason"]
    assert result["counts"]["finished"] == 6
    for trial in result["trials"]:
        assert trial["metrics"]["own_user"] == 1.0, trial  # the worker was its own user
        assert trial["metrics"]["denied"] == 1.0, trial  # NOPERM on another experiment's key
    assert admin.hget(other, "stop_request") is None
    assert f"workers use Redis user {username_for(exp)}" in caplog.text
    assert username_for(exp) not in _acl_users(admin)  # dropped at the end
    assert quote(username_for(exp), safe="") not in caplog.text  # nor its URL in a log line


@pytest.mark.usefixtures("local_spark")
def test_an_empty_restart_mid_run_makes_the_user_again(password_redis, tmp_path, caplog):
    exp = f"acl-restart-{uuid.uuid4().hex[:6]}"
    other = key_prefix(f"acl-other-{uuid.uuid4().hex[:6]}") + "meta"
    out: dict = {}
    thread = threading.Thread(
        target=lambda: out.update(
            run_experiment(
                _probing_spec(exp, 16, seconds=0.3),
                train_fn=_probing_train(exp, other),
                redis_url=password_redis.url,
                results_dir=tmp_path,
                experiment_id=exp,
            )
        ),
        daemon=True,
    )
    folder = tmp_path / exp
    with caplog.at_level(logging.INFO, logger="maggy"):
        thread.start()
        wait_for(
            lambda: sum(r.type == "trial_ended" for r in read_records(folder)) >= 2,
            240,
            "two trials to end",
        )
        password_redis.restart(1.0)  # empty: keys and users gone
        assert username_for(exp) not in _acl_users(redis.Redis.from_url(password_redis.url))
        thread.join(240)
    assert not thread.is_alive(), "the experiment did not end after the restart"
    assert out["status"] == "finished", out.get("reason")
    assert out["counts"]["finished"] == 16
    assert all(t["metrics"]["own_user"] == 1.0 for t in out["trials"])
    assert "made again" in caplog.text
    assert username_for(exp) not in _acl_users(redis.Redis.from_url(password_redis.url))
    # No log line holds the workers' URL (its user name is percent-encoded in it).
    assert quote(username_for(exp), safe="") not in caplog.text


@pytest.mark.usefixtures("local_spark")
def test_a_stopped_experiment_drops_its_user_too(server, tmp_path):
    admin = redis.Redis.from_url(server)
    exp = f"acl-stop-{uuid.uuid4().hex[:6]}"
    out: dict = {}
    thread = threading.Thread(
        target=lambda: out.update(
            run_experiment(
                _probing_spec(exp, 40, seconds=0.3),
                train_fn=_probing_train(exp, key_prefix("nobody") + "meta"),
                redis_url=server,
                results_dir=tmp_path,
                experiment_id=exp,
            )
        ),
        daemon=True,
    )
    thread.start()
    wait_for(lambda: username_for(exp) in _acl_users(admin), 120, "the user to be made")
    wait_for(
        lambda: any(r.type == "trial_ended" for r in read_records(tmp_path / exp)),
        240,
        "a trial to end",
    )
    assert request_experiment_stop(admin, exp, "the test")
    thread.join(120)
    assert not thread.is_alive()
    assert out["status"] == "stopped"
    assert username_for(exp) not in _acl_users(admin)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://:admin@10.0.0.1:6380/2", {"host": "10.0.0.1", "port": 6380, "db": 2}),
        ("rediss://[::1]:6379/0?ssl_cert_reqs=none", {"host": "::1", "port": 6379, "db": 0}),
        ("unix:///run/redis.sock?db=3", {"path": "/run/redis.sock", "db": 3}),
    ],
)
def test_the_workers_url_is_the_same_server_with_the_new_user(url, where):
    from maggy_core.redis_server import with_credentials

    kwargs = redis.ConnectionPool.from_url(
        with_credentials(url, "maggy-worker:e/1", "p@ss:w/rd")
    ).connection_kwargs
    assert kwargs["username"] == "maggy-worker:e/1" and kwargs["password"] == "p@ss:w/rd"
    assert {k: kwargs[k] for k in where} == where
    # Without a user of their own, the workers get the coordinator's user and password.
    shared = redis.ConnectionPool.from_url(with_credentials(url, None, "p@ss")).connection_kwargs
    assert shared["password"] == "p@ss" and shared.get("username") is None
    assert {k: shared[k] for k in where} == where


def test_without_acls_the_workers_url_carries_the_drivers_password(monkeypatch):
    """The executors' environment has no password: where the server cannot make the
    workers' user, the launch record's URL carries the driver's."""
    from maggy_core.channel import CoordinatorChannel

    monkeypatch.setenv("MAGGY_REDIS_PASSWORD", "s3cret/:@")
    channel = CoordinatorChannel("redis://10.0.0.1:6380/2", "e")
    kwargs = redis.ConnectionPool.from_url(channel.worker_url).connection_kwargs
    assert kwargs["password"] == "s3cret/:@" and kwargs["host"] == "10.0.0.1"
    monkeypatch.delenv("MAGGY_REDIS_PASSWORD")
    assert CoordinatorChannel("redis://10.0.0.1:6380/2", "e").worker_url == (
        "redis://10.0.0.1:6380/2"
    )
