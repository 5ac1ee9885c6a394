"""The ``Reporter`` handed to training functions.

A training function reports its learning curve with :meth:`Reporter.broadcast`;
each call sends the metric to the coordinator and, in the same round trip, reads
the trial's stop flag. At the steps where the stopping rule decides (an ASHA rung),
the round trip also waits for the rule's verdict on this very report, so a stopped
trial runs no step past the one that stopped it. When the coordinator has stopped
the trial, ``broadcast`` raises :class:`~maggy_core.exceptions.EarlyStopException`, which ends the
training function; the worker records the trial as early-stopped and takes the
next one at once.

Checkpoints let a trial continue where an earlier trial of the same configuration
stopped (an ASHA promotion). :meth:`Reporter.save_checkpoint` writes a JSON value
and :meth:`Reporter.checkpoint_path` gives a directory for the files the training
function writes itself (model weights); both are kept in the results directory,
``<results_dir>/<experiment_id>/checkpoints/<trial_id>/``, beside the trial's log.
A later trial that the optimiser gives this checkpoint receives it as the argument
``checkpoint`` (a :class:`Checkpoint`), or ``None``. Nothing of it is pickled and
nothing crosses Redis but the earlier trial's id. With a local results directory the
files stay where the workers write them, so the workers must see it (one machine, or
a shared file system). With results on an object store the training function still
writes to a local folder (a cache on the worker's disk: ``$MAGGY_CHECKPOINT_DIR``,
else the temporary folder), and every ``save_checkpoint`` ships the folder to
``<results_dir>/<experiment_id>/checkpoints/<trial_id>/`` on the store; a worker
given that checkpoint fetches it into its own cache first. The credentials are the
store's options in ``$MAGGY_STORAGE_OPTIONS`` or the store's defaults
(:func:`maggy_core.storage.open_storage`). A worker that finds no checkpoint (or
cannot reach the store: a warning says why) gets ``None`` and trains from scratch:
a checkpoint saves time, it never decides a result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maggy_core.channel import MAX_EARLIER, clip
from maggy_core.exceptions import EarlyStopException

if TYPE_CHECKING:
    from maggy_core.channel import WorkerChannel

log = logging.getLogger("maggy")
_shipping_failed: list[bool] = []  # a warning was logged in this process

#: The file :meth:`Reporter.save_checkpoint` writes in a trial's checkpoint directory.
CHECKPOINT_FILE = "checkpoint.json"
#: Longest wait of a report for the stopping rule's verdict (see :func:`asks_at`).
#: The coordinator answers in about a millisecond when idle; a longer silence means
#: it is busy (or gone), and the trial goes on: the stop flag tells it later.
VERDICT_WAIT = 0.5
#: Seconds a report at a step where the stopping rule does not decide may be held
#: back, to go with a later one in one event: a function that broadcasts every
#: batch (``KerasBatchEnd``) sends an event about every 0.1 s instead of one per
#: batch, each a Redis round trip for the worker and an event for the coordinator
#: to decode. A report where the rule decides goes at once with those held before
#: it, as does the first one and whatever is held when the trial ends; the stop
#: flag is read at every send. ``MAGGY_REPORT_EVERY=0`` in the workers'
#: environment sends every report on its own.
REPORT_EVERY = float(os.environ.get("MAGGY_REPORT_EVERY", "0.1") or 0)
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Checkpoint:
    """An earlier trial's checkpoint, as a training function receives it.

    Attributes:
        trial_id: The trial that wrote it.
        path: Its directory (what that trial's ``reporter.checkpoint_path()`` was),
            holding the files it wrote.
        data: What it passed to ``reporter.save_checkpoint`` last, or ``None``.
        step: The last step it had reported when it saved ``data``, or ``None``.
    """

    trial_id: str
    path: str
    data: Any = None
    step: int | None = None


def _is_remote(root: str | os.PathLike[str] | None) -> bool:
    raw = "" if root is None else os.fspath(root)
    return "://" in raw and not raw.startswith("file://")


def _local_cache(root: str | os.PathLike[str]) -> Path:
    """The worker's local folder for the checkpoints of a store's ``root``."""
    base = os.environ.get("MAGGY_CHECKPOINT_DIR") or os.path.join(
        tempfile.gettempdir(), "maggy-checkpoints"
    )
    return Path(base) / hashlib.sha1(os.fspath(root).encode()).hexdigest()[:16]


def _store(root: str | os.PathLike[str]) -> Any:
    from maggy_core.storage import open_storage

    return open_storage(os.fspath(root))


def _fetch(root: str | os.PathLike[str], trial_id: str, folder: Path) -> None:
    """Copy trial ``trial_id``'s checkpoint from the store into ``folder`` (a
    warning, and nothing copied, when the store cannot be read)."""
    try:
        store = _store(root)
        for name in store.files(trial_id):
            if any(part in ("", ".", "..") for part in name.split("/")):
                continue
            data = store.read_bytes(trial_id, *name.split("/"))
            if data is not None:
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    except Exception as exc:  # noqa: BLE001 - without it the trial trains from scratch
        log.warning("checkpoint %s: cannot fetch it from the store: %s", trial_id, exc)


def load_checkpoint(root: str | os.PathLike[str] | None, trial_id: Any) -> Checkpoint | None:
    """The checkpoint of trial ``trial_id`` under ``root`` (a local folder, or a
    store's URL: fetched into the worker's cache first), or ``None`` when there is
    none to give (no root, no id, an id that is not a plain name, no such directory).

    The id comes from an assignment read from Redis: it must be a plain name, so no
    message can point a worker at a path outside the checkpoints directory.
    """
    if root is None or not isinstance(trial_id, str) or not _SAFE_ID.fullmatch(trial_id):
        return None
    if _is_remote(root):
        folder = _local_cache(root) / trial_id
        if not folder.is_dir():  # a checkpoint of another worker: from the store
            _fetch(root, trial_id, folder)
    else:
        folder = Path(root) / trial_id
    if not folder.is_dir():
        return None
    data, step = None, None
    saved = folder / CHECKPOINT_FILE
    if saved.exists():
        try:
            record = json.loads(saved.read_text(encoding="utf-8"))
            data, step = record.get("data"), record.get("step")
        except (OSError, ValueError, AttributeError):
            data, step = None, None  # a torn or foreign file: the files may still serve
    return Checkpoint(trial_id, str(folder), data, step if isinstance(step, int) else None)


def asks_at(asks: Any, previous: int | None, step: int) -> bool:
    """Whether a report of ``step`` (after one of ``previous``, or the first) waits
    for the stopping rule's verdict, by the rule's ``asks`` (from the assignment; see
    ``StoppingRule.asks``). Anything that is not one of its shapes asks nothing."""
    if not isinstance(asks, dict):
        return False
    every = asks.get("every")
    if isinstance(every, int) and not isinstance(every, bool) and every >= 1:
        return step % every == 0
    rungs, top = asks.get("rungs"), asks.get("max_step")
    if not isinstance(rungs, list):
        return False
    if isinstance(top, int | float) and not isinstance(top, bool) and step > top:
        return True
    low = float("-inf") if previous is None else previous
    return any(
        isinstance(r, int | float) and not isinstance(r, bool) and low < r <= step for r in rungs
    )


class Reporter:
    """Reports metrics and log lines of one trial.

    Args:
        channel: The worker's channel; ``None`` runs the reporter detached (for
            calling a training function by hand: broadcasts are only recorded).
        trial_id: The trial this reporter belongs to.
        attempt: Which run of the trial this is (1 for the first).
        params: The trial's hyperparameters.
        checkpoint_root: The experiment's checkpoints directory (a local path, or
            a store's URL: see the module docstring); this trial's checkpoint goes
            to ``<checkpoint_root>/<trial_id>``. ``None``: a temporary directory,
            made when first asked for.
        asks: Where the stopping rule decides (the assignment's ``asks``): reports
            at those steps wait for its verdict (:func:`asks_at`).
    """

    def __init__(
        self,
        channel: WorkerChannel | None,
        trial_id: str = "t0000",
        attempt: int = 1,
        params: dict[str, Any] | None = None,
        checkpoint_root: str | os.PathLike[str] | None = None,
        asks: Any = None,
    ) -> None:
        self._channel = channel
        self.trial_id = trial_id
        self.attempt = attempt
        self.params = dict(params or {})
        self.history: list[tuple[int, float]] = []
        self.stopped = False
        self._held: list[tuple[int, float]] = []  # reports not sent yet
        self._sent_at = -math.inf  # time.monotonic() of the last send
        self._checkpoint_root = checkpoint_root
        self._checkpoint_dir: Path | None = None
        self._asks = asks

    def checkpoint_path(self) -> str:
        """This trial's checkpoint directory (made if needed), for files the training
        function writes itself, e.g. ``model.save_weights(os.path.join(path, ...))``.
        A later trial that continues this one finds them in ``checkpoint.path``."""
        if self._checkpoint_dir is None:
            if self._checkpoint_root is None:
                self._checkpoint_dir = Path(tempfile.mkdtemp(prefix=f"maggy-{self.trial_id}-"))
            elif _is_remote(self._checkpoint_root):
                self._checkpoint_dir = _local_cache(self._checkpoint_root) / self.trial_id
            else:
                self._checkpoint_dir = Path(self._checkpoint_root) / self.trial_id
        self._checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return str(self._checkpoint_dir)

    def save_checkpoint(self, obj: Any) -> None:
        """Save ``obj`` (JSON types only: numbers, strings, lists, dicts, None) as the
        trial's checkpoint, with the last step reported so far; replaces the one
        saved before. Written atomically, so a trial stopped mid-write leaves the
        previous one. With results on an object store, the trial's checkpoint folder
        (this file and the files the function wrote there) is then shipped to the
        store (a warning, and the trial goes on, when that fails).

        Raises:
            ValueError: ``obj`` is not JSON (the message says what is not).
        """
        step = self.history[-1][0] if self.history else None
        try:
            text = json.dumps({"step": step, "data": obj}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"save_checkpoint: 'obj' must be JSON (numbers, strings, lists, dicts, "
                f"None); {exc} (write other things to files in checkpoint_path())"
            ) from None
        folder = Path(self.checkpoint_path())
        partial = folder / f".{CHECKPOINT_FILE}.{os.getpid()}"
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, folder / CHECKPOINT_FILE)
        if _is_remote(self._checkpoint_root):
            self._ship(folder)

    def _ship(self, folder: Path) -> None:
        """Copy the checkpoint folder to ``<checkpoint_root>/<trial_id>/`` on the store
        (each file one PUT; ``checkpoint.json`` last, so a reader that finds it finds
        the files it describes)."""
        assert self._checkpoint_root is not None
        try:
            store = _store(self._checkpoint_root)
            files = sorted(
                (p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")),
                key=lambda p: p.name == CHECKPOINT_FILE,
            )
            for path in files:
                parts = path.relative_to(folder).parts
                store.write_bytes(path.read_bytes(), self.trial_id, *parts)
        except Exception as exc:  # noqa: BLE001 - a checkpoint saves time, never a result
            # Once per worker process: without the store's credentials every trial fails so.
            if not _shipping_failed:
                _shipping_failed.append(True)
                log.warning(
                    "checkpoint %s: cannot ship it to the store (%s); checkpoints stay on this "
                    "worker's disk (give the workers the store's credentials: "
                    "$MAGGY_STORAGE_OPTIONS or the store's defaults)",
                    self.trial_id,
                    exc,
                )

    @property
    def last_metric(self) -> float | None:
        return self.history[-1][1] if self.history else None

    def get_trial_id(self) -> str:
        """The trial's id (MAGGY 1.x name)."""
        return self.trial_id

    def broadcast(self, metric: float, step: int | None = None) -> None:
        """Report the current value of the optimisation metric.

        Args:
            metric: A finite number (the same quantity the function returns).
            step: A non-negative integer that grows over the trial (an epoch or a
                batch index). Default: one more than the last step.

        Raises:
            EarlyStopException: the coordinator stopped this trial; let it
                propagate out of the training function.
            ValueError: ``metric`` is not a finite number or ``step`` is not a
                non-negative integer.
        """
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
            raise ValueError(f"broadcast: 'metric' must be a number, got {type(metric).__name__}")
        value = float(metric)
        if not math.isfinite(value):
            raise ValueError(f"broadcast: 'metric' must be finite, got {value}")
        if step is None:
            step = self.history[-1][0] + 1 if self.history else 0
        elif isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"broadcast: 'step' must be a non-negative integer, got {step!r}")
        step = int(step)
        previous = self.history[-1][0] if self.history else None
        self.history.append((step, value))
        wait = VERDICT_WAIT if asks_at(self._asks, previous, step) else 0.0
        if self._channel is not None:
            recent = time.monotonic() - self._sent_at < REPORT_EVERY
            failing = not self._channel.last_report_sent
            if wait == 0.0 and recent and (len(self._held) < MAX_EARLIER or failing):
                self._held.append((step, value))  # goes with a later report
                if len(self._held) > MAX_EARLIER:  # Redis is away: the newest only
                    del self._held[0]
            else:
                earlier, self._held = self._held, []
                if self._send(step, value, wait, earlier):
                    self.stopped = True
        if self.stopped:
            raise EarlyStopException(value)

    def flush(self) -> None:
        """Send the reports held back (see :data:`REPORT_EVERY`); the worker calls it
        when the training function has returned or raised, before the trial's
        outcome, so the coordinator sees every point of the curve."""
        if self._channel is None or not self._held:
            return
        held, self._held = self._held, []
        (step, value), earlier = held[-1], held[:-1]
        self._send(step, value, 0.0, earlier)

    def _send(self, step: int, value: float, wait: float, earlier: list[tuple[int, float]]) -> bool:
        """One metric event of ``earlier`` and ``(step, value)``; returns whether the
        trial was asked to stop. The points of a send that did not reach Redis (an
        outage) are held for the next one, the newest :data:`MAX_EARLIER` of them, so
        a short outage costs the curve nothing and a long one its oldest points."""
        assert self._channel is not None
        self._sent_at = time.monotonic()
        stop = self._channel.report(self.trial_id, self.attempt, step, value, wait, earlier)
        if not self._channel.last_report_sent:
            self._held = [*earlier, (step, value), *self._held][-MAX_EARLIER:]
        return stop

    def log(self, msg: Any, jupyter: bool = False) -> None:
        """Write a line to the trial's log (kept in the results directory).

        Args:
            msg: Anything; it is turned into a string.
            jupyter: Accepted for MAGGY 1.x compatibility; ignored.
        """
        text = clip(str(msg))
        if self._channel is None:
            print(f"[{self.trial_id}] {text}", file=sys.stderr)
            return
        self._channel.send_log(self.trial_id, self.attempt, text)
