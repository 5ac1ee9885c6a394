"""The Redis channel: everything that touches Redis, in one place.

Workers and the coordinator never talk to Redis directly; they hold a
:class:`WorkerChannel` or a :class:`CoordinatorChannel`. Keys of one experiment
share the prefix ``maggy:{<experiment_id>}:`` (the braces are a Redis Cluster hash
tag, so all of an experiment's keys live in one slot):

=================  ===========  ==================================================
key                type         use
=================  ===========  ==================================================
``meta``           hash         state, epoch, heartbeat interval, counts, best
``events``         stream       workers -> coordinator, read by one consumer group
``assign:<w>``     list         coordinator -> worker ``w``: next trial, or done
``workers``        sorted set   worker id -> last heartbeat (unix time)
``ctl``            hash         trial id -> ``STOP``; read on every report
``verdict:<w>``    list         coordinator -> worker ``w``: the stopping rule's
                                answer to a report that asked for it
``keys``           set          every key made, so the end can expire them all
``follower``       string, TTL  the Airflow task (or its trigger) that follows the
                                experiment says it is there (see ``touch_follower``)
``requests``       stream       followers -> coordinator: stop one trial
                                (``request_trial_stop``)
``progress``       stream       coordinator -> followers: one entry per ended trial
=================  ===========  ==================================================

Messages are JSON objects with a schema version ``v``; nothing is pickled, so
whoever can write to Redis cannot make a worker or the coordinator run code. A
message that does not decode, has another version or lacks a field raises
:class:`~maggy_core.exceptions.MessageError` naming the field.

Followers (the Airflow operator, its trigger, the CLI, the plugin) use the
module-level functions of the follower side, each with a ``redis.asyncio`` twin:
:func:`read_meta`, :func:`read_progress`, :func:`read_summary`,
:func:`touch_follower`, :func:`request_experiment_stop` and
:func:`request_trial_stop`.

Clients are made lazily on first use and dropped when pickled, so a channel
object may be handed to a Spark task without carrying a socket along.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from maggy_core.acl import WorkerCredentials, drop_worker_user, worker_credentials
from maggy_core.exceptions import MessageError

log = logging.getLogger("maggy.channel")

SCHEMA_VERSION = 1
GROUP = "coordinator"
STOP = "STOP"

# Required fields (beyond ``v`` and ``type``) of every message type, with the JSON
# types each may have. Events flow worker -> coordinator; assignments the other way.
_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_TRIAL_FIELDS: dict[str, tuple[type, ...]] = {
    "worker": (str,),
    "epoch": (int,),
    "trial": (str,),
    "attempt": (int,),
    "seq": (int,),
}
MESSAGE_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "register": {"worker": (str,), "epoch": (int,), "host": (str,), "pid": (int,)},
    "metric": {**_TRIAL_FIELDS, "step": (int,), "value": _NUM},
    "log": {**_TRIAL_FIELDS, "msg": (str,)},
    "final": {
        **_TRIAL_FIELDS,
        "status": (str,),
        "metric": _OPT_NUM,
        "metrics": (dict,),
        "start": _NUM,
        "duration": _NUM,
    },
    "error": {
        **_TRIAL_FIELDS,
        "error": (str,),
        "traceback": (str,),
        "start": _NUM,
        "duration": _NUM,
    },
    "bye": {"worker": (str,), "epoch": (int,), "busy": _NUM, "trials": (int,)},
    "trial": {
        "trial": (str,),
        "attempt": (int,),
        "params": (dict,),
        "budget": _OPT_NUM,
    },
    "done": {"reason": (str,)},
    # coordinator -> worker: the answer to a ``metric`` event sent with ``ask``
    "verdict": {"trial": (str,), "attempt": (int,), "step": (int,), "verdict": (str,)},
    # followers -> coordinator, on the ``requests`` stream
    "stop_trial": {"trial": (str,), "reason": (str,), "at": _NUM},
}
FINAL_STATUSES = ("finished", "early_stopped")
VERDICTS = ("stop", "go")
#: Most points a ``metric`` event may carry in ``earlier`` (reports a worker held
#: back to send with a later one: see ``maggy_core.reporter.REPORT_EVERY``).
MAX_EARLIER = 256

#: Limits on what the channel accepts. Messages are refused above them (decoded
#: as a MessageError, counted as malformed and acknowledged), so nothing written to
#: Redis can make the coordinator or a worker spend unbounded time or memory, or
#: end it. The engine's own messages stay below them: the worker cuts log lines
#: and tracebacks to :data:`MAX_TEXT` before sending (see :func:`clip`).
MAX_MESSAGE = 1_000_000  # bytes of one encoded message
MAX_TEXT = 64_000  # characters of one string field (a log line, a traceback)
MAX_DEPTH = 32  # nesting of arrays and objects (params, metrics, info)
MAX_ITEMS = 10_000  # entries of all arrays and objects of one message together


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, saying so (for log lines, tracebacks)."""
    if len(text) <= limit:
        return text
    note = f" ... [{len(text) - limit + 40} characters cut]"
    return text[: limit - len(note)] + note


