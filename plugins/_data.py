"""What the pages show, read from the results store (and from Redis while a trial runs).

The results root is ``[maggy] results_dir``: a local folder or any fsspec URL
(read with the options of ``[maggy] results_conn_id``), so the API server needs
no disk shared with the Spark driver. Everything here returns plain JSON-able
dicts: the HTML pages and the JSON API show the same data. On a local folder,
files are read only when they are regular files inside the results root, reached
without a symbolic link (:func:`open_file`): whoever can write into the results
folder must not make the API server serve any other file. Every name read is one
safe path segment (:func:`valid_id`), on a local folder and a store alike.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maggy_airflow.operators.maggy_operator import default_results_dir
from maggy_core.storage import Storage, journal_modified, open_storage, parse_json_lines

_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
#: Trial statuses that end a trial.
TERMINAL = ("finished", "early_stopped", "failed")
#: Lines of a trial's log shown on its page (the end of the log).
LOG_LINES = 500
#: The largest file the pages read whole (result.json, the journal, a history).
MAX_READ = 64 * 1024 * 1024


def valid_id(value: str) -> bool:
    """Whether ``value`` can name an experiment or a trial: one path segment of
    safe characters, never ``.`` or ``..``, so it cannot leave the results folder."""
    return bool(_ID.fullmatch(value)) and value not in (".", "..")


#: Seconds a looked-up results store is reused: a page reads several files, and
#: the connection behind ``[maggy] results_conn_id`` may be a database query.
STORE_TTL = 30.0
_store: tuple[float, tuple[str, str | None], Storage] | None = None


class ResultsStoreError(Exception):
    """The configured results store cannot be opened (the message names the setting)."""


def results_store() -> Storage:
    """The results root the pages read: ``[maggy] results_dir`` (a local path or
    any fsspec URL) with the storage options of ``[maggy] results_conn_id``. Ended
    experiments are read from here, so the API server needs no access to the
    driver's or the workers' disks."""
    global _store
    from maggy_airflow import settings

    key = (default_results_dir(), settings.results_conn_id())
    now = time.monotonic()
    if _store is None or _store[1] != key or now - _store[0] > STORE_TTL:
        from maggy_core.storage import StorageError

        try:
            _store = (now, key, open_storage(key[0], settings.storage_options(key[1])))
        except (ValueError, StorageError) as exc:
            # e.g. [maggy] results_conn_id names no connection: say so, not a 500
            raise ResultsStoreError(f"[maggy] results store: {exc}") from None
    return _store[2]


def results_root() -> Path:
    """The local results folder (only for a local ``results_dir``)."""
    return Path(results_store().path())


def _safe_parts(parts: tuple[str, ...]) -> bool:
    return bool(parts) and all(valid_id(p) or p in ("trials", "_ablation_history") for p in parts)


def open_file(*parts: str) -> int | None:
    """A read-only descriptor of ``<results root>/<parts...>`` on a local results
    folder, or ``None``.

    ``None`` unless every part is a safe name, no component below the root is a
    symbolic link, the resolved path is inside the resolved root, and the file is
    a regular file. The last component is opened with ``O_NOFOLLOW`` and checked
    with ``fstat`` on the open descriptor, so a link planted between the check and
    the open is refused too. The caller closes the descriptor.
    """
    if not _safe_parts(parts):
        return None
    root = results_root().resolve()
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            return None
    if not path.resolve().is_relative_to(root):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def is_file(*parts: str) -> bool:
    """Whether ``<results root>/<parts...>`` is a file the pages may read."""
    store = results_store()
    if store.is_local:
        fd = open_file(*parts)
        if fd is not None:
            os.close(fd)
        return fd is not None
    return _safe_parts(parts) and store.is_regular_file(*parts)


def read_bytes(*parts: str, limit: int = MAX_READ) -> bytes | None:
    """The content of a file that the pages may read (at most ``limit`` bytes): on a
    local folder one that :func:`open_file` allows, on an object store an object
    with safe names (a store has no links)."""
    store = results_store()
    if not store.is_local:
        return store.read_bytes(*parts, limit=limit) if _safe_parts(parts) else None
    fd = open_file(*parts)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit)


def read_json(*parts: str) -> Any:
    """A JSON file that the pages may read, parsed; ``None`` when absent or unreadable."""
    data = read_bytes(*parts)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def read_jsonl(*parts: str) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a torn or foreign line is skipped."""
    return parse_json_lines(read_bytes(*parts))


