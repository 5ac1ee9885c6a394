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
