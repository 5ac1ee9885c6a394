"""Launch the driver JVM of a local experiment directly, without ``bin/spark-submit``.

pyspark starts its JVM with ``bin/spark-submit``: bash scripts (one of which runs a
second Python interpreter to find Spark's home when ``SPARK_HOME`` is not set), then
a first JVM, ``org.apache.spark.launcher.Main``, whose only job is to print the
command line of the real one (class path, memory, JVM options, Java's module
options), which the script then runs. On two idle cores that is 0.3-0.35 s before
the real JVM starts, and it is the same every time for the same Spark, Java and
settings. pyspark then checks every 0.1 s whether the JVM has written its port.

So the launcher's command is kept (``launch-<digest>.json`` next to the class-data
archive, see :mod:`maggy_core.jvm_archive`) and the JVM is started with it at once.
Its key is a digest of everything that command depends on: the Java binary, the
Spark installation, the files of Spark's conf folder, the environment variables
the launcher and the scripts read, and the Spark settings (except the application's
name, which the JVM gets as a setting and not in its command line). A missing entry
is made by running the launcher itself (without the scripts), once. The environment
is what the scripts would have exported (``PYTHONHASHSEED=0``, ``SPARK_HOME``,
``SPARK_CONF_DIR``, ``SPARK_SCALA_VERSION``, ``SPARK_ENV_LOADED``).

This path is taken only where the scripts do nothing else: not on Windows, not with
a ``spark-env.sh`` (the scripts source it: it may set anything), not with
``PYSPARK_SUBMIT_ARGS``, ``SPARK_TESTING`` or ``SPARK_PREPEND_CLASSES``;
otherwise (or if anything here fails) pyspark's own ``launch_gateway`` runs. Nothing
here imports pyspark, so the JVM starts while the driver imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maggy_core.jvm_archive import cache_dir, java_binary, spark_home

log = logging.getLogger("maggy")

#: The application's name in the kept command: replaced by the real one at launch.
APP_NAME_SLOT = "spark.app.name=<maggy: the application's name>"
#: Environment variables that the launcher or Spark's scripts read (any of these
#: changes the command), by prefix or by name.
ENV_PREFIXES = ("SPARK_", "HADOOP_", "YARN_", "JAVA_", "_JAVA_", "JDK_")
ENV_NAMES = ("LD_LIBRARY_PATH", "PYSPARK_SUBMIT_ARGS", "MASTER")
#: Seconds between two looks for the JVM's connection file (pyspark: 0.1).
POLL = 0.005
#: Settings whose values are secrets (Spark's own ``spark.redaction.regex``): a
#: command that holds one is used once and not kept on disk.
SECRET_KEY = re.compile(r"(?i)secret|password|token|access[.]key")


class DirectLaunch:
    """The driver JVM's command for these Spark settings, or why there is none
    (``command`` is ``None``: use ``spark-submit``)."""

    def __init__(self, conf: Mapping[str, str]) -> None:
        self.command: list[str] | None = None
        self.env: dict[str, str] = {}
        self.why_not = ""
        try:
            self._prepare(conf)
        except Exception as exc:  # never worse than spark-submit
            self.command, self.why_not = None, f"{type(exc).__name__}: {exc}"
        if self.command is None:
            log.debug("driver JVM through spark-submit: %s", self.why_not)

    def _prepare(self, conf: Mapping[str, str]) -> None:
        home, java = spark_home(), java_binary()
        if os.name != "posix" or home is None or java is None:
            self.why_not = "not POSIX, or no Spark home or java"
            return
        home = os.path.realpath(home)
        for name in ("SPARK_TESTING", "SPARK_PREPEND_CLASSES", "PYSPARK_SUBMIT_ARGS"):
            if os.environ.get(name) and not (
                name == "PYSPARK_SUBMIT_ARGS" and os.environ[name].strip() == "pyspark-shell"
            ):
                self.why_not = f"${name} is set"
                return
        conf_dir = os.environ.get("SPARK_CONF_DIR") or os.path.join(home, "conf")
        if os.path.exists(os.path.join(conf_dir, "spark-env.sh")):
            self.why_not = f"{conf_dir}/spark-env.sh exists (the scripts source it)"
            return
        scala = _scala_version(home)
        jars = os.path.join(home, "jars")
        if scala is None or not os.path.isdir(jars):
            self.why_not = "no jars folder, or no Scala version in load-spark-env.sh"
            return
        # What bin/spark-submit, find-spark-home and load-spark-env.sh export.
        self.env = {
            "SPARK_HOME": os.environ.get("SPARK_HOME") or home,
            "PYTHONHASHSEED": "0",
            "SPARK_ENV_LOADED": "1",
            "SPARK_CONF_DIR": conf_dir,
            "SPARK_SCALA_VERSION": scala,
        }
        args = _submit_args(conf, APP_NAME_SLOT.split("=", 1)[1])
        key = _key(java, home, conf_dir, args, {**os.environ, **self.env})
        folder = cache_dir()
        kept = folder / f"launch-{key}.json" if folder is not None else None
        command = _read_kept(kept) if kept is not None else None
        if command is None:
            command = _run_launcher(java, jars, args, self.env)
            if command is None:
                self.why_not = "the launcher failed"
                return
            # Not a JVM that writes the class-data archive: its option names a file
            # of this process, so the entry would never be used again. Not one
            # whose settings hold a secret either: it would stay in the cache.
            secret = any(SECRET_KEY.search(key) for key in conf)
            if (
                kept is not None
                and not secret
                and not any("ArchiveClassesAtExit" in a for a in args)
            ):
                _keep(kept, command)
        app = f"spark.app.name={conf.get('spark.app.name', 'pyspark-shell')}"
        self.command = [app if part == APP_NAME_SLOT else part for part in command]


def _scala_version(home: str) -> str | None:
    """The Scala version ``load-spark-env.sh`` exports (Spark 4: a constant in it)."""
    try:
        text = Path(home, "bin", "load-spark-env.sh").read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.findall(r"^\s*export SPARK_SCALA_VERSION=([0-9.]+)\s*$", text, re.M)
    return found[0] if len(found) == 1 else None


def _submit_args(conf: Mapping[str, str], app_name: str) -> list[str]:
    """``spark-submit``'s arguments as pyspark's ``launch_gateway`` passes them."""
    args: list[str] = []
    for key, value in conf.items():
        args += ["--conf", f"{key}={app_name if key == 'spark.app.name' else value}"]
    return args + ["pyspark-shell"]


def _key(java: str, home: str, conf_dir: str, args: Sequence[str], env: Mapping[str, str]) -> str:
    parts = [java, os.path.realpath(java), home, conf_dir, *args]
    for path in (java, os.path.join(home, "jars"), conf_dir):
        with contextlib.suppress(OSError):
            st = os.stat(path)
            parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(conf_dir)):
            with contextlib.suppress(OSError):
                parts.append(name + ":" + Path(conf_dir, name).read_text(errors="replace"))
    for name in sorted(env):
        if name.startswith(ENV_PREFIXES) or name in ENV_NAMES:
            parts.append(f"{name}={env[name]}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _read_kept(path: Path) -> list[str] | None:
    try:
        command = json.loads(path.read_text(encoding="utf-8"))["command"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        return None
    return command if command and os.path.exists(command[0]) else None


def _keep(path: Path, command: list[str]) -> None:
    """Write the entry to a file of its own (readable by this user only: the command
    holds the settings), then rename it into place."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps({"command": command}))
        os.replace(tmp, path)


