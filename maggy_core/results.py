"""Results of an experiment: the journal, its reader, the result and the progress lines.

``results_dir`` is a local folder or an object store (any fsspec URL); every read
and write goes through :class:`~maggy_core.storage.Storage`. Layout of
``<results_dir>/<experiment_id>/``:

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

On an object store, which cannot append, the journal is ``journal/<n>.jsonl``
instead: numbered segments, each shipped whole within :data:`FSYNC_INTERVAL` of
its first record (see :class:`Journal` and ``docs/deployment.md`` for the bound on
what a crash loses), and a trial's log is rewritten whole every
:data:`LOG_INTERVAL` seconds while it logs and when it ends.

Durability. Every record is flushed to the OS as it is written, so a killed
process (SIGKILL at any point) loses nothing but a line it was in the middle of
writing. ``fsync`` runs at most once a second (and at the end): a crash of the
whole machine loses at most the last second of records, which the resume then
runs again; an ``fsync`` per transition would cost more than the rest of a
trial's dispatch. A torn last line (the writer died mid-line) is cut off before
anything is appended, so the next run's records are never hidden behind it; a
complete line that does not parse is skipped by every reader, the same way.
``result.json`` is written by :meth:`Storage.write_bytes` (the one atomic write): on
a local disk a unique temporary file, fsynced, renamed over the old one; on a store
one PUT; so a reader sees the old file or the new one, whole.

:class:`Journal` writes and reads; :func:`replay` is the one reader of trials that
the coordinator's resume, the plugin's live pages and the CLI share.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import posixpath
import threading
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
from maggy_core.storage import (
    SegmentWriter,
    Storage,
    has_journal,
    open_storage,
    parse_json_lines,
    read_journal_lines,
)
from maggy_core.trial import TrialStatus

log = logging.getLogger("maggy")

JOURNAL = "journal.jsonl"
RESULT = "result.json"
PREVIOUS_RESULT = "result.previous.json"
#: Longest time between two fsyncs of the journal while records are written (on
#: an object store: between a record and the segment that ships it).
FSYNC_INTERVAL = 1.0
#: Longest time a trial's log lines wait before they reach an object store.
LOG_INTERVAL = 2.0

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

    Used by the coordinator's thread only. On a local folder the journal is one
    file, opened lazily and appended to (before the first append a torn tail is
    cut off, see the module docstring). On an object store, which cannot append,
    it is a :class:`~maggy_core.storage.SegmentWriter`: records are shipped as
    numbered segment objects, at most :data:`~maggy_core.results.FSYNC_INTERVAL`
    seconds after they are written. A small shipper thread ships a waiting
    buffer on time even while the coordinator waits on Redis, so the bound holds
    for a quiet experiment too; a lock keeps it and the coordinator's appends
    apart.

    Args:
        where: The experiment's folder: a :class:`Storage` (see
            :meth:`Storage.child`), or a local path of the folder or of its
            ``journal.jsonl``.
    """

    def __init__(self, where: Storage | str | os.PathLike[str]) -> None:
        if isinstance(where, Storage):
            self.storage = where
        else:
            p = Path(where)
            self.storage = Storage(p.parent if p.name == JOURNAL else p)
        self.path = Path(self.storage.path(JOURNAL)) if self.storage.is_local else None
        self._fh: IO[str] | None = None
        self._synced = time.monotonic()
        self._segments: SegmentWriter | None = None
        self._lock = threading.Lock()
        self._shipper: threading.Thread | None = None
        self._closed = threading.Event()

    # ------------------------------------------------------------ reading

    @staticmethod
    def read_lines(where: Storage | str | os.PathLike[str]) -> list[dict[str, Any]]:
        """Every complete record of a journal as decoded JSON objects.

        A last line without its newline (a writer that died mid-line) and complete
        lines that are not a JSON object are skipped, the same way for every reader.
        ``where`` is an experiment folder (a :class:`Storage` or a local path) or a
        local ``journal.jsonl``.
        """
        storage = _experiment_storage(where)
        try:
            return parse_json_lines(read_journal_lines(storage))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return []  # not there yet, or a folder made meanwhile

    def records(self) -> list[JournalRecord]:
        """Every record this version knows, typed (see :func:`read_records`)."""
        return read_records(self.storage)

    # ------------------------------------------------------------ writing

    def _open(self) -> IO[str]:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.repair()
        self._fh = self.path.open("a", encoding="utf-8")
        return self._fh

    def _open_segments(self) -> SegmentWriter:
        self._segments = SegmentWriter(self.storage, max_delay=FSYNC_INTERVAL)
        self._shipper = threading.Thread(target=self._ship, name="maggy-journal", daemon=True)
        self._shipper.start()
        return self._segments

    def _ship(self) -> None:
        while not self._closed.wait(FSYNC_INTERVAL / 4):
            with self._lock:
                if self._segments is not None:
                    try:
                        self._segments.tick()
                    except Exception:  # the store may be unreachable for a while
                        log.warning("journal: shipping a segment failed; retrying", exc_info=True)

    def repair(self) -> int:
        """Cut a torn last line off the local file; returns the bytes removed
        (segments are whole objects: nothing to cut)."""
        if self.path is None:
            return 0
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
        """Append one record (stamped with the time). Local: flushed to the OS at
        once, fsync'ed when the last fsync is :data:`FSYNC_INTERVAL` seconds old.
        Object store: buffered and shipped within that interval."""
        data = record.to_json() if isinstance(record, JournalRecord) else dict(record)
        data["time"] = time.time()
        line = json.dumps(data, separators=(",", ":"))
        if not self.storage.is_local:
            with self._lock:
                writer = self._segments or self._open_segments()
                writer.append(line)
                writer.tick()
            return
        fh = self._fh or self._open()
        fh.write(line + "\n")
        fh.flush()
        now = time.monotonic()
        if now - self._synced >= FSYNC_INTERVAL:
            os.fsync(fh.fileno())
            self._synced = now

    def sync(self) -> None:
        """Make what was written durable: fsync the file, or ship the segment buffer
        (at the end of a run, and before anything that reports the run ended)."""
        if self._segments is not None:
            with self._lock:
                self._segments.flush()
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        self.sync()
        self._closed.set()
        if self._shipper is not None:
            self._shipper.join(5)
            self._shipper = None
        self._segments = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _experiment_storage(where: Storage | str | os.PathLike[str]) -> Storage:
    """An experiment folder as a :class:`Storage`: a Storage as it is, a local
    ``journal.jsonl`` as its folder, any other path or URL as the folder."""
    if isinstance(where, Storage):
        return where
    raw = os.fspath(where)
    if "://" not in raw or raw.startswith("file://"):
        p = Path(raw.removeprefix("file://"))
        if p.name == JOURNAL or p.is_file():
            p = p.parent
        return Storage(p)
    return open_storage(raw)


