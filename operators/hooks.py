"""Connections: Spark through the Spark provider's hook, Redis from an Airflow connection."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.redis.hooks.redis import (
    ALLOWED_SSL_CERT_REQS,
    DEFAULT_REDIS_PORT,
    RedisHook,
)
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from redis.connection import SSLConnection


class MaggySparkSubmitHook(SparkSubmitHook):
    """``SparkSubmitHook`` whose master, when the connection does not exist, is
    local Spark rather than YARN.

    The provider's hook falls back to ``yarn`` when ``spark_default`` is missing,
    which on a laptop or a single-machine Airflow is never right. Everything
    else (master, deploy mode, queue, binary, Kerberos) comes from the connection
    exactly as users of the provider expect.

    Args:
        default_master: Master to use when the connection is missing.
        secret_env: Environment variables for the spark-submit process only.
            ``env_vars`` become ``--conf spark.yarn.appMasterEnv.*`` (or
            ``spark.kubernetes.driverEnv.*``) arguments on YARN and Kubernetes,
            visible in ``ps``; these never do (on a cluster, the driver and the
            executors get secrets through :class:`SecretProperties`).
        **kwargs: Passed to ``SparkSubmitHook``.
    """

    def __init__(
        self, *, default_master: str, secret_env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        self._default_master = default_master
        self._secret_env = dict(secret_env or {})
        super().__init__(**kwargs)

    def _build_spark_submit_command(self, application: str) -> list[str]:
        command = super()._build_spark_submit_command(application)
        if self._secret_env:  # submit() and _submit_detached add _env to os.environ
            self._env = {**(self._env or {}), **self._secret_env}
        return command

    @property
    def deploy_mode(self) -> str:
        """``client`` or ``cluster`` (the connection's ``deploy-mode`` extra, or the
        ``deploy_mode`` argument)."""
        return str(self._connection.get("deploy_mode") or "client")

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
        return self.deploy_mode != "cluster"

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


#: Connection extras the channel honours (``ssl_*`` only with ``ssl``).
SUPPORTED_REDIS_EXTRAS = (
    "db",
    "ssl",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
)
_TLS_ARGS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


@dataclass(frozen=True)
class RedisTarget:
    """Where the channel's Redis is: a URL without password, and the password apart.

    The URL goes into trigger arguments, environment variables and log lines; the
    password only into a client, the environment of spark-submit and a private
    properties file (see :class:`SecretProperties`).
    """

    url: str
    password: str | None = field(default=None, repr=False)

    def full_url(self) -> str:
        """The URL with the password in it, for a client in this process only."""
        if not self.password:
            return self.url
        scheme, _, rest = self.url.partition("://")
        user, at, host = rest.rpartition("@")
        return (
            f"{scheme}://{user}:{quote(self.password, safe='')}@{host}"
            if at
            else (f"{scheme}://:{quote(self.password, safe='')}@{rest}")
        )


def _bad_extra(conn_id: str, name: str, allowed: str, value: Any) -> ValueError:
    return ValueError(f"Redis connection {conn_id!r}: extra {name!r} {allowed}, got {value!r}")


def _check_redis_extras(conn_id: str, extra: Mapping[str, Any]) -> None:
    """Refuse the extras the channel cannot honour, naming the extra and what is allowed."""
    supported = ", ".join(SUPPORTED_REDIS_EXTRAS)
    for name in ("cluster", "startup_nodes"):
        if extra.get(name) not in (None, False, "", "false", "False"):
            raise ValueError(
                f"Redis connection {conn_id!r}: extra {name!r} (Redis Cluster) is not supported: "
                "an experiment's keys are read and written together in MULTI/EXEC "
                "transactions and streams, which one Redis server (or a primary behind a "
                f"proxy) serves; supported extras: {supported}"
            )
    if "ssl" in extra and not isinstance(extra["ssl"], bool):
        # The provider passes the value to redis-py as is: the string "false" is true.
        raise _bad_extra(conn_id, "ssl", "must be a JSON boolean (true or false)", extra["ssl"])
    if "ssl_check_hostname" in extra and not isinstance(extra["ssl_check_hostname"], bool):
        raise _bad_extra(
            conn_id,
            "ssl_check_hostname",
            "must be a JSON boolean (true or false)",
            extra["ssl_check_hostname"],
        )
    reqs = extra.get("ssl_cert_reqs")
    if reqs is not None and reqs not in ALLOWED_SSL_CERT_REQS:
        raise _bad_extra(
            conn_id, "ssl_cert_reqs", f"must be one of {', '.join(ALLOWED_SSL_CERT_REQS)}", reqs
        )
    db = extra.get("db")
    if db not in (None, "") and not (str(db).isdigit() and not isinstance(db, bool)):
        raise _bad_extra(conn_id, "db", "must be a whole number >= 0", db)


def redis_target(conn_id: str | None) -> RedisTarget | None:
    """The Redis an Airflow connection describes, as the Redis provider reads it.

    ``RedisHook`` builds the client from the connection (host, port, login,
    password, ``db`` and the TLS extras ``ssl``, ``ssl_cert_reqs``,
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``);
    the client's connection arguments are then written as a redis-py URL (without
    the password), which the driver and the executors, which have no Airflow, use.
    Nothing connects here.

    Returns:
        The target, or ``None`` when the connection does not exist (the engine then
        uses ``MAGGY_REDIS_URL``, a local server, or a private one).

    Raises:
        ValueError: an extra the channel cannot honour (``cluster``,
            ``startup_nodes``) or with a value it does not allow; the message names it.
    """
    if not conn_id:
        return None
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    _check_redis_extras(conn_id, conn.extra_dejson)
    client = RedisHook(redis_conn_id=conn_id).get_conn()
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    tls = issubclass(pool.connection_class, SSLConnection)
    query = {
        name: str(kwargs[name]).lower() if isinstance(kwargs[name], bool) else str(kwargs[name])
        for name in _TLS_ARGS
        if tls and kwargs.get(name) is not None and name in conn.extra_dejson
    }
    user = f"{quote(kwargs['username'], safe='')}@" if kwargs.get("username") else ""
    url = (
        f"{'rediss' if tls else 'redis'}://{user}{kwargs.get('host') or '127.0.0.1'}:"
        f"{kwargs.get('port') or DEFAULT_REDIS_PORT}/{int(kwargs.get('db') or 0)}"
    )
    return RedisTarget(
        url + (f"?{urlencode(query)}" if query else ""), kwargs.get("password") or None
    )


def redis_url_from_connection(conn_id: str | None) -> str | None:
    """:func:`redis_target`'s URL with the password in it, for a client of this
    process (the plugin's); never put it in a log line or a command."""
    target = redis_target(conn_id)
    return target.full_url() if target else None


class SecretProperties:
    """A Spark properties file, readable by this user only, that carries secrets
    to spark-submit without a command line (``--properties-file``).

    spark-submit reads ``conf/spark-defaults.conf`` only when no properties file
    is given, so the file starts with the user's own properties file, else with
    the defaults file, and adds the secret settings last (the last one of a key
    wins). Spark hides the values of keys matching ``spark.redaction.regex``
    (default: ``secret``, ``password``, ``token``, ...) in its UI and event log.

    Args:
        settings: Spark properties to add (``spark.executorEnv.X``, ...).
        base: The user's properties file, if any.
    """

    def __init__(self, settings: Mapping[str, str], base: str | None = None) -> None:
        import tempfile

        self.folder = tempfile.mkdtemp(prefix="maggy-submit-")  # mode 0700
        self.path = os.path.join(self.folder, "spark.properties")
        lines = [self._base_text(base), "# maggy-airflow: secrets of the submission\n"]
        lines += [f"{_escape(k)}={_escape(v)}\n" for k, v in settings.items()]
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("".join(lines))

    @staticmethod
    def _base_text(base: str | None) -> str:
        if base is None:
            conf_dir = os.environ.get("SPARK_CONF_DIR") or os.path.join(spark_home(), "conf")
            defaults = os.path.join(conf_dir, "spark-defaults.conf")
            base = defaults if os.path.isfile(defaults) else None
        if base is None:
            return ""
        with open(base, encoding="utf-8") as f:
            return f.read() + "\n\n"  # two: a trailing line continuation ends here

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def _escape(text: str) -> str:
    """A key or value as ``java.util.Properties.load`` reads it back (Spark reads UTF-8)."""
    out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    out = out.replace("\t", "\\t").replace("\f", "\\f")
    for ch in "=: #!":
        out = out.replace(ch, "\\" + ch)
    return out


def spark_home() -> str:
    """Where Spark is: ``$SPARK_HOME``, else the pyspark package's copy."""
    if os.environ.get("SPARK_HOME"):
        return os.environ["SPARK_HOME"]
    from pyspark.find_spark_home import _find_spark_home

    return str(_find_spark_home())
