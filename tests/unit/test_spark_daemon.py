"""The preloading daemon must not start threads: it forks Spark's Python workers."""

from __future__ import annotations

import subprocess
import sys


def test_the_daemon_module_imports_without_threads():
    code = (
        "import threading, sys\n"
        "import maggy_core.spark_daemon\n"
        "print(threading.active_count(), 'pandas' in sys.modules, 'pyarrow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "False", "False"]


def test_the_daemon_module_starts_no_os_threads_either():
    # TensorFlow's threads are C++ threads that threading.active_count() does not
    # count; the OS does. The daemon must have none of either kind when it forks.
    code = (
        "import os\n"
        "import maggy_core.spark_daemon\n"
        "print(len(os.listdir('/proc/self/task')), 'tensorflow' in __import__('sys').modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "False"]


def test_the_daemon_skips_opentelemetrys_sdk_in_redis_and_leaves_it_importable():
    # redis-py imports OpenTelemetry's metrics SDK (0.09 s) only to learn whether it
    # could export metrics that maggy never turns on.
    code = (
        "import sys\n"
        "import maggy_core.spark_daemon\n"
        "import redis.observability.providers as providers\n"
        "skipped = 'opentelemetry.sdk.metrics' not in sys.modules\n"
        "try:\n"
        "    import opentelemetry.sdk.metrics\n"
        "    importable = True\n"
        "except ImportError:\n"
        "    importable = None\n"
        "print(skipped, providers.OTEL_AVAILABLE, importable)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    skipped, available, importable = out.stdout.split()
    assert (skipped, available) == ("True", "False")
    assert importable in ("True", "None")  # None: OpenTelemetry is not installed here


def _daemon_imports(pythonpath: str) -> list[str]:
    import os

    code = (
        "import sys, zipimport\n"
        "import maggy_core.spark_daemon, py4j\n"
        "cache = sys.path_importer_cache.values()\n"
        "zips = [v for v in cache if isinstance(v, zipimport.zipimporter)]\n"
        "print(sys.modules['pyspark'].__file__)\n"
        "print(py4j.__file__)\n"
        "print(len(zips))\n"
    )
    env = {**os.environ, "PYTHONPATH": pythonpath}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_pyspark_comes_from_its_package_not_from_the_zips_spark_puts_first(tmp_path):
    # Spark's PYTHONPATH for the workers starts with the zips inside the installed
    # pyspark: imported from there, pyspark is compiled from source in every daemon,
    # and each task re-reads the zips' directories.
    import os
    import shutil

    import pyspark

    lib = os.path.join(os.path.dirname(pyspark.__file__), "python", "lib")
    zips = sorted(os.path.join(lib, name) for name in os.listdir(lib) if name.endswith(".zip"))
    assert any(z.endswith("pyspark.zip") for z in zips)
    spark_file, py4j_file, zip_importers = _daemon_imports(os.pathsep.join(zips))
    assert ".zip" not in spark_file and ".zip" not in py4j_file
    assert zip_importers == "0"
    # A zip elsewhere (a Spark distribution's) is what the worker is meant to use: kept.
    elsewhere = tmp_path / "spark" / "python" / "lib"
    elsewhere.mkdir(parents=True)
    shutil.copy(os.path.join(lib, "pyspark.zip"), elsewhere / "pyspark.zip")
    spark_file, _py4j, _zips = _daemon_imports(str(elsewhere / "pyspark.zip"))
    assert spark_file.startswith(str(elsewhere / "pyspark.zip"))
