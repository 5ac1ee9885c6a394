"""A pyspark daemon that imports what every maggy worker needs once, before it forks.

Spark starts Python workers by forking a daemon (``pyspark.daemon``), which imports
the worker modules only after the fork, because some modules (pandas, pyarrow)
start threads at import and a fork must not copy a process with threads. Every
maggy worker then pays ``pyspark.worker`` and ``redis`` itself, about 1.5 s, all
workers at once: on two cores the last one starts seconds after the first, and
that head is time the experiment's slots sit idle.

None of the modules imported here starts a thread (``tests/unit/test_spark_daemon.py``
checks), so importing them in the daemon is safe; forked workers then start at
once and share those pages with the daemon. Spark uses it through
``spark.python.daemon.module=maggy_core.spark_daemon`` (the runner's default).
"""

import pyspark.worker  # noqa: F401
import redis  # noqa: F401
from pyspark.daemon import manager

import maggy_core.worker  # noqa: F401

if __name__ == "__main__":
    manager()
