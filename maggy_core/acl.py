"""Per-experiment Redis users: one experiment's workers cannot touch another's keys.

Training code runs inside the workers, with the workers' Redis connection. On a
Redis shared by several experiments (or teams), a worker that holds the
coordinator's credentials could stop, forge or delete any other experiment. So
the coordinator makes a Redis ACL user for its experiment whose keys are only
``maggy:{<experiment_id>}:*`` and whose commands are only those
:class:`~maggy_core.channel.WorkerChannel` sends, with a random password, and
hands the workers a URL with that user instead of its own.

The user is made (or reset) when the experiment opens and deleted when it ends
(finished, failed or stopped: the runner drops it on every way out). A Redis
restart that lost everything loses the user too; the channel's restore path makes
it again with the same password, so the workers' connections authenticate again
as soon as it is back (until then their reconnects fail and are retried like any
outage). A coordinator that crashes leaves it behind; it can only reach the keys
of that experiment, which expire (see the channel), and the next run of the same
experiment resets it with a new password.

When the server cannot do this (Redis before 6, or a connection not allowed to
run ``ACL SETUSER``), :func:`worker_credentials` says why in one log line and the
workers use the coordinator's URL: the experiment runs, without isolation.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from maggy_core.redis_server import with_credentials

log = logging.getLogger("maggy")

#: What a worker sends (WorkerChannel), and what redis-py sends on connecting.
WORKER_COMMANDS = (
    "xadd",  # events: register, metric, log, final, error, bye
    "hget",  # the stop flag of a trial, the experiment's state
    "zadd",  # heartbeats
    "expire",  # the expiry of a key a worker may make (its keys only, by the key pattern)
    "blpop",  # the next assignment
    "ping",  # redis-py's health check
    "select",  # a database other than 0 in the URL
    "client|setinfo",  # redis-py's library name and version
    "hello",
    "auth",
)


@dataclass(frozen=True)
class WorkerCredentials:
    """The user made for one experiment's workers."""

    username: str
    url: str  # the coordinator's URL with this user and password in it
    password: str = field(repr=False, default="")  # to make the same user again

    def __repr__(self) -> str:  # the URL holds the password
        return f"WorkerCredentials(username={self.username!r})"


def username_for(experiment_id: str) -> str:
    """The ACL user of an experiment's workers."""
    return f"maggy-worker:{experiment_id}"


def key_pattern(experiment_id: str) -> str:
    """The keys the user may touch: the experiment's prefix (see ``channel.key_prefix``)."""
    return f"maggy:{{{experiment_id}}}:*"


def worker_credentials(
    client: Any, url: str, experiment_id: str, password: str | None = None
) -> WorkerCredentials | None:
    """Make (or reset) the experiment's worker user; None when the server cannot.

    Args:
        client: A ``redis.Redis`` connected as the coordinator.
        url: The coordinator's Redis URL; the workers' URL is the same server and
            database with the new user's name and password.
        experiment_id: Whose keys the user may touch.
        password: Make the user again with this password (after a Redis restart
            lost it: the workers hold a URL with it); default a new random one.

    Returns:
        The user and the workers' URL, or None (logged once, with the reason).
    """
    import redis

    username = username_for(experiment_id)
    again = password is not None
    password = password or secrets.token_urlsafe(32)
    rules = [
        "reset",
        "on",
        f">{password}",
        f"~{key_pattern(experiment_id)}",
        "resetchannels",
        "-@all",
        *(f"+{c}" for c in WORKER_COMMANDS),
    ]
    try:
        client.execute_command("ACL", "SETUSER", username, *rules)
    except redis.ResponseError as exc:
        text = str(exc)
        if isinstance(exc, redis.exceptions.NoPermissionError) or "noperm" in text.lower():
            why = f"the coordinator's Redis user may not make users ({text})"
        elif "unknown command" in text.lower():
            why = "this Redis has no ACLs (Redis 6 or newer has)"
        else:
            why = f"ACL SETUSER failed: {text}"
        log.warning(
            "experiment %s: workers share the coordinator's Redis credentials, so training code "
            "could touch other experiments' keys: %s",
            experiment_id,
            why,
        )
        return None
    log.info(
        "experiment %s: workers use Redis user %s (its own keys only)%s",
        experiment_id,
        username,
        " - made again" if again else "",
    )
    return WorkerCredentials(username, with_credentials(url, username, password), password)


def drop_worker_user(client: Any, experiment_id: str) -> None:
    """Delete the experiment's worker user (nothing when there is none)."""
    import redis

    with contextlib.suppress(redis.ResponseError):
        client.execute_command("ACL", "DELUSER", username_for(experiment_id))
