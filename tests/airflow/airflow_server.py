"""A throw-away Airflow on loopback, driven through its REST API as the UI does.

``AirflowServer`` runs ``airflow db migrate`` and then the four components of an
Airflow 3 deployment -- ``api-server``, ``scheduler``, ``dag-processor`` and
``triggerer`` -- as child processes of the test, each in a process group of its
own with its log in ``AIRFLOW_HOME/components/<name>.log``. Everything is
configured through the environment (no ``airflow.cfg`` edits):

- SQLite metadata database and ``LocalExecutor`` in a temporary ``AIRFLOW_HOME``;
- the API server on a free port of 127.0.0.1; the scheduler's and triggerer's
  log servers (which would listen on every interface) are not started: the API
  server reads the task logs from the local log folder;
- the simple auth manager with one admin user (and any ``users`` given, each
  with its role) whose passwords the harness writes to the passwords file
  beforehand; or, with ``auth_manager="fab"``, the FAB auth manager of
  ``apache-airflow-providers-fab`` (per-DAG permissions), whose roles and users
  the harness creates in the metadata database after ``airflow db migrate``
  (which migrates FAB's tables too), through FAB's security manager;
- the ``redis_default`` connection (``AIRFLOW_CONN_REDIS_DEFAULT``), the results
  folder (``MAGGY_RESULTS_DIR``), and Spark bound to loopback.

Every process the deployment starts (task processes, spark-submit, the Spark
JVM and its Python workers, detached submissions) inherits ``MAGGY_E2E_TAG``, a
value unique to this server. :meth:`AirflowServer.stop` terminates the
components' groups, then kills whatever still carries the tag, and raises if
anything survives.

Usable on its own::

    with AirflowServer(home, dags_folder, results_dir, redis_url) as server:
        server.unpause("hparam_search")
        run_id = server.trigger("hparam_search", {"num_trials": 4})
        run = server.wait_run("hparam_search", run_id)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import psutil

HOST = "127.0.0.1"
USERNAME = "admin"
TAG_VAR = "MAGGY_E2E_TAG"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
#: Creates FAB roles and users; reads {"roles": {name: [[action, resource]]},
#: "users": {name: [role, password]}} on stdin (no password on a command line).
_FAB_SETUP = """
import json, sys
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

spec = json.load(sys.stdin)
with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    for name, permissions in spec["roles"].items():
        role = sm.find_role(name) or sm.add_role(name)
        for action, resource in permissions:
            sm.add_permission_to_role(role, sm.create_permission(action, resource))
    for name, (role, password) in spec["users"].items():
        if not sm.add_user(name, name, "test", name + "@example.com", sm.find_role(role), password):
            sys.exit("could not create the FAB user " + name)
