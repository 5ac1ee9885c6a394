"""The ``maggy`` command: ``maggy run SPEC``, ``maggy validate SPEC``, ``maggy --version``.

``maggy run`` is also what ``spark-submit`` runs on the driver when an Airflow
task submits an experiment.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from maggy_core import __version__
from maggy_core.exceptions import MaggyError, SpecError

if TYPE_CHECKING:
    from maggy_core.records import Origin
    from maggy_core.spec import ExperimentSpec

EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC = 0, 1, 2


def _conf(pairs: Sequence[str]) -> dict[str, str]:
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError.one("--conf", f"must be KEY=VALUE, got {pair!r}")
        conf[key] = value
    return conf


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maggy", description="Asynchronous hyperparameter search on Spark and Redis."
    )
    p.add_argument("--version", action="version", version=f"maggy-airflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment spec (YAML or JSON) to its end")
    run.add_argument(
        "spec", help="path of the experiment spec (YAML or JSON), or the spec as inline JSON"
    )
    run.add_argument(
        "--master", help="Spark master (default: $MAGGY_SPARK_MASTER or local[workers])"
    )
    run.add_argument(
        "--redis-url",
        help="Redis URL (default: $MAGGY_REDIS_URL, localhost:6379, or a private server)",
    )
    run.add_argument(
        "--results-dir",
        help="where experiment directories go: a local path or an fsspec URL (s3://bucket/"
        "prefix, gs://..., file://...); a URL's credentials from $MAGGY_STORAGE_OPTIONS "
        "(JSON) or the store's defaults (default: $MAGGY_RESULTS_DIR or ./maggy-results)",
    )
    run.add_argument("--experiment-id", help="name the experiment; an id with a journal is resumed")
    run.add_argument("--workers", type=int, help="override the spec's workers")
    run.add_argument("--num-trials", type=int, help="override the spec's num_trials")
    run.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting (repeatable)",
    )
    run.add_argument(
        "--follower-lease",
        type=float,
        metavar="SECONDS",
        help="stop the experiment when its follower (the Airflow task) has been silent "
        "for this long (MaggyOperator sets it)",
    )
    run.add_argument(
        "--origin",
        metavar="JSON",
        help="where the experiment comes from: {dag_id, task_id, run_id, map_index} "
        "(MaggyOperator sets it); kept in the journal and result.json",
    )
    run.add_argument("--json", action="store_true", help="print result.json instead of the table")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    val = sub.add_parser(
        "validate", help="check a spec (and that its train_fn imports) without running it"
    )
    val.add_argument("spec")
    show = sub.add_parser(
        "show", help="print the summary of an experiment (ended, or what its journal says so far)"
    )
    show.add_argument(
        "path", help="the experiment's folder or its result.json: a local path or an fsspec URL"
    )
    show.add_argument("--json", action="store_true", help="print result.json itself")
    stop = sub.add_parser("stop", help="ask a running experiment to stop (ended trials are kept)")
    stop.add_argument("experiment_id")
    stop.add_argument("--redis-url", help="Redis URL (default: $MAGGY_REDIS_URL or localhost:6379)")
    stop.add_argument(
        "--reason",
        default="maggy stop",
        help="recorded as the experiment's reason (or the trial's stop_reason)",
    )
    stop.add_argument(
        "--trial", help="stop only this trial (it ends early_stopped); the experiment goes on"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    from maggy_core.runner import prepare, run_experiment

    if args.command == "stop":
        return _stop(args.experiment_id, args.redis_url, args.reason, args.trial)
    if args.command == "show":
        try:
            result = _show(args.path)
        except (OSError, ValueError, MaggyError) as exc:
            print(f"maggy: no result at {_safe(args.path)}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(json.dumps(result, indent=2) if args.json else summary_table(result))
        return EXIT_OK
    try:
        spec = _load(args.spec)
        if args.command == "validate":
            from maggy_core.modes import mode_of

            prepare(spec)
            print(f"{args.spec}: valid ({mode_of(spec).describe(spec)})")
            return EXIT_OK
        if args.follower_lease is not None and not args.follower_lease > 0:
            raise SpecError.one(
                "--follower-lease", f"must be a number of seconds > 0, got {args.follower_lease}"
            )
        changes: dict[str, Any] = {}
        if args.workers is not None:
            changes["workers"] = args.workers
        if args.num_trials is not None:
            changes["num_trials"] = args.num_trials
        if changes:
            spec = spec.replace(**changes)
        logging.getLogger("maggy").setLevel(logging.WARNING if args.quiet else logging.INFO)
        result = run_experiment(
            spec,
            master=args.master,
            redis_url=args.redis_url,
            results_dir=args.results_dir,
            spark_conf=_conf(args.conf),
            experiment_id=args.experiment_id,
            follower_lease=args.follower_lease,
            origin=_origin(args.origin),
            # This process ends after the run: its JVM exits while the result is written.
            end_jvm=True,
        )
    except SpecError as exc:
        print(f"maggy: {exc}", file=sys.stderr)
        return EXIT_BAD_SPEC
    except MaggyError as exc:
        print(f"maggy: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result, indent=2) if args.json else summary_table(result))
    _skip_last_collection()
    return EXIT_OK if result["status"] == "finished" else EXIT_FAILED


def _skip_last_collection() -> None:
    """At this process's exit, skip the interpreter's last garbage collection.

    After ``maggy run`` has printed its result, the interpreter's shut-down took
    0.07-0.09 s, most of it one last collection over every object of pyspark, py4j,
    redis and the coordinator; whoever started the run waits for it (Airflow reads
    the process's output until it ends). With the objects frozen (``gc.freeze``, as
    the first exit handler) that collection skips them: 0.015 s. The other exit
    handlers still run (logging's flushes its handlers); result.json and the journal
    are closed before this. Called in-process (tests), it acts only at that
    process's exit.
    """
    import atexit
    import gc

    atexit.register(gc.freeze)


def _show(path: str) -> dict[str, Any]:
    """The experiment at ``path`` (local or a URL): its ``result.json``, else what
    its journal says so far (the same reader as the plugin's pages and resume)."""
    from maggy_core.results import load_result, result_from_journal

    try:
        return load_result(path)
    except FileNotFoundError:
        if path.rstrip("/").endswith(".json"):
            raise
        partial = result_from_journal(path)
        if partial is None:
            raise
        if partial.get("duration") is None:
            partial["duration"] = 0.0
        return partial


def _safe(path: str) -> str:
    from maggy_core.storage import safe_url

    return safe_url(path)


def _origin(raw: str | None) -> Origin | None:
    """``--origin`` as an Origin (None when not given).

    Raises:
        SpecError: under ``--origin``, naming what is wrong.
    """
    from maggy_core.records import Origin

    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("must be a JSON object {dag_id, task_id, run_id, map_index}")
        return Origin.from_json(data)
    except ValueError as exc:
        raise SpecError.one("--origin", str(exc)) from None


def _load(spec: str) -> ExperimentSpec:
    """A spec from a file, or from inline JSON (how the Airflow operator passes it
    to spark-submit, so no file has to reach the driver's host)."""
    from maggy_core.spec import ExperimentSpec, load_spec

    if spec.lstrip().startswith("{"):
        try:
            data = json.loads(spec)
        except ValueError as exc:
            raise SpecError.one("spec", f"inline JSON does not parse: {exc}") from None
        return ExperimentSpec.from_dict(data)
    return load_spec(spec)


def _stop(experiment_id: str, url: str | None, reason: str, trial: str | None = None) -> int:
    from maggy_core.channel import connect, request_experiment_stop, request_trial_stop
    from maggy_core.redis_server import follower_url

    client = connect(follower_url(url))
    if trial is not None:
        if request_trial_stop(client, experiment_id, trial, reason):
            print(f"asked trial {trial} of experiment {experiment_id} to stop")
            return EXIT_OK
    elif request_experiment_stop(client, experiment_id, reason):
        print(f"asked experiment {experiment_id} to stop")
        return EXIT_OK
    print(f"maggy: no running experiment {experiment_id}", file=sys.stderr)
    return EXIT_FAILED


def summary_table(result: dict[str, Any], limit: int = 20) -> str:
    """A plain-text summary: the outcome, the best trial, and the top trials."""
    key, sign = result["optimization_key"], 1 if result["direction"] == "max" else -1
    counts = result["counts"]
    lines = [
        f"experiment {result['experiment_id']}: {result['status']}"
        + (f" ({result['reason']})" if result["reason"] else ""),
        f"  trials: {result['num_trials']} ended: {counts['finished']} finished, "
        f"{counts['early_stopped']} early-stopped, {counts['failed']} failed; "
        f"{result['duration']:.1f} s",
    ]
    best = result["best"]
    ablation = result.get("ablation")
    if isinstance(ablation, dict) and ablation.get("components"):
        lines += _ablation_lines(ablation, key)
    elif best:
        lines.append(
            f"  best: {best['trial_id']} {key}={best['metric']:.6g} {json.dumps(best['params'])}"
        )
    lines.append(f"  results: {result['results_dir']}")
    from maggy_core.records import TrialRecord

    # Ranked as the coordinator ranks the best (finished, then early-stopped, by
    # metric); trials that cannot rank (failed, no metric) last, in id order.
    unranked = (False, -math.inf)
    ranked = sorted(
        (TrialRecord.from_json(t) for t in result["trials"]),
        key=lambda t: t.rank(sign) or unranked,
        reverse=True,
    )
    lines.append("")
    lines.append(f"  {'trial':<7} {'status':<13} {key:>12} {'seconds':>8}  params")
    for t in ranked[:limit]:
        metric = "-" if t.metric is None else f"{t.metric:.6g}"
        secs = "-" if t.duration is None else f"{t.duration:.2f}"
        lines.append(
            f"  {t.trial_id:<7} {t.status.value:<13} {metric:>12} {secs:>8}  {json.dumps(t.params)}"
        )
    if len(ranked) > limit:
        lines.append(f"  ... {len(ranked) - limit} more in result.json")
    return "\n".join(lines)


def _ablation_lines(ablation: dict[str, Any], key: str) -> list[str]:
    """The study's table: each component's effect on the metric, most helpful first."""

    def f(value: float | None, fmt: str = "+.4f") -> str:
        return "-" if value is None else format(value, fmt)

    base = ablation.get("base") or {}
    conf = int(round(100 * float(ablation.get("confidence") or 0.95)))
    lines = [
        f"  base: {key}={f(base.get('metric_mean'), '.4f')} (mean of {base.get('n', 0)}); "
        f"delta > 0: the component helps; {conf}% intervals; p Holm-adjusted",
        "",
        f"  {'#':>2} {'component':<40} {'kind':<12} {'delta':>8} {'interval':>19} {'p':>7}  notes",
    ]
    for e in ablation["components"]:
        notes = [f"{e['repeats']} repeats ({e['stopped']})"] if e.get("stopped") else []
        if e.get("significant"):
            notes.append("significant")
        if e.get("changed"):
            notes.append(f"CHANGED (was {f(e.get('previous_delta'))})")
        interval = f"[{f(e.get('ci_low'))}, {f(e.get('ci_high'))}]"
        lines.append(
            f"  {e['rank']:>2} {e['component']:<40} {e['kind']:<12} {f(e.get('delta')):>8} "
            f"{interval:>19} {f(e.get('p_adjusted'), '.3g'):>7}  {' '.join(notes)}".rstrip()
        )
    for i in ablation.get("interactions") or []:
        interval = f"[{f(i.get('ci_low'))}, {f(i.get('ci_high'))}]"
        lines.append(
            f"  interaction {' & '.join(i['pair']):<40} {f(i.get('interaction')):>8} "
            f"{interval:>19} {f(i.get('p_adjusted'), '.3g'):>7}  {i.get('reading')}"
        )
    if ablation.get("undecided"):
        lines.append(f"  left undecided: {', '.join(ablation['undecided'])}")
    if ablation.get("table"):
        lines.append(f"  table: {ablation['table']}  chart: {ablation.get('chart')}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
