"""A class-data-sharing (CDS) archive of the driver JVM's classes, made once, reused.

Starting the driver JVM of a local Spark application is the longest step of an
experiment's start on a small machine (about two seconds on two cores), and most of
it is loading and verifying the same ten thousand classes every time. The JVM can
map them from an archive instead (Java's application class-data sharing): the first
experiment on a machine runs its JVM with ``-XX:ArchiveClassesAtExit``, which writes
the archive when that JVM exits; every later one starts with
``-XX:SharedArchiveFile``, which starts the SparkContext and runs the first job
0.5-1 s sooner here.

The archive is a cache and never a risk to a run:

- it lives in ``$MAGGY_JVM_CACHE`` (default ``$XDG_CACHE_HOME/maggy/jvm``, else
  ``~/.cache/maggy/jvm``; ``MAGGY_JVM_CACHE=off`` turns all of this off), about 70 MB;
- its name is a digest of the Java binary, the Spark installation and the JVM
  options, so a different JDK or Spark gets its own archive; the JVM itself checks
  the archive too and silently starts without it if it does not match;
- it is written to a file of its own and renamed into place only once the JVM that
  wrote it has exited, so no reader sees half of it; two first runs at once each
  write their own and the last rename wins;
- when a started JVM has not mapped the archive (a JDK without class-data sharing,
  a broken file), it is removed; when writing one fails, a marker stops later runs
  from trying again.

JVMs that maggy launches itself (``maggy run``, ``lagom`` without an active
SparkContext) use it, and so does the driver JVM of ``MaggyOperator``'s spark-submit
when the driver runs on the Airflow worker (client mode; a deferrable task only uses
an archive, since nobody waits for its JVM to exit); never when the caller set
``spark.driver.extraJavaOptions``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import shutil
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

log = logging.getLogger("maggy")

ENV = "MAGGY_JVM_CACHE"
#: Seconds to wait for the first JVM to write its archive and exit.
DUMP_TIMEOUT = 60.0


def cache_dir() -> Path | None:
    """Where archives live, or ``None`` when turned off."""
    value = os.environ.get(ENV, "")
    if value.lower() in ("off", "0", "false", "no"):
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "maggy" / "jvm"


def java_binary() -> str | None:
    """The ``java`` that ``spark-submit`` runs: ``$JAVA_HOME/bin/java``, else PATH's."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return java if java and os.path.exists(java) else None


def spark_home() -> str | None:
    """Spark's home as pyspark finds it (``SPARK_HOME``, else the pip-installed pyspark
    package's folder), without importing pyspark (0.2-0.3 s: the JVM starts while
    the driver imports it, see :mod:`maggy_core.jvm_launch`)."""
    home = os.environ.get("SPARK_HOME")
    if home:
        return home
    try:
        spec = find_spec("pyspark")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    folder = os.path.dirname(spec.origin)
    # pyspark's own order (pyspark.find_spark_home): a Spark it downloaded at install
    # (PYSPARK_HADOOP_VERSION), then the package's folder.
    for home in (os.path.join(folder, "spark-distribution"), folder):
        if os.path.isfile(os.path.join(home, "bin", "spark-submit")) and (
            os.path.isdir(os.path.join(home, "jars"))
            or os.path.isdir(os.path.join(home, "assembly"))
        ):
            return home
    return None


def _spark_home() -> str | None:
    home = spark_home()
    return os.path.realpath(home) if home else None  # None: nothing to archive


def _pyspark_version() -> str | None:
    try:
        return importlib.metadata.version("pyspark")
    except importlib.metadata.PackageNotFoundError:  # not pip-installed
        with contextlib.suppress(Exception):
            import pyspark

            return str(pyspark.__version__)
    return None


def archive_name(java_options: str) -> str | None:
    """The archive's file name for this JDK, Spark and JVM options (``None`` if
    either cannot be found)."""
    java, spark_home = java_binary(), _spark_home()
    if java is None or spark_home is None:
        return None
    java = os.path.realpath(java)
    parts = [java, spark_home, java_options]
    for path in (java, os.path.join(spark_home, "jars")):
        with contextlib.suppress(OSError):
            st = os.stat(path)
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    version = _pyspark_version()
    if version is not None:
        parts.append(version)
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return f"spark-driver-{digest}.jsa"