def _check_shape(body: Any) -> None:
    """Refuse a decoded value nested deeper than :data:`MAX_DEPTH`, with more than
    :data:`MAX_ITEMS` entries, or a string longer than :data:`MAX_TEXT`. Iterative,
    so a hostile value cannot exhaust the stack."""
    stack = [(body, 0)]
    items = 0
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                raise MessageError(
                    f"message too large: a string of {len(value)} characters (at most {MAX_TEXT})"
                )
            continue
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise MessageError(f"message too deep: nested more than {MAX_DEPTH} levels")
            children = (
                list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
            )
            items += len(children)
            if items > MAX_ITEMS:
                raise MessageError(f"message too large: more than {MAX_ITEMS} entries")
            stack.extend((c, depth + 1) for c in children)


def encode(message: Mapping[str, Any]) -> str:
    """Serialise a message to JSON, adding the schema version.

    Raises:
        MessageError: the message is not valid for its type (checked with
            :func:`decode`'s rules, so a bad message never leaves the process).
    """
    body = {"v": SCHEMA_VERSION, **message}
    validate(body)
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def decode(raw: str | bytes) -> dict[str, Any]:
    """Parse and validate one message.

    Raises:
        MessageError: not JSON, not an object, another schema version, an unknown
            type, or a missing or mistyped field (the message names it).
    """
    if not isinstance(raw, str | bytes):
        raise MessageError(f"message is not JSON: got {type(raw).__name__}")
    if len(raw) > MAX_MESSAGE:
        raise MessageError(f"message too large: {len(raw)} bytes (at most {MAX_MESSAGE})")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"message is not JSON: {exc}") from None
    except RecursionError:
        raise MessageError(f"message too deep: nested more than {MAX_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise MessageError(f"message must be a JSON object, got {type(body).__name__}")
    _check_shape(body)
    validate(body)
    return body


def validate(body: Mapping[str, Any]) -> None:
    """Check a decoded message against :data:`MESSAGE_FIELDS`."""
    if body.get("v") != SCHEMA_VERSION:
        raise MessageError(
            f"field 'v': schema version must be {SCHEMA_VERSION}, got {body.get('v')!r}"
        )
    kind = body.get("type")
    if kind not in MESSAGE_FIELDS:
        raise MessageError(f"field 'type': must be one of {sorted(MESSAGE_FIELDS)}, got {kind!r}")
    for name, types in MESSAGE_FIELDS[kind].items():
        if name not in body:
            raise MessageError(f"field '{name}': missing in a {kind!r} message")
        value = body[name]
        # bool is an int in Python, never in our messages.
        if isinstance(value, bool) or not isinstance(value, types):
            allowed = "/".join("null" if t is type(None) else t.__name__ for t in types)
            raise MessageError(
                f"field '{name}' of a {kind!r} message: must be {allowed}, got {value!r}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise MessageError(
                f"field '{name}' of a {kind!r} message: must be finite, got {value!r}"
            )
    if kind == "final" and body["status"] not in FINAL_STATUSES:
        raise MessageError(
            f"field 'status' of a 'final' message: must be one of {FINAL_STATUSES}, "
            f"got {body['status']!r}"
        )
    if kind == "metric" and "earlier" in body:
        _check_earlier(body["earlier"])
    if kind == "verdict" and body["verdict"] not in VERDICTS:
        raise MessageError(
            f"field 'verdict' of a 'verdict' message: must be one of {VERDICTS}, "
            f"got {body['verdict']!r}"
        )


def _check_earlier(points: Any) -> None:
    """``earlier`` of a ``metric`` event: up to :data:`MAX_EARLIER` ``[step, value]``
    pairs (a non-negative integer and a finite number), the reports before this one."""
    where = "field 'earlier' of a 'metric' message"
    if not isinstance(points, list) or len(points) > MAX_EARLIER:
        raise MessageError(f"{where}: must be a list of at most {MAX_EARLIER} [step, value] pairs")
    for point in points:
        ok = isinstance(point, list) and len(point) == 2
        step, value = (point[0], point[1]) if ok else (None, None)
        if not (
            ok
            and isinstance(step, int)
            and not isinstance(step, bool)
            and step >= 0
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
        ):
            raise MessageError(
                f"{where}: each point must be [a non-negative integer step, a finite "
                f"number], got {point!r}"
            )


def metric_points(message: Mapping[str, Any]) -> list[tuple[int, float]]:
    """The ``(step, value)`` points of a decoded ``metric`` event, in report order:
    those it carries in ``earlier``, then its own."""
    points = [(int(s), float(v)) for s, v in message.get("earlier") or ()]
    points.append((int(message["step"]), float(message["value"])))
    return points


def key_prefix(experiment_id: str) -> str:
    """The prefix of every key of one experiment (with a cluster hash tag)."""
    return f"maggy:{{{experiment_id}}}:"


def connect(url: str, password: str | None = None):  # -> redis.Redis
    """A Redis client that reconnects with bounded exponential backoff.

    Socket timeouts are longer than the longest blocking read we issue (1 s), so a
    blocking read never looks like a dead connection. The password is ``password``,
    else ``$MAGGY_REDIS_PASSWORD``, unless the URL carries one
    (:func:`maggy_core.redis_server.password`): the driver and the executors get
    the password apart from the URL, which goes into messages and logs.
    """
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    from maggy_core.redis_server import password as redis_password

    class _Retry(Retry):
        """Retries what may heal (a lost connection, a timeout), not a refused
        password: redis-py's AuthenticationError is a ConnectionError, and a wrong
        password was retried for minutes before the error reached anyone."""

        def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
            def retryable(error: Exception) -> bool:
                if isinstance(error, redis.AuthenticationError):
                    return False
                return is_retryable(error) if is_retryable else True

            return super().call_with_retry(do, fail, retryable, with_failure_count)

    return redis.Redis.from_url(
        url,
        password=redis_password(password),
        socket_timeout=15,
        socket_connect_timeout=5,
        retry=_Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=10),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
        decode_responses=False,
    )


