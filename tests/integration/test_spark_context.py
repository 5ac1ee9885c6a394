"""The SparkContext maggy starts: what its driver imports, and how it stops.

Each case runs in a fresh interpreter, because what matters is what a new
``maggy run`` process imports and leaves behind.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROGRAM = textwrap.dedent(
    """
    import json, sys, threading
    from maggy_core.runner import spark_context

    out = {}
    with spark_context("local[1]", "maggy-test-context", None) as sc:
        out["sum"] = sc.parallelize(range(5), 1).map(lambda x: x * 2).sum()
        out["heavy_after_start"] = sorted(
            m for m in ("pandas", "pyarrow", "pyspark.testing.utils") if m in sys.modules
        )
        import numpy as np  # numpy objects still reach the JVM as before

        out["scalar"] = sc._jvm.java.lang.String.valueOf(np.int64(7))
        out["array"] = sc._jvm.java.util.Arrays.toString(np.array([1.5, 2.5]))
        server = sc._accumulatorServer
    out["active_after_stop"] = sc._jsc is not None
    out["accumulator_told_to_stop"] = server.server_shutdown
    print(json.dumps(out))
    """
)


def test_driver_imports_no_pandas_and_numpy_still_converts() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["sum"] == 20
    # pyspark's numpy converters used to import pyspark.testing.utils (pandas,
    # pyarrow) at the first call into the JVM.
    assert out["heavy_after_start"] == []
    assert out["scalar"] == "7"
    assert out["array"] == "[1.5, 2.5]"
    assert out["active_after_stop"] is False
    assert out["accumulator_told_to_stop"] is True


ARCHIVE_PROGRAM = textwrap.dedent(
    """
    import json, pathlib
    from maggy_core.runner import spark_context

    with spark_context("local[1]", "maggy-test-archive", None) as sc:
        total = sc.parallelize(range(3), 1).sum()
        options = sc.getConf().get("spark.driver.extraJavaOptions")
        pid = sc._gateway.proc.pid
        maps = pathlib.Path(f"/proc/{pid}/maps").read_text()
    print(json.dumps({"sum": total, "options": options, "maps": maps}))
    """
)


def _run_archive_program(cache: Path) -> dict:
    env = {**os.environ, "MAGGY_JVM_CACHE": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-c", ARCHIVE_PROGRAM],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # -Xlog:cds=off: writing the archive lists hundreds of skipped classes otherwise.
    assert "[cds]" not in proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_driver_jvm_writes_its_class_archive_once_then_maps_it(tmp_path: Path) -> None:
    cache = tmp_path / "jvm"
    first = _run_archive_program(cache)
    assert first["sum"] == 3
    assert "-XX:ArchiveClassesAtExit=" in first["options"]
    archives = list(cache.glob("*.jsa"))
    assert len(archives) == 1 and archives[0].stat().st_size > 1_000_000
    assert not list(cache.glob("*.tmp")), "the unfinished archive was not moved into place"

    second = _run_archive_program(cache)
    assert f"-XX:SharedArchiveFile={archives[0]}" in second["options"]
    assert str(archives[0]) in second["maps"], "the JVM did not map the archive"


def test_a_broken_class_archive_is_ignored_then_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from maggy_core.jvm_archive import DriverArchive
    from maggy_core.runner import DEFAULT_SPARK_CONF

    cache = tmp_path / "jvm"
    monkeypatch.setenv("MAGGY_JVM_CACHE", str(cache))
    path = DriverArchive(DEFAULT_SPARK_CONF["spark.driver.extraJavaOptions"]).path
    assert path is not None
    path.write_bytes(b"not an archive" * 1000)
    out = _run_archive_program(cache)
    assert out["sum"] == 3
    assert f"-XX:SharedArchiveFile={path}" in out["options"]
    assert not path.exists(), "an archive the JVM did not map was kept"


def test_the_archive_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from maggy_core.jvm_archive import DriverArchive

    monkeypatch.setenv("MAGGY_JVM_CACHE", "off")
    archive = DriverArchive("-XX:TieredStopAtLevel=1")
    assert archive.java_option() == ""
    assert archive.path is None


FAILING_RUN = textwrap.dedent(
    """
    import json, sys
    import psutil
    from maggy_core.exceptions import MaggyError
    from maggy_core.runner import run_experiment
    from maggy_core.spec import ExperimentSpec

    spec = ExperimentSpec.from_dict({
        "name": "no-redis",
        "train_fn": "maggy_core.examples.sleep:train",
        "searchspace": {"seconds": ["DOUBLE", [0.01, 0.02]], "x": ["DOUBLE", [0, 1]]},
        "num_trials": 2,
        "workers": 1,
    })
    try:
        run_experiment(spec, redis_url=sys.argv[1], master="local[1]", results_dir=sys.argv[2])
        error = None
    except MaggyError as exc:
        error = str(exc)
    children = [" ".join(c.cmdline())[:200] for c in psutil.Process().children(recursive=True)]
    print(json.dumps({"error": error, "children": children}))
    """
)


def test_a_run_that_fails_before_spark_is_needed_leaves_no_jvm(tmp_path: Path) -> None:
    # The driver JVM is launched while Redis is set up; when Redis then fails, the
    # run must end that JVM (a notebook's Python would otherwise keep it for good).
    # The "Redis" accepts connections and never answers: its PING times out after
    # 3 s, by when the JVM is up.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        proc = subprocess.run(
            [sys.executable, "-c", FAILING_RUN, url, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "does not answer PING" in out["error"]
    assert out["children"] == []
