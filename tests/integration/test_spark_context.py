"""The SparkContext maggy starts: what its driver imports, and how it stops.

Each case runs in a fresh interpreter, because what matters is what a new
``maggy run`` process imports and leaves behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

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