def tail(*parts: str, lines: int = LOG_LINES) -> tuple[list[str], bool] | None:
    """The last ``lines`` lines of a text file, read from its end (a trial's log can
    be long), and whether earlier lines were left out; ``None`` without the file."""
    store = results_store()
    if not store.is_local:
        data = read_bytes(*parts)
        if data is None:
            return None
        text = data.decode("utf-8", errors="replace").split("\n")
        if text and text[-1] == "":
            text.pop()
        return text[-lines:], len(text) > lines
    fd = open_file(*parts)
    if fd is None:
        return None
    block = min(65536, 4096 + 256 * lines)
    with os.fdopen(fd, "rb") as fh:
        end = fh.seek(0, 2)
        data = b""
        position = end
        # One newline more than the lines wanted tells where the first kept line starts.
        while position > 0 and data.count(b"\n") <= lines:
            step = min(block, position)
            position -= step
            fh.seek(position)
            data = fh.read(step) + data
    text = data.decode("utf-8", errors="replace").split("\n")
    if text and text[-1] == "":
        text.pop()  # the newline that ends the last line
    cut = position > 0 or len(text) > lines
    return text[-lines:], cut


def number(value: Any) -> bool:
    """Whether ``value`` is a finite number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------- results


def load_result(experiment_id: str) -> dict[str, Any] | None:
    """The experiment's ``result.json``; while it runs (or if its driver was
    killed), what its journal says so far. ``None`` for an unknown or unsafe id."""
    if not valid_id(experiment_id):
        return None
    # A resumed run moves the earlier run's result.json aside as it starts
    # (ResultStore.retire_result), so a result.json is always the latest run's.
    result = read_json(experiment_id, "result.json")
    if isinstance(result, dict):
        return result
    return journal_result(experiment_id)


def journal_result(experiment_id: str) -> dict[str, Any] | None:
    """A partial result rebuilt from ``journal.jsonl`` by the engine's one reader of
    the journal (``maggy_core.results.result_from_journal``), a local file or the
    segments on an object store: the ended trials, the ones that started and have
    not ended, and the best so far. A local journal only when :func:`open_file`
    allows it (no symbolic link on the way)."""
    from maggy_core.results import result_from_journal

    store = results_store()
    if store.is_local:
        fd = open_file(experiment_id, "journal.jsonl")
        if fd is None:
            return None
        os.close(fd)
    return result_from_journal(store.child(experiment_id))


@dataclass(frozen=True)
class Origin:
    """Where an experiment came from: the Airflow task that started it."""

    dag_id: str
    task_id: str | None = None
    run_id: str | None = None
    map_index: int | None = None


def origin(result: dict[str, Any]) -> Origin | None:
    """The Airflow task of an experiment, from ``result.json`` (or its spec);
    ``None`` for an experiment started outside Airflow (``maggy run``, ``lagom``)."""
    spec = result.get("spec") if isinstance(result.get("spec"), dict) else {}
    found = {k: result.get(k, spec.get(k)) for k in ("dag_id", "task_id", "run_id", "map_index")}
    if not isinstance(found["dag_id"], str) or not found["dag_id"]:
        return None
    map_index = found["map_index"]
    return Origin(
        found["dag_id"],
        found["task_id"] if isinstance(found["task_id"], str) else None,
        found["run_id"] if isinstance(found["run_id"], str) else None,
        map_index if isinstance(map_index, int) and not isinstance(map_index, bool) else None,
    )


def kind(result: dict[str, Any]) -> str:
    """``study`` for an ablation study, ``search`` for a hyperparameter search."""
    spec = result.get("spec") if isinstance(result.get("spec"), dict) else {}
    return "study" if result.get("ablation") is not None or spec.get("ablation") else "search"


def summary(experiment_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """One row of the experiments list."""
    spec = result.get("spec") if isinstance(result.get("spec"), dict) else {}
    trials = [t for t in result.get("trials") or [] if isinstance(t, dict)]
    ended = sum(1 for t in trials if t.get("status") in TERMINAL)
    total = spec.get("num_trials") if kind(result) == "search" else None
    if not number(total):
        total = max(len(trials), ended)
    where = origin(result)
    duration = result.get("duration")
    starts = [t["start"] for t in trials if number(t.get("start"))]
    started = result.get("started") if number(result.get("started")) else min(starts, default=None)
    if not number(duration) and number(started) and result.get("status") == "running":
        ends = [
            t["start"] + t["duration"]
            for t in trials
            if number(t.get("start")) and number(t.get("duration"))
        ]
        duration = max([*ends, *starts], default=started) - started
    return {
        "experiment_id": experiment_id,
        "name": result.get("name"),
        "dag_id": where.dag_id if where else None,
        "task_id": where.task_id if where else None,
        "run_id": where.run_id if where else None,
        "kind": kind(result),
        "status": result.get("status"),
        "trials_ended": ended,
        "trials_total": int(total),
        "best": (result.get("best") or {}).get("metric"),
        "started": started,
        "duration": duration if number(duration) else None,
    }


def experiment_ids() -> list[str]:
    """Every experiment in the results root (ended or running), newest first (by
    the last write of its ``result.json`` or journal)."""
    store = results_store()
    if store.is_local:
        return _local_experiment_ids(store)
    found = []
    for name in store.list():
        if not valid_id(name):
            continue
        folder = store.child(name)
        stamps = [t for t in (folder.modified("result.json"), journal_modified(folder)) if t]
        if stamps:
            found.append((max(stamps), name))
    return [name for _, name in sorted(found, reverse=True)]


def _local_experiment_ids(store: Storage) -> list[str]:
    root = store.path()
    found = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    for entry in entries:
        if not valid_id(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        folder = Path(entry.path)
        stamps = [
            p.stat().st_mtime
            for p in (folder / "result.json", folder / "journal.jsonl")
            if p.is_file() and not p.is_symlink()
        ]
        if stamps:
            found.append((max(stamps), entry.name))
    return [name for _, name in sorted(found, reverse=True)]


#: Points of all curves together that a page receives (a long or large search
#: is thinned: the browser draws what a chart can show, not every report).
POINT_BUDGET = 20_000


def thin(points: list[Any], limit: int) -> list[Any]:
    """At most about ``limit`` points that keep a curve's shape.

    The points are cut into ``limit // 2`` runs of consecutive points; each run
    keeps its lowest and its highest point, in their order, so spikes survive
    (taking every k-th point would drop them). The first and last points are
    always kept.

    Args:
        points: ``[step, value]`` pairs, in step order.
        limit: Largest number of points wanted (at least 4).

    Returns:
        ``points`` itself when it is short enough, else the thinned curve.
    """
    if len(points) <= limit:
        return points
    buckets = max(1, (limit - 2) // 2)
    inner = points[1:-1]
    size = len(inner) / buckets
    out = [points[0]]
    for b in range(buckets):
        run = inner[int(b * size) : int((b + 1) * size)]
        if not run:
            continue
        low = min(range(len(run)), key=lambda i: run[i][1])
        high = max(range(len(run)), key=lambda i: run[i][1])
        out.extend(run[i] for i in sorted({low, high}))
    out.append(points[-1])
    return out


def thinned(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with every trial's history thinned to its share of :data:`POINT_BUDGET`."""
    trials = [t for t in result.get("trials") or [] if isinstance(t, dict)]
    limit = max(50, POINT_BUDGET // max(1, len(trials)))
    return {
        **result,
        "trials": [{**t, "history": thin(list(t.get("history") or []), limit)} for t in trials],
    }


# ---------------------------------------------------------------- live metrics


def live_histories(client: Any, experiment_id: str, trial_ids: set[str]) -> dict[str, list]:
    """The steps reported so far by running trials (``maggy_core.channel.live_histories``).

    Returns:
        trial id -> ``[[step, value], ...]`` in step order, for the trials asked.
    """
    from maggy_core.channel import live_histories as read

    return {
        t: [[s, v] for s, v in points]
        for t, points in read(client, experiment_id, trial_ids).items()
    }


# ---------------------------------------------------------------- analysis


def importance(result: dict[str, Any]) -> dict[str, Any] | None:
    """Hyperparameter importance of an ended search, from Optuna's PED-ANOVA
    evaluator (``optuna.importance``) over a throw-away in-memory study of the
    trials that have a metric.

    Returns:
        ``{"evaluator": ..., "importances": {name: share}}`` (largest first), or
        ``{"error": ...}`` when it cannot be computed (too few trials, one
        parameter), or ``None`` for a study or a running experiment.
    """
    if result.get("status") == "running" or kind(result) != "search":
        return None
    spec = result.get("spec") if isinstance(result.get("spec"), dict) else {}
    space = spec.get("searchspace") or {}
    if len(space) < 2:
        return {"error": "needs at least two hyperparameters"}
    try:
        import optuna
        from optuna.importance import PedAnovaImportanceEvaluator

        from maggy_core.optimizers import optuna_distributions
        from maggy_core.searchspace import Searchspace

        distributions = optuna_distributions(Searchspace(**space))
    except (ImportError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    direction = "maximize" if result.get("direction", "max") == "max" else "minimize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    for t in result.get("trials") or []:
        params = t.get("params") if isinstance(t, dict) else None
        if t.get("status") not in ("finished", "early_stopped") or not number(t.get("metric")):
            continue
        if not isinstance(params, dict) or set(params) != set(distributions):
            continue
        try:
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions=distributions, value=float(t["metric"])
                )
            )
        except ValueError:
            continue  # a value outside the space as it is written now
    if len(study.trials) < 4:
        return {"error": f"needs at least 4 trials with a metric, has {len(study.trials)}"}
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator()
        )
    except (ValueError, RuntimeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"evaluator": "PED-ANOVA", "importances": {k: float(v) for k, v in found.items()}}


