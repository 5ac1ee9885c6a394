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
the workers' job): 0.6 s of CPU (0.8 s when pyspark came from Spark's zip, see
:func:`_installed_instead_of_zips`), of which ``pyspark.worker`` (``pyspark`` imports
``pyspark.sql``) takes 0.28 s and ``redis`` 0.34 s. A third of the latter is
OpenTelemetry's metrics SDK, which redis-py imports only to learn whether its own
metrics could be exported (``redis.observability.providers``; they are off unless
a program turns them on, which maggy never does). Here that import fails, so redis-py
takes the SDK for absent; the module stays importable for the training code.
"""

import os
import sys


def _installed_instead_of_zips() -> None:
    """Import pyspark and py4j from the installed packages, not from the zips that
    Spark puts first on the workers' ``PYTHONPATH``, when those zips are the ones
    shipped inside that same installed pyspark (``<site>/pyspark/python/lib``).

    A zip holds no bytecode, so every daemon compiled pyspark from source: its
    imports took 0.77-0.84 s instead of 0.54-0.58 s. And at each task's start
    pyspark's worker calls ``importlib.invalidate_caches()``, which makes each of
    the 14 zip importers (one per package inside the zip) read the zip's directory
    again: 0.045 s per worker, four workers at once on two cores. The code is the
    same: pyspark ships these zips in its own package (py4j's only at the version
    installed beside it). Zips anywhere else (a Spark distribution, ``--py-files``)
    stay where they are.
    """
    kept = []
    for entry in sys.path:
        name = os.path.basename(entry)
        lib = os.path.dirname(entry)
        package = os.path.dirname(os.path.dirname(lib))
        site = os.path.dirname(package)
        if name == "pyspark.zip":
            installed = os.path.join(site, "pyspark", "__init__.py")
        elif name.startswith("py4j-") and name.endswith("-src.zip"):
            version = name[len("py4j-") : -len("-src.zip")]
            installed = os.path.join(site, f"py4j-{version}.dist-info")
        else:
            kept.append(entry)
            continue
        ours = (
            lib.endswith(os.path.join("pyspark", "python", "lib"))
            and os.path.exists(installed)
            and os.path.isfile(os.path.join(package, "__init__.py"))
            and any(os.path.realpath(p) == os.path.realpath(site) for p in sys.path if p)
        )
        if ours:
            # Its importer (made when `python -m` looked for this module) would
            # still re-read the zip at each invalidate_caches().
            sys.path_importer_cache.pop(entry, None)
        else:
            kept.append(entry)
    sys.path[:] = kept


_installed_instead_of_zips()

import pyspark.worker  # noqa: E402,F401

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
