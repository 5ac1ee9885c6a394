"""The worker registry: which workers are there, which are idle, which are lost.

Owned by the coordinator (one thread). A worker is known from its ``register``
event (or, when Redis lost that event, from its heartbeat); it is lost when its
heartbeat has not changed for ``timeout`` seconds, or at once when a new Spark
task registers for its partition (Spark runs one attempt of a task at a time).
The registry only says who is lost; what happens to a lost worker's trial is the
coordinator's decision. A worker lost for silence that beats again (it was stalled,
or Redis was away longer than the timeout) is taken back, without its trial.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from maggy_core.records import WorkerRecord


@dataclass
class Worker:
    """Live state of one worker."""

    worker_id: str
    host: str = ""
    pid: int = 0
    trial: str | None = None  # the trial it runs, if any
    last_beat: float = 0.0  # the score of its last heartbeat, as the worker wrote it
    seen: float = field(default_factory=time.monotonic)  # when that score last changed
    seq: int = 0  # the last event sequence number taken from it
    busy: float = 0.0
    trials: int = 0
    stop_decided_at: float | None = None  # when its trial was told to stop
    follows_stop_at: float | None = None  # ... for the trial it was given after that

    def record(self) -> WorkerRecord:
        return WorkerRecord(self.worker_id, self.host, self.pid, self.trials, self.busy)


def partition_of(worker_id: str) -> str:
    """``e1-w3.17`` -> ``e1-w3``: the Spark partition a worker's task runs."""
    return worker_id.rsplit(".", 1)[0]


class WorkerRegistry:
    """Workers by id, the idle ones in order, and those gone.

    Args:
        epoch: The coordinator's epoch; only workers of this epoch are adopted
            from their heartbeats.
        timeout: Seconds without a new heartbeat after which a worker is lost.
    """

    def __init__(self, epoch: int, timeout: float) -> None:
        self.epoch = epoch
        self.timeout = timeout
        self.workers: dict[str, Worker] = {}
        self.idle: deque[str] = deque()
        self.gone: list[Worker] = []  # workers that said bye or were lost
        self._gone_ids: set[str] = set()
        # Workers lost for silence, with their last heartbeat then: one that beats
        # again was alive all along (a stall, Redis away) and is taken back.
        self._silent: dict[str, float] = {}
        self.readmitted: list[str] = []  # ids taken back, for the log and the tests
        # Heartbeats of this epoch without a register event, with the first value
        # seen: adopted when it changes (see check).
        self._unregistered: dict[str, float] = {}

    def get(self, worker_id: str) -> Worker | None:
        return self.workers.get(worker_id)

    def register(self, worker_id: str, host: str, pid: int) -> list[Worker]:
        """A worker registered. Returns the workers its registration shows dead
        (an earlier task of the same partition), for the caller to drop."""
        part = partition_of(worker_id)
        replaced = [
            w for wid, w in self.workers.items() if wid != worker_id and partition_of(wid) == part
        ]
        if worker_id not in self.workers and worker_id not in self._gone_ids:
            self.workers[worker_id] = Worker(worker_id, host=host, pid=pid)
            self.idle.append(worker_id)
        return replaced

    def check(self, beats: Mapping[str, float], now: float) -> list[Worker]:
        """Take the heartbeats read from Redis; adopt workers of this epoch that
        beat without having registered (Redis lost the event) and return those
        whose heartbeat has not changed for longer than the timeout."""
        for wid in beats.keys() - self.workers.keys() - self._gone_ids:
            if not wid.startswith(f"e{self.epoch}-"):
                continue
            # Adopted once its heartbeat moves: a live worker beats every interval,
            # a value written once (forged, or left by a dead task) is not a worker
            # and is never handed a trial.
            first = self._unregistered.setdefault(wid, beats[wid])
            if beats[wid] > first:
                del self._unregistered[wid]
                self.workers[wid] = Worker(wid)
                self.idle.append(wid)
        for wid in [w for w, last in self._silent.items() if beats.get(w, last) > last]:
            # It beat again after it was declared lost: take it back, without the
            # trial it had (that one was queued to run again).
            del self._silent[wid]
            self._gone_ids.discard(wid)
            self.gone = [w for w in self.gone if w.worker_id != wid]
            self.workers[wid] = Worker(wid, last_beat=beats[wid], seen=now)
            self.idle.append(wid)
            self.readmitted.append(wid)
        lost = []
        for wid, worker in self.workers.items():
            beat = beats.get(wid)
            if beat is not None and beat != worker.last_beat:
                worker.last_beat, worker.seen = beat, now
            elif now - worker.seen > self.timeout:
                lost.append(worker)
        return lost

    def refresh(self, now: float) -> None:
        """Count every worker as just seen (after Redis was away: nobody could
        beat meanwhile, so silence says nothing about the workers)."""
        for worker in self.workers.values():
            worker.seen = now

    def drop(self, worker_id: str, *, silent: bool = False) -> Worker | None:
        """The worker is gone: it said bye, its task was replaced, or (``silent``)
        it stopped beating. Only a silent one is taken back, if it beats again."""
        worker = self.workers.pop(worker_id, None)
        if silent and worker is not None:
            self._silent[worker_id] = worker.last_beat
        self._gone_ids.add(worker_id)
        if worker is not None:
            self.gone.append(worker)
        with contextlib.suppress(ValueError):  # not idle: it was running a trial
            self.idle.remove(worker_id)
        return worker

    def busy(self) -> list[Worker]:
        """Workers running a trial."""
        return [w for w in self.workers.values() if w.trial is not None]

    def records(self) -> list[WorkerRecord]:
        return [w.record() for w in (*self.gone, *self.workers.values())]
