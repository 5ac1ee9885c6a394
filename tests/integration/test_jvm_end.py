"""How ``maggy run``'s driver JVM ends (``SparkStart(end_jvm=True)``).

Each case runs in a fresh interpreter, as a ``maggy run`` process does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

END_PROGRAM = textwrap.dedent(
    """
    import json, os, pathlib, sys, time
    from maggy_core.runner import SparkStart

    local_dir = sys.argv[1]
    start = SparkStart("local[1]", "maggy-test-end", {"spark.local.dir": local_dir}, end_jvm=True)
    with start.context() as sc:
        total = sc.parallelize(range(4), 1).map(lambda x: x + 1).sum()
        # As bin/spark-submit exports it (the JVM may be started without it).
        seed = sc.parallelize([0], 1).map(lambda _: os.environ.get("PYTHONHASHSEED")).collect()
        proc = sc._gateway.proc
        cls = type(sc)
    # The JVM was told to exit as the context stopped, and this process may go on
    # (writing its result) meanwhile; a new context would start a new JVM.
    out = {"sum": total, "seed": seed, "gateway_after_stop": cls._gateway is not None}
    time.sleep(1.0)  # the accumulator server's handler sees the JVM's end meanwhile
    start.close()
    out["exit_code"] = proc.returncode
    out["left_in_local_dir"] = sorted(p.name for p in pathlib.Path(local_dir).iterdir())
    print(json.dumps(out))
    """
)


def test_the_jvm_exits_as_the_context_stops_and_removes_its_temporary_directories(
    tmp_path: Path,
) -> None:
    local_dir = tmp_path / "spark-local"
    local_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", END_PROGRAM, str(local_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "MAGGY_JVM_CACHE": str(tmp_path / "jvm")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["sum"] == 10
    assert out["seed"] == ["0"]
    assert out["gateway_after_stop"] is False
    assert out["exit_code"] == 0, "the JVM was still running (or was killed) after close()"
    # Spark's shut-down hooks ran: its block manager and file server folders are gone.
    assert out["left_in_local_dir"] == []
    # The accumulator server, still stopping when the JVM went, prints no traceback.
    assert "Traceback" not in proc.stderr and "EOFError" not in proc.stderr
