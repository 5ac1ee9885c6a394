"""Results of an experiment: an append-only journal and files per experiment.

Layout of ``<results_dir>/<experiment_id>/``:

- ``journal.jsonl`` -- one JSON record per line, appended and flushed as trial
  state changes (``experiment``, ``trial_started``, ``trial_ended``, ``resumed``,
  ``ended``). Each trial record carries the optimiser's state after that
  transition, so the journal alone is enough to resume: a coordinator that starts
  on an existing journal keeps every ended trial and runs again only the trials
  that had not ended.
- ``result.json`` -- the summary, written (atomically) when the experiment ends.
  A run that resumes the experiment moves the earlier run's to
  ``result.previous.json`` first, so that while it runs nobody (the plugin's pages,
  a follower) mistakes the earlier outcome for this run's.
- ``trials/<trial_id>.log`` -- the lines a trial wrote with ``reporter.log``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any

JOURNAL = "journal.jsonl"
RESULT = "result.json"
PREVIOUS_RESULT = "result.previous.json"


class ResultStore:
    """Files of one experiment. Used by the coordinator's thread only."""

    def __init__(self, results_dir: str | os.PathLike[str], experiment_id: str) -> None:
        self.root = Path(results_dir) / experiment_id
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "trials").mkdir(exist_ok=True)
        self._journal: IO[str] | None = None
        self._logs: dict[str, IO[str]] = {}

    @property
    def journal_path(self) -> Path:
        return self.root / JOURNAL

    def read_journal(self) -> list[dict[str, Any]]:
        """Every complete record of an existing journal (a torn last line is dropped)."""
        return self.read_journal_at(self.root)

    @staticmethod
    def read_journal_at(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
        """Like :meth:`read_journal`, for any experiment folder (read only)."""
        path = Path(folder) / JOURNAL
        if not path.exists():
            return []
        records = []
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # the writer died mid-line; everything before it stands
                try:
                    records.append(json.loads(line))
                except ValueError:
                    break
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Append one record to the journal and flush it to the OS."""
        if self._journal is None:
            self._journal = self.journal_path.open("a", encoding="utf-8")
        self._journal.write(
            json.dumps({"time": time.time(), **record}, separators=(",", ":")) + "\n"
        )
        self._journal.flush()

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

    def write_result(self, result: dict[str, Any]) -> Path:
        """Write ``result.json`` atomically (a reader never sees half a file)."""
        path = self.root / RESULT
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
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
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``result.json`` (or the experiment directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULT
    return json.loads(p.read_text(encoding="utf-8"))
