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
