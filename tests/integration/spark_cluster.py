"""A throw-away Spark standalone cluster on loopback, started from the pyspark package.

One master and N workers run as child processes of the test (``spark-class``
``...deploy.master.Master`` / ``...deploy.worker.Worker``), each with its own
log file, web UI port and (for workers) work directory under a temporary
directory. :func:`standalone_cluster` waits until the master reports every
worker ALIVE, and on exit terminates, then kills, the whole process tree
(workers' executors and their Python workers included) and checks that nothing
is left behind.

Used by ``test_cluster.py``; usable on its own::

    with standalone_cluster(tmp_path, workers=2) as cluster:
        run_experiment(spec, master=cluster.master_url, ...)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class ClusterStartError(RuntimeError):
    """The cluster did not come up; the message carries the tails of its logs."""


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark package."""
    try:
        from pyspark.find_spark_home import _find_spark_home

        return Path(_find_spark_home())
    except Exception:  # pragma: no cover - old or unusual pyspark layouts
        import pyspark

        return Path(pyspark.__file__).parent


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text[-lines:])


@dataclass
class Daemon:
    """One master or worker JVM."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    webui_port: int
    work_dir: Path | None = None

    @property
    def webui(self) -> str:
        return f"http://{HOST}:{self.webui_port}"


@dataclass
class StandaloneCluster:
    root: Path
    master_port: int
    master: Daemon | None = None
    workers: list[Daemon] = field(default_factory=list)

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.master_port}"

    @property
    def daemons(self) -> list[Daemon]:
        return [d for d in [self.master, *self.workers] if d is not None]

    def master_state(self) -> dict[str, Any]:
        """The master web UI's ``/json`` document."""
        assert self.master is not None
        return get_json(f"{self.master.webui}/json", timeout=2.0)

    def worker_state(self, index: int) -> dict[str, Any]:
        """Worker ``index``'s web UI ``/json`` document (its executors, running and finished)."""
        return get_json(f"{self.workers[index].webui}/json", timeout=2.0)

    def logs(self) -> str:
        return "\n".join(f"----- {d.name} ({d.log}) -----\n{tail(d.log)}" for d in self.daemons)


def get_json(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return json.loads(response.read().decode())


def _env(conf_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    home = spark_home()
    env.update(
        SPARK_HOME=str(home),
        # An empty conf dir: no spark-defaults.conf / spark-env.sh from elsewhere.
        SPARK_CONF_DIR=str(conf_dir),
        SPARK_LOCAL_IP=HOST,
        SPARK_LOCAL_HOSTNAME=HOST,
        SPARK_NO_DAEMONIZE="1",
        # Executors start their Python workers with this interpreter, which has
        # maggy_core and its dependencies installed.
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    # spark-class finds Spark (and `python3` in find-spark-home) through PATH.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def _spawn(name: str, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [str(spark_home() / "bin" / "spark-class"), *args]
    with open(log, "wb") as out:
        # A new session: the daemon and everything it starts (executors, Python
        # workers) form one process group that teardown can signal as a whole.
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def _wait_for_workers(cluster: StandaloneCluster, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for daemon in cluster.daemons:
            code = daemon.proc.poll()
            if code is not None:
                raise ClusterStartError(
                    f"{daemon.name} exited with code {code} during start-up\n{cluster.logs()}"
                )
        try:
            state = cluster.master_state()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        else:
            last = state
            alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
            if state.get("status") == "ALIVE" and len(alive) >= count:
                return
        time.sleep(0.25)
    raise ClusterStartError(
        f"no {count} ALIVE workers at {cluster.master_url} within {timeout:.0f} s; "
        f"last master state: {last!r}\n{cluster.logs()}"
    )


def _stop(cluster: StandaloneCluster, timeout: float = 15.0) -> list[str]:
    """Stop every daemon and all its descendants; return what survived (should be [])."""
    procs: dict[int, psutil.Process] = {}
    for daemon in cluster.daemons:
        with suppress(psutil.NoSuchProcess):
            top = psutil.Process(daemon.proc.pid)
            procs[top.pid] = top
            for child in top.children(recursive=True):
                procs[child.pid] = child
    # Workers first (they stop their executors on SIGTERM), then the master.
    for daemon in [*cluster.workers, cluster.master]:
        if daemon is not None and daemon.proc.poll() is None:
            daemon.proc.terminate()
    _gone, alive = psutil.wait_procs(list(procs.values()), timeout=timeout)
    for daemon in cluster.daemons:
        # pid == process group id thanks to start_new_session: this also reaches
        # anything started after the snapshot above.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(daemon.proc.pid, signal.SIGKILL)
    for proc in alive:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    _gone, alive = psutil.wait_procs(alive, timeout=5)
    for daemon in cluster.daemons:
        with suppress(subprocess.TimeoutExpired):
            daemon.proc.wait(timeout=5)  # reap our direct children
    survivors = []
    for proc in alive:
        with suppress(psutil.NoSuchProcess):
            if proc.status() != psutil.STATUS_ZOMBIE:
                survivors.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
    return survivors


@contextmanager
def standalone_cluster(
    root: Path,
    workers: int = 2,
    cores: int = 2,
    memory: str = "1g",
    start_timeout: float = 60.0,
) -> Iterator[StandaloneCluster]:
    """Start a master and ``workers`` workers on loopback; yield once all are ALIVE.

    Raises:
        ClusterStartError: the cluster did not come up in ``start_timeout`` s
            (the message has the tails of the daemons' logs).
        AssertionError: on exit, when some process of the cluster survived teardown.
    """
    root.mkdir(parents=True, exist_ok=True)
    conf_dir = root / "conf"
    conf_dir.mkdir(exist_ok=True)
    env = _env(conf_dir)
    cluster = StandaloneCluster(root=root, master_port=free_port())
    survivors: list[str] = []
    try:
        ui = free_port()
        log = root / "master.log"
        proc = _spawn(
            "master",
            [
                MASTER_CLASS,
                "--host",
                HOST,
                "--port",
                str(cluster.master_port),
                "--webui-port",
                str(ui),
            ],
            log,
            env,
        )
        cluster.master = Daemon("master", proc, log, ui)
        for i in range(workers):
            ui = free_port()
            work = root / f"worker{i}" / "work"
            work.mkdir(parents=True)
            log = root / f"worker{i}.log"
            proc = _spawn(
                f"worker{i}",
                [
                    WORKER_CLASS,
                    cluster.master_url,
                    "--host",
                    HOST,
                    "--cores",
                    str(cores),
                    "--memory",
                    memory,
                    "--webui-port",
                    str(ui),
                    "--work-dir",
                    str(work),
                ],
                log,
                env,
            )
            cluster.workers.append(Daemon(f"worker{i}", proc, log, ui, work))
        _wait_for_workers(cluster, workers, start_timeout)
        yield cluster
    finally:
        survivors = _stop(cluster)
    assert not survivors, f"processes of the Spark cluster survived teardown: {survivors}"
