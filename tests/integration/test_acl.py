"""Per-experiment Redis users on a real Redis server with ``requirepass``: an
experiment's workers reach their own keys through the channel, and nothing else."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from maggy_core.acl import WORKER_COMMANDS, drop_worker_user, username_for, worker_credentials
from maggy_core.channel import WorkerChannel, key_prefix

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-pw-4f1c"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """A Redis of the test's own whose default user needs a password; its admin URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        from maggy_core.redis_server import PrivateRedis

        exe = PrivateRedis.executable()
    port = _free_port()
    folder = tmp_path_factory.mktemp("redis-acl")
    proc = subprocess.Popen(
        [
            exe,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            "--requirepass",
            ADMIN_PASSWORD,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://:{ADMIN_PASSWORD}@127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


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
