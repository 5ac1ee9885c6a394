"""The worker loop that runs inside a long-lived Spark task.

A worker registers, then repeatedly takes the next assignment from its list in
Redis, runs the training function, and reports the outcome, until the
coordinator says ``done`` (or the experiment's state in Redis is terminal).
There is no barrier between trials: the next assignment is usually waiting by the
time the previous trial's final event is written.

Only the launch description (JSON) and, for ``lagom`` with a callable, the
training function travel with the Spark task; nothing the worker receives over
Redis is unpickled.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import numbers
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from maggy_core.channel import WorkerChannel, clip
from maggy_core.exceptions import EarlyStopException, TrialResultError
from maggy_core.loading import load_callable
from maggy_core.modes import mode_named
from maggy_core.reporter import Checkpoint, Reporter, load_checkpoint
from maggy_core.storage import OPTIONS_ENV

log = logging.getLogger("maggy.worker")

TERMINAL_STATES = ("finished", "failed", "stopped")


def build_kwargs(
    fn: Callable[..., Any],
    params: Mapping[str, Any],
    reporter: Reporter,
    budget: float | None,
    trial_id: str,
    fixed: Mapping[str, Any] | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """The keyword arguments of one call of a training function (``checkpoint``:
    the earlier trial's checkpoint the optimiser gave this one, or ``None``)."""
    sig = inspect.signature(fn)
    fixed = fixed or {}
    injected = {
        "hparams": {**params, **({"budget": budget} if budget is not None else {})},
        "reporter": reporter,
        "budget": budget,
        "trial_id": trial_id,
        "checkpoint": checkpoint,
    }
    kwargs: dict[str, Any] = {}
    var_kw = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.name in params:
            kwargs[p.name] = params[p.name]
        elif p.name in fixed:
            kwargs[p.name] = fixed[p.name]
        elif p.name in injected:
            kwargs[p.name] = injected[p.name]
    if var_kw:
        for k, v in {**fixed, **params}.items():
            kwargs.setdefault(k, v)
    return kwargs


def interpret_return(value: Any, key: str) -> tuple[float, dict[str, float]]:
    """Turn a training function's return value into ``(metric, metrics)``.

    Args:
        value: A number, or a dict holding ``key`` (other numeric entries are kept
            as extra metrics).
        key: The optimisation key.

    Raises:
        TrialResultError: anything else, naming what was returned and what is allowed.
    """

    def number(v: Any, where: str) -> float:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TrialResultError(f"{where} must be a number, got {type(v).__name__} {v!r:.80}")
        f = float(v)
        if not math.isfinite(f):
            raise TrialResultError(f"{where} must be finite, got {f}")
        return f

    if isinstance(value, Mapping):
        if key not in value:
            raise TrialResultError(
                f"the returned dict has no key {key!r} (optimization_key); "
                f"it has {sorted(map(str, value))}"
            )
        metric = number(value[key], f"return value[{key!r}]")
        extras = {
            str(k): float(v)
            for k, v in value.items()
            if not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(float(v))
        }
        return metric, extras
    if value is None:
        raise TrialResultError(
            f"train_fn returned None; return a number or a dict with the key {key!r}"
        )
    return number(value, "return value"), {}


#: A module-level function of this name in the training function's module is called
#: once per worker, before the worker registers (see :func:`preload`).
PRELOAD_HOOK = "maggy_preload"


def preload(fn: Callable[..., Any]) -> float:
    """Load what the training function needs before the worker takes its first trial:
    its module is imported already (``load_callable``); if that module defines
    ``maggy_preload()``, it is called here (e.g. to import TensorFlow and Keras and
    load the data), so the first trial costs what a later one does. Returns the
    seconds it took. A failing hook is logged, never fatal: the trial would pay the
    same imports and report their error itself. ``MAGGY_PRELOAD=0`` in the workers'
    environment switches it off.

    Why here and not in the Spark daemon (``maggy_core.spark_daemon``): the daemon
    forks every Python worker, and a process must not fork once threads run in it.
    TensorFlow starts its thread pools at import (C++ threads: the OS thread count
    of a process went from 1 to 4 on ``import keras`` here, while
    ``threading.active_count()`` stayed 1), so a daemon that imported it would fork
    children with locks held by threads that do not exist there. The worker process itself
    never forks, so importing TensorFlow in it, after its fork, is safe. It runs
    before ``register``, so the coordinator sees the worker only when it is ready.
    """
    import sys

    if os.environ.get("MAGGY_PRELOAD", "1") == "0":
        return 0.0  # switched off (bench/first_trial.py compares both)
    t0 = time.perf_counter()
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    hook = getattr(module, PRELOAD_HOOK, None) if module is not None else None
    if callable(hook):
        try:
            hook()
        except Exception as exc:
            log.warning("%s.%s failed: %s", getattr(module, "__name__", "?"), PRELOAD_HOOK, exc)
    took = time.perf_counter() - t0
    if took > 0.5:
        log.info("preloaded %s in %.1f s", getattr(module, "__name__", "?"), took)
    return took


class _Heartbeat(threading.Thread):
    def __init__(self, channel: WorkerChannel, interval: float) -> None:
        super().__init__(name="maggy-heartbeat", daemon=True)
        self.channel = channel
        self.interval = interval
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            try:
                self.channel.heartbeat()
            except Exception as exc:  # keep beating through a Redis restart
                log.warning("heartbeat failed: %s", exc)


def close_after(beat: _Heartbeat, channel: WorkerChannel) -> None:
    """Stop the heartbeat and wait for it, then close the channel. Closing the
    channel's heartbeat client under a beat in flight made that beat fail with
    "I/O operation on closed file" (logged as "heartbeat failed")."""
    beat.halt.set()
    beat.join(timeout=max(5.0, 2 * beat.interval))
    channel.close()


@dataclass(frozen=True)
class Launch:
    """What every worker of an experiment is started with (JSON in a Spark task)."""

    experiment_id: str
    redis_url: str
    epoch: int
    hb_interval: float
    optimization_key: str
    train_fn: str | None = None
    train_kwargs: dict[str, Any] = field(default_factory=dict)
    mode: str = "search"  # see maggy_core.modes
    block: dict[str, Any] | None = None  # the mode's own JSON (a study's block)
    checkpoint_dir: str | None = None  # <results>/<experiment>/checkpoints, when workers see it
    # The results store's fsspec options when checkpoints go to a store: executors on a
    # cluster do not inherit spark-submit's environment, so they come with the launch
    # (as the Redis URL's credentials do). Holds secrets: never log a Launch.
    storage_options: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Launch(experiment_id={self.experiment_id!r}, epoch={self.epoch})"

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, raw: str) -> Launch:
        return cls(**json.loads(raw))


