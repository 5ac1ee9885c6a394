"""Shared pieces of ``bench/optimizers.py`` and ``bench/ablation.py``.

Importing this module sets the environment that Spark's Python workers inherit
(:func:`setup_env`): the driver's Python for the workers, loopback for Spark, and
the repository root on ``PYTHONPATH`` so that workers import ``bench._workloads``.
Import it before any SparkContext starts.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def setup_env() -> None:
    """Set what Spark and its Python workers need; idempotent."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *parts])
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


setup_env()


def quiet_logs() -> None:
    """Warnings only: the engine logs a line per trial at INFO."""
    import logging

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in ("maggy", "py4j", "pyspark"):
        logging.getLogger(name).setLevel(logging.WARNING)


def header(title: str, mode: str, sizes: dict[str, Any]) -> None:
    """First lines of a benchmark's output: what, when, on what."""
    import pyspark

    load = os.getloadavg()
    print(f"{title}  {datetime.now().isoformat(timespec='seconds')}  ({mode}: {sizes})")
    print(
        f"python {sys.version.split()[0]}, pyspark {pyspark.__version__}, {os.cpu_count()} cores, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def run_engine(spec_dict: dict[str, Any], tmp: Path, master: str | None) -> dict[str, Any]:
    """One experiment through ``run_experiment`` in this process.

    Adds ``_wall`` (seconds of the call) and ``_other_cores`` (cores other processes
    used meanwhile, see :class:`OtherCpu`) to the result.
    """
    from maggy_core.runner import run_experiment
    from maggy_core.spec import ExperimentSpec

    spec = ExperimentSpec.from_dict(spec_dict)
    meter = OtherCpu()
    t0 = time.monotonic()
    result = run_experiment(spec, master=master, results_dir=tmp / "results")
    result["_wall"] = time.monotonic() - t0
    result["_other_cores"] = meter.cores()
    return result


def trial_times(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Trials that have a start and a duration, sorted by start."""
    ts = [
        t for t in result["trials"] if t.get("start") is not None and t.get("duration") is not None
    ]
    return sorted(ts, key=lambda t: t["start"])


def job_start(result: dict[str, Any]) -> float:
    """Unix time the experiment's Spark job started (``makespan`` counts from it):
    the result is stamped ``ended`` a few ms before ``makespan`` is taken."""
    return float(result["ended"]) - float(result["makespan"])


def idle_breakdown(
    trials: Sequence[dict[str, Any]],
    start: float,
    makespan: float,
    workers: int,
    waits: Sequence[float] | None = None,
) -> dict[str, float]:
    """Where the idle worker-seconds of a run are, from its trials' ``worker``,
    ``start`` (unix time) and ``duration``; ``start`` is the run's start.

    ``head``: from the start to each worker's first trial (a worker that ran none
    counts whole); ``between``: gaps between a worker's trials; ``tail``: from each
    worker's last trial end to the end of the run. With ``busy``, they add up to
    ``workers x makespan``. Two of them are split by cause as well:

    - ``between`` = ``waits`` (gaps in which the optimiser answered WAIT, at the
      unix times ``waits``: it had nothing to run until a trial ended) +
      ``dispatch`` (the others: the engine handing out the next trial);
    - ``tail`` = ``last_trials`` (from each worker's last trial end to the last
      trial's end: the run's last trials, on fewer workers) + ``end`` (from the last
      trial's end to the end of the run, on every worker: the engine closing).
    """
    per: dict[str, list[tuple[float, float]]] = {}
    for t in trials:
        if t.get("start") is None or t.get("duration") is None:
            continue
        per.setdefault(str(t.get("worker")), []).append((t["start"] - start, t["duration"]))
    marks = sorted(w - start for w in waits or ())
    head = max(0, workers - len(per)) * makespan
    dispatch = waited = last = 0.0
    last_end = max((s + d for spans in per.values() for s, d in spans), default=makespan)
    for spans in per.values():
        spans.sort()
        head += max(0.0, spans[0][0])
        for (s0, d0), (s1, _) in zip(spans, spans[1:], strict=False):
            gap = max(0.0, s1 - (s0 + d0))
            i = bisect.bisect_left(marks, s0 + d0)
            if i < len(marks) and marks[i] <= s1:
                waited += gap
            else:
                dispatch += gap
        last += max(0.0, last_end - (spans[-1][0] + spans[-1][1]))
    end = max(0.0, makespan - last_end) * len(per)
    return {
        "head": head,
        "between": dispatch + waited,
        "tail": last + end,
        "dispatch": dispatch,
        "waits": waited,
        "last_trials": last,
        "end": end,
    }


class OtherCpu:
    """Cores used by other processes from now to :meth:`cores`, roughly.

    The machine's busy CPU time (``/proc/stat``) minus that of this process tree and
    of the Redis server. A process of the tree that ends meanwhile is not subtracted,
    so the figure errs on the high side.
    """

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.system0 = _system_busy()
        self.mine0 = _tree_cpu()

    def cores(self) -> float:
        secs = time.monotonic() - self.t0
        if secs <= 0:
            return math.nan
        system = _system_busy() - self.system0
        mine1 = _tree_cpu()
        mine = sum(cpu - self.mine0.get(key, 0.0) for key, cpu in mine1.items())
        return max(0.0, system - mine) / secs


def _system_busy() -> float:
    import psutil

    t = psutil.cpu_times()
    return (
        t.user
        + t.system
        + getattr(t, "nice", 0.0)
        + getattr(t, "irq", 0.0)
        + getattr(t, "softirq", 0.0)
    )


def _tree_cpu() -> dict[tuple[int, float], float]:
    """CPU seconds of this process, its descendants and the Redis server."""
    import psutil

    procs = [psutil.Process()]
    procs += procs[0].children(recursive=True)
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "redis-server":
            procs.append(p)
    out: dict[tuple[int, float], float] = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[(p.pid, p.create_time())] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> None:
    """Print a table: the first column left aligned, the others right aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        return indent + "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    print(line(headers))
    print(indent + "  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))


def fmt(value: float | None, spec: str = ".2f", none: str = "-") -> str:
    """``value`` formatted, or ``none`` for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, spec)


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def write_json(path: str, data: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"figures written to {out}")


def finish(
    args: Any,
    mode: str,
    started: float,
    verdict: str,
    met: bool | None,
    figures: dict[str, Any],
) -> None:
    """The closing lines of a benchmark: its verdict, how long it took, and (with
    ``--json``) its figures with the date, mode, load and verdict."""
    print(f"\n{verdict}")
    print(
        f"({mode} run, {time.monotonic() - started:.0f} s in all; the machine's other load "
        "changes the figures: see 'others' cores')"
    )
    if args.json:
        write_json(
            args.json,
            {
                "date": datetime.now().isoformat(timespec="seconds"),
                "quick": args.quick,
                **figures,
                "verdict": {"text": verdict, "met": met},
                "load_average": os.getloadavg(),
            },
        )


def parse_args(
    p: Any, argv: list[str] | None, sizes: dict[str, dict[str, Any]], key: str, attr: str
) -> tuple[Any, str, dict[str, Any]]:
    """The options every benchmark has (``--json``, ``--keep``) added to ``p``, the
    arguments parsed, the logs quietened; returns ``(args, mode, sizes)``: ``mode``
    is ``quick`` or ``full``, and ``sizes`` that mode's, with ``sizes[key]`` from the
    option ``attr`` when given (at least 1)."""
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (results)")
    args = p.parse_args(argv)
    quiet_logs()
    mode = "quick" if args.quick else "full"
    chosen = dict(sizes[mode])
    if getattr(args, attr) is not None:
        chosen[key] = max(1, getattr(args, attr))
    return args, mode, chosen


def run_each(
    seeds: Sequence[int],
    methods: Sequence[str],
    run: Any,
    line: Any,
    label: Any = str,
) -> tuple[list[dict[str, Any]], bool]:
    """``run(method, seed)`` for every seed, then every method, printing ``line(row)``
    after each; one run that raises is reported and does not hide the others.

    Returns:
        The rows, and whether any run raised or has a ``status`` other than ``"ok"``.
    """
    import traceback

    rows: list[dict[str, Any]] = []
    failed = False
    for seed in seeds:
        for m in methods:
            print(f"  seed {seed}: {label(m)} ...", end=" ", flush=True)
            try:
                row = run(m, seed)
            except Exception as exc:
                traceback.print_exc()
                print(f"  !! {m} seed {seed} failed: {type(exc).__name__}: {exc}")
                failed = True
                continue
            failed = failed or row["status"] != "ok"
            rows.append(row)
            print(line(row), flush=True)
    return rows, failed


def maggy_cli(
    spec: dict[str, Any],
    tmp: Path,
    tag: str,
    master: str,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> tuple[dict[str, Any], float, float]:
    """``maggy run`` of ``spec`` as a subprocess (as a user starts it), in ``tmp``.

    Returns:
        The run's ``result.json``, and the unix times the process was started and
        had exited.

    Raises:
        RuntimeError: the run failed or wrote no result (with its stderr's tail).
    """
    import subprocess

    import yaml

    path = tmp / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    results = tmp / f"results-{tag}"
    cmd = [str(ROOT / ".venv" / "bin" / "maggy"), "run", str(path), "--master", master]
    cmd += ["--results-dir", str(results)]
    started = time.time()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=tmp, env=env, timeout=timeout, check=False
    )
    exited = time.time()
    found = list(results.glob("*/result.json"))
    if proc.returncode != 0 or not found:
        tail = "\n".join(proc.stderr.splitlines()[-10:])
        raise RuntimeError(f"maggy run failed (exit {proc.returncode}):\n{tail}")
    return json.loads(found[0].read_text()), started, exited