def _decode_entry(fields: Any) -> dict[str, Any] | MessageError:
    """The message of one stream entry, or the MessageError that says why not:
    any exception while decoding counts as a malformed message, never more."""
    try:
        return decode(fields.get(b"m", b""))
    except MessageError as exc:
        return exc
    except Exception as exc:  # whatever a hostile entry provokes, it is one bad message
        return MessageError(f"message is not readable: {type(exc).__name__}: {exc}")


class _Channel:
    """Shared plumbing: lazy client, key names, pickling without a socket."""

    def __init__(self, url: str, experiment_id: str) -> None:
        self.url = url
        self.experiment_id = experiment_id
        self.prefix = key_prefix(experiment_id)
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def client(self):  # -> redis.Redis
        if self._client is None:
            self._client = connect(self.url)
        return self._client

    def key(self, name: str) -> str:
        return self.prefix + name

    def assign_key(self, worker: str) -> str:
        return self.key(f"assign:{worker}")

    def verdict_key(self, worker: str) -> str:
        return self.key(f"verdict:{worker}")

    def meta(self) -> dict[str, str]:
        """The experiment's ``meta`` hash, decoded to strings."""
        raw = self.client.hgetall(self.key("meta"))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# ------------------------------------------------------------------ the follower side
#
# Followers are whoever watches or steers a running experiment from outside: the
# Airflow operator and its trigger, the CLI, the plugin's pages. Each entry point
# takes a Redis client (``connect(url)``, or ``redis.asyncio.from_url(url)`` for the
# ``*_async`` twins) and the experiment id; the key names and the JSON of every
# value are decided here and nowhere else. Each sync/async pair shares the helper
# that makes its keys and values, so the two cannot drift apart.

FOLLOWER = "follower"
#: Lifetime of an experiment's keys after the last refresh of a running experiment.
KEY_TTL = 6 * 3600
#: Seconds between two refreshes of that lifetime.
KEEP_ALIVE = 60.0
REQUESTS = "requests"  # stream: followers -> coordinator (stop one trial)
_RUNNING = b"running"


