"""Results of an experiment: the journal, its reader, the result and the progress lines.

Layout of ``<results_dir>/<experiment_id>/``:

- ``journal.jsonl`` -- one JSON record per line (:mod:`maggy_core.records`),
  appended as trial state changes (``experiment``, ``trial_started``,
  ``trial_ended``, ``stop_requested``, ``resumed``, ``ended``). The journal alone is
  enough to resume: a coordinator that starts on an existing journal keeps every
  ended trial and runs again only the trials that had not ended, and the optimiser
  rebuilds its state from those trials (``Optimizer.resume``).
- ``result.json`` -- the result, written when the experiment ends. A run that
  resumes the experiment moves the earlier run's to ``result.previous.json``
  first, so that while it runs nobody (the plugin's pages, a follower) mistakes
  the earlier outcome for this run's.
- ``trials/<trial_id>.log`` -- the lines a trial wrote with ``reporter.log``.

Durability. Every record is flushed to the OS as it is written, so a killed
process (SIGKILL at any point) loses nothing but a line it was in the middle of
writing. ``fsync`` runs at most once a second (and at the end): a crash of the
whole machine loses at most the last second of records, which the resume then
runs again; an ``fsync`` per transition would cost more than the rest of a
trial's dispatch. A torn last line (the writer died mid-line) is cut off before
anything is appended, so the next run's records are never hidden behind it; a
complete line that does not parse is skipped by every reader, the same way.
``result.json`` is written to a unique temporary file, fsynced, and renamed over
the old one, so a reader sees the old file or the new one, whole.

:class:`Journal` writes and reads; :func:`replay` is the one reader of trials that
the coordinator's resume, the plugin's live pages and the CLI share.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from maggy_core.records import (
    Ended,
    ExperimentRecord,
    JournalRecord,
    Origin,
    Result,
    TrialEnded,
    TrialRecord,
    TrialStarted,
    best_of,
    record_from_json,
    summarize,
)
from maggy_core.storage import fsync_dir
from maggy_core.trial import TrialStatus

log = logging.getLogger("maggy")

JOURNAL = "journal.jsonl"
RESULT = "result.json"
PREVIOUS_RESULT = "result.previous.json"
#: Longest time between two fsyncs of the journal while records are written.
FSYNC_INTERVAL = 1.0

__all__ = [
    "FSYNC_INTERVAL",
    "Journal",
    "JournalState",
    "ResultStore",
    "load_result",
    "progress_line",
    "read_records",
    "replay",
    "result_from_journal",
    "summarize",
]


class Journal:
    """The append-only journal of one experiment: writer and reader together.

    Used by the coordinator's thread only. The file is opened lazily; before the
    first append a torn tail is cut off (see the module docstring).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fh: IO[str] | None = None
        self._synced = time.monotonic()

    # ------------------------------------------------------------ reading

    @staticmethod
    def read_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
        """Every complete record of a journal as decoded JSON objects.

        A last line without its newline (a writer that died mid-line) and complete
        lines that are not a JSON object are skipped, the same way for every reader.
        """
        p = Path(path)
        try:
            data = p.read_bytes()
        except (FileNotFoundError, IsADirectoryError):  # not there yet, or a folder made meanwhile
            return []
        out = []
        for line in data.split(b"\n")[:-1]:  # the part after the last newline is torn
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def records(self) -> list[JournalRecord]:
        """Every record this version knows, typed (see :func:`read_records`)."""
        return read_records(self.path)

    # ------------------------------------------------------------ writing

    def _open(self) -> IO[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.repair()
        self._fh = self.path.open("a", encoding="utf-8")
        return self._fh

    def repair(self) -> int:
        """Cut a torn last line off the file; returns the bytes removed."""
        with self.path.open("rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            # Read back from the end until the last newline.
            pos, tail = size, b""
            while pos > 0 and b"\n" not in tail:
                step = min(4096, pos)
                pos -= step
                fh.seek(pos)
                tail = fh.read(step) + tail
            cut = tail.rfind(b"\n")
            keep = pos + cut + 1 if cut >= 0 else 0
            if keep == size:
                return 0
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        log.warning(
            "journal %s: cut a torn last line (%d bytes) before appending", self.path, size - keep
        )
        return size - keep

    def append(self, record: JournalRecord | Mapping[str, Any]) -> None:
        """Append one record (stamped with the time) and flush it to the OS;
        fsync when the last one is :data:`FSYNC_INTERVAL` seconds old."""
        fh = self._fh or self._open()
        data = record.to_json() if isinstance(record, JournalRecord) else dict(record)
        data["time"] = time.time()
        fh.write(json.dumps(data, separators=(",", ":")) + "\n")
        fh.flush()
        now = time.monotonic()
        if now - self._synced >= FSYNC_INTERVAL:
            os.fsync(fh.fileno())
            self._synced = now

    def sync(self) -> None:
        """fsync what was written (at the end of a run)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if self._fh is not None:
            self.sync()
            self._fh.close()
            self._fh = None


def read_records(path: str | os.PathLike[str]) -> list[JournalRecord]:
    """The typed records of a journal file (or of the experiment folder holding
    one); records of an unknown type or with bad fields are skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / JOURNAL
    out = []
    for raw in Journal.read_lines(p):
        try:
            rec = record_from_json(raw)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("journal %s: skipped a %s record: %s", p, raw.get("type"), exc)
            continue
        if rec is not None:
            out.append(rec)
    return out


@dataclass
class JournalState:
    """What a journal says about an experiment (see :func:`replay`).

    Attributes:
        first: The first run's ``experiment`` record (its spec and seed).
        runs: How many runs the journal holds (the next run's epoch is ``runs + 1``).
        trials: Every trial started or ended, by id (ascending); a trial started
            and not ended has status PENDING and its last attempt's fields.
        ended: The latest run's ``ended`` record, or ``None`` while it runs (or
            when its driver was killed).
    """

    first: ExperimentRecord | None = None
    latest: ExperimentRecord | None = None
    runs: int = 0
    trials: dict[str, TrialRecord] = field(default_factory=dict)
    ended: Ended | None = None

    def ordered(self) -> list[TrialRecord]:
        return [self.trials[k] for k in sorted(self.trials)]


def replay(records: Iterable[JournalRecord]) -> JournalState:
    """Fold journal records into the state they describe: the one reader of
    trials from a journal (resume, the plugin, the CLI)."""
    state = JournalState()
    for rec in records:
        if isinstance(rec, ExperimentRecord):
            state.runs += 1
            state.first = state.first or rec
            state.latest = rec
            state.ended = None  # an "ended" counts only when it ends the latest run
        elif isinstance(rec, TrialStarted):
            # A later attempt replaces an earlier one, as in the coordinator.
            state.trials[rec.trial_id] = TrialRecord(
                rec.trial_id,
                dict(rec.params),
                TrialStatus.PENDING,
                budget=rec.budget,
                info=dict(rec.info),
                attempts=rec.attempt,
                worker=rec.worker,
                start=rec.time,
            )
        elif isinstance(rec, TrialEnded):
            state.trials[rec.trial_id] = rec.trial
        elif isinstance(rec, Ended):
            state.ended = rec
    return state


def result_from_journal(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A ``result.json``-shaped result rebuilt from an experiment's journal: every
    trial that ended, those started and not ended (``running`` while the latest
    run has not ended, else ``pending``), counts and the best so far.

    For readers of an experiment that is running, or whose driver was killed
    before it wrote ``result.json`` (the plugin's pages). ``None`` without a journal.
    """
    path = Path(folder) / JOURNAL
    if not path.exists():
        return None
    state = replay(read_records(path))
    first = state.first
    spec = (first.spec if first else None) or {}
    direction = spec.get("direction", "max")
    trials = state.ordered()
    if state.ended is None:
        for t in trials:
            if t.status is TrialStatus.PENDING:
                t.status = TrialStatus.RUNNING
    counts = _counts(trials)
    best = best_of(trials, direction)
    from maggy_core.records import BestTrial

    result = Result(
        experiment_id=first.experiment_id if first else Path(folder).name,
        name=spec.get("name"),
        status=state.ended.status if state.ended else "running",
        reason=state.ended.reason if state.ended else "no result.json yet: trials ended so far",
        direction=direction,
        optimization_key=spec.get("optimization_key", "metric"),
        counts=counts,
        best=None if best is None else BestTrial.of(best),
        trials=trials,
        started=first.time if first else None,
        results_dir=str(Path(folder)),
        spec=spec or None,
        origin=first.origin if first else Origin(),
    )
    return result.to_json()


def _counts(trials: Iterable[TrialRecord]) -> dict[str, int]:
    counts = {
        s.value: 0 for s in (TrialStatus.FINISHED, TrialStatus.EARLY_STOPPED, TrialStatus.FAILED)
    }
    for t in trials:
        if t.status.value in counts:
            counts[t.status.value] += 1
    return counts


class ResultStore:
    """The files of one experiment: its journal, trial logs and ``result.json``.
    Used by the coordinator's thread only."""

    def __init__(self, results_dir: str | os.PathLike[str], experiment_id: str) -> None:
        self.root = Path(results_dir) / experiment_id
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "trials").mkdir(exist_ok=True)
        self.journal = Journal(self.root / JOURNAL)
        self._logs: dict[str, IO[str]] = {}

    @property
    def journal_path(self) -> Path:
        return self.journal.path

    def read_journal(self) -> list[dict[str, Any]]:
        """Every complete record of the journal, as decoded JSON."""
        return Journal.read_lines(self.journal.path)

    @staticmethod
    def read_journal_at(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
        """Like :meth:`read_journal`, for any experiment folder (read only)."""
        return Journal.read_lines(Path(folder) / JOURNAL)

    def append(self, record: JournalRecord | Mapping[str, Any]) -> None:
        """Append one record to the journal (see :meth:`Journal.append`)."""
        self.journal.append(record)

    def trial_log(self, trial_id: str, line: str) -> None:
        fh = self._logs.get(trial_id)
        if fh is None:
            fh = self._logs[trial_id] = (self.root / "trials" / f"{trial_id}.log").open(
                "a", encoding="utf-8"
            )
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()

    def close_trial_log(self, trial_id: str) -> None:
        fh = self._logs.pop(trial_id, None)
        if fh is not None:
            fh.close()

    def write_result(self, result: Result | Mapping[str, Any]) -> Path:
        """Write ``result.json`` atomically and durably (see the module docstring)."""
        data = result.to_json() if isinstance(result, Result) else result
        path = self.root / RESULT
        fd, tmp = tempfile.mkstemp(prefix=".result.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(str(self.root))
        return path

    def retire_result(self) -> Path | None:
        """Move an earlier run's ``result.json`` aside (to ``result.previous.json``);
        returns its new path, or ``None`` when there was none."""
        path = self.root / RESULT
        if not path.exists():
            return None
        previous = self.root / PREVIOUS_RESULT
        os.replace(path, previous)
        return previous

    def close(self) -> None:
        for trial_id in list(self._logs):
            self.close_trial_log(trial_id)
        self.journal.close()


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``result.json`` (or the experiment directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULT
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{p}: not a JSON object")
    return data


def progress_line(
    trial: TrialRecord, ended: int, num_trials: int, key: str, best: TrialRecord | None
) -> str:
    """The line logged (and streamed to followers) when a trial ends."""
    metric = "-" if trial.metric is None else f"{trial.metric:.6g}"
    params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    best_text = (
        f"best {best.metric:.6g} ({best.trial_id})"
        if best is not None and best.metric is not None
        else "no best yet"
    )
    line = (
        f"trial {trial.trial_id} {trial.status.value:<13} {key}={metric}  {params}  "
        f"[{ended}/{num_trials} ended, {best_text}]"
    )
    if trial.status is TrialStatus.FAILED:
        line += f"  error: {trial.error}"
    if trial.stop_reason and trial.status is TrialStatus.EARLY_STOPPED:
        line += f"  ({trial.stop_reason})"
    return line


def _fmt(v: Any) -> str:
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.4g}"
    return str(v)
