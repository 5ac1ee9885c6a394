"""``MaggyOperator``: a hyperparameter search as a step of an Airflow pipeline.

The operator is thin: it builds the experiment spec, submits the Spark
application whose driver runs ``maggy run`` (the coordinator and its workers),
follows it, and returns a small summary as its XCom. The engine does the rest.

- Spark comes from the ``spark_default`` connection through the Spark provider's
  ``SparkSubmitHook`` (master, deploy mode, queue, binary), falling back to local
  Spark when the connection does not exist.
- Redis comes from the ``redis_default`` connection (host, port, password, TLS);
  without one, the engine's own default (``MAGGY_REDIS_URL``, a server on
  localhost, or a private server for the run). The password never goes on a
  command line, into a log line or into the trigger's arguments: the driver gets
  a URL without it plus ``MAGGY_REDIS_PASSWORD`` (spark-submit's environment, and
  a private properties file for the driver and executors on a cluster); the
  trigger gets the connection's id and resolves it in the triggerer.
- ``deferrable=True`` needs a driver that is not on the worker (cluster deploy
  mode): deferring frees the worker's slot, and a driver on that machine would
  then run without one. ``[maggy] allow_local_deferral`` allows it anyway, for an
  Airflow on one machine.
- The experiment id is derived from the task instance, so a retry resumes the
  same experiment from its journal and does not run ended trials again.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from maggy_airflow.operators.links import (
    MaggyExperimentLink,
    experiment_id_for,
    experiment_url,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from maggy_airflow.operators.hooks import MaggySparkSubmitHook
    from maggy_core.spec import ExperimentSpec


def default_results_dir() -> str:
    """``[maggy] results_dir``, else ``$MAGGY_RESULTS_DIR``, else ``$AIRFLOW_HOME/maggy-results``
    (see :mod:`maggy_airflow.settings`)."""
    from maggy_airflow import settings

    return settings.results_dir()


class _FromConfig(enum.Enum):
    """The default of a setting that the ``[maggy]`` config section gives."""

    TOKEN = "from the [maggy] config section"

    def __repr__(self) -> str:
        return "FROM_CONFIG"


#: Default of ``redis_conn_id`` and ``follower_lease``: the ``[maggy]`` section's value
#: (``None`` keeps meaning "none": no connection, no lease).
FROM_CONFIG = _FromConfig.TOKEN


class MaggyOperator(BaseOperator):
    """Run a maggy experiment (hyperparameter search) on Spark.

    Args:
        train_fn: The training function as ``"package.module:function"``; it must
            be importable on the Spark driver and executors (installed, or shipped
            with ``py_files``).
        config: The experiment as a mapping with the fields of a spec file
            (``searchspace``, ``num_trials``, ``optimizer``, ...), or an
            ``ExperimentSpec``. Overrides fields of ``spec``.
        spec: Path of a YAML or JSON spec file (relative paths are taken from the
            DAG file's folder).
        experiment_name: Name of the experiment (default: the spec's name, else
            the task id).
        spark_conn_id: Spark connection (master, deploy mode, queue, ...).
        redis_conn_id: Redis connection of the channel (default: ``[maggy]
            redis_conn_id``, which is ``redis_default``; ``None``: no connection, the
            engine's own default).
        num_workers: Parallel trials (Spark tasks); overrides the spec's ``workers``
            (default: the spec's, else ``[maggy] default_workers``).
        results_dir: Where the experiment's folder goes: a local path (which the
            Spark driver, this task and the API server must share) or an fsspec URL
            (``s3://bucket/prefix``, ``gs://...``, ``abfs://...``, ``file://...``),
            which needs no shared disk. Default: ``[maggy] results_dir``, else
            ``$MAGGY_RESULTS_DIR``, else ``$AIRFLOW_HOME/maggy-results``.
        results_conn_id: Airflow connection whose credentials reach an object-store
            ``results_dir`` (an ``aws`` connection: key, secret, ``endpoint_url``,
            ``region_name``; any connection: an extra ``storage_options``). They
            reach the driver in the environment of spark-submit
            (``MAGGY_STORAGE_OPTIONS``), never on its command line. Default:
            ``[maggy] results_conn_id``; ``None``: the store's own defaults.
        py_files: Comma-separated ``.py``/``.zip`` files for spark-submit.
        spark_conf: Extra Spark settings.
        spark_submit_kwargs: Further ``SparkSubmitHook`` arguments
            (``driver_memory``, ``executor_memory``, ``num_executors``, ...).
        deferrable: Submit, then wait in the triggerer instead of holding a worker
            slot (needs a Redis the triggerer reaches: ``redis_conn_id``). Needs
            cluster deploy mode (YARN or Kubernetes: the connection's
            ``deploy-mode`` extra); in client mode (``local[...]`` included) it is
            refused, unless ``[maggy] allow_local_deferral`` is set: the driver then
            runs on the worker machine, detached. The wait ends at
            ``execution_timeout``.
        poll_interval: Seconds between looks at Redis in deferrable mode.
        start_timeout: Seconds the experiment has to appear in Redis after a
            deferrable submission.
        follower_lease: Seconds after which the experiment stops itself when this
            task (or its trigger) has stopped saying it is there: a task killed with
            SIGKILL, a lost Airflow worker, or a deferred task marked failed before
            the triggerer took its trigger leaves no Spark application running for
            longer. The task says so every ``follower_lease / 4`` seconds (at most
            30), the trigger at every poll. Default: ``[maggy] follower_lease`` (600).
            ``None`` turns it off; it is off, with a line in the log, when this task
            cannot reach the experiment's Redis.

    Returns (XCom):
        ``{"experiment_id", "status", "best": {"trial_id", "params", "metric"},
        "counts", "num_trials", "results_dir", ...}``.
    """

    template_fields: Sequence[str] = (
        "train_fn",
        "config",
        "spec",
        "experiment_name",
        "results_dir",
        "spark_conf",
        "num_workers",
        "py_files",
    )
    template_fields_renderers = {"config": "json", "spark_conf": "json"}
    operator_extra_links = (MaggyExperimentLink(),)
    ui_color = "#dbeafe"

    def __init__(
        self,
        *,
        train_fn: str | None = None,
        config: Mapping[str, Any] | ExperimentSpec | None = None,
        spec: str | None = None,
        experiment_name: str | None = None,
        spark_conn_id: str = "spark_default",
        redis_conn_id: str | None | _FromConfig = FROM_CONFIG,
        num_workers: int | None = None,
        results_dir: str | None = None,
        results_conn_id: str | None | _FromConfig = FROM_CONFIG,
        py_files: str | None = None,
        spark_conf: Mapping[str, Any] | None = None,
        spark_submit_kwargs: Mapping[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 5.0,
        start_timeout: float = 600.0,
        follower_lease: float | None | _FromConfig = FROM_CONFIG,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from maggy_airflow import settings

        self.train_fn = train_fn
        self.config = config
        self.spec = spec
        self.experiment_name = experiment_name
        self.spark_conn_id = spark_conn_id
        self.redis_conn_id = (
            settings.redis_conn_id() if redis_conn_id is FROM_CONFIG else redis_conn_id
        )
        self.num_workers = num_workers
        self.results_dir = results_dir
        self.results_conn_id = (
            settings.results_conn_id() if results_conn_id is FROM_CONFIG else results_conn_id
        )
        self.py_files = py_files
        self.spark_conf = spark_conf
        self.spark_submit_kwargs = spark_submit_kwargs
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.start_timeout = start_timeout
        self.follower_lease = (
            settings.follower_lease() if follower_lease is FROM_CONFIG else follower_lease
        )
        self._hook: MaggySparkSubmitHook | None = None
        self._experiment_id: str | None = None
        self._redis_url: str | None = None  # never with a password in it
        self._redis_password: str | None = None
        self._redis_from_connection = False
        self._secret_file: Any = None  # hooks.SecretProperties, while a submission needs it
        self._archive: Any = None  # maggy_core.jvm_archive.DriverArchive, when used
        self._results: Any = None  # maggy_core.storage.Storage of results_dir, in execute
        self._storage_env: dict[str, str] = {}  # the store's options for the driver

    # ------------------------------------------------------------ the spec

    def build_spec(self, experiment_id: str, dag_folder: str | None = None) -> ExperimentSpec:
        """The validated spec of this task's experiment.

        Raises:
            AirflowFailException: the spec is invalid (a retry would not help); the
                message names the field and what is allowed.
        """
        from maggy_core.exceptions import SpecError
        from maggy_core.spec import ExperimentSpec, load_spec

        try:
            data: dict[str, Any] = {}
            if self.spec:
                path = Path(self.spec)
                if not path.is_absolute() and dag_folder:
                    path = Path(dag_folder) / path
                data.update(load_spec(path, require_train_fn=False).to_dict())
            if isinstance(self.config, ExperimentSpec):
                data.update(self.config.to_dict())
            elif self.config is not None:
                if not isinstance(self.config, Mapping):
                    raise SpecError.one(
                        "config",
                        f"must be a mapping or an ExperimentSpec, got {type(self.config).__name__}",
                    )
                data.update(self.config)
            if self.train_fn:
                data["train_fn"] = self.train_fn
            if self.num_workers is not None:
                data["workers"] = int(self.num_workers)
            elif "workers" not in data:
                from maggy_airflow import settings

                try:
                    default = settings.default_workers()
                except ValueError as exc:
                    raise SpecError.one("workers", str(exc)) from None
                if default is not None:
                    data["workers"] = default
            data["name"] = self.experiment_name or data.get("name") or self.task_id
            data["experiment_id"] = experiment_id
            return ExperimentSpec.from_dict(data)
        except SpecError as exc:
            raise AirflowFailException(f"invalid maggy experiment: {exc}") from None

    # ------------------------------------------------------------ running

    def execute(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        experiment_id = experiment_id_for(ti.dag_id, ti.task_id, ti.run_id, ti.map_index)
        dag = context.get("dag")
        spec = self.build_spec(
            experiment_id, os.path.dirname(dag.fileloc) if dag is not None and dag.fileloc else None
        )
        self._experiment_id = experiment_id
        # The link works while the task runs (Airflow itself writes it at the end).
        link = MaggyExperimentLink()
        ti.xcom_push(key=link.xcom_key, value=experiment_url(experiment_id))
        self._resolve_redis()
        self._check_lease()
        results_dir = self.results_dir or default_results_dir()
        from maggy_airflow import settings
        from maggy_core.storage import OPTIONS_ENV, StorageError, open_storage

        local = "://" not in results_dir or results_dir.startswith("file://")
        try:
            options = {} if local else settings.storage_options(self.results_conn_id)
            self._results = open_storage(results_dir, options)
        except (ValueError, StorageError) as exc:
            raise AirflowFailException(str(exc)) from None
        # The credentials travel in spark-submit's environment, never as an argument.
        self._storage_env = {OPTIONS_ENV: json.dumps(options)} if options else {}
        results_dir = self._results.url  # an absolute path, or the store's URL
        origin = {
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
            "run_id": ti.run_id,
            "map_index": ti.map_index,
        }
        hook = self._make_hook(spec, results_dir, origin)
        self._check_deferrable(hook)
        self.log.info(
            "maggy experiment %s: %d trials, %d workers, optimizer %s, on Spark %s; results in %s",
            experiment_id,
            spec.num_trials,
            spec.workers,
            spec.optimizer.name,
            hook.master,
            self._results.url_of(experiment_id),
        )
        if self._lease() is None:
            self.log.info(
                "no Redis this task can reach: the experiment cannot tell if this task dies "
                "(set %r or MAGGY_REDIS_URL)",
                self.redis_conn_id,
            )
        if self.deferrable:
            # spark-submit's own output stays on this machine (an object store
            # cannot take a growing file); the driver's results go to the store.
            log_root = results_dir if self._results.is_local else tempfile.gettempdir()
            self._submit_detached(hook, log_root, experiment_id)
        failure: AirflowException | None = None
        try:
            with self._following(experiment_id):
                # A session of its own: Airflow signals the task's whole process group
                # when the task is killed, and a SIGTERM straight to spark-submit's JVM
                # would end the driver before it wrote its result. on_kill stops it.
                hook.submit(self._application(), start_new_session=True)
        except AirflowException as exc:
            failure = exc  # the experiment may still have ended with a result
        finally:
            self._remove_secret_file()
        if self._archive is not None:
            self._archive.jvm_exited(cleanly=failure is None)
        summary = self._read_summary(results_dir, experiment_id)
        if summary is None:
            raise AirflowException(f"the Spark application ended without a result: {failure}")
        return self._finish(summary)

    def resume_execution(
        self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context
    ) -> Any:
        """Back from a deferral. When it failed (the trigger's timeout, which follows
        ``execution_timeout``, or the trigger's error), the detached experiment is
        asked to stop now instead of when its follower lease runs out; the task then
        fails as Airflow makes it (``TaskDeferralTimeout``, ``TaskDeferralError``)."""
        from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR

        if next_method == TRIGGER_FAIL_REPR:
            error = (next_kwargs or {}).get("error", "unknown")
            self._stop_detached(context, str(getattr(error, "value", error)))
        return super().resume_execution(next_method, next_kwargs, context)

    def _stop_detached(self, context: Context, why: str) -> None:
        ti = context["ti"]
        self._experiment_id = experiment_id_for(ti.dag_id, ti.task_id, ti.run_id, ti.map_index)
        try:
            self._resolve_redis()
        except Exception as exc:  # the task fails anyway; the lease stops it later
            self.log.warning("could not ask experiment %s to stop: %s", self._experiment_id, exc)
            return
        if self._ask_stop(f"the deferred task failed ({why})"):
            self.log.info(
                "deferral failed (%s): asked experiment %s to stop", why, self._experiment_id
            )

    def _ask_stop(self, reason: str) -> bool:
        """Ask this task's experiment to stop through Redis; False when it could not
        be asked (no Redis, or the experiment is not running)."""
        if not (self._experiment_id and self._redis_url):
            return False
        from maggy_core.channel import request_experiment_stop

        try:
            return request_experiment_stop(self._redis_client(), self._experiment_id, reason)
        except Exception as exc:  # the follower lease stops it later
            self.log.warning("could not ask experiment %s to stop: %s", self._experiment_id, exc)
            return False

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Back from the trigger (deferrable mode)."""
        if event.get("driver_log"):
            self.log.info("the driver's log: %s", event["driver_log"])
        summary = event.get("summary")
        if summary is None:
            raise AirflowException(
                f"maggy experiment {event.get('experiment_id')} {event.get('status')}: "
                f"{event.get('reason')}"
            )
        return self._finish(summary)

    def _finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        best = summary.get("best")
        counts = summary.get("counts") or {}
        self.log.info(
            "experiment %s %s: %s trials (%s finished, %s early-stopped, %s failed)%s",
            summary.get("experiment_id"),
            summary.get("status"),
            summary.get("num_trials"),
            counts.get("finished"),
            counts.get("early_stopped"),
            counts.get("failed"),
            f"; best {best['trial_id']} {summary.get('optimization_key')}={best['metric']:.6g} "
            f"{json.dumps(best['params'])}"
            if best
            else "",
        )
        if summary.get("status") != "finished":
            raise AirflowException(
                f"maggy experiment {summary.get('experiment_id')} {summary.get('status')}: "
                f"{summary.get('reason')}"
            )
        return summary

    # ------------------------------------------------------------ Redis

    def _resolve_redis(self) -> None:
        """Which Redis the experiment uses: the connection, else ``MAGGY_REDIS_URL``
        (with ``MAGGY_REDIS_PASSWORD``), else the local default server; the URL
        without password and the password apart (see the module's docstring)."""
        from maggy_airflow.operators.hooks import redis_target
        from maggy_core.redis_server import configured_url, password, without_password

        try:
            target = redis_target(self.redis_conn_id)
        except ValueError as exc:  # an extra the channel cannot honour
            raise AirflowFailException(str(exc)) from None
        self._redis_from_connection = target is not None
        if target is not None:
            self._redis_url, self._redis_password = target.url, target.password
        elif configured_url():
            self._redis_url, secret = without_password(str(configured_url()))
            self._redis_password = password(secret)
        else:
            self._redis_url, self._redis_password = self._local_redis(), None
        secret = self._redis_password
        if secret is not None and secret != secret.strip():
            raise AirflowFailException(
                f"the password of the Redis connection {self.redis_conn_id!r} begins or ends "
                "with white space, which Spark's properties files drop: change the password"
            )

    def _redis_client(self) -> Any:
        from maggy_core.channel import connect

        return connect(str(self._redis_url), self._redis_password)

    def _local_redis(self) -> str | None:
        """The engine's default Redis (127.0.0.1:6379) when it answers and the
        driver runs on this machine, so that this task and the driver share it."""
        from maggy_airflow.operators.hooks import driver_runs_locally
        from maggy_core.redis_server import DEFAULT_URL, ping

        if driver_runs_locally(self.spark_conn_id) and ping(DEFAULT_URL):
            return DEFAULT_URL
        return None

    def _check_lease(self) -> None:
        lease = self.follower_lease
        if lease is None:
            return
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or lease <= 0:
            raise AirflowFailException(
                f"follower_lease must be a number of seconds > 0 or None, got {lease!r}"
            )
        if self.deferrable and lease < 3 * self.poll_interval:
            raise AirflowFailException(
                f"follower_lease ({lease:g} s) must be at least 3 x poll_interval "
                f"({self.poll_interval:g} s): the trigger says it is there once a poll"
            )

    def _lease(self) -> float | None:
        """The follower lease in force: none without a Redis this task reaches."""
        return float(self.follower_lease) if self.follower_lease and self._redis_url else None

    @contextlib.contextmanager
    def _following(self, experiment_id: str) -> Iterator[None]:
        """While the block runs, say every ``lease / 4`` s (at most 30) that this
        task follows the experiment (see ``follower_lease``)."""
        lease = self._lease()
        if lease is None or self._redis_url is None:
            yield
            return
        import threading

        from maggy_core.channel import touch_follower

        client = self._redis_client()
        halt = threading.Event()

        def touch() -> None:
            try:
                touch_follower(client, experiment_id, "task", lease)
            except Exception as exc:  # Redis away for a moment: the lease allows it
                self.log.warning("could not refresh the follower lease: %s", exc)

        def beat() -> None:
            while not halt.wait(min(30.0, lease / 4)):
                touch()

        touch()
        thread = threading.Thread(target=beat, name="maggy-follower", daemon=True)
        thread.start()
        try:
            yield
        finally:
            halt.set()
            thread.join()
            client.close()

    def _application(self) -> str:
        import maggy_core

        return str(Path(maggy_core.__file__).parent / "spark_app" / "maggy_driver.py")

    def _make_hook(
        self, spec: ExperimentSpec, results_dir: str, origin: Mapping[str, Any] | None = None
    ) -> MaggySparkSubmitHook:
        from maggy_airflow.operators.hooks import MaggySparkSubmitHook, spark_home

        bin_dir = os.path.dirname(sys.executable)
        env = {
            # The driver and the workers run this interpreter, which has maggy_core
            # (on a cluster, set spark.pyspark.python or these variables yourself).
            "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
            "PYSPARK_DRIVER_PYTHON": os.environ.get("PYSPARK_DRIVER_PYTHON", sys.executable),
            "SPARK_HOME": spark_home(),
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        }
        if self._redis_url:
            env["MAGGY_REDIS_URL"] = self._redis_url
        submit_kwargs = dict(self.spark_submit_kwargs or {})
        secret_env: dict[str, str] = {}
        self._remove_secret_file()
        secrets = dict(self._storage_env)  # the results store's options (execute)
        if self._redis_password:
            from maggy_core.redis_server import PASSWORD_ENV_VAR

            secrets[PASSWORD_ENV_VAR] = self._redis_password
        if secrets:
            secret_env, submit_kwargs["properties_file"] = self._secret_submission(
                secrets, submit_kwargs.get("properties_file")
            )
        args = [
            "run",
            json.dumps(spec.to_dict()),
            "--results-dir",
            results_dir,
            "--experiment-id",
            spec.experiment_id or "",
        ]
        if origin is not None:
            args += ["--origin", json.dumps(dict(origin))]
        lease = self._lease()
        if lease is not None:
            args += ["--follower-lease", f"{lease:g}"]
        self._hook = MaggySparkSubmitHook(
            default_master=os.environ.get("MAGGY_SPARK_MASTER") or f"local[{spec.workers},3]",
            conf=self._submit_conf(),
            conn_id=self.spark_conn_id,
            py_files=self.py_files,
            name=f"maggy-{spec.experiment_id}",
            application_args=args,
            env_vars=env,
            secret_env=secret_env,
            **submit_kwargs,
        )
        self._archive = None
        if self._hook.driver_runs_here and "spark.driver.extraJavaOptions" not in (
            self.spark_conf or {}
        ):
            # The driver JVM starts from the class-data archive of Spark's classes, or
            # writes it as it exits (see maggy_core/jvm_archive.py); only when this
            # process waits for that exit.
            from maggy_core.jvm_archive import DriverArchive
            from maggy_core.runner import DEFAULT_SPARK_CONF

            archive = DriverArchive(
                DEFAULT_SPARK_CONF["spark.driver.extraJavaOptions"], create=not self.deferrable
            )
            if archive.java_option():
                self._hook.add_driver_java_options(archive.java_option())
                self._archive = archive
        return self._hook

    def _secret_submission(
        self, secrets: Mapping[str, str], user_file: str | None
    ) -> tuple[dict[str, str], str]:
        """Secrets for the driver (the Redis password, the results store's options):
        spark-submit's environment (the driver in client mode) and the path of a
        private properties file with the settings that give them to a driver in the
        cluster (YARN, Kubernetes).

        Not ``env_vars``: on YARN and Kubernetes the Spark provider turns those into
        ``--conf`` arguments, which ``ps`` shows. A file given as ``properties_file``
        in ``spark_submit_kwargs`` is kept: the private file starts with its lines.
        Only the driver: the executors get their Redis URL in the launch record, with
        the experiment's own Redis user (maggy_core.acl) or, where the server cannot
        make users, the driver's password.
        """
        from maggy_airflow.operators.hooks import SecretProperties

        settings: dict[str, str] = {}
        user_conf = self.spark_conf or {}
        for name, secret in secrets.items():
            settings[f"spark.yarn.appMasterEnv.{name}"] = secret
            # A Kubernetes secret named in spark_conf gives it instead (not in the pod spec).
            if f"spark.kubernetes.driver.secretKeyRef.{name}" not in user_conf:
                settings[f"spark.kubernetes.driverEnv.{name}"] = secret
        self._secret_file = SecretProperties(settings, base=user_file)
        return dict(secrets), self._secret_file.path

    def _remove_secret_file(self) -> None:
        if self._secret_file is not None:
            self._secret_file.remove()
            self._secret_file = None

    def _check_deferrable(self, hook: MaggySparkSubmitHook) -> None:
        """Refuse ``deferrable=True`` when the driver would run on this worker."""
        if not self.deferrable or not hook.driver_runs_here:
            return
        from maggy_airflow import settings

        try:
            allowed = settings.allow_local_deferral()
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        if allowed:
            self.log.info(
                "[maggy] allow_local_deferral: the Spark driver runs on this worker machine, "
                "detached from the task"
            )
            return
        self._remove_secret_file()
        raise AirflowFailException(
            f"deferrable=True needs the Spark driver off the Airflow worker, but the Spark "
            f"connection {self.spark_conn_id!r} runs it in client mode here (master "
            f"{hook.master}, deploy mode {hook.deploy_mode}): deferring frees this worker's "
            "slot while the experiment would go on running on it. Set the connection's "
            "extra 'deploy-mode' to 'cluster' (YARN or Kubernetes), or use "
            "deferrable=False; on an Airflow on one machine, set [maggy] "
            "allow_local_deferral = True (AIRFLOW__MAGGY__ALLOW_LOCAL_DEFERRAL) to run the "
            "driver on the worker machine, detached"
        )

    def _submit_conf(self) -> dict[str, str]:
        """The user's Spark settings over the engine's defaults. JVM options must
        reach spark-submit itself: the driver cannot change them once started."""
        from maggy_core.runner import DEFAULT_SPARK_CONF

        return {**DEFAULT_SPARK_CONF, **{k: str(v) for k, v in (self.spark_conf or {}).items()}}

    def _submit_detached(
        self, hook: MaggySparkSubmitHook, results_dir: str, experiment_id: str
    ) -> None:
        """Start spark-submit in a session of its own and defer to the trigger."""
        import subprocess

        from maggy_airflow.operators.triggers import MaggyTrigger

        if not self._redis_url:
            raise AirflowFailException(
                "deferrable=True needs a Redis the triggerer can reach: set the connection "
                f"{self.redis_conn_id!r} (or MAGGY_REDIS_URL)"
            )
        log_path = Path(results_dir) / experiment_id / "spark-submit.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = hook.build_command(self._application())
        if self._secret_file is not None:
            # spark-submit reads its properties file as it starts; the shell that
            # waits for it removes the file then (the task itself defers now).
            command = [
                "/bin/sh",
                "-c",
                '"$@"; status=$?; rm -rf -- "$MAGGY_SECRET_FOLDER"; exit $status',
                "maggy-submit",
                *command,
            ]
        with log_path.open("ab") as log_file:
            proc = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={
                    **os.environ,
                    **(hook._env or {}),
                    **(
                        {"MAGGY_SECRET_FOLDER": self._secret_file.folder}
                        if self._secret_file is not None
                        else {}
                    ),
                },
                start_new_session=True,
            )
        self._secret_file = None  # the shell removes it
        import socket

        driver_log = f"{socket.gethostname()}:{log_path}"
        if hook.driver_runs_here:
            where = f"the driver runs on {socket.gethostname()}, detached; its output: {log_path}"
        else:
            where = (
                f"the driver runs in the cluster ({hook.master}); spark-submit's output, with "
                f"the application's id, is in {log_path} on {socket.gethostname()}; the "
                "driver's own log: `yarn logs -applicationId <id>` on YARN, `kubectl logs "
                "<driver pod>` on Kubernetes (application name "
                f"maggy-{experiment_id})"
            )
        self.log.info("submitted (pid %d); %s; deferring to the triggerer", proc.pid, where)
        lease = self._lease()
        if lease is not None:
            # Until the triggerer takes the trigger, which then says so at every poll.
            from maggy_core.channel import touch_follower

            touch_follower(self._redis_client(), experiment_id, "task", lease)
        self.defer(
            trigger=MaggyTrigger(
                experiment_id,
                self._redis_url,
                redis_conn_id=self.redis_conn_id if self._redis_from_connection else None,
                poll_interval=self.poll_interval,
                start_timeout=self.start_timeout,
                submitted_at=time.time(),
                follower_lease=lease,
                driver_log=driver_log,
            ),
            method_name="execute_complete",
            # The task's execution_timeout bounds the wait in the triggerer; the
            # experiment then stops on its own once the follower lease runs out.
            timeout=self.execution_timeout,
        )

    def _read_summary(self, results_dir: str, experiment_id: str) -> dict[str, Any] | None:
        """The experiment's summary (with its results URL): from ``result.json`` on
        the results store (any URL, with the options of ``results_conn_id``), else
        from Redis, where the driver also leaves it."""
        from maggy_core.records import summarize
        from maggy_core.results import load_result
        from maggy_core.storage import StorageError, open_storage

        with contextlib.suppress(OSError, ValueError, StorageError):
            store = self._results or open_storage(results_dir)
            return summarize(load_result(store.child(experiment_id)))
        if self._redis_url:
            from maggy_core.channel import read_summary

            with contextlib.suppress(Exception):
                return read_summary(self._redis_client(), experiment_id)
        return None

    # ------------------------------------------------------------ killing

    def on_kill(self) -> None:
        """Stop the experiment and the Spark application; leave nothing running.

        Airflow gives ``on_kill`` a few seconds (then SIGKILL), so it only asks:
        a stop request through Redis and SIGTERM to the driver. The driver,
        started in a session of its own, then stops the trials, cancels the Spark
        job, writes ``result.json`` and exits; it exits on its own deadline even
        if something hangs (``maggy_core.runner``). Should the driver be gone
        already, spark-submit and whatever is left under it are killed.
        """
        hook = self._hook
        self._ask_stop("the Airflow task was killed")
        proc = getattr(hook, "_submit_sp", None) if hook else None
        if proc is None or proc.poll() is not None:
            return
        import psutil

        try:
            tree = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        drivers = []
        for p in tree:
            with contextlib.suppress(psutil.Error):
                if "maggy_driver.py" in " ".join(p.cmdline()):
                    p.send_signal(signal.SIGTERM)  # the driver stops the experiment
                    drivers.append(p)
        if drivers:
            self.log.info("asked the Spark driver to stop the experiment %s", self._experiment_id)
            return
        self.log.warning("no maggy driver under spark-submit: killing what is there")
        if hook is not None:
            hook.on_kill()
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
