"""The coordinator: the only writer of trial state.

It runs in the Spark driver (one thread) and decides everything centrally:
which trial a free worker runs next (from the optimiser), which running trial is
stopped (by the stopping rule, on live metrics), when a lost worker's trial is
run again, and when the experiment is over. Workers only send events; the
coordinator reads them from the ``events`` stream, writes the journal, then
acknowledges them.

Per-trial cost is O(1) in the number of trials already finished: events are
handled one by one against dictionaries, the journal is appended, and the best
trial is updated incrementally. ``result.json`` is written once, at the end.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from maggy_core.channel import CoordinatorChannel
from maggy_core.exceptions import MessageError
from maggy_core.optimizers import DONE, WAIT, Optimizer, Suggestion
from maggy_core.results import ResultStore
from maggy_core.spec import ExperimentSpec
from maggy_core.stopping import StoppingRule
from maggy_core.trial import FrozenTrial, TrialStatus, best_rank

log = logging.getLogger("maggy")


@dataclass
class _Trial:
    """Live state of one trial (owned by the coordinator, never shared)."""

    trial_id: str
    params: dict[str, Any]
    budget: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    status: TrialStatus = TrialStatus.PENDING
    attempt: int = 0
    worker: str | None = None
    metric: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[tuple[int, float]] = field(default_factory=list)
    start: float | None = None
    duration: float | None = None
    error: str | None = None
    traceback: str | None = None
    stop_requested_at: float | None = None
    follows_stop_at: float | None = None  # when the stop that freed its worker was decided

    def frozen(self) -> FrozenTrial:
        return FrozenTrial(
            self.trial_id,
            dict(self.params),
            self.status,
            self.metric,
            tuple(self.history),
            self.budget,
            dict(self.info),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "params": self.params,
            "status": self.status.value,
            "metric": self.metric,
            "metrics": self.metrics,
            "history": [list(h) for h in self.history],
            "budget": self.budget,
            "info": self.info,
            "attempts": self.attempt,
            "worker": self.worker,
            "start": self.start,
            "duration": self.duration,
            "error": self.error,
            "traceback": self.traceback,
        }


@dataclass
class _Worker:
    worker_id: str
    host: str = ""
    pid: int = 0
    trial: str | None = None
    last_beat: float = 0.0  # the score of its last heartbeat, as written by the worker
    seen: float = field(default_factory=time.monotonic)  # when we last saw that score change
    seq: int = 0
    busy: float = 0.0
    trials: int = 0


class Coordinator:
    """Runs one experiment's trial loop.

    Args:
        spec: The validated experiment.
        experiment_id: Id of the experiment (key prefix, results directory).
        channel: The coordinator's side of the Redis channel.
        store: The experiment's files.
        optimizer: Suggests trials; called from this thread only.
        stopping_rule: Decides early stops on live metrics.
        epoch: This coordinator's epoch (events of other epochs are dropped).
        worker_timeout: Seconds without a new heartbeat after which a worker is lost.
        follower_lease: When set, the experiment stops itself once no follower
            (the Airflow task that started it) has touched its key for this many
            seconds: the task that would stop it is gone (killed with SIGKILL, its
            machine lost, or marked failed before the triggerer took its trigger).
        stop_latency: Optional list that receives, per stopped trial, the seconds
            from the stop decision to its worker starting its next trial.
    """

    def __init__(
        self,
        spec: ExperimentSpec,
        experiment_id: str,
        channel: CoordinatorChannel,
        store: ResultStore,
        optimizer: Optimizer,
        stopping_rule: StoppingRule,
        *,
        epoch: int = 1,
        worker_timeout: float | None = None,
        follower_lease: float | None = None,
    ) -> None:
        self.spec = spec
        self.experiment_id = experiment_id
        self.channel = channel
        self.store = store
        self.optimizer = optimizer
        self.rule = stopping_rule
        self.epoch = epoch
        self.worker_timeout = worker_timeout or max(5.0, 10 * spec.hb_interval)
        self.sign = 1.0 if spec.direction == "max" else -1.0
        self.trials: dict[str, _Trial] = {}
        self.queue: deque[str] = deque()  # trials to run again (lost workers, resume)
        self.workers: dict[str, _Worker] = {}
        self.idle: deque[str] = deque()
        self._gone: list[_Worker] = []  # workers that said bye or were lost
        self._gone_ids: set[str] = set()
        self.outage_limit = 120.0
        self._outage_since: float | None = None
        self.optimizer_done = False
        self.status: str | None = None  # set when the experiment ends
        self.reason = ""
        self.best: _Trial | None = None
        self.counts = {
            s.value: 0
            for s in (TrialStatus.FINISHED, TrialStatus.EARLY_STOPPED, TrialStatus.FAILED)
        }
        self.consecutive_failures = 0
        self.started = time.time()
        self.stop_latencies: list[float] = []
        self._stop_decided: dict[str, float] = {}  # worker -> time its trial was told to stop
        self._next_index = 0
        self._last_liveness = time.monotonic()
        self.follower_lease = follower_lease
        self._follower_seen = time.monotonic()

    # ---------------------------------------------------------------- set-up

    def open(self) -> None:
        """Open the channel and the journal; resume from an earlier journal."""
        records = self.store.read_journal()
        self.channel.open(self.epoch, self._meta())
        if records:
            self._resume(records)
            self.store.retire_result()
        self.store.append(
            {
                "type": "experiment",
                "experiment_id": self.experiment_id,
                "epoch": self.epoch,
                "spec": self.spec.to_dict(),
            }
        )
        self._publish_meta()

    def _meta(self) -> dict[str, Any]:
        return {
            "state": self.status or "running",
            "experiment_id": self.experiment_id,
            "name": self.spec.name,
            "hb_interval": self.spec.hb_interval,
            "num_trials": self.spec.num_trials,
            "direction": self.spec.direction,
            "optimization_key": self.spec.optimization_key,
            "results_dir": str(self.store.root),
            "started": self.started,
        }

    @staticmethod
    def _assignment(trial: _Trial) -> dict[str, Any]:
        return {
            "type": "trial",
            "trial": trial.trial_id,
            "attempt": trial.attempt,
            "params": trial.params,
            "budget": trial.budget,
            # An earlier trial whose checkpoint this one continues (set by the optimiser).
            "checkpoint": trial.info.get("checkpoint"),
        }

    def _resume(self, records: list[dict[str, Any]]) -> None:
        state = None
        for rec in records:
            kind = rec.get("type")
            if kind == "trial_started":
                t = self.trials.get(rec["trial_id"]) or _Trial(
                    rec["trial_id"], rec["params"], rec.get("budget"), rec.get("info") or {}
                )
                t.attempt = rec["attempt"]
                t.status = TrialStatus.RUNNING
                self.trials[t.trial_id] = t
                self._next_index = max(self._next_index, int(t.trial_id.lstrip("t")) + 1)
            elif kind == "trial_ended":
                t = self.trials[rec["trial_id"]]
                d = rec["trial"]
                t.status = TrialStatus(d["status"])
                t.metric, t.metrics = d["metric"], d["metrics"]
                t.history = [(int(s), float(v)) for s, v in d["history"]]
                t.start, t.duration, t.worker = d["start"], d["duration"], d["worker"]
                t.error, t.traceback = d["error"], d["traceback"]
            if "optimizer" in rec:
                state = rec["optimizer"]
        kept = requeued = 0
        for t in self.trials.values():
            if t.status.is_terminal:
                kept += 1
                self.counts[t.status.value] += 1
                self._update_best(t)
                self.rule.trial_ended(t.frozen())
            else:
                t.status = TrialStatus.PENDING
                self.queue.append(t.trial_id)
                requeued += 1
        if self.optimizer.journal_state:
            if state is not None:
                self.optimizer.load_state_dict(state)
        else:
            ordered = sorted(self.trials.values(), key=lambda t: t.trial_id)
            self.optimizer.resume([t.frozen() for t in ordered])
        log.info(
            "resuming experiment %s: kept %d ended trials, running %d unfinished ones again",
            self.experiment_id,
            kept,
            requeued,
        )
        self.store.append({"type": "resumed", "kept": kept, "requeued": requeued})

    # ---------------------------------------------------------------- the loop

    def run(
        self, job_alive: Callable[[], bool] = lambda: True, block_ms: int = 100
    ) -> dict[str, Any]:
        """Drive the experiment until it ends; return the result (also written).

        Args:
            job_alive: Tells whether the Spark job running the workers is still
                up; when it is gone before the experiment ended, the experiment
                fails with that reason.
            block_ms: Longest wait for events in one read.
        """
        while self.status is None:
            self.poll(block_ms)
            if self.status is None and not job_alive():
                self._end(
                    "failed", "the Spark job running the workers ended before the experiment did"
                )
        return self.result()

    def poll(self, block_ms: int = 100) -> None:
        """One round of the loop; rides out a Redis outage of up to
        ``outage_limit`` seconds (the client reconnects with backoff), then fails
        the experiment."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            self._poll(block_ms)
            self._outage_since = None
        except (RedisConnectionError, RedisTimeoutError) as exc:
            now = time.monotonic()
            if self._outage_since is None:
                self._outage_since = now
                log.warning("Redis unreachable (%s); retrying for %.0f s", exc, self.outage_limit)
            if now - self._outage_since > self.outage_limit:
                self.fail(f"Redis was unreachable for more than {self.outage_limit:.0f} s: {exc}")
            time.sleep(0.5)

    def _poll(self, block_ms: int) -> None:
        """Handle one batch of events, hand out trials, check liveness and the end."""
        events = self.channel.read_events(block_ms=block_ms)
        for _entry, msg in events:
            if isinstance(msg, MessageError):
                log.warning("dropped a malformed message on the channel: %s", msg)
                continue
            self._handle(msg)
        self.channel.ack([e for e, _ in events])
        self._dispatch()
        now = time.monotonic()
        if now - self._last_liveness >= self.spec.hb_interval:
            self._last_liveness = now
            self._check_liveness(now)
        if self.status is None and self.optimizer_done and not self.queue and not self._running():
            self._end("finished", "")

    def _running(self) -> list[_Trial]:
        return [self.trials[w.trial] for w in self.workers.values() if w.trial is not None]

    def _handle(self, msg: dict[str, Any]) -> None:
        if msg["epoch"] != self.epoch:
            return  # a worker of an earlier coordinator of this experiment
        kind, wid = msg["type"], msg["worker"]
        if kind == "register":
            # A task registering for a partition means the task before it on that
            # partition is dead (Spark runs one attempt at a time: no speculation).
            partition = wid.rsplit(".", 1)[0]
            for other in [w for w in self.workers if w.rsplit(".", 1)[0] == partition and w != wid]:
                self._lose_worker(self.workers[other], "its Spark task was restarted")
            if wid not in self.workers and wid not in self._gone_ids:
                self.workers[wid] = _Worker(wid, host=msg["host"], pid=msg["pid"])
                self.idle.append(wid)
                log.debug("worker %s registered from %s", wid, msg["host"])
            return
        worker = self.workers.get(wid)
        if worker is None:
            return  # declared lost already; its late events do not count
        seq = msg.get("seq", 0)
        if seq <= worker.seq:
            return  # a duplicate delivery
        worker.seq = seq
        if kind == "bye":
            worker.busy, worker.trials = msg["busy"], msg["trials"]
            self._drop_worker(wid)
            self.channel.forget_worker(wid)
            return
        trial = self.trials.get(msg["trial"])
        if (
            trial is None
            or trial.attempt != msg["attempt"]
            or trial.worker != wid
            or trial.status is not TrialStatus.RUNNING
        ):
            return  # an event of a stale attempt, or an outcome sent again
        if kind == "metric":
            self._on_metric(trial, msg["step"], float(msg["value"]))
        elif kind == "log":
            self.store.trial_log(trial.trial_id, msg["msg"])
        elif kind in ("final", "error"):
            self._on_end(trial, worker, msg)

    def _on_metric(self, trial: _Trial, step: int, value: float) -> None:
        if trial.status is not TrialStatus.RUNNING:
            return
        trial.history.append((step, value))
        if self.rule.report(trial.trial_id, step, value) and trial.stop_requested_at is None:
            trial.stop_requested_at = time.time()
            self.channel.request_stop(trial.trial_id)
            if trial.worker is not None:
                self._stop_decided[trial.worker] = trial.stop_requested_at
            log.info(
                "trial %s stopped early at step %d (%s=%.6g)",
                trial.trial_id,
                step,
                self.spec.optimization_key,
                value,
            )

    def _on_end(self, trial: _Trial, worker: _Worker, msg: dict[str, Any]) -> None:
        trial.start, trial.duration = msg["start"], msg["duration"]
        if trial.follows_stop_at is not None:
            # Worker and coordinator clocks: the same machine, or NTP on a cluster.
            self.stop_latencies.append(trial.start - trial.follows_stop_at)
        if msg["type"] == "final":
            trial.metric = None if msg["metric"] is None else float(msg["metric"])
            trial.metrics = msg["metrics"]
            stopped = msg["status"] == "early_stopped" or trial.stop_requested_at is not None
            trial.status = TrialStatus.EARLY_STOPPED if stopped else TrialStatus.FINISHED
            self.consecutive_failures = 0
        else:
            trial.status = TrialStatus.FAILED
            trial.error, trial.traceback = msg["error"], msg["traceback"]
            self.consecutive_failures += 1
        if trial.stop_requested_at is not None:
            self.channel.clear_stop(trial.trial_id)
        worker.trial = None
        worker.busy += trial.duration or 0.0
        worker.trials += 1
        self._finish_trial(trial)
        if self.status is None:
            self.idle.append(worker.worker_id)
        if self.consecutive_failures >= self.spec.max_consecutive_failures and self.status is None:
            self._end(
                "failed",
                f"{self.consecutive_failures} trials failed in a row "
                f"(max_consecutive_failures={self.spec.max_consecutive_failures}); "
                f"last error: {trial.error}",
            )

    def _finish_trial(self, trial: _Trial) -> None:
        """Record a terminal trial: counts, best, rule, optimiser, journal, progress."""
        self.counts[trial.status.value] += 1
        frozen = trial.frozen()
        self.rule.trial_ended(frozen)
        self.optimizer.observe(frozen)
        self._update_best(trial)
        self.store.append(
            {
                "type": "trial_ended",
                "trial_id": trial.trial_id,
                "trial": trial.to_dict(),
                **self._optimizer_state(),
            }
        )
        self.store.close_trial_log(trial.trial_id)
        self._progress(trial)

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimiser's state for a journal record, when it journals its state
        (see ``Optimizer.journal_state``); otherwise nothing: a resume rebuilds
        it from the trials."""
        if not self.optimizer.journal_state:
            return {}
        return {"optimizer": self.optimizer.state_dict()}

    def _update_best(self, trial: _Trial) -> None:
        if trial.metric is None or trial.status is TrialStatus.FAILED:
            return
        best = self.best
        rank = best_rank(trial.status, trial.metric, self.sign)
        if best is None or rank > best_rank(best.status, best.metric or 0.0, self.sign):
            self.best = trial

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        """Give every idle worker a trial, while there are trials to give."""
        while self.idle and self.status is None:
            trial = self._next_trial()
            if trial is None:
                return
            wid = self.idle.popleft()
            worker = self.workers.get(wid)
            if worker is None:
                self.queue.appendleft(trial.trial_id)
                continue
            trial.attempt += 1
            trial.status = TrialStatus.RUNNING
            trial.worker = wid
            trial.history = []
            trial.stop_requested_at = None
            worker.trial = trial.trial_id
            self.store.append(
                {
                    "type": "trial_started",
                    "trial_id": trial.trial_id,
                    "attempt": trial.attempt,
                    "params": trial.params,
                    "budget": trial.budget,
                    "info": trial.info,
                    "worker": wid,
                    **self._optimizer_state(),
                }
            )
            self.channel.assign(wid, self._assignment(trial))
            trial.follows_stop_at = self._stop_decided.pop(wid, None)

    def _next_trial(self) -> _Trial | None:
        if self.queue:
            return self.trials[self.queue.popleft()]
        if self.optimizer_done:
            return None
        decision = self.optimizer.suggest()
        if decision is DONE:
            self.optimizer_done = True
            return None
        if decision is WAIT or not isinstance(decision, Suggestion):
            return None
        trial_id = f"t{self._next_index:04d}"
        self._next_index += 1
        trial = _Trial(trial_id, dict(decision.params), decision.budget, dict(decision.info))
        self.trials[trial_id] = trial
        return trial

    # ---------------------------------------------------------------- liveness

    def _check_liveness(self, now: float) -> None:
        if self.channel.epoch() != self.epoch:
            self._restore()
        requested = self.channel.stop_request()
        if requested is not None:
            self.stop(f"stop requested: {requested}")
            return
        if self.follower_lease is not None:
            # Measured on this clock from the last time the key was seen, so a Redis
            # that restarted (and lost the key) gives the follower a whole lease to
            # touch it again.
            if self.channel.follower_present():
                self._follower_seen = now
            elif now - self._follower_seen > self.follower_lease:
                silent = now - self._follower_seen
                self.stop(
                    f"no word from the Airflow task following the experiment for {silent:.0f} s "
                    f"(follower_lease {self.follower_lease:g} s): it is gone, so the "
                    "experiment stops itself"
                )
                return
        beats = self.channel.heartbeats()
        for wid in beats.keys() - self.workers.keys() - self._gone_ids:
            if wid.startswith(f"e{self.epoch}-"):
                # It beats but never registered with us: Redis lost its register event.
                log.info("worker %s adopted from its heartbeat", wid)
                self.workers[wid] = _Worker(wid)
                self.idle.append(wid)
        for wid, worker in list(self.workers.items()):
            beat = beats.get(wid)
            if beat is not None and beat != worker.last_beat:
                worker.last_beat, worker.seen = beat, now
            elif now - worker.seen > self.worker_timeout:
                self._lose_worker(worker)

    def _lose_worker(self, worker: _Worker, why: str = "") -> None:
        why = why or f"no heartbeat for {self.worker_timeout:.0f} s"
        log.warning("worker %s lost: %s", worker.worker_id, why)
        trial = self.trials.get(worker.trial) if worker.trial else None
        self._drop_worker(worker.worker_id)
        self.channel.forget_worker(worker.worker_id)
        if trial is None:
            return
        if trial.attempt < self.spec.max_attempts:
            log.info(
                "trial %s (attempt %d) runs again: its worker was lost",
                trial.trial_id,
                trial.attempt,
            )
            trial.status = TrialStatus.PENDING
            self.rule.trial_ended(trial.frozen())  # its live reports are void now
            self.queue.appendleft(trial.trial_id)
        else:
            trial.status = TrialStatus.FAILED
            trial.error = f"its worker was lost on each of {trial.attempt} attempts (max_attempts)"
            self._finish_trial(trial)

    def _restore(self) -> None:
        """Redis lost the experiment's keys (a restart without persistence): put
        back what workers need from the coordinator's own state. Workers ignore
        an assignment they already ran, and send its outcome again."""
        log.warning("Redis lost the experiment's keys (restarted?): restoring the channel")
        self.channel.restore(self.epoch, self._meta())
        self._publish_meta()
        for trial in self._running():
            if trial.stop_requested_at is not None:
                self.channel.request_stop(trial.trial_id)
            self.channel.assign(trial.worker or "", self._assignment(trial))
        if self.status is not None:
            for wid in self.workers:
                self.channel.assign(wid, {"type": "done", "reason": self.status})

    def _drop_worker(self, wid: str) -> None:
        worker = self.workers.pop(wid, None)
        self._gone_ids.add(wid)
        if worker is not None:
            self._gone.append(worker)
        with contextlib.suppress(ValueError):  # not idle: it was running a trial
            self.idle.remove(wid)

    # ---------------------------------------------------------------- the end

    def stop(self, reason: str) -> None:
        """End the experiment from outside (a signal, an operator's on_kill)."""
        if self.status is None:
            self._end("stopped", reason)

    def fail(self, reason: str) -> None:
        """End the experiment as failed after an error of the coordinator itself;
        tells the workers if Redis still answers."""
        if self.status is None:
            with contextlib.suppress(Exception):
                self._end("failed", reason)
            self.status, self.reason = "failed", reason

    def _end(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason
        for trial in self._running():
            self.channel.request_stop(trial.trial_id)
        for wid in self.workers:
            self.channel.assign(wid, {"type": "done", "reason": status})
        self.channel.set_meta(state=status, reason=reason, ended=time.time())
        if status != "finished":
            log.warning("experiment %s %s: %s", self.experiment_id, status, reason)

    def drain(self, timeout: float) -> None:
        """After the end, collect the outcome of trials still running for up to
        ``timeout`` seconds (they were told to stop); the rest are failed."""
        deadline = time.monotonic() + timeout
        while self._running() and time.monotonic() < deadline:
            events = self.channel.read_events(block_ms=100)
            for _e, msg in events:
                if not isinstance(msg, MessageError):
                    self._handle(msg)
            self.channel.ack([e for e, _ in events])
        for trial in self._running():
            trial.status = TrialStatus.FAILED
            trial.error = f"the experiment ended ({self.status}) before the trial did"
            self._finish_trial(trial)
            if trial.worker in self.workers:
                self.workers[trial.worker].trial = None

    def publish_summary(self, result: dict[str, Any]) -> None:
        """Put the result without its trials into ``meta`` for followers that do
        not see the results directory (an Airflow worker on another host)."""
        self.channel.set_meta(summary=summarize(result))

    def result(self) -> dict[str, Any]:
        """The experiment's summary (the content of ``result.json``)."""
        ended = time.time()
        trials = sorted(self.trials.values(), key=lambda t: t.trial_id)
        best = self.best
        workers = [*self._gone, *self.workers.values()]
        return {
            "experiment_id": self.experiment_id,
            "name": self.spec.name,
            "status": self.status or "running",
            "reason": self.reason,
            "direction": self.spec.direction,
            "optimization_key": self.spec.optimization_key,
            "num_trials": sum(1 for t in trials if t.status.is_terminal),
            "counts": dict(self.counts),
            "best": None
            if best is None
            else {
                "trial_id": best.trial_id,
                "params": best.params,
                "metric": best.metric,
                "status": best.status.value,
            },
            "started": self.started,
            "ended": ended,
            "duration": ended - self.started,
            "results_dir": str(self.store.root),
            "workers": [
                {
                    "worker": w.worker_id,
                    "host": w.host,
                    "pid": w.pid,
                    "trials": w.trials,
                    "busy": round(w.busy, 6),
                }
                for w in workers
            ],
            "spec": self.spec.to_dict(),
            # Seconds from each stop decision to the stopped trial's worker being
            # handed its next trial: how long an early stop keeps a slot idle.
            "engine": {"stop_latencies": [round(s, 6) for s in self.stop_latencies]},
            "trials": [t.to_dict() for t in trials],
        }

    # ---------------------------------------------------------------- progress

    def _publish_meta(self) -> None:
        best = self.best
        self.channel.set_meta(
            finished=self.counts["finished"],
            early_stopped=self.counts["early_stopped"],
            failed=self.counts["failed"],
            running=len(self._running()),
            best_trial=best.trial_id if best else "",
            best_metric=best.metric if best else None,
            best_params=best.params if best else None,
        )

    def _progress(self, trial: _Trial) -> None:
        """One line per ended trial in the log (and in Redis, for followers)."""
        done = sum(self.counts.values())
        key = self.spec.optimization_key
        metric = "-" if trial.metric is None else f"{trial.metric:.6g}"
        params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        best = self.best
        best_text = (
            f"best {best.metric:.6g} ({best.trial_id})"
            if best and best.metric is not None
            else "no best yet"
        )
        line = (
            f"trial {trial.trial_id} {trial.status.value:<13} {key}={metric}  {params}  "
            f"[{done}/{self.spec.num_trials} ended, {best_text}]"
        )
        if trial.status is TrialStatus.FAILED:
            line += f"  error: {trial.error}"
        log.info(line)
        self._publish_meta()
        self.channel.publish_progress(
            {
                "trial_id": trial.trial_id,
                "status": trial.status.value,
                "metric": trial.metric,
                "params": trial.params,
                "ended": done,
                "line": line,
            }
        )


SUMMARY_KEYS = (
    "experiment_id",
    "name",
    "status",
    "reason",
    "direction",
    "optimization_key",
    "num_trials",
    "counts",
    "best",
    "duration",
    "results_dir",
)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The small part of a result that an Airflow XCom carries; for an ablation
    study, also its table (one row per component)."""
    summary = {k: result.get(k) for k in SUMMARY_KEYS}
    if isinstance(result.get("ablation"), dict) and "components" in result["ablation"]:
        from maggy_core.ablation.report import summary_table

        summary["ablation"] = summary_table(result["ablation"])
    return summary


def _fmt(v: Any) -> str:
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.4g}"
    return str(v)