def read_records(where: Storage | str | os.PathLike[str]) -> list[JournalRecord]:
    """The typed records of a journal (an experiment folder, local or on a store,
    or a local journal file); records of an unknown type or with bad fields are
    skipped."""
    storage = _experiment_storage(where)
    out = []
    for raw in Journal.read_lines(storage):
        try:
            rec = record_from_json(raw)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("journal %s: skipped a %s record: %s", storage, raw.get("type"), exc)
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


def result_from_journal(folder: Storage | str | os.PathLike[str]) -> dict[str, Any] | None:
    """A ``result.json``-shaped result rebuilt from an experiment's journal: every
    trial that ended, those started and not ended (``running`` while the latest
    run has not ended, else ``pending``), counts and the best so far.

    For readers of an experiment that is running, or whose driver was killed
    before it wrote ``result.json`` (the plugin's pages). ``None`` without a journal.
    """
    storage = _experiment_storage(folder)
    if not has_journal(storage):
        return None
    state = replay(read_records(storage))
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
        experiment_id=first.experiment_id if first else posixpath.basename(storage.root),
        name=spec.get("name"),
        status=state.ended.status if state.ended else "running",
        reason=state.ended.reason if state.ended else "no result.json yet: trials ended so far",
        direction=direction,
        optimization_key=spec.get("optimization_key", "metric"),
        counts=counts,
        best=None if best is None else BestTrial.of(best),
        trials=trials,
        started=first.time if first else None,
        results_dir=storage.url_of(),
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
    """The files of one experiment: its journal, trial logs and ``result.json``,
    in a local folder or on an object store. Used by the coordinator's thread only.

    Args:
        results_dir: The results root: a local path, an fsspec URL or a
            :class:`Storage`.
        experiment_id: The experiment's folder under it.
        storage_options: fsspec options for a URL; default: from the environment
            (:func:`~maggy_core.storage.storage_options_from_env`).

    Attributes:
        storage: The experiment's folder.
        root: Its local path (a :class:`Path`), or its URL on an object store.
    """

    def __init__(
        self,
        results_dir: Storage | str | os.PathLike[str],
        experiment_id: str,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.results = open_storage(results_dir, storage_options)
        self.storage = self.results.child(experiment_id)
        self.root: Path | str = (
            Path(self.storage.path()) if self.storage.is_local else self.storage.url_of()
        )
        self.storage.makedirs("trials")
        self.journal = Journal(self.storage)
        # Local: an open file per running trial, appended to. Object store: the
        # lines so far, written whole (one PUT) at most every LOG_INTERVAL seconds
        # and when the trial ends.
        self._logs: dict[str, IO[str]] = {}
        self._buffers: dict[str, list[str]] = {}
        self._shipped: dict[str, float] = {}

    @property
    def journal_path(self) -> Path | None:
        return self.journal.path

    def read_journal(self) -> list[dict[str, Any]]:
        """Every complete record of the journal, as decoded JSON."""
        return Journal.read_lines(self.storage)

    @staticmethod
    def read_journal_at(folder: Storage | str | os.PathLike[str]) -> list[dict[str, Any]]:
        """Like :meth:`read_journal`, for any experiment folder (read only)."""
        return Journal.read_lines(folder)

    def append(self, record: JournalRecord | Mapping[str, Any]) -> None:
        """Append one record to the journal (see :meth:`Journal.append`)."""
        self.journal.append(record)

    def trial_log(self, trial_id: str, line: str) -> None:
        line = line.rstrip("\n") + "\n"
        if not self.storage.is_local:
            self._buffers.setdefault(trial_id, []).append(line)
            if time.monotonic() - self._shipped.get(trial_id, 0.0) >= LOG_INTERVAL:
                self._ship_log(trial_id)
            return
        fh = self._logs.get(trial_id)
        if fh is None:
            fh = self._logs[trial_id] = open(  # noqa: SIM115 - kept open while the trial runs
                self.storage.path("trials", f"{trial_id}.log"), "a", encoding="utf-8"
            )
        fh.write(line)
        fh.flush()

    def _ship_log(self, trial_id: str) -> None:
        lines = self._buffers.get(trial_id)
        if lines:
            self.storage.write_text("".join(lines), "trials", f"{trial_id}.log")
        self._shipped[trial_id] = time.monotonic()

    def close_trial_log(self, trial_id: str) -> None:
        if trial_id in self._buffers:
            self._ship_log(trial_id)
            del self._buffers[trial_id]
            self._shipped.pop(trial_id, None)
        fh = self._logs.pop(trial_id, None)
        if fh is not None:
            fh.close()

    def write_result(self, result: Result | Mapping[str, Any]) -> str:
        """Write ``result.json`` whole (:meth:`Storage.write_bytes`: a temporary file
        fsync'ed and renamed locally, one PUT on a store). The journal is made
        durable first, so a result never names trials the journal could lose."""
        data = result.to_json() if isinstance(result, Result) else result
        self.journal.sync()
        return self.storage.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", RESULT)

    def retire_result(self) -> str | None:
        """Move an earlier run's ``result.json`` aside (to ``result.previous.json``);
        returns its new location, or ``None`` when there was none."""
        if not self.storage.exists(RESULT):
            return None
        self.storage.move((RESULT,), (PREVIOUS_RESULT,))
        return self.storage.url_of(PREVIOUS_RESULT)

    def close(self) -> None:
        for trial_id in list(self._logs) + list(self._buffers):
            self.close_trial_log(trial_id)
        self.journal.close()


def load_result(
    path: Storage | str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read a ``result.json``: of an experiment folder (a :class:`Storage`, a local
    path or a URL) or the file itself.

    Raises:
        FileNotFoundError: there is no ``result.json`` there.
        ValueError: it is not a JSON object.
    """
    if isinstance(path, Storage):
        storage, name = path, RESULT
    else:
        raw = os.fspath(path)
        name = RESULT
        if raw.rstrip("/").endswith(".json"):
            raw, name = raw.rstrip("/").rsplit("/", 1) if "/" in raw else (".", raw)
        storage = open_storage(raw, storage_options)
    text = storage.read_text(name)
    if text is None:
        raise FileNotFoundError(f"{storage.url_of(name)}: no such file")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{storage.url_of(name)}: not a JSON object")
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