def run_worker(
    launch: Launch,
    worker_id: str,
    train_fn: Callable[..., Any] | None = None,
    outage_limit: float = 120.0,
) -> dict[str, Any]:
    """Run trials until the coordinator says done. Returns the worker's summary.

    Survives a Redis restart or outage of up to ``outage_limit`` seconds: the
    client reconnects, and the outcome of the trial that was running is kept and
    sent once Redis answers again. An assignment seen before (the coordinator
    sends running trials' assignments again after Redis lost them) is not run
    twice: the worker sends the outcome it already has, or ignores it.
    """
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    fn = train_fn if train_fn is not None else load_callable(launch.train_fn or "")
    preload(fn)  # before the worker registers, so before its first trial is assigned
    channel = WorkerChannel(launch.redis_url, launch.experiment_id, worker_id, launch.epoch)
    channel.register(socket.gethostname(), os.getpid())
    beat = _Heartbeat(channel, launch.hb_interval)
    beat.start()
    started = time.time()
    busy, trials = 0.0, 0
    outcomes: dict[tuple[str, int], str] = {}  # (trial, attempt) -> its encoded outcome
    unsent: str | None = None
    outage_since: float | None = None
    try:
        while True:
            try:
                msg = channel.next_message(timeout=1.0, send=unsent)
                unsent = None  # sent: the pipeline raised otherwise
                outage_since = None
            except (RedisConnectionError, RedisTimeoutError) as exc:
                now = time.monotonic()
                outage_since = outage_since or now
                if now - outage_since > outage_limit:
                    raise
                log.warning("Redis unreachable (%s); retrying", exc)
                time.sleep(1.0)
                continue
            if msg is None:
                if channel.experiment_state() in TERMINAL_STATES:
                    break
                continue
            if msg["type"] == "done":
                break
            key = (msg["trial"], msg["attempt"])
            if key in outcomes:
                unsent = outcomes[key]  # the coordinator may have lost it: send it again
                continue
            duration, unsent = _run_trial(channel, fn, msg, launch)
            outcomes[key] = unsent
            if len(outcomes) > 64:
                outcomes.pop(next(iter(outcomes)))
            busy += duration
            trials += 1
        channel.send("bye", busy=busy, trials=trials)
    finally:
        close_after(beat, channel)
    return {
        "worker": worker_id,
        "busy": busy,
        "trials": trials,
        "started": started,
        "ended": time.time(),
    }


