"""The end of an ablation study: its analysis, table, chart and history.

Called by the runner with the experiment's result, before ``result.json`` is
written: the analysis goes into the result under ``ablation``, the table to
``ablation.csv`` and the chart to ``ablation.svg`` in the results directory, and
a finished run is appended to the study's history, which the next run of the
same study compares itself with.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from maggy_core.ablation.ablators import loco_options
from maggy_core.ablation.analysis import (
    CSV_COLUMNS,
    AblationHistory,
    Observation,
    analyse,
    compare_with_history,
    write_chart_svg,
    write_table_csv,
)
from maggy_core.ablation.sequential import Repeats
from maggy_core.ablation.study import AblationSpec
from maggy_core.storage import Storage, open_storage

log = logging.getLogger("maggy")

HISTORY_DIR = "_ablation_history"
#: The columns of a component that the XCom summary carries: those of ``ablation.csv``.
SUMMARY_FIELDS = CSV_COLUMNS


def history_path(study: AblationSpec, name: str, results_root: Path | Storage) -> str:
    """Where the study's history lives: ``ablation.history`` (a local path or a
    URL), else ``<results_dir>/_ablation_history/<name>.jsonl``."""
    if study.history:
        raw = str(study.history)
        return raw if "://" in raw else str(Path(raw).expanduser().resolve())
    return open_storage(results_root).url_of(HISTORY_DIR, f"{name}.jsonl")


@contextlib.contextmanager
def _history(location: str, results: Storage) -> Iterator[AblationHistory]:
    """The study's history as an :class:`AblationHistory`. A local file is used in
    place (appended and fsync'ed). An object store cannot append: the object is
    read into a temporary file, and written back whole (one PUT) if it changed;
    one run of a study appends at a time (a nightly schedule), so nothing races."""
    if "://" not in location or location.startswith("file://"):
        yield AblationHistory(Path(location.removeprefix("file://")))
        return
    folder, _, fname = location.rstrip("/").rpartition("/")
    same_store = location.startswith(results.url_of().split("://", 1)[0] + "://")
    store = Storage(folder, results.storage_options) if same_store else open_storage(folder)
    with tempfile.TemporaryDirectory(prefix="maggy-history-") as tmp:
        local = Path(tmp) / fname
        local.write_bytes(store.read_bytes(fname) or b"")
        before = local.stat().st_mtime_ns, local.stat().st_size
        yield AblationHistory(local)
        if (local.stat().st_mtime_ns, local.stat().st_size) != before:
            store.write_bytes(local.read_bytes(), fname)


def _write_output(folder: Storage, name: str, write: Callable[[Path], Path]) -> str:
    """Write one output file into the experiment's folder with ``write(path)``;
    on an object store through a temporary file shipped in one PUT. Returns its
    path or URL."""
    if folder.is_local:
        return str(write(Path(folder.path(name))))
    with tempfile.TemporaryDirectory(prefix="maggy-ablation-") as tmp:
        local = write(Path(tmp) / name)
        folder.write_bytes(local.read_bytes(), name)
    return folder.url_of(name)


def finish_study(
    study: AblationSpec,
    result: dict[str, Any],
    *,
    name: str,
    direction: str,
    results_root: Path | Storage,
    experiment_dir: Path | Storage,
) -> dict[str, Any]:
    """Analyse the study's trials, compare with earlier runs, write the outputs
    (into ``experiment_dir``, a local folder or a folder of an object store).

    Returns:
        The analysis (also stored by the caller under ``result["ablation"]``).
    """
    repeats, budget = study_plan(result)
    observations = [
        Observation(
            ablated=_ablated(t["params"].get("ablated")),
            repeat=int(t["params"].get("repeat", 0)),
            metric=t.get("metric"),
            status=t["status"],
            trial_id=t["trial_id"],
        )
        for t in result["trials"]
    ]
    analysis = analyse(
        observations,
        study.kinds(),
        direction=direction,
        confidence=study.confidence,
        alpha=study.alpha,
        repeats=repeats,
        budget=budget,
        finished=result["status"] == "finished",
    )
    results, folder = open_storage(results_root), open_storage(experiment_dir)
    location = history_path(study, name, results)
    with _history(location, results) as history:
        analysis = compare_with_history(analysis, history.runs(), alpha=study.alpha)
        analysis["history"] = location
        analysis["table"] = _write_output(
            folder, "ablation.csv", lambda path: write_table_csv(analysis, path)
        )
        analysis["chart"] = _write_output(
            folder,
            "ablation.svg",
            lambda path: write_chart_svg(analysis, path, title=f"{name}: effect of each component"),
        )
        if result["status"] == "finished":
            history.append(result["experiment_id"], analysis, result["ended"])
    for entry in analysis["components"]:
        log.info(
            "ablation %-24s %-12s %2d repeats (%s)  delta %s  CI [%s, %s]  p=%s%s%s",
            entry["component"],
            entry["kind"],
            entry["repeats"],
            entry["stopped"],
            _g(entry["delta"]),
            _g(entry["ci_low"]),
            _g(entry["ci_high"]),
            _g(entry["p_adjusted"]),
            "  significant" if entry["significant"] else "",
            f"  CHANGED (was {_g(entry['previous_delta'])})" if entry.get("changed") else "",
        )
    for entry in analysis["interactions"]:
        log.info(
            "ablation interaction %s  %s  CI [%s, %s]  p=%s  %s",
            " & ".join(entry["pair"]),
            _g(entry["interaction"]),
            _g(entry["ci_low"]),
            _g(entry["ci_high"]),
            _g(entry["p_adjusted"]),
            entry["reading"],
        )
    if analysis["undecided"]:
        log.info("ablation: left undecided: %s", ", ".join(analysis["undecided"]))
    return analysis


def study_plan(result: dict[str, Any]) -> tuple[Repeats | None, dict[str, float] | None]:
    """The repeats and budget the study ran with, from the spec in its result (the
    analysis must use the sequential design the plan decided with)."""
    ablator = (result.get("spec") or {}).get("ablator") or {}
    options = ablator.get("options") if isinstance(ablator, dict) else None
    if ablator.get("name") != "loco" or not isinstance(options, dict):
        return None, None
    repeats, budget, _ = loco_options(options)
    return repeats, budget or None


def _ablated(value: Any) -> str | tuple[str, ...] | None:
    return tuple(value) if isinstance(value, list) else value


def summary_table(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    """The analysis as a small table for an XCom: one row per component (the
    interactions and what was left undecided are in the result's analysis)."""
    return [{k: e.get(k) for k in SUMMARY_FIELDS} for e in analysis.get("components", [])]


def _g(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"
