"""Connections: Spark through the Spark provider's hook, Redis from an Airflow connection."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, urlencode

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException


class MaggySparkSubmitHook(SparkSubmitHook):
    """``SparkSubmitHook`` whose master, when the connection does not exist, is
    local Spark rather than YARN.

    The provider's hook falls back to ``yarn`` when ``spark_default`` is missing,
    which on a laptop or a single-machine Airflow is never right. Everything
    else (master, deploy mode, queue, binary, Kerberos) comes from the connection
    exactly as users of the provider expect.

    Args:
        default_master: Master to use when the connection is missing.
        **kwargs: Passed to ``SparkSubmitHook``.
    """

    def __init__(self, *, default_master: str, **kwargs: Any) -> None:
        self._default_master = default_master
        super().__init__(**kwargs)

    def _resolve_connection(self) -> dict[str, Any]:
        data = super()._resolve_connection()
        try:
            self.get_connection(self._conn_id)
        except AirflowNotFoundException:
            self.log.info(
                "no connection %r: using Spark master %s", self._conn_id, self._default_master
            )
            data["master"] = self._default_master
        return data

    @property
    def master(self) -> str:
        return str(self._connection["master"])

    @property
    def driver_runs_here(self) -> bool:
        """Whether the driver JVM runs in spark-submit's process (client mode)."""
        return self._connection.get("deploy_mode") != "cluster"

    def add_driver_java_options(self, options: str) -> None:
        """Add to the driver JVM's options (``spark.driver.extraJavaOptions``)."""
        current = self._conf.get("spark.driver.extraJavaOptions", "")
        self._conf["spark.driver.extraJavaOptions"] = f"{current} {options}".strip()

    def build_command(self, application: str) -> list[str]:
        """The spark-submit command line (for a submission we do not wait on)."""
        return self._build_spark_submit_command(application)


def driver_runs_locally(conn_id: str) -> bool:
    """Whether spark-submit through this connection runs the driver on this machine
    (client mode, the default; a missing connection means local Spark)."""
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return True
    return str(conn.extra_dejson.get("deploy-mode", "client")).lower() != "cluster"


def redis_url_from_connection(conn_id: str | None) -> str | None:
    """The URL of the Redis described by an Airflow connection.

    Reads host, port, login, password, the ``db`` extra and the TLS extras
    (``ssl``, ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``,
    ``ssl_keyfile``), as the Redis provider does.

    Returns:
        The URL, or ``None`` when the connection does not exist (the engine then
        uses ``MAGGY_REDIS_URL``, a local server, or a private one).
    """
    if not conn_id:
        return None
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    extra = conn.extra_dejson
    tls = str(extra.get("ssl", "")).lower() in ("true", "1", "yes")
    scheme = "rediss" if tls else "redis"
    password = None if str(conn.password).lower() in ("none", "false", "") else conn.password
    auth = ""
    if password:
        auth = f"{quote(conn.login or '', safe='')}:{quote(password, safe='')}@"
    elif conn.login:
        auth = f"{quote(conn.login, safe='')}@"
    query = {
        k: str(extra[k])
        for k in ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
        if tls and extra.get(k)
    }
    db = int(extra.get("db") or 0)
    url = f"{scheme}://{auth}{conn.host or '127.0.0.1'}:{conn.port or 6379}/{db}"
    return url + (f"?{urlencode(query)}" if query else "")


def spark_home() -> str:
    """Where Spark is: ``$SPARK_HOME``, else the pyspark package's copy."""
    if os.environ.get("SPARK_HOME"):
        return os.environ["SPARK_HOME"]
    from pyspark.find_spark_home import _find_spark_home

    return str(_find_spark_home())
