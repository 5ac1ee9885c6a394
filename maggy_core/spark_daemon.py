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

These imports are on every experiment's critical path (Spark starts the daemon with
the workers' job): 0.6 s of CPU, of which ``pyspark.worker`` (``pyspark`` imports
``pyspark.sql``) takes 0.28 s and ``redis`` 0.34 s. A third of the latter is
OpenTelemetry's metrics SDK, which redis-py imports only to learn whether its own
metrics could be exported (``redis.observability.providers``; they are off unless
a program turns them on, which maggy never does). Here that import fails, so redis-py
takes the SDK for absent; the module stays importable for the training code.
"""

import sys

import pyspark.worker  # noqa: F401

_OTEL_SDK = "opentelemetry.sdk.metrics"
_skip_sdk = _OTEL_SDK not in sys.modules
if _skip_sdk:
    sys.modules[_OTEL_SDK] = None  # type: ignore[assignment]  # its import raises ImportError
try:
    import redis  # noqa: F401
finally:
    if _skip_sdk:
        del sys.modules[_OTEL_SDK]
from pyspark.daemon import manager  # noqa: E402

import maggy_core.worker  # noqa: F401,E402

if __name__ == "__main__":
    manager()
