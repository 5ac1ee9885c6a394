"""Run one experiment: Redis, the coordinator, and W workers as one Spark job.

The workers are one Spark job of W tasks (``mapPartitionsWithIndex`` over W
partitions) whose tasks do not return until the experiment ends. The job runs in
a background thread of the driver; the coordinator runs in the calling thread,
so signals (Ctrl-C, SIGTERM from Airflow) reach it and end the experiment
cleanly: running trials are told to stop, the Spark job is cancelled, and
``result.json`` still records every trial that ended.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from maggy_core.channel import CoordinatorChannel
from maggy_core.coordinator import Coordinator
from maggy_core.exceptions import SpecError
from maggy_core.jvm_archive import DriverArchive, begin_ending, end_gateway, wait_for_exit
from maggy_core.jvm_launch import DirectLaunch, connect_gateway, start_jvm
from maggy_core.loading import load_callable
from maggy_core.modes import mode_of, stopping_rule
from maggy_core.records import Origin
from maggy_core.redis_server import redis_for_experiment
from maggy_core.results import ResultStore, replay
from maggy_core.spec import ExperimentSpec
from maggy_core.storage import open_storage, storage_options_from_env
from maggy_core.worker import Launch, spark_task, spark_task_with_fn

if TYPE_CHECKING:
    from maggy_core.optimizers import Optimizer

log = logging.getLogger("maggy")

DEFAULT_RESULTS_DIR = "maggy-results"
#: Spark settings we choose unless the caller (or spark-submit) sets them: no console
#: progress bar (it garbles task logs), a driver heap that fits the coordinator.
DEFAULT_SPARK_CONF = {
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "512m",
    "spark.python.worker.reuse": "true",
    # Workers fork from a daemon that has already imported what they need
    # (see maggy_core/spark_daemon.py): they start together, not one by one.
    "spark.python.daemon.module": "maggy_core.spark_daemon",
    # The driver JVM only schedules W long Python tasks: the optimising JIT
    # compiler costs start-up time (about half of it on two cores) and buys nothing.
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
}
CLUSTER_SPARK_CONF = {
    "spark.scheduler.minRegisteredResourcesRatio": "1.0",
    "spark.scheduler.maxRegisteredResourcesWaitingTime": "30s",
}
LOCAL_SPARK_CONF = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}


def new_experiment_id(name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


def prepare(spec: ExperimentSpec, train_fn: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """Check everything that can be checked before Spark starts.

    Imports the training function (when given as ``module:function``), lets the
    experiment's mode check its arguments (and, for a study, its generators and
    table), and builds the optimiser and stopping rule once to surface their errors.

    Raises:
        SpecError: naming the field and what is allowed.
    """
    if train_fn is None:
        if not spec.train_fn:
            raise SpecError.one(
                "train_fn", "is required: 'module:function' (or pass a callable to lagom)"
            )
        train_fn = load_callable(spec.train_fn)
    mode = mode_of(spec)
    mode.check(spec, train_fn)
    mode.check_optimizer(spec)
    stopping_rule(spec)
    return train_fn


def _make_optimizer(spec: ExperimentSpec, seed: int | None = None) -> Optimizer:
    """The spec's optimiser (or ablator), seeded with ``seed`` or the spec's seed."""
    return mode_of(spec).optimizer(spec, spec.seed if seed is None else seed)


class SparkStart:
    """A SparkContext started in two halves: the JVM, launched in a background
    thread as soon as this is made, and the context, made in the caller's thread by
    :meth:`context`.

    Launching the JVM takes most of a second of which Python does nothing but wait;
    the runner connects to Redis and opens the journal meanwhile. The context itself
    is made in the caller's thread: its many calls into the JVM would otherwise wait
    on the GIL behind the caller's imports (tried: the whole start in a thread was
    slower than none).

    A plain SparkContext, not a SparkSession: the engine needs no SQL, and the
    session's start-up costs about two more seconds here. In local mode the driver
    binds to loopback, so nothing of an experiment listens on, or talks to, another
    interface. An active SparkContext (``lagom`` in a notebook) is used as it is.

    Args:
        master: Spark master; ``None``: whatever SparkConf holds (spark-submit's).
        app_name: The application's name, unless the configuration names one.
        conf: Spark settings; they win over maggy's defaults.
        end_jvm: Tell a JVM launched here to exit as soon as the context stops
            (see :meth:`_begin_jvm_exit`); :meth:`close` waits for it.
    """

    def __init__(
        self,
        master: str | None,
        app_name: str,
        conf: Mapping[str, str] | None,
        *,
        end_jvm: bool = False,
    ) -> None:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        # Unix times of the start-up steps, for the result's ``timeline``.
        self.marks: dict[str, float] = {"spark_start": time.time()}
        self.archive: DriverArchive | None = None
        self._gateway: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._made = False
        self._end_jvm = end_jvm
        self._ending: Any = None  # the JVM's process once told to exit (end_jvm)
        self._proc: Any = None  # a JVM started directly (maggy_core/jvm_launch.py)
        self._conn_info = ""
        # The JVM first, when this process launches it and Spark's launcher can be
        # skipped: it starts while pyspark is imported below (0.2-0.3 s).
        known = getattr(sys.modules.get("pyspark.context"), "SparkContext", None)
        settings = _Settings()
        if (known is None or known._gateway is None) and not os.environ.get("PYSPARK_GATEWAY_PORT"):
            self._settle(settings, master, app_name, conf, launches_jvm=True)
            direct = DirectLaunch(settings.values)
            if direct.command is not None:
                try:
                    self._proc, self._conn_info = start_jvm(direct)
                except OSError as exc:  # spark-submit says what is wrong
                    log.debug("could not start the driver JVM directly: %s", exc)
        from pyspark import SparkConf, SparkContext

        self._sc_class = SparkContext
        self.active = SparkContext._active_spark_context
        if self.active is not None:
            return
        # Under spark-submit, SparkConf() holds what spark-submit was given; those
        # settings and the caller's win over our defaults.
        launches_jvm = SparkContext._gateway is None and not os.environ.get("PYSPARK_GATEWAY_PORT")
        if self._proc is not None:
            # No JVM before this one: SparkConf() is empty, as settings was.
            self.conf = SparkConf().setAll(list(settings.values.items()))
        else:
            self.conf = SparkConf()
            self._settle(self.conf, master, app_name, conf, launches_jvm=launches_jvm)
        _lazy_numpy_converters()  # before the first call into the JVM
        if launches_jvm:
            target = self._connect if self._proc is not None else self._launch
            self._thread = threading.Thread(target=target, name="maggy-jvm-launch", daemon=True)
            self._thread.start()

    def _settle(
        self,
        spark_conf: Any,
        master: str | None,
        app_name: str,
        conf: Mapping[str, str] | None,
        *,
        launches_jvm: bool,
    ) -> None:
        """Fill ``spark_conf`` (a SparkConf, or :class:`_Settings` before pyspark is
        imported): the caller's settings, the master, then maggy's defaults."""
        spark_conf.setAll(list((conf or {}).items()))
        if master:
            spark_conf.setMaster(master)
        spark_conf.setIfMissing("spark.app.name", app_name)
        effective = spark_conf.get("spark.master", "local")
        defaults = {**DEFAULT_SPARK_CONF}
        if effective.startswith("local"):
            defaults.update(LOCAL_SPARK_CONF)
        else:
            # Start the workers' job only once the executors are there, so the W tasks
            # spread over them rather than queueing on the first executor to arrive.
            defaults.update(CLUSTER_SPARK_CONF)
        if launches_jvm and not spark_conf.contains("spark.driver.extraJavaOptions"):
            # A JVM this process launches, with our options: its classes can come from
            # (or go into) the class-data archive (see maggy_core/jvm_archive.py).
            options = DEFAULT_SPARK_CONF["spark.driver.extraJavaOptions"]
            if self.archive is None:
                self.archive = DriverArchive(options)
            with_archive = f"{options} {self.archive.java_option()}".strip()
            spark_conf.set("spark.driver.extraJavaOptions", with_archive)
        for key, value in defaults.items():
            spark_conf.setIfMissing(key, value)

    def _launch(self) -> None:
        from pyspark.java_gateway import launch_gateway

        try:
            self._gateway = launch_gateway(self.conf)
            self.marks["jvm_ready"] = time.time()
        except BaseException as exc:  # raised in the caller's thread by context()
            self._error = exc

    def _connect(self) -> None:
        """Connect to the JVM started directly, once it is up."""
        try:
            self._gateway = connect_gateway(self._proc, self._conn_info)
            self.marks["jvm_ready"] = time.time()
        except BaseException as exc:  # raised in the caller's thread by context()
            self._error = exc

    @contextmanager
    def context(self) -> Iterator[Any]:
        """The SparkContext (stopped at the end unless it was already active)."""
        if self.active is not None:
            yield self.active
            return
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        self._made = True
        if self._gateway is not None:
            sc = self._sc_class(conf=self.conf, gateway=self._gateway)
        else:
            sc = self._sc_class.getOrCreate(self.conf)
        sc.setLogLevel("WARN")
        self.marks["context_ready"] = time.time()
        if self.archive is not None:
            self.archive.started(sc)
        try:
            yield sc
        finally:
            self.marks["context_stopping"] = time.time()
            _stop_spark_context(sc)
            self.marks["context_stopped"] = time.time()
            if self.archive is not None:
                self.archive.stopped(self._sc_class)
            if self._end_jvm:
                self._begin_jvm_exit()

    def _begin_jvm_exit(self) -> None:
        """Tell the JVM this process launched to exit, without waiting for it: it
        exits while the caller writes the result; :meth:`close` waits for the rest.

        The py4j gateway is shut down first (its server and connection threads end):
        a JVM exits only once no thread of it is left in native code (a socket's
        accept or read here), and waits up to 0.3 s for them otherwise (HotSpot's
        ``VM_Exit``). Measured: 0.35 s from stdin's close to the JVM's exit without
        the gateway's shut-down, 0.07-0.09 s with it. The JVM's shut-down hooks
        still run as it exits (they remove Spark's temporary directories).
        """
        gateway: Any = getattr(self._sc_class, "_gateway", None)
        if getattr(gateway, "proc", None) is None:  # ended (the archive's writer), or not ours
            return
        proc = begin_ending(gateway)
        # The next SparkContext of this process starts a new JVM.
        self._sc_class._gateway = None
        self._sc_class._jvm = None
        self._ending = proc

    def close(self) -> None:
        """Wait for a JVM told to exit (``end_jvm``) to be gone; end a JVM launched
        for a context that was never made (the run failed before Spark was needed)."""
        if self._ending is not None:
            proc, self._ending = self._ending, None
            if not wait_for_exit(proc, 30.0):
                log.warning("the driver JVM did not exit within 30 s of its stop: killed")
            return
        if self._made or self._thread is None:
            return
        self._thread.join()
        if self._gateway is not None:
            end_gateway(self._gateway, 30.0)
        elif self._proc is not None and self._proc.poll() is None:
            self._proc.kill()  # started, but py4j never connected to it
            self._proc.wait()


class _Settings:
    """Spark settings before pyspark is imported: the few SparkConf methods that
    :meth:`SparkStart._settle` uses, on a dict."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def setAll(self, pairs: list[tuple[str, str]]) -> _Settings:  # noqa: N802 (SparkConf's)
        self.values.update(pairs)
        return self

    def setMaster(self, value: str) -> None:  # noqa: N802
        self.values["spark.master"] = value

    def setIfMissing(self, key: str, value: str) -> None:  # noqa: N802
        self.values.setdefault(key, value)

    def set(self, key: str, value: str) -> None:
        self.values[key] = value

    def get(self, key: str, default: str) -> str:
        return self.values.get(key, default)

    def contains(self, key: str) -> bool:
        return key in self.values


@contextmanager
def spark_context(
    master: str | None, app_name: str, conf: Mapping[str, str] | None
) -> Iterator[Any]:
    """The active SparkContext, or a new one (stopped at the end) on ``master``
    (see :class:`SparkStart`)."""
    start = SparkStart(master, app_name, conf)
    try:
        with start.context() as sc:
            yield sc
    finally:
        start.close()


class _LazyNumpyConverter:
    """Wraps one of pyspark's numpy input converters for py4j so that asking it
    about an object that is not a numpy object imports nothing.

    pyspark 4.2 registers converters for numpy scalars and arrays with py4j; py4j
    asks every converter about every argument of every call into the JVM, and
    theirs answer by importing ``pyspark.testing.utils`` to learn whether numpy is
    installed, which imports pandas, pyarrow and protobuf: 0.9 s at the first call,
    which is the start of the SparkContext while its JVM waits, and 90 MB of a
    driver that uses none of them. An object can only be a numpy scalar or array
    when numpy is imported; for those the original converter answers, and converts,
    as before.
    """

    def __init__(self, original: Any) -> None:
        self.original = original

    def can_convert(self, obj: Any) -> bool:
        np = sys.modules.get("numpy")
        if np is None or not isinstance(obj, (np.ndarray, np.generic)):
            return False
        return bool(self.original.can_convert(obj))

    def convert(self, obj: Any, gateway_client: Any) -> Any:
        return self.original.convert(obj, gateway_client)


def _lazy_numpy_converters() -> None:
    """Put :class:`_LazyNumpyConverter` around pyspark's numpy converters (once)."""
    try:
        import pyspark.sql.types  # noqa: F401  (registers the converters)
        from py4j import protocol
    except ImportError:  # pragma: no cover - a pyspark without them
        return
    converters = protocol.INPUT_CONVERTER
    for i, converter in enumerate(converters):
        if type(converter).__name__ in ("NumpyArrayConverter", "NumpyScalarConverter"):
            converters[i] = _LazyNumpyConverter(converter)


def _stop_spark_context(sc: Any) -> None:
    """``sc.stop()`` without its wait on the accumulator server.

    pyspark stops its accumulator server (a thread of the driver that receives
    accumulator updates; the engine uses no accumulators) by waiting for the server's
    handler, which checks for the stop once a second, and then its loop: about a
    second at the end of every experiment. The JVM side has stopped by then and
    nothing sends updates any more, so the server is told to stop and left to finish
    in its daemon thread while this process goes on (and exits).
    """
    server = getattr(sc, "_accumulatorServer", None)
    if server is not None and hasattr(server, "server_shutdown"):
        sc._accumulatorServer = None
        server.server_shutdown = True  # the handler's loop ends at its next check
        # Its handler reads the JVM's end of the connection: when the JVM exits
        # first (SparkStart's end_jvm), it sees the end of that stream and would print
        # an EOFError's traceback. Nothing is lost: the server is stopping.
        server.handle_error = lambda *_args: None
        threading.Thread(target=server.shutdown, name="accumulator-stop", daemon=True).start()
    sc.stop()


class _Job:
    """The Spark job of W workers, in a background thread of the driver."""

    def __init__(self, sc: Any, group: str, workers: int, task: Callable[..., Any]) -> None:
        from pyspark import InheritableThread

        self.sc = sc
        self.group = group
        self.summaries: list[dict[str, Any]] = []
        self.error: BaseException | None = None

        def target() -> None:
            # A job group per experiment lets us cancel exactly our tasks.
            self.sc.setJobGroup(group, f"maggy workers ({group})", interruptOnCancel=True)
            try:
                rdd = self.sc.parallelize(range(workers), workers)
                self.summaries = [json.loads(s) for s in rdd.mapPartitionsWithIndex(task).collect()]
            except BaseException as exc:  # reported by the runner, not lost in a thread
                self.error = exc

        self.thread = InheritableThread(target=target, name="maggy-spark-job", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def finish(self, timeout: float) -> None:
        """Wait for the tasks to return; cancel them if they do not in time."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("workers did not return within %.0f s: cancelling the Spark job", timeout)
            self.sc.cancelJobGroup(self.group)
            self.thread.join(30)


def run_experiment(
    spec: ExperimentSpec,
    *,
    train_fn: Callable[..., Any] | None = None,
    master: str | None = None,
    redis_url: str | None = None,
    results_dir: str | os.PathLike[str] | None = None,
    spark_conf: Mapping[str, str] | None = None,
    experiment_id: str | None = None,
    grace: float = 30.0,
    follower_lease: float | None = None,
    origin: Origin | None = None,
    end_jvm: bool = False,
) -> dict[str, Any]:
    """Run an experiment to its end and return its result (also in ``result.json``).

    Args:
        spec: A validated experiment spec.
        train_fn: A callable to use instead of ``spec.train_fn`` (``lagom``); Spark
            ships it to the executors.
        master: Spark master; default ``$MAGGY_SPARK_MASTER`` or ``local[W,3]``
            (W task slots, a failed task tried up to 3 times).
            Ignored when a SparkSession is already active.
        redis_url: Redis to use; see :mod:`maggy_core.redis_server` for the default.
        results_dir: Parent of the experiment's directory; default
            ``$MAGGY_RESULTS_DIR`` or ``./maggy-results``.
        spark_conf: Extra Spark settings for a new session.
        experiment_id: Resume or name the experiment; default ``spec.experiment_id``
            or a new id from the name and the time. An id whose journal exists is
            resumed: its ended trials are kept.
        follower_lease: Stop the experiment when no follower has touched its key
            (``maggy_core.channel.touch_follower``) for this many seconds;
            ``MaggyOperator`` sets it and touches the key while it follows.
        grace: Seconds to wait for the workers to return after a finished
            experiment. A stopped or failed one waits only a few heartbeats for its
            running trials to reach their next report, then cancels the Spark job:
            whoever stopped it (Ctrl-C, Airflow's kill) wants it gone quickly.
        end_jvm: The caller needs no SparkContext after this one (``maggy run``):
            a driver JVM that this run launches is told to exit as soon as its
            context stops, so that its exit overlaps the writing of the result, and
            is gone when this returns. Otherwise (``lagom``, tests) the JVM stays
            for the next context of the process.

    Raises:
        SpecError: the spec cannot run (before Spark starts).
    """
    entered = time.time()
    fn = prepare(spec, train_fn)
    exp_id = experiment_id or spec.experiment_id or new_experiment_id(spec.name)
    # A local path or an fsspec URL; a URL's credentials come from
    # $MAGGY_STORAGE_OPTIONS (maggy_core.storage), never from the command line.
    root = open_storage(results_dir or os.environ.get("MAGGY_RESULTS_DIR") or DEFAULT_RESULTS_DIR)
    store = ResultStore(root, exp_id)
    earlier = replay(store.journal.records())
    epoch = 1 + earlier.runs
    # The seed is fixed once per experiment: the spec's, else one drawn by its first
    # run, which every resume keeps (the optimiser rebuilds its state from the
    # trials, and only the same seed continues the same sequence).
    seed = spec.seed
    if earlier.first is not None and earlier.first.seed is not None:
        seed = earlier.first.seed
    elif seed is None:
        seed = secrets.randbelow(2**32)
    mode = mode_of(spec)
    # local[W,F]: plain local[W] never retries a failed task, so a worker whose
    # Python process died would end the whole job instead of being replaced.
    if master is None and not os.environ.get("PYSPARK_GATEWAY_PORT"):
        # Not under spark-submit (which names the master itself).
        master = os.environ.get("MAGGY_SPARK_MASTER") or f"local[{spec.workers},3]"

    # The JVM starts now.
    spark = SparkStart(master, f"maggy-{spec.name}", spark_conf, end_jvm=end_jvm)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(spark.close)
        url = cleanup.enter_context(redis_for_experiment(redis_url))
        channel = CoordinatorChannel(url, exp_id)
        # The workers' own Redis user (made by coordinator.open) goes on every way out.
        cleanup.callback(_drop_worker_user, channel)
        coordinator = Coordinator(
            spec,
            exp_id,
            channel,
            store,
            mode.optimizer(spec, seed),
            stopping_rule(spec),
            epoch=epoch,
            follower_lease=follower_lease,
            seed=seed,
            origin=origin,
        )
        coordinator.open()
        log.info(
            "experiment %s: %s, %d workers, results in %s",
            exp_id,
            mode.describe(spec),
            spec.workers,
            store.root,
        )
        launch = Launch(
            exp_id,
            channel.worker_url,  # the experiment's own Redis user, when the server has ACLs
            epoch,
            spec.hb_interval,
            spec.optimization_key,
            spec.train_fn if train_fn is None else None,
            spec.train_kwargs,
            mode.name,
            mode.worker_block(spec),
            # A local folder, or a folder of the store (maggy_core.reporter ships to it).
            checkpoint_dir=store.storage.url_of("checkpoints"),
            storage_options=None if store.storage.is_local else storage_options_from_env(),
        ).to_json()
        task = (
            functools.partial(spark_task, launch)
            if train_fn is None
            else functools.partial(spark_task_with_fn, launch, fn)
        )
        with spark.context() as sc, _stop_on_signals(coordinator):
            slots = sc.defaultParallelism
            if slots < spec.workers:
                log.warning(
                    "Spark offers %d task slots for %d workers: only %d trials run at a time",
                    slots,
                    spec.workers,
                    slots,
                )
            job = _Job(sc, f"maggy-{exp_id}", spec.workers, task)
            job.start()
            job_start = time.time()
            t0 = time.monotonic()
            deadline: threading.Timer | None = None
            try:
                coordinator.run(job_alive=job.alive)
            except KeyboardInterrupt:
                coordinator.stop("interrupted")
            except Exception as exc:
                # Whatever broke (Redis gone for good, a bug), the trials that
                # ended are in the journal and go into result.json below.
                log.exception("the coordinator failed")
                coordinator.fail(_failure_reason(exc, store.root))
            coordinator_end = time.time()
            if coordinator.status == "finished":
                job.finish(grace)
            else:
                deadline = _exit_deadline(120.0)
                with contextlib.suppress(Exception):
                    coordinator.drain(max(2.0, 2 * spec.hb_interval))
                job.finish(2.0)
            job_finished = time.time()
            result = coordinator.result()
            result["makespan"] = time.monotonic() - t0
            result["spark"] = {"master": sc.master, "app_id": sc.applicationId}
            if job.error is not None and result["status"] == "failed":
                result["reason"] += f"; Spark: {type(job.error).__name__}: {str(job.error)[:500]}"
        # Where the time outside the trials went (unix times; bench/startup.py prints
        # the split): JVM, SparkContext, the workers' start and first assignment (the
        # engine's ``registered`` and the trials' starts), and the end.
        result["timeline"] = {
            "run_start": entered,
            **spark.marks,
            "job_start": job_start,
            "coordinator_end": coordinator_end,
            "job_finished": job_finished,
        }
        mode.finish(spec, result, results_root=root, experiment_dir=store.storage)
        _write_result(store, result)
        if deadline is not None:
            deadline.cancel()
        with contextlib.suppress(Exception):  # Redis may be what failed
            coordinator.publish_summary(result)
        try:
            coordinator.ended(result["status"], result["reason"])
            store.close()
        except OSError as exc:  # the folder cannot be written (see _write_result)
            log.error("could not end the journal in %s: %s", store.root, exc)
        with contextlib.suppress(Exception):  # Redis may be what failed; keys expire anyway
            channel.finish()
        channel.close()
    return result


def _failure_reason(exc: Exception, root: object) -> str:
    """Why the coordinator failed; a write to the results directory that failed
    (disk full, a file size limit, the folder replaced) says so, and what is kept."""
    from maggy_core.storage import StorageError

    if isinstance(exc, OSError | StorageError):
        return (
            f"the results directory {root} cannot be written: {exc}; the trials that "
            "ended before are in its journal: run the same experiment id again once it "
            "can be written, and it resumes from there"
        )
    return f"the coordinator failed: {type(exc).__name__}: {exc}"


def _write_result(store: ResultStore, result: dict[str, Any]) -> None:
    """Write ``result.json``; when the folder cannot be written, fail the result with
    the reason instead of raising (the caller still returns it, and ``maggy run``
    prints it): the journal holds every trial that ended before, and a run of the
    same experiment id resumes from it and writes ``result.json`` then."""
    from maggy_core.storage import StorageError

    try:
        store.write_result(result)
    except (OSError, StorageError) as exc:
        log.error("could not write %s/result.json: %s", store.root, exc)
        reason = f"result.json could not be written to {store.root}: {exc}"
        if result["status"] == "failed":
            result["reason"] = f"{result['reason']}; {reason}"
        else:
            result["status"], result["reason"] = "failed", reason


def _drop_worker_user(channel: CoordinatorChannel) -> None:
    """Delete the workers' Redis user at the end of the run, however it ended."""
    try:
        channel.drop_worker_user()
    except Exception as exc:  # Redis may be what failed
        log.warning(
            "experiment %s: could not delete the workers' Redis user (%s); it reaches "
            "only this experiment's keys, and the next run of it resets its password",
            channel.experiment_id,
            exc,
        )
    finally:
        channel.close()


def _exit_deadline(seconds: float) -> threading.Timer:
    """After a stop, make sure this process ends even if something hangs (a Spark
    job that ignores its cancellation, a training function that never returns):
    whoever stopped the experiment may have nobody left to kill us."""

    def expire() -> None:
        log.error("the experiment did not wind down within %.0f s of its stop: exiting", seconds)
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


@contextmanager
def _stop_on_signals(coordinator: Coordinator) -> Iterator[None]:
    """SIGTERM (Airflow killing the task, spark-submit's shutdown) ends the
    experiment like Ctrl-C does. Only possible from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        coordinator.stop(f"received signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