def ablation_history(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of a study's history (``_ablation_history/<name>.jsonl`` in the
    results folder), oldest first: ``experiment_id``, ``ended`` and, per component,
    its ``delta``, ``ci_low``, ``ci_high`` and ``changed`` (read from that run's
    ``result.json``, which holds the comparison with the run before it)."""
    name = result.get("name")
    if kind(result) != "study" or not isinstance(name, str) or not valid_id(f"{name}.jsonl"):
        return []
    runs = []
    for record in read_jsonl("_ablation_history", f"{name}.jsonl"):
        run_id = record.get("experiment_id")
        components = record.get("components")
        if not isinstance(run_id, str) or not isinstance(components, dict):
            continue
        flags: dict[str, bool] = {}
        if valid_id(run_id):
            run = read_json(run_id, "result.json")
            block = run.get("ablation") if isinstance(run, dict) else None
            entries = block.get("components") if isinstance(block, dict) else None
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and isinstance(entry.get("component"), str):
                    flags[entry["component"]] = bool(entry.get("changed"))
        runs.append(
            {
                "experiment_id": run_id,
                "ended": record.get("ended"),
                "components": {
                    str(c): {
                        "delta": e.get("delta"),
                        "ci_low": e.get("ci_low"),
                        "ci_high": e.get("ci_high"),
                        "changed": flags.get(str(c), False),
                    }
                    for c, e in components.items()
                    if isinstance(e, dict)
                },
            }
        )
    return runs