class DriverArchive:
    """The archive for one JVM launch: the option to start it with, and what to do
    once it is up and once its SparkContext has stopped.

    Args:
        java_options: The JVM options the driver starts with (part of the key).
    """

    def __init__(self, java_options: str, *, create: bool = True) -> None:
        self.path: Path | None = None
        self.writing: Path | None = None
        folder = cache_dir()
        name = archive_name(java_options) if folder is not None else None
        if folder is None or name is None:
            return
        final = folder / name
        if final.is_file():
            self.path = final
        elif create and not final.with_suffix(".failed").exists():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                return
            self._remove_stale(folder)
            self.writing = folder / f"{name}.{os.getpid()}.tmp"
            self.path = final

    @staticmethod
    def _remove_stale(folder: Path) -> None:
        """Unfinished archives of JVMs that died while writing them (an hour old)."""
        for tmp in folder.glob("*.tmp"):
            with contextlib.suppress(OSError):
                if time.time() - tmp.stat().st_mtime > 3600:
                    tmp.unlink()

    def java_option(self) -> str:
        """The JVM option to add (empty when there is no archive to use or make)."""
        # -Xlog:cds=off: writing an archive lists every class it leaves out (hundreds
        # of lines on the console); a JVM that cannot use one starts without it anyway.
        if self.writing is not None:
            return f"-XX:ArchiveClassesAtExit={self.writing} -Xlog:cds=off"
        if self.path is not None:
            return f"-XX:SharedArchiveFile={self.path} -Xlog:cds=off"
        return ""

    def started(self, sc: Any) -> None:
        """After the JVM is up: forget an archive that it did not map."""
        if self.writing is not None or self.path is None:
            return
        pid = _jvm_pid(sc)
        if pid is None:
            return
        try:
            maps = Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return  # not Linux, or gone: nothing to learn
        if str(self.path) not in maps:
            log.warning("the driver JVM did not use its class-data archive %s: removed", self.path)
            with contextlib.suppress(OSError):
                self.path.unlink()

    def stopped(self, sc_class: Any) -> None:
        """After ``sc.stop()``: if this JVM is writing the archive, let it exit
        (it writes the archive as it exits), then move the archive into place.

        The next SparkContext of this process starts a new JVM.
        """
        if self.writing is None or self.path is None:
            return
        gateway: Any = getattr(sc_class, "_gateway", None)
        if getattr(gateway, "proc", None) is None:
            return
        started = time.monotonic()
        exited = end_gateway(gateway, DUMP_TIMEOUT)
        sc_class._gateway = None
        sc_class._jvm = None
        if not exited:
            log.warning("the driver JVM did not exit within %.0f s", DUMP_TIMEOUT)
        self.jvm_exited(cleanly=exited, since=started)

    def jvm_exited(self, *, cleanly: bool, since: float | None = None) -> None:
        """The JVM writing the archive has exited (its own, or ``spark-submit``'s):
        move the archive into place if it exited cleanly and wrote one.

        A JVM that was killed may have left half an archive: that is removed.
        """
        if self.writing is None or self.path is None:
            return
        written = self.writing.is_file() and self.writing.stat().st_size > 0
        if cleanly and written:
            os.replace(self.writing, self.path)
            log.info(
                "saved a class-data archive of the driver JVM%s (%s, %.0f MB): "
                "later experiments start faster",
                "" if since is None else f" in {time.monotonic() - since:.1f} s",
                self.path,
                self.path.stat().st_size / 1e6,
            )
        elif cleanly:
            # This JDK cannot write one: do not try at every start.
            with contextlib.suppress(OSError):
                self.path.with_suffix(".failed").write_text(
                    "the JVM wrote no archive; delete this file to try again\n", encoding="utf-8"
                )
        with contextlib.suppress(OSError):
            self.writing.unlink(missing_ok=True)
        self.writing = None


def begin_ending(gateway: Any) -> Any:
    """Tell the JVM behind a py4j gateway that this process launched to exit, without
    waiting: the gateway is shut down (its threads leave their socket reads, which
    the JVM's exit would otherwise wait for) and the JVM's standard input closed.
    Returns the JVM's process, or ``None`` for a gateway without one."""
    proc = getattr(gateway, "proc", None)
    with contextlib.suppress(Exception):
        gateway.shutdown()
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.stdin.close()
    return proc


def wait_for_exit(proc: Any, timeout: float) -> bool:
    """Whether ``proc`` exited within ``timeout`` seconds (if not, it is killed)."""
    try:
        proc.wait(timeout)
        return True
    except Exception:
        proc.kill()
        return False


def end_gateway(gateway: Any, timeout: float) -> bool:
    """End the JVM behind a py4j gateway that this process launched (see
    :func:`begin_ending`). Returns whether it exited within ``timeout`` seconds (if
    not, it is killed)."""
    proc = begin_ending(gateway)
    return True if proc is None else wait_for_exit(proc, timeout)


def _jvm_pid(sc: Any) -> int | None:
    proc = getattr(getattr(sc, "_gateway", None), "proc", None)
    return getattr(proc, "pid", None)
