"""The coordinator: the only writer of trial state, as a loop over parts.

It runs in the Spark driver (one thread) and decides everything centrally:
which trial a free worker runs next (from the optimiser), which running trial is
stopped (by the stopping rule on live metrics, or on request), when a lost
worker's trial is run again, and when the experiment is over. Workers only send
events; the coordinator reads them from the ``events`` stream, writes the journal,
then acknowledges them.

Each part has one job and its own state; the coordinator owns them and moves
events between them:

- :class:`~maggy_core.trials.TrialTable`: trials, the queue, counts, the best.
- :class:`~maggy_core.workers.WorkerRegistry`: workers, the idle ones, the lost.
- :class:`~maggy_core.results.ResultStore` (its :class:`~maggy_core.results.Journal`):
  the journal's records, trial logs, ``result.json``.
- :class:`~maggy_core.supervisor.Supervisor`: stop requests, the follower lease,
  Redis outages and restarts.
- the optimiser and the stopping rule, which see :class:`~maggy_core.trial.FrozenTrial`
  snapshots only.

Per-trial cost is O(1) in the number of trials already finished: events are
handled one by one against dictionaries, the journal is appended, and the best
trial is updated incrementally. ``result.json`` is written once, at the end.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from maggy_core.channel import KEEP_ALIVE, CoordinatorChannel, metric_points
from maggy_core.exceptions import MessageError
from maggy_core.optimizers import DONE, WAIT, Optimizer, Suggestion
from maggy_core.records import (
    BestTrial,
    Ended,
    ExperimentRecord,
    Origin,
    Result,
    Resumed,
    StopRequested,
    TrialEnded,
    TrialRecord,
    TrialStarted,
    summarize,
)
from maggy_core.results import ResultStore, progress_line, replay
from maggy_core.spec import ExperimentSpec
from maggy_core.stopping import StoppingRule
from maggy_core.supervisor import OUTAGE_LIMIT, Supervisor
from maggy_core.trial import TrialStatus
from maggy_core.trials import TrialTable
from maggy_core.workers import Worker, WorkerRegistry

log = logging.getLogger("maggy")

__all__ = ["Coordinator", "summarize"]


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
        seed: The seed in force (recorded in the journal; see ``ExperimentRecord``).
        origin: Where the experiment came from (Airflow's dag, task, run, map index).
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
        seed: int | None = None,
        origin: Origin | None = None,
    ) -> None:
        self.spec = spec
        self.experiment_id = experiment_id
        self.channel = channel
        self.store = store
        self.optimizer = optimizer
        self.rule = stopping_rule
        # Where workers wait for the rule's verdict (a rule without ``asks``: nowhere).
        self._asks = stopping_rule.asks() if stopping_rule is not None else None
        self.epoch = epoch
        self.seed = spec.seed if seed is None else seed
        self.origin = origin or Origin()
        self.table = TrialTable(spec.direction)
        self.registry = WorkerRegistry(epoch, worker_timeout or max(5.0, 10 * spec.hb_interval))
        self.supervisor = Supervisor(
            channel, epoch, follower_lease, OUTAGE_LIMIT, now=time.monotonic()
        )
        self.optimizer_done = False
        self.status: str | None = None  # set when the experiment ends
        self.reason = ""
        self.started = time.time()
        self.stop_latencies: list[float] = []
        self.registered: dict[str, float] = {}  # worker -> when its register was read
        self._last_liveness = time.monotonic()
        self._last_keep_alive = 0.0
        self._last_supervised = time.monotonic()
        # How much longer than an interval a round of supervision may come late
        # before the time in between does not count against the workers.
        self._slack = max(1.0, 2 * spec.hb_interval)

    # ---------------------------------------------------------------- set-up

    def open(self) -> None:
        """Open the channel and the journal; resume from an earlier journal."""
        state = replay(self.store.journal.records())
        self.channel.open(self.epoch, self._meta())
        self.channel.keep_alive()
        self._last_keep_alive = time.monotonic()
        if state.runs:
            self._resume(state.ordered())
            self.store.retire_result()
        self.store.append(
            ExperimentRecord(
                experiment_id=self.experiment_id,
                epoch=self.epoch,
                spec=self.spec.to_dict(),
                seed=self.seed,
                **self.origin.to_json(),
            )
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

    def _resume(self, trials: list[TrialRecord]) -> None:
        """Keep the ended trials of an earlier run, queue the others, and let the
        optimiser and the rule rebuild their state from them."""
        kept, requeued = self.table.restore(trials)
        for t in kept:
            self.rule.trial_ended(t.frozen())
        self.optimizer.resume([t.frozen() for t in self.table.ordered()])
        log.info(
            "resuming experiment %s: kept %d ended trials, running %d unfinished ones again",
            self.experiment_id,
            len(kept),
            len(requeued),
        )
        self.store.append(Resumed(kept=len(kept), requeued=len(requeued)))

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
        self._last_supervised = time.monotonic()
        while self.status is None:
            self.poll(block_ms)
            if self.status is None and not job_alive():
                self._end(
                    "failed", "the Spark job running the workers ended before the experiment did"
                )
        return self.result()

    def poll(self, block_ms: int = 100) -> None:
        """One round of the loop; rides out a Redis outage of up to the
        supervisor's ``outage_limit`` (the client reconnects with backoff), then
        fails the experiment."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            self._poll(block_ms)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            failure = self.supervisor.unreachable(exc, time.monotonic())
            if failure is not None:
                self.fail(failure)
            time.sleep(0.5)
            return
        away = self.supervisor.reachable(time.monotonic())
        if away is not None:
            # Nobody could beat while Redis was away: silence says nothing.
            log.info("Redis answers again after %.1f s", away)
            self.registry.refresh(time.monotonic())

    def _poll(self, block_ms: int) -> None:
        """Handle one batch of events, hand out trials, check liveness and the end."""
        events = self.channel.read_events(block_ms=block_ms)
        # What this round writes (verdicts, stop flags, acks, progress, assignments)
        # goes to Redis in one round trip at the end of the block.
        with self._batched():
            for _entry, msg in events:
                if isinstance(msg, MessageError):
                    self.supervisor.malformed("event", msg)
                    continue
                self._handle(msg)
            self.channel.ack([e for e, _ in events])
            self._dispatch()
        now = time.monotonic()
        if now - self._last_liveness >= self.spec.hb_interval:
            self._last_liveness = now
            self._supervise(now)
        if (
            self.status is None
            and self.optimizer_done
            and not self.table.queue
            and not self.registry.busy()
        ):
            self._end("finished", "")

    def _batched(self) -> contextlib.AbstractContextManager[None]:
        # No channel: a coordinator that only writes results (the plugin's tests).
        return self.channel.batched() if self.channel is not None else contextlib.nullcontext()

    def _handle(self, msg: dict[str, Any]) -> None:
        if msg["epoch"] != self.epoch:
            return  # a worker of an earlier coordinator of this experiment
        kind, wid = msg["type"], msg["worker"]
        if kind == "register":
            self.registered.setdefault(wid, time.time())
            for dead in self.registry.register(wid, msg["host"], msg["pid"]):
                self._lose_worker(dead, "its Spark task was restarted")
            return
        worker = self.registry.get(wid)
        if worker is None:
            return  # declared lost already; its late events do not count
        seq = msg.get("seq", 0)
        if seq <= worker.seq:
            return  # a duplicate delivery
        if kind == "metric" and msg.get("ask") == 1:
            self._answer(worker, msg)
            return
        if kind == "bye":
            worker.seq = seq
            worker.busy, worker.trials = msg["busy"], msg["trials"]
            self.registry.drop(wid)
            self.channel.forget_worker(wid)
            return
        trial = self.table.get(msg["trial"])
        if (
            trial is None
            or trial.attempts != msg["attempt"]
            or trial.worker != wid
            or trial.status is not TrialStatus.RUNNING
        ):
            # An event of a stale attempt, an outcome sent again, or one forged for
            # a trial this worker does not run: dropped, and it moves nothing on
            # (its sequence number is not taken, so it cannot hide later events).
            return
        worker.seq = seq
        if kind == "metric":
            for step, value in metric_points(msg):
                self._on_metric(trial, worker, step, value)
        elif kind == "log":
            self.store.trial_log(trial.trial_id, msg["msg"])
        elif kind in ("final", "error"):
            self._on_end(trial, worker, msg)

    def _answer(self, worker: Worker, msg: dict[str, Any]) -> None:
        """A report that waits for the stopping rule's verdict: handle it, then
        answer at once (a report of an attempt that is not running is told to stop)."""
        trial = self.table.get(msg["trial"])
        live = (
            trial is not None
            and trial.attempts == msg["attempt"]
            and trial.worker == worker.worker_id
            and trial.status is TrialStatus.RUNNING
        )
        if trial is not None and live:
            worker.seq = msg["seq"]
            for step, value in metric_points(msg):
                self._on_metric(trial, worker, step, value)
        stop = trial is None or not live or self.table.stop_pending(trial)
        self.channel.verdict(worker.worker_id, msg["trial"], msg["attempt"], msg["step"], stop)

    def _on_metric(self, trial: TrialRecord, worker: Worker, step: int, value: float) -> None:
        trial.history.append((step, value))
        if self.rule.report(trial.trial_id, step, value):
            reason = f"stopping rule {self.spec.es_policy} at step {step}"
            if self._stop_trial(trial, worker, reason):
                log.info(
                    "trial %s stopped early at step %d (%s=%.6g)",
                    trial.trial_id,
                    step,
                    self.spec.optimization_key,
                    value,
                )

    def _stop_trial(self, trial: TrialRecord, worker: Worker | None, reason: str) -> bool:
        """Tell a running trial to stop; False when it was told already."""
        at = time.time()
        if not self.table.mark_stop(trial, at, reason):
            return False
        self.channel.request_stop(trial.trial_id)
        if worker is not None:
            worker.stop_decided_at = at
        return True

    def _on_end(self, trial: TrialRecord, worker: Worker, msg: dict[str, Any]) -> None:
        trial.start, trial.duration = msg["start"], msg["duration"]
        if worker.follows_stop_at is not None:
            # Worker and coordinator clocks: the same machine, or NTP on a cluster.
            self.stop_latencies.append(trial.start - worker.follows_stop_at)
            worker.follows_stop_at = None
        if self.table.stop_pending(trial):
            self.channel.clear_stop(trial.trial_id)
        if msg["type"] == "final":
            metric = None if msg["metric"] is None else float(msg["metric"])
            early = msg["status"] == "early_stopped"
            self.table.finish(trial, metric=metric, metrics=msg["metrics"], early=early)
        else:
            self.table.fail(trial, msg["error"], msg["traceback"])
        worker.trial = None
        worker.busy += trial.duration or 0.0
        worker.trials += 1
        self._record_end(trial)
        if self.status is None:
            self.registry.idle.append(worker.worker_id)
        failures = self.table.consecutive_failures
        if failures >= self.spec.max_consecutive_failures and self.status is None:
            self._end(
                "failed",
                f"{failures} trials failed in a row "
                f"(max_consecutive_failures={self.spec.max_consecutive_failures}); "
                f"last error: {trial.error}",
            )

    def _record_end(self, trial: TrialRecord) -> None:
        """A trial reached a terminal state: rule, optimiser, journal, progress."""
        frozen = trial.frozen()
        self.rule.trial_ended(frozen)
        self.optimizer.observe(frozen)
        self.store.append(TrialEnded(trial_id=trial.trial_id, trial=trial))
        self.store.close_trial_log(trial.trial_id)
        self._progress(trial)

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        """Give every idle worker a trial, while there are trials to give."""
        idle = self.registry.idle
        while idle and self.status is None:
            trial = self._next_trial()
            if trial is None:
                return
            worker = self.registry.get(idle.popleft())
            if worker is None:
                self.table.requeue(trial)
                continue
            self.table.start(trial, worker.worker_id)
            worker.trial = trial.trial_id
            self.store.append(
                TrialStarted(
                    trial_id=trial.trial_id,
                    attempt=trial.attempts,
                    params=trial.params,
                    budget=trial.budget,
                    info=trial.info,
                    worker=worker.worker_id,
                )
            )
            self.channel.assign(worker.worker_id, _assignment(trial, self._asks))
            worker.follows_stop_at, worker.stop_decided_at = worker.stop_decided_at, None

    def _next_trial(self) -> TrialRecord | None:
        queued = self.table.next_queued()
        if queued is not None:
            return queued
        if self.optimizer_done:
            return None
        decision = self.optimizer.suggest()
        if decision is DONE:
            self.optimizer_done = True
            return None
        if decision is WAIT or not isinstance(decision, Suggestion):
            return None
        return self.table.new(dict(decision.params), decision.budget, dict(decision.info))

    # ---------------------------------------------------------------- supervision

    def _supervise(self, now: float) -> None:
        """Every heartbeat interval: Redis's keys, stop requests, the lease, and
        the workers' heartbeats."""
        sup = self.supervisor
        if sup.redis_lost_keys():
            self._restore()
        if now - self._last_keep_alive >= KEEP_ALIVE:
            self.channel.keep_alive()
            self._last_keep_alive = now
        reason = sup.experiment_stop(now)
        if reason is not None:
            self.stop(reason)
            return
        for request in sup.trial_stops():
            self._on_stop_request(request["trial"], request["reason"])
        beats = self.channel.heartbeats()
        after = time.monotonic()
        late = after - self._last_supervised > self.spec.hb_interval + self._slack
        if late and self.registry.workers:
            # This loop was not looking (a Redis call that retried through an
            # outage, a stalled process): workers could not beat meanwhile either,
            # so their silence says nothing about them.
            log.info(
                "no look at the workers for %.1f s: counting every one as seen now",
                after - self._last_supervised,
            )
            self.registry.refresh(after)
        self._last_supervised = after
        for worker in self.registry.check(beats, after):
            self._lose_worker(worker, silent=True)
        for wid in self.registry.readmitted:
            log.warning("worker %s beats again after it was lost: taken back", wid)
        self.registry.readmitted.clear()

    def _on_stop_request(self, trial_id: str, reason: str) -> None:
        """Someone asked one trial to stop: an early stop when it runs, else
        recorded as ignored."""
        trial = self.table.get(trial_id)
        if trial is None or trial.status is not TrialStatus.RUNNING:
            detail = "no such trial" if trial is None else f"the trial is {trial.status.value}"
            log.info("stop request for trial %s ignored (%s): %s", trial_id, detail, reason)
            self.store.append(
                StopRequested(trial_id=trial_id, reason=reason, outcome="ignored", detail=detail)
            )
            return
        worker = self.registry.get(trial.worker or "")
        if not self._stop_trial(trial, worker, reason):
            self.store.append(
                StopRequested(
                    trial_id=trial_id, reason=reason, outcome="ignored", detail="stopping already"
                )
            )
            return
        log.info("trial %s asked to stop: %s", trial_id, reason)
        self.store.append(StopRequested(trial_id=trial_id, reason=reason, outcome="stopping"))

    def _lose_worker(self, worker: Worker, why: str = "", *, silent: bool = False) -> None:
        why = why or f"no heartbeat for {self.registry.timeout:.0f} s"
        log.warning("worker %s lost: %s", worker.worker_id, why)
        trial = self.table.get(worker.trial) if worker.trial else None
        self.registry.drop(worker.worker_id, silent=silent)
        self.channel.forget_worker(worker.worker_id)
        if trial is None:
            return
        if trial.attempts < self.spec.max_attempts:
            log.info(
                "trial %s (attempt %d) runs again: its worker was lost",
                trial.trial_id,
                trial.attempts,
            )
            trial.status = TrialStatus.PENDING
            self.rule.trial_ended(trial.frozen())  # its live reports are void now
            self.table.requeue(trial)
        else:
            self.table.fail(
                trial, f"its worker was lost on each of {trial.attempts} attempts (max_attempts)"
            )
            self._record_end(trial)

    def _restore(self) -> None:
        """Redis lost the experiment's keys (a restart without persistence): put
        back what workers need from the coordinator's own state. Workers ignore
        an assignment they already ran, and send its outcome again."""
        log.warning("Redis lost the experiment's keys (restarted?): restoring the channel")
        self.channel.restore(self.epoch, self._meta())
        self._publish_meta()
        for worker in self.registry.busy():
            trial = self.table.trials[worker.trial or ""]
            if self.table.stop_pending(trial):
                self.channel.request_stop(trial.trial_id)
            self.channel.assign(worker.worker_id, _assignment(trial, self._asks))
        if self.status is not None:
            for wid in self.registry.workers:
                self.channel.assign(wid, {"type": "done", "reason": self.status})

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
        for worker in self.registry.busy():
            self.channel.request_stop(worker.trial or "")
        for wid in self.registry.workers:
            self.channel.assign(wid, {"type": "done", "reason": status})
        self.channel.set_meta(state=status, reason=reason, ended=time.time())
        if status != "finished":
            log.warning("experiment %s %s: %s", self.experiment_id, status, reason)

    def drain(self, timeout: float) -> None:
        """After the end, collect the outcome of trials still running for up to
        ``timeout`` seconds (they were told to stop); the rest are failed."""
        deadline = time.monotonic() + timeout
        while self.registry.busy() and time.monotonic() < deadline:
            events = self.channel.read_events(block_ms=100)
            for _e, msg in events:
                if not isinstance(msg, MessageError):
                    self._handle(msg)
            self.channel.ack([e for e, _ in events])
        for worker in self.registry.busy():
            trial = self.table.trials[worker.trial or ""]
            self.table.fail(trial, f"the experiment ended ({self.status}) before the trial did")
            self._record_end(trial)
            worker.trial = None

    def publish_summary(self, result: dict[str, Any]) -> None:
        """Put the result without its trials into ``meta`` for followers that do
        not see the results directory (an Airflow worker on another host)."""
        self.channel.set_meta(summary=summarize(result))

    def ended(self, status: str, reason: str) -> None:
        """Journal the end of this run (after ``result.json`` is written)."""
        self.store.append(Ended(status=status, reason=reason))

    def result_record(self) -> Result:
        """The experiment's result (the content of ``result.json``), typed."""
        ended = time.time()
        best = self.table.best
        return Result(
            experiment_id=self.experiment_id,
            name=self.spec.name,
            status=self.status or "running",
            reason=self.reason,
            direction=self.spec.direction,
            optimization_key=self.spec.optimization_key,
            counts=dict(self.table.counts),
            best=None if best is None else BestTrial.of(best),
            trials=self.table.ordered(),
            started=self.started,
            ended=ended,
            duration=ended - self.started,
            results_dir=str(self.store.root),
            workers=self.registry.records(),
            spec=self.spec.to_dict(),
            # Seconds from each stop decision to the stopped trial's worker being
            # handed its next trial: how long an early stop keeps a slot idle.
            engine={
                "stop_latencies": [round(s, 6) for s in self.stop_latencies],
                # Unix time each worker's registration was read (start-up split).
                "registered": dict(self.registered),
            },
            origin=self.origin,
        )

    def result(self) -> dict[str, Any]:
        """The experiment's result as JSON data (the content of ``result.json``)."""
        return self.result_record().to_json()

    # ---------------------------------------------------------------- progress

    def _publish_meta(self) -> None:
        best = self.table.best
        counts = self.table.counts
        self.channel.set_meta(
            finished=counts["finished"],
            early_stopped=counts["early_stopped"],
            failed=counts["failed"],
            running=len(self.registry.busy()),
            best_trial=best.trial_id if best else "",
            best_metric=best.metric if best else None,
            best_params=best.params if best else None,
        )

    def _progress(self, trial: TrialRecord) -> None:
        """One line per ended trial in the log (and in Redis, for followers)."""
        done = self.table.ended_count()
        line = progress_line(
            trial, done, self.spec.num_trials, self.spec.optimization_key, self.table.best
        )
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


def _assignment(trial: TrialRecord, asks: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``trial`` message that hands an attempt to a worker (``asks``: where its
    reports wait for the stopping rule's verdict, see ``StoppingRule.asks``)."""
    return {
        "type": "trial",
        "trial": trial.trial_id,
        "attempt": trial.attempts,
        "params": trial.params,
        "budget": trial.budget,
        # An earlier trial whose checkpoint this one continues (set by the optimiser).
        "checkpoint": trial.info.get("checkpoint"),
        "asks": asks,
    }