def _run_trial(
    channel: WorkerChannel, fn: Callable[..., Any], msg: dict[str, Any], launch: Launch
) -> tuple[float, str]:
    """Run one assignment. Returns the seconds it took and its encoded outcome
    (a ``final`` or ``error`` event), which the caller sends."""
    trial, attempt = msg["trial"], msg["attempt"]
    reporter = Reporter(
        channel, trial, attempt, msg["params"], launch.checkpoint_dir, msg.get("asks")
    )
    start = time.time()
    t0 = time.perf_counter()
    kind = "final"
    outcome: dict[str, Any]
    try:
        fixed = {
            **launch.train_kwargs,
            **mode_named(launch.mode).injections(launch.block, msg["params"]),
        }
        checkpoint = load_checkpoint(launch.checkpoint_dir, msg.get("checkpoint"))
        kwargs = build_kwargs(
            fn, msg["params"], reporter, msg.get("budget"), trial, fixed, checkpoint
        )
        metric, metrics = interpret_return(fn(**kwargs), launch.optimization_key)
        status = "early_stopped" if reporter.stopped else "finished"
        outcome = {"status": status, "metric": metric, "metrics": metrics}
    except EarlyStopException:
        outcome = {"status": "early_stopped", "metric": reporter.last_metric, "metrics": {}}
    except Exception as exc:
        kind = "error"
        outcome = {
            "error": clip(f"{type(exc).__name__}: {exc}", 2000),
            "traceback": clip(traceback.format_exc()),
        }
    duration = time.perf_counter() - t0
    reporter.flush()  # the reports it held back go before the outcome
    encoded = channel.event(
        kind, trial=trial, attempt=attempt, start=start, duration=duration, **outcome
    )
    return duration, encoded


def spark_task(launch_json: str, partition: int, _rows: Iterator[Any]) -> Iterator[str]:
    """Entry point of one Spark task (``mapPartitionsWithIndex``)."""
    yield json.dumps(_spark_worker(launch_json, partition, None))


def spark_task_with_fn(
    launch_json: str, train_fn: Callable[..., Any], partition: int, _rows: Iterator[Any]
) -> Iterator[str]:
    """Like :func:`spark_task`, for ``lagom`` with a callable (shipped by Spark)."""
    yield json.dumps(_spark_worker(launch_json, partition, train_fn))


def _spark_worker(
    launch_json: str, partition: int, train_fn: Callable[..., Any] | None
) -> dict[str, Any]:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    # The task attempt id is unique per attempt, so a restarted task registers as
    # a fresh worker and the coordinator can tell it from the one that died.
    # The epoch in the id keeps workers of an earlier coordinator apart.
    launch = Launch.from_json(launch_json)
    if launch.storage_options and not os.environ.get(OPTIONS_ENV):
        # This worker process only (maggy_core.reporter opens the store with them).
        os.environ[OPTIONS_ENV] = json.dumps(launch.storage_options)
    worker_id = f"e{launch.epoch}-w{partition}.{ctx.taskAttemptId() if ctx else 0}"
    return run_worker(launch, worker_id, train_fn)