"""
TERMINAL_RUN_STATES = ("success", "failed")


class AirflowStartError(RuntimeError):
    """Airflow did not come up; the message carries the tails of the components' logs."""


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.5,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return it.

    Raises:
        TimeoutError: not within ``timeout`` seconds (message: ``what`` and
            ``on_timeout()``'s text).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            raise TimeoutError(f"{what}: not within {timeout:.0f} s\n{extra}")
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"({path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


class AirflowServer:
    """Airflow (API server, scheduler, DAG processor, triggerer) on 127.0.0.1.

    Args:
        home: ``AIRFLOW_HOME`` (created).
        dags_folder: ``[core] dags_folder``.
        results_dir: ``MAGGY_RESULTS_DIR`` of the tasks and of the plugin's pages.
        redis_url: URL of the ``redis_default`` connection.
        extra_env: More environment for every component.
        users: More users of the simple auth manager: name -> role (``viewer``,
            ``user``, ``op`` or ``admin``); :meth:`token` and :attr:`passwords`
            give their credentials. With FAB: name -> a FAB role (``Admin``,
            ``Viewer``, ... or one of ``fab_roles``); the admin user is ``Admin``.
        auth_manager: ``"simple"`` (default) or ``"fab"``.
        fab_roles: FAB roles to create: name -> ``[(action, resource), ...]``, e.g.
            ``[("can_read", "DAG:dag_a")]``.
        components: The components to run (default all four); health is checked
            for those only.
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        results_dir: Path,
        redis_url: str,
        extra_env: dict[str, str] | None = None,
        users: dict[str, str] | None = None,
        auth_manager: str = "simple",
        fab_roles: dict[str, list[tuple[str, str]]] | None = None,
        components: tuple[str, ...] = COMPONENTS,
    ) -> None:
        if auth_manager not in ("simple", "fab"):
            raise ValueError(f"auth_manager must be 'simple' or 'fab', got {auth_manager!r}")
        self.auth_manager = auth_manager
        self.fab_roles = dict(fab_roles or {})
        self.components = tuple(c for c in COMPONENTS if c in components)
        self.home = Path(home)
        self.dags_folder = Path(dags_folder)
        self.results_dir = Path(results_dir)
        self.redis_url = redis_url
        self.extra_env = dict(extra_env or {})
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.tag = secrets.token_hex(8)
        self.password = secrets.token_urlsafe(12)
        self.roles = {USERNAME: "Admin" if auth_manager == "fab" else "admin", **(users or {})}
        #: user name -> password
        self.passwords = {
            name: self.password if name == USERNAME else secrets.token_urlsafe(12)
            for name in self.roles
        }
        self.bin_dir = Path(sys.executable).parent
        self.airflow = str(self.bin_dir / "airflow")
        self.log_dir = self.home / "components"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._client = httpx.Client(base_url=self.base_url, timeout=30.0)
        self._tokens: dict[str, str] = {}
        self.slow_to_stop: list[str] = []

    # ------------------------------------------------------------ set-up

    def env(self) -> dict[str, str]:
        """The environment of every component (and so of every task)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        # A test session may have set these for its own Spark; the components get ours.
        for key in ("MAGGY_REDIS_URL", "MAGGY_SPARK_MASTER", "SPARK_HOME"):
            env.pop(key, None)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                    f"{name}:{role}" for name, role in self.roles.items()
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
                "AIRFLOW__API__HOST": HOST,
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                "AIRFLOW__API__EXPOSE_STACKTRACE": "True",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "2",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW_CONN_REDIS_DEFAULT": self.redis_url,
                "MAGGY_RESULTS_DIR": str(self.results_dir),
                # One machine, local Spark: a deferred task's driver runs here, detached.
                "AIRFLOW__MAGGY__ALLOW_LOCAL_DEFERRAL": "True",
                "PYSPARK_PYTHON": sys.executable,
                "PYSPARK_DRIVER_PYTHON": sys.executable,
                "SPARK_LOCAL_IP": HOST,
                # Spark's scratch space (a killed driver leaves it behind) stays in the home.
                "SPARK_LOCAL_DIRS": str(self.home / "spark-local"),
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "PATH": str(self.bin_dir) + os.pathsep + os.environ.get("PATH", ""),
                TAG_VAR: self.tag,
            }
        )
        if self.auth_manager == "fab":
            env["AIRFLOW__CORE__AUTH_MANAGER"] = FAB_AUTH_MANAGER
        env.update(self.extra_env)
        return env

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json"

    def start(self, timeout: float = 240.0) -> AirflowServer:
        """Migrate the database, start the components, wait until all are healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "spark-local").mkdir(exist_ok=True)
        # The simple auth manager only generates passwords for users the file lacks.
        self.passwords_file.write_text(json.dumps(self.passwords) + "\n")
        self._env = self.env()
        deadline = time.monotonic() + timeout
        migrate_log = self.log_dir / "db-migrate.log"
        with migrate_log.open("wb") as out:
            try:
                done = subprocess.run(
                    [self.airflow, "db", "migrate"],
                    env=self._env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    start_new_session=True,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise AirflowStartError(
                    f"airflow db migrate did not end in {timeout:.0f} s\n{tail(migrate_log)}"
                ) from None
        if done.returncode != 0:
            raise AirflowStartError(
                f"airflow db migrate failed ({done.returncode})\n{tail(migrate_log)}"
            )
        if self.auth_manager == "fab":
            self._create_fab_users(max(deadline - time.monotonic(), 1.0))
        commands = {
            "api-server": ["api-server", "--host", HOST, "--port", str(self.port), "-w", "1"],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
        }
        for name in self.components:
            with (self.log_dir / f"{name}.log").open("wb") as out:
                self.procs[name] = subprocess.Popen(
                    [self.airflow, *commands[name]],
                    env=self._env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd=self.home,
                )
        wait_for(
            self._healthy,
            max(deadline - time.monotonic(), 1.0),
            "Airflow components healthy",
            interval=1.0,
            on_timeout=self.diagnostics,
        )
        return self

    def _create_fab_users(self, timeout: float) -> None:
        spec = {
            "roles": {name: [list(p) for p in perms] for name, perms in self.fab_roles.items()},
            "users": {name: [role, self.passwords[name]] for name, role in self.roles.items()},
        }
        log = self.log_dir / "fab-users.log"
        with log.open("wb") as out:
            done = subprocess.run(
                [sys.executable, "-c", _FAB_SETUP],
                input=json.dumps(spec).encode(),
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if done.returncode != 0:
            raise AirflowStartError(f"creating the FAB users failed\n{tail(log)}")

    def _healthy(self) -> bool:
        self.check_alive()
        try:
            reply = self._client.get("/api/v2/monitor/health", timeout=5.0)
        except httpx.HTTPError:
            return False
        if reply.status_code != 200:
            return False
        health = reply.json()
        parts = ["metadatabase"] + [
            c.replace("-", "_") for c in self.components if c != "api-server"
        ]
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    def check_alive(self) -> None:
        """Raise when a component has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AirflowStartError(
                    f"{name} exited with {proc.returncode}\n{self.diagnostics()}"
                )

    def diagnostics(self, lines: int = 30) -> str:
        """The tails of the components' logs."""
        return "\n".join(
            f"--- {name} ({self.log_dir / (name + '.log')}):\n"
            f"{tail(self.log_dir / (name + '.log'), lines)}"
            for name in self.components
        )

    # ------------------------------------------------------------ REST API

    def token(self, username: str = USERNAME) -> str:
        """A JWT of the user (default: the admin), from ``POST /auth/token`` as the login form."""
        if username not in self._tokens:
            reply = self._client.post(
                "/auth/token", json={"username": username, "password": self.passwords[username]}
            )
            assert reply.status_code == 201, f"login failed: {reply.status_code} {reply.text}"
            self._tokens[username] = reply.json()["access_token"]
        return self._tokens[username]

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return self._client.request(method, path, headers=headers, **kwargs)

    def api(self, method: str, path: str, expect: Iterable[int] = (200,), **kwargs: Any) -> Any:
        """``/api/v2`` + ``path``; the JSON reply, after checking its status."""
        reply = self.request(method, "/api/v2" + path, **kwargs)
        assert reply.status_code in tuple(expect), (
            f"{method} /api/v2{path}: {reply.status_code} {reply.text[:2000]}"
        )
        return reply.json() if reply.content else None

    def wait_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the DAG processor has parsed ``dag_id``; its details."""

        def parsed() -> dict[str, Any] | None:
            self.check_alive()
            reply = self.request("GET", f"/api/v2/dags/{dag_id}")
            return reply.json() if reply.status_code == 200 else None

        def why() -> str:
            errors = self.request("GET", "/api/v2/importErrors").text[:4000]
            return f"import errors: {errors}\n{self.diagnostics()}"

        return wait_for(parsed, timeout, f"DAG {dag_id} parsed", on_timeout=why)  # type: ignore[no-any-return]

    def unpause(self, dag_id: str) -> None:
        dag = self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        assert dag["is_paused"] is False

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Trigger a run as the UI's trigger form does; its run id."""
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")  # type: ignore[no-any-return]

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")  # type: ignore[no-any-return]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Wait until the run has ended (success or failed); its details."""

        def ended() -> dict[str, Any] | None:
            self.check_alive()
            run = self.run_state(dag_id, run_id)
            return run if run["state"] in TERMINAL_RUN_STATES else None

        return wait_for(  # type: ignore[no-any-return]
            ended,
            timeout,
            f"run {run_id} of {dag_id} ended",
            interval=1.0,
            on_timeout=lambda: self.run_diagnostics(dag_id, run_id),
        )

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log as text: the ``event`` (message) of each record, one a line."""
        data = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
        )
        content = data.get("content") or []
        if isinstance(content, str):
            return content
        return "\n".join(
            str(record.get("event", "")) if isinstance(record, dict) else str(record)
            for record in content
        )

    def run_diagnostics(self, dag_id: str, run_id: str) -> str:
        """The run's task instances and their logs, then the components' logs."""
        parts = []
        with contextlib.suppress(Exception):
            tis = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
            for ti in tis["task_instances"]:
                parts.append(f"--- task {ti['task_id']}: {ti['state']} (try {ti['try_number']})")
                with contextlib.suppress(Exception):
                    log = self.task_log(dag_id, run_id, ti["task_id"], max(ti["try_number"], 1))
                    parts.append("\n".join(log.splitlines()[-60:]))
        parts.append(self.diagnostics())
        return "\n".join(parts)

    # ------------------------------------------------------------ processes

    def tagged_processes(self) -> list[psutil.Process]:
        """Every live process that carries this server's tag (components included)."""
        found = []
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == os.getpid():
                continue
            with contextlib.suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if proc.environ().get(TAG_VAR) == self.tag:
                    found.append(proc)
        return found

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the components, then anything left with the tag; raise if something survives."""
        for name in reversed(COMPONENTS):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        self.slow_to_stop = [name for name, proc in self.procs.items() if proc.poll() is None]
        for proc in self.procs.values():
            # The group may outlive its leader (forked workers, children).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        left = self.tagged_processes()
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        _gone, alive = psutil.wait_procs(left, timeout=10)
        self._client.close()
        if alive:
            raise RuntimeError(
                "processes of the test Airflow survived SIGKILL: "
                + "; ".join(f"{p.pid} {cmdline(p)[:200]}" for p in alive)
            )

    def __enter__(self) -> AirflowServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cmdline(proc: psutil.Process) -> str:
    """A process's command line, or "" when it is gone or hidden."""
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""