def _run_launcher(
    java: str, jars: str, args: Sequence[str], env: Mapping[str, str]
) -> list[str] | None:
    """What ``bin/spark-class`` runs to learn the command: Spark's launcher, whose
    output is the command's parts, each ended by a NUL, after a line ``\\0``."""
    opts = shlex.split(os.environ.get("SPARK_LAUNCHER_OPTS", ""))
    cmd = [java, "-Xmx128m", *opts, "-cp", os.path.join(jars, "*")]
    cmd += ["org.apache.spark.launcher.Main", "org.apache.spark.deploy.SparkSubmit", *args]
    proc = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        return None
    head, sep, rest = proc.stdout.partition(b"\0\n")
    if not sep:
        return None
    if head.strip():  # the launcher's messages; spark-class prints them
        sys.stderr.write(head.decode(errors="replace"))
    parts = rest.decode().split("\0")
    if parts and parts[-1] == "":
        parts.pop()
    return parts or None


def start_jvm(launch: DirectLaunch) -> tuple[subprocess.Popen[bytes], str]:
    """Start the JVM with ``launch``'s command, as pyspark's ``launch_gateway`` does
    (its standard input a pipe: the JVM exits when it closes; SIGINT ignored).
    Returns the process and the path of the file it writes its port and secret to."""
    assert launch.command is not None
    conn_info_dir = tempfile.mkdtemp()
    conn_info = os.path.join(conn_info_dir, "conn-info")
    env = {**os.environ, **launch.env}
    env["SPARK_CONNECT_MODE"] = "0"
    env["_PYSPARK_DRIVER_CONN_INFO_PATH"] = conn_info

    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    try:
        proc = subprocess.Popen(launch.command, stdin=subprocess.PIPE, env=env, preexec_fn=preexec)
    except BaseException:
        shutil.rmtree(conn_info_dir, ignore_errors=True)
        raise
    return proc, conn_info


def connect_gateway(proc: subprocess.Popen[bytes], conn_info: str) -> Any:
    """Wait for the JVM started by :func:`start_jvm` to write its port, then connect
    py4j to it as pyspark's ``launch_gateway`` does (pyspark 4.2)."""
    from py4j.clientserver import ClientServer, JavaParameters, PythonParameters
    from py4j.java_gateway import GatewayParameters, JavaGateway, java_import
    from pyspark.errors import PySparkRuntimeError
    from pyspark.serializers import UTF8Deserializer, read_int

    try:
        while proc.poll() is None and not os.path.isfile(conn_info):
            time.sleep(POLL)
        if not os.path.isfile(conn_info):
            raise PySparkRuntimeError(errorClass="JAVA_GATEWAY_EXITED", messageParameters={})
        # The JVM writes the file elsewhere and renames it into place: complete here.
        with open(conn_info, "rb") as info:
            port = read_int(info)
            secret = UTF8Deserializer().loads(info)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        raise
    finally:
        shutil.rmtree(os.path.dirname(conn_info), ignore_errors=True)
    if os.environ.get("PYSPARK_PIN_THREAD", "true").lower() == "true":
        gateway: Any = ClientServer(
            java_parameters=JavaParameters(port=port, auth_token=secret, auto_convert=True),
            python_parameters=PythonParameters(port=0, eager_load=False),
        )
    else:
        gateway = JavaGateway(
            gateway_parameters=GatewayParameters(port=port, auth_token=secret, auto_convert=True)
        )
    gateway.proc = proc
    for name in (
        "org.apache.spark.SparkConf",
        "org.apache.spark.api.java.*",
        "org.apache.spark.api.python.*",
        "org.apache.spark.ml.python.*",
        "org.apache.spark.mllib.api.python.*",
        "org.apache.spark.resource.*",
        "org.apache.spark.sql.Encoders",
        "org.apache.spark.sql.OnSuccessCall",
        "org.apache.spark.sql.functions",
    ):
        java_import(gateway.jvm, name)
    return gateway