def _decode_hash(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def _state_is_running(raw: Any) -> bool:
    return raw is not None and (raw if isinstance(raw, bytes) else str(raw).encode()) == _RUNNING


def _summary_of(raw: Any) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_meta(client: Any, experiment_id: str) -> dict[str, str]:
    """The experiment's ``meta`` hash (state, counts, best, reason, ...), decoded to
    strings; empty when no such experiment is in Redis."""
    return _decode_hash(client.hgetall(key_prefix(experiment_id) + "meta"))


async def read_meta_async(client: Any, experiment_id: str) -> dict[str, str]:
    """:func:`read_meta` with a ``redis.asyncio`` client."""
    return _decode_hash(await client.hgetall(key_prefix(experiment_id) + "meta"))


def read_summary(client: Any, experiment_id: str) -> dict[str, Any] | None:
    """The summary the driver leaves in Redis after ``result.json`` (the XCom
    shape, see ``maggy_core.records.summarize``), or None before that."""
    return _summary_of(client.hget(key_prefix(experiment_id) + "meta", "summary"))


async def read_summary_async(client: Any, experiment_id: str) -> dict[str, Any] | None:
    """:func:`read_summary` with a ``redis.asyncio`` client."""
    return _summary_of(await client.hget(key_prefix(experiment_id) + "meta", "summary"))


def _progress_of(reply: Any, last: str) -> tuple[list[dict[str, Any]], str]:
    entries = []
    for _stream, items in reply or []:
        for entry_id, fields in items:
            last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            try:
                entry = json.loads(fields[b"m"])
            except (KeyError, ValueError):
                continue  # not ours; the position moves on all the same
            if isinstance(entry, dict) and isinstance(entry.get("line"), str):
                entries.append(entry)
    return entries, last


def read_progress(
    client: Any, experiment_id: str, last: str = "0-0", count: int = 1000
) -> tuple[list[dict[str, Any]], str]:
    """The trials that ended since stream position ``last`` (``trial_id``,
    ``status``, ``metric``, ``params``, ``ended``, ``line``), and the new position."""
    reply = client.xread({key_prefix(experiment_id) + "progress": last}, count=count)
    return _progress_of(reply, last)


async def read_progress_async(
    client: Any, experiment_id: str, last: str = "0-0", count: int = 1000
) -> tuple[list[dict[str, Any]], str]:
    """:func:`read_progress` with a ``redis.asyncio`` client."""
    reply = await client.xread({key_prefix(experiment_id) + "progress": last}, count=count)
    return _progress_of(reply, last)


def live_histories(
    client: Any, experiment_id: str, trial_ids: set[str], *, page: int = 5000
) -> dict[str, list[tuple[int, float]]]:
    """The metric points of running trials still in the experiment's event stream,
    read page by page to its end (a busy stream is not cut at one page). The
    coordinator trims the stream behind what it has acknowledged, so a long
    trial's earliest points may be gone; its whole curve is in the journal once
    it ends. A malformed entry is skipped.

    Returns:
        trial id -> ``[(step, value), ...]`` in step order (the latest value of a
        step reported twice), for the trials asked.
    """
    found: dict[str, dict[int, float]] = {t: {} for t in trial_ids}
    start: bytes | str = "-"
    while True:
        entries = client.xrange(key_prefix(experiment_id) + "events", min=start, count=page)
        for _entry_id, fields in entries:
            message = _decode_entry(fields)
            if isinstance(message, MessageError) or message.get("type") != "metric":
                continue
            trial = message.get("trial")
            if trial in found:
                for step, value in metric_points(message):
                    found[trial][step] = value
        if len(entries) < page:
            break
        last = entries[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else str(last))
    return {t: sorted(points.items()) for t, points in found.items()}


def request_experiment_stop(client: Any, experiment_id: str, reason: str) -> bool:
    """Ask a running experiment to stop; ``reason`` says who asked and why (it
    becomes the experiment's reason: ``"stop requested: <reason>"``). Its
    coordinator checks every heartbeat interval; ended trials are kept.

    Returns:
        False when no experiment with that id is running.
    """
    meta = key_prefix(experiment_id) + "meta"
    if not _state_is_running(client.hget(meta, "state")):
        return False
    client.hset(meta, "stop_request", reason)
    return True


async def request_experiment_stop_async(client: Any, experiment_id: str, reason: str) -> bool:
    """:func:`request_experiment_stop` with a ``redis.asyncio`` client."""
    meta = key_prefix(experiment_id) + "meta"
    if not _state_is_running(await client.hget(meta, "state")):
        return False
    await client.hset(meta, "stop_request", reason)
    return True


def _trial_stop(experiment_id: str, trial_id: str, reason: str) -> tuple[str, dict[str, str]]:
    if not isinstance(trial_id, str) or not trial_id:
        raise ValueError(f"trial_id: must be a non-empty string, got {trial_id!r}")
    if not isinstance(reason, str):
        raise ValueError(f"reason: must be a string, got {reason!r}")
    body = encode({"type": "stop_trial", "trial": trial_id, "reason": reason, "at": time.time()})
    return key_prefix(experiment_id) + REQUESTS, {"m": body}


def request_trial_stop(client: Any, experiment_id: str, trial_id: str, reason: str) -> bool:
    """Ask a running experiment to stop one trial early; ``reason`` says who asked
    (``"stopped from the UI by alice"``) and becomes the trial's ``stop_reason``.

    The coordinator reads the request on its own loop (within a heartbeat
    interval) and stops the trial like a stopping rule would: it ends
    ``early_stopped`` with its last reported metric, at its next report. A request
    for a trial that is not running (ended, not started, unknown) is recorded in
    the journal as ignored.

    Returns:
        False when no experiment with that id is running.

    Raises:
        ValueError: ``trial_id`` or ``reason`` is not a string.
    """
    key, fields = _trial_stop(experiment_id, trial_id, reason)
    if not _state_is_running(client.hget(key_prefix(experiment_id) + "meta", "state")):
        return False
    client.xadd(key, fields, maxlen=10000, approximate=True)
    return True


async def request_trial_stop_async(
    client: Any, experiment_id: str, trial_id: str, reason: str
) -> bool:
    """:func:`request_trial_stop` with a ``redis.asyncio`` client."""
    key, fields = _trial_stop(experiment_id, trial_id, reason)
    if not _state_is_running(await client.hget(key_prefix(experiment_id) + "meta", "state")):
        return False
    await client.xadd(key, fields, maxlen=10000, approximate=True)
    return True


def touch_follower(client: Any, experiment_id: str, who: str, lease: float) -> None:
    """Say that the experiment's follower (the Airflow task that started it, or its
    trigger) is still there. A coordinator started with a follower lease stops the
    experiment when nobody has said so for longer than the lease; the key expires
    after ``lease`` seconds, so a follower must touch it more often than that."""
    key, value, ttl = _follower_record(experiment_id, who, lease)
    client.set(key, value, ex=ttl)


async def touch_follower_async(client: Any, experiment_id: str, who: str, lease: float) -> None:
    """:func:`touch_follower` with a ``redis.asyncio`` client."""
    key, value, ttl = _follower_record(experiment_id, who, lease)
    await client.set(key, value, ex=ttl)


def _follower_record(experiment_id: str, who: str, lease: float) -> tuple[str, str, int]:
    """Key, JSON value and lifetime in whole seconds of a follower's word."""
    value = json.dumps({"v": SCHEMA_VERSION, "who": who, "at": time.time()})
    return key_prefix(experiment_id) + FOLLOWER, value, max(1, math.ceil(lease))


class WorkerChannel(_Channel):
    """A worker's side of the channel. One per Spark task; not thread-safe except
    for :meth:`heartbeat`, which uses its own client (the heartbeat thread must not
    wait behind a blocking read of the main thread)."""

    def __init__(self, url: str, experiment_id: str, worker: str, epoch: int) -> None:
        super().__init__(url, experiment_id)
        self.worker = worker
        self.epoch = epoch
        self._hb_client: Any = None
        self._seq = 0
        self._warned: set[str] = set()
        #: Whether the last :meth:`report` reached Redis (the reporter holds the
        #: points of one that did not, to send with the next).
        self.last_report_sent = True

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_hb_client"] = None
        return state

    def event(self, kind: str, **fields: Any) -> str:
        """Encode the next event of this worker (numbered, for de-duplication)."""
        self._seq += 1
        return encode(
            {"type": kind, "worker": self.worker, "epoch": self.epoch, "seq": self._seq, **fields}
        )

    def send(self, kind: str, **fields: Any) -> None:
        """Append one event to the experiment's event stream."""
        self.send_encoded(self.event(kind, **fields))

    def send_encoded(self, message: str) -> None:
        """Append an event encoded by :meth:`event` (sent again as it was)."""
        self.client.xadd(self.key("events"), {"m": message})

    def register(self, host: str, pid: int) -> None:
        self.heartbeat()
        self.client.xadd(
            self.key("events"),
            {
                "m": encode(
                    {
                        "type": "register",
                        "worker": self.worker,
                        "epoch": self.epoch,
                        "host": host,
                        "pid": pid,
                    }
                )
            },
        )

    def report(
        self,
        trial: str,
        attempt: int,
        step: int,
        value: float,
        wait: float = 0.0,
        earlier: list[tuple[int, float]] | None = None,
    ) -> bool:
        """Send a metric and read the trial's stop flag in one round trip.

        Args:
            earlier: Reports held back since the last send (at most
                :data:`MAX_EARLIER`), sent in this event before its own point.
            wait: When > 0, the report asks for the stopping rule's verdict on it and
                waits up to ``wait`` seconds for it, in the same round trip (the
                pipeline's ``BLPOP`` on ``verdict:<w>``): a trial the rule stops at
                this step learns it now, not one step later. Without an answer in
                time (a busy or absent coordinator) the trial goes on, and the stop
                flag tells it at a later report.

        Returns:
            True when the coordinator has asked this trial to stop.
        """
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        fields: dict[str, Any] = {"trial": trial, "attempt": attempt, "step": step, "value": value}
        if earlier:
            fields["earlier"] = [[s, v] for s, v in earlier]
        if wait > 0:
            fields["ask"] = 1
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.key("events"), {"m": self.event("metric", **fields)})
        pipe.hget(self.key("ctl"), trial)
        if wait > 0:
            pipe.blpop([self.verdict_key(self.worker)], timeout=wait)
        deadline = time.monotonic() + wait
        try:
            replies = pipe.execute()
            flag = replies[1]
            if wait > 0:
                item = replies[2]
                while True:
                    answer = self._verdict_of(item, trial, attempt, step)
                    if answer is not None:
                        return answer or flag == STOP.encode()
                    left = deadline - time.monotonic()
                    if item is None or left <= 0.001:
                        break  # no answer in time: go on, the flag will tell
                    # An answer to an earlier report that gave up waiting: next one.
                    item = self.client.blpop([self.verdict_key(self.worker)], timeout=left)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # Redis is away: the trial goes on rather than failing for the channel's
            # sake; the reporter sends these points again with its next report.
            self._warn_once("a metric report", exc)
            self.last_report_sent = False
            return False
        self.last_report_sent = True
        return flag == STOP.encode()

    @staticmethod
    def _verdict_of(item: Any, trial: str, attempt: int, step: int) -> bool | None:
        """True/False for the verdict on this report in a ``BLPOP`` reply, None when
        the reply is empty or answers another report (or is not a verdict)."""
        if item is None:
            return None
        msg = _decode_entry({b"m": item[1]})
        if (
            isinstance(msg, MessageError)
            or msg["type"] != "verdict"
            or (msg["trial"], msg["attempt"], msg["step"]) != (trial, attempt, step)
        ):
            return None
        return msg["verdict"] == "stop"

    def send_log(self, trial: str, attempt: int, msg: str) -> None:
        """Send a log line of a trial; dropped (with a warning) while Redis is away."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            self.send("log", trial=trial, attempt=attempt, msg=clip(msg))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self._warn_once("a log line", exc)

    def _warn_once(self, what: str, exc: Exception) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(
                "Redis unreachable: dropped %s (and any more while it is away): %s", what, exc
            )

    def stop_requested(self, trial: str) -> bool:
        return self.client.hget(self.key("ctl"), trial) == STOP.encode()

    def heartbeat(self) -> None:
        if self._hb_client is None:
            self._hb_client = connect(self.url)
        pipe = self._hb_client.pipeline(transaction=False)
        pipe.zadd(self.key("workers"), {self.worker: time.time()})
        pipe.expire(self.key("workers"), KEY_TTL)  # a key a worker may make: never without one
        pipe.execute()

    def next_message(self, timeout: float = 1.0, send: str | None = None) -> dict[str, Any] | None:
        """Block up to ``timeout`` seconds for the next assignment; first append
        ``send`` (an event encoded by :meth:`event`) to the event stream, in the
        same round trip, when given.

        Returns:
            The decoded message (``trial`` or ``done``), or None on timeout.
        """
        if send is None:
            item = self.client.blpop([self.assign_key(self.worker)], timeout=timeout)
        else:
            # The last trial's outcome and the wait for the next trial in one round
            # trip: the coordinator's answer is usually there as soon as it has read
            # the outcome, so the worker waits for nothing else between trials.
            pipe = self.client.pipeline(transaction=False)
            pipe.xadd(self.key("events"), {"m": send})
            pipe.blpop([self.assign_key(self.worker)], timeout=timeout)
            _, item = pipe.execute()
        if item is None:
            return None
        msg = _decode_entry({b"m": item[1]})
        if isinstance(msg, MessageError) or msg["type"] not in ("trial", "done"):
            # Not the coordinator's: a worker takes only what it expects.
            kind = "malformed" if isinstance(msg, MessageError) else repr(msg["type"])
            log.warning("worker %s dropped a %s assignment: %s", self.worker, kind, msg)
            return None
        return msg

    def experiment_state(self) -> str | None:
        raw = self.client.hget(self.key("meta"), "state")
        return raw.decode("utf-8", "replace") if raw is not None else None

    def close(self) -> None:
        super().close()
        if self._hb_client is not None:
            self._hb_client.close()
            self._hb_client = None


class CoordinatorChannel(_Channel):
    """The coordinator's side of the channel. Used from one thread only."""

    CONSUMER = "c"

    def __init__(self, url: str, experiment_id: str) -> None:
        super().__init__(url, experiment_id)
        self._acked_since_trim = 0
        self._last_acked: bytes | None = None
        self._requests_at: bytes | str = "0-0"
        # The experiment's own Redis user for its workers (see maggy_core.acl):
        # None until open(), and for good when the server cannot make one.
        self._want_worker_user = True
        self._worker_creds: WorkerCredentials | None = None
        self._batch: Any = None  # the pipeline of :meth:`batched`, while one is open

    @property
    def worker_url(self) -> str:
        """The URL the workers connect with: the experiment's own Redis user when the
        server could make it, else the coordinator's URL with the coordinator's password
        (the executors then need no password of their own in their environment: the
        launch record carries it, as it carries a worker user's). Holds a password:
        never log it."""
        if self._worker_creds is not None:
            return self._worker_creds.url
        from maggy_core.redis_server import password, with_credentials

        secret = password()
        return with_credentials(self.url, None, secret) if secret else self.url

    def _make_worker_user(self) -> None:
        """Make the workers' user (at open), or make it again with the same password
        (a Redis restart lost it; the workers hold a URL with that password)."""
        if not self._want_worker_user:
            return
        again = self._worker_creds
        self._worker_creds = worker_credentials(
            self.client, self.url, self.experiment_id, again.password if again else None
        )
        if self._worker_creds is None:
            self._want_worker_user = False  # said why once (acl.py); the workers share ours
            if again is not None:
                log.error(
                    "experiment %s: could not make the workers' Redis user again: "
                    "they cannot reach Redis any more",
                    self.experiment_id,
                )

    def drop_worker_user(self) -> None:
        """Delete the workers' user (the experiment ended, however it ended)."""
        if self._worker_creds is not None:
            drop_worker_user(self.client, self.experiment_id)
            self._worker_creds = None

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """The coordinator's writes made inside (assignments, verdicts, stop flags,
        acknowledgements, progress, meta) go to Redis in one pipeline at the end,
        in the order they were made: one round trip per round of the loop instead
        of one per write. On a loaded machine a round trip costs milliseconds, and
        it was what bounded the trials a coordinator could dispatch per second
        (``bench/scale.py``). The writes are sent even when the block raises, so a
        failure does not keep back what was decided before it."""
        if self._batch is not None:
            yield
            return
        self._batch = self.client.pipeline(transaction=False)
        try:
            yield
        finally:
            pipe, self._batch = self._batch, None
            if len(pipe):
                pipe.execute()

    def _write(self, build: Callable[[Any], None]) -> None:
        """Run ``build(pipeline)``: queued in the open batch, or sent now."""
        if self._batch is not None:
            build(self._batch)
            return
        pipe = self.client.pipeline(transaction=False)
        build(pipe)
        pipe.execute()

    def open(self, epoch: int, meta: Mapping[str, Any]) -> None:
        """Start a fresh channel for a coordinator epoch.

        Whatever an earlier coordinator of the same experiment left in Redis is
        dropped: the journal, not Redis, is the record of what happened, and
        workers of an earlier epoch are told apart by the epoch in their events.
        """
        c = self.client
        old = [k.decode() for k in c.smembers(self.key("keys"))]
        if old:
            c.delete(*old)
        c.delete(self.key("keys"))
        self._make_worker_user()
        self._restore(epoch, meta)

    def restore(self, epoch: int, meta: Mapping[str, Any]) -> None:
        """Make again what a Redis restart lost (meta, the consumer group, the
        workers' user), without deleting what workers wrote since."""
        if self._worker_creds is not None:
            self._make_worker_user()
        self._restore(epoch, meta)

    def _restore(self, epoch: int, meta: Mapping[str, Any]) -> None:
        self.set_meta(epoch=epoch, **meta)
        self._ensure_group()
        self._track(
            self.key("events"),
            self.key("meta"),
            self.key("workers"),
            self.key("ctl"),
            self.key("progress"),
            self.key(REQUESTS),
        )

    def _ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.key("events"), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _track(self, *keys: str) -> None:
        self.client.sadd(self.key("keys"), *keys)

    def epoch(self) -> int | None:
        """The coordinator epoch in ``meta``; None when Redis lost it (or it is not
        a number: the coordinator restores it like a lost one)."""
        raw = self.client.hget(self.key("meta"), "epoch")
        try:
            return None if raw is None else int(raw)
        except ValueError:
            return None

    def follower_present(self) -> bool:
        """Whether a follower has touched its key within its lease."""
        return bool(self.client.exists(self.key(FOLLOWER)))

    def stop_request(self) -> str | None:
        """Why someone asked the whole experiment to stop, or None."""
        raw = self.client.hget(self.key("meta"), "stop_request")
        return None if raw is None else raw.decode()

    def trial_stop_requests(self, count: int = 100) -> list[dict[str, Any] | MessageError]:
        """Stop requests for single trials sent since the last call (decoded
        ``stop_trial`` messages, or a MessageError for an entry that does not
        decode). Read with XREAD from the last position: one reader, no group."""
        reply = self.client.xread({self.key(REQUESTS): self._requests_at}, count=count)
        out: list[dict[str, Any] | MessageError] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self._requests_at = entry_id
                msg = _decode_entry(fields)
                if not isinstance(msg, MessageError) and msg["type"] != "stop_trial":
                    msg = MessageError(
                        f"field 'type': a request must be 'stop_trial', got {msg['type']!r}"
                    )
                out.append(msg)
        return out

    def publish_progress(self, entry: Mapping[str, Any]) -> None:
        """Append an ended trial's summary to the ``progress`` stream (capped), for
        followers such as the Airflow operator's trigger."""
        line = json.dumps(entry)

        def build(pipe: Any) -> None:
            pipe.xadd(self.key("progress"), {"m": line}, maxlen=10000, approximate=True)
            pipe.expire(self.key("progress"), KEY_TTL)  # made here: an expiry from the start

        self._write(build)

    def set_meta(self, **fields: Any) -> None:
        mapping = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        self._write(lambda pipe: pipe.hset(self.key("meta"), mapping=mapping))

    def read_events(
        self, block_ms: int = 200, count: int = 256
    ) -> list[tuple[bytes, dict[str, Any] | MessageError]]:
        """Read the next events for the coordinator's consumer.

        Returns:
            ``(entry_id, message)`` pairs; ``message`` is a :class:`MessageError`
            for an entry that does not decode (the caller logs and acks it).
        """
        import redis

        try:
            reply = self.client.xreadgroup(
                GROUP, self.CONSUMER, {self.key("events"): ">"}, count=count, block=block_ms
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis restarted and lost the stream: make the group again and go on.
            self._ensure_group()
            return []
        out: list[tuple[bytes, dict[str, Any] | MessageError]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append((entry_id, _decode_entry(fields)))
        return out

    def ack(self, entry_ids: list[bytes]) -> None:
        """Acknowledge processed events, and trim the stream below them.

        One consumer reads in order and acks in order, so everything below the
        last acked id has been acknowledged and may go.
        """
        if not entry_ids:
            return
        self._last_acked = last = entry_ids[-1]
        self._acked_since_trim += len(entry_ids)
        trim = self._acked_since_trim >= 1000
        if trim:
            self._acked_since_trim = 0

        def build(pipe: Any) -> None:
            pipe.xack(self.key("events"), GROUP, *entry_ids)
            if trim:
                pipe.xtrim(self.key("events"), minid=last, approximate=True)

        self._write(build)

    def assign(self, worker: str, message: Mapping[str, Any]) -> None:
        key, encoded = self.assign_key(worker), encode(message)

        def build(pipe: Any) -> None:
            pipe.rpush(key, encoded)
            pipe.sadd(self.key("keys"), key)
            pipe.expire(key, KEY_TTL)

        self._write(build)

    def verdict(self, worker: str, trial: str, attempt: int, step: int, stop: bool) -> None:
        """Answer a report that asked for the stopping rule's verdict (see
        :meth:`WorkerChannel.report`); the worker waits for it."""
        key = self.verdict_key(worker)
        message = {
            "type": "verdict",
            "trial": trial,
            "attempt": attempt,
            "step": step,
            "verdict": "stop" if stop else "go",
        }
        encoded = encode(message)

        def build(pipe: Any) -> None:
            pipe.rpush(key, encoded)
            pipe.ltrim(key, -16, -1)  # answers nobody waited for never pile up
            pipe.sadd(self.key("keys"), key)
            pipe.expire(key, KEY_TTL)

        self._write(build)

    def request_stop(self, trial: str) -> None:
        self._write(lambda pipe: pipe.hset(self.key("ctl"), trial, STOP))

    def clear_stop(self, trial: str) -> None:
        self._write(lambda pipe: pipe.hdel(self.key("ctl"), trial))

    def heartbeats(self) -> dict[str, float]:
        """Worker id -> time of its last heartbeat."""
        # A member that is not UTF-8 was not written by a worker; replaced characters
        # make it a name no worker has.
        return {
            w.decode("utf-8", "replace"): score
            for w, score in self.client.zrange(self.key("workers"), 0, -1, withscores=True)
        }

    def forget_worker(self, worker: str) -> None:
        self.client.zrem(self.key("workers"), worker)

    def keep_alive(self, ttl: int = KEY_TTL) -> None:
        """Give every key of the experiment an expiry ``ttl`` seconds away.

        Called every :data:`KEEP_ALIVE` seconds while the experiment runs, so the
        keys of a driver that was killed (no chance to call :meth:`finish`) are
        gone ``ttl`` seconds later, never left for ever.
        """
        keys = [k.decode() for k in self.client.smembers(self.key("keys"))] + [self.key("keys")]
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.expire(k, ttl)
        pipe.execute()

    def finish(self, expire_seconds: int = 3600) -> None:
        """Let every key of the experiment expire; ``meta`` stays readable until then."""
        keys = [k.decode() for k in self.client.smembers(self.key("keys"))] + [self.key("keys")]
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.expire(k, expire_seconds)
        pipe.execute()
