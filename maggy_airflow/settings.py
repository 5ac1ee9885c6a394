"""The ``[maggy]`` settings, read the same way by the operator and the plugin.

Each setting comes from Airflow's configuration (``airflow.cfg`` or
``AIRFLOW__MAGGY__<OPTION>``; the section and its defaults are registered by
:mod:`maggy_airflow.get_provider_info`), then from the engine's own ``MAGGY_*``
variable where one exists, so a deployment can set it once for Airflow and the
command line alike. Airflow is imported only when a setting is read.
"""

from __future__ import annotations

import os
from typing import Any

SECTION = "maggy"


def _get(option: str) -> str:
    """The option's value from Airflow's configuration, ``""`` when unset."""
    try:
        from airflow.sdk import conf
    except ImportError:  # pragma: no cover - an Airflow without the task SDK
        from airflow.configuration import conf  # type: ignore[no-redef]
    value: Any = conf.get(SECTION, option, fallback="")
    return "" if value is None else str(value).strip()


def results_dir() -> str:
    """Where experiments keep their files: ``[maggy] results_dir``, else
    ``$MAGGY_RESULTS_DIR``, else ``$AIRFLOW_HOME/maggy-results``."""
    value = _get("results_dir") or os.environ.get("MAGGY_RESULTS_DIR", "")
    if value:
        return value
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return os.path.join(home, "maggy-results")


def results_conn_id() -> str | None:
    """The connection whose credentials reach an object-store ``results_dir``."""
    return _get("results_conn_id") or None


def redis_conn_id() -> str:
    """The Redis connection of the channel (``redis_default`` unless configured)."""
    return _get("redis_conn_id") or "redis_default"


def follower_lease() -> float:
    """Seconds without word from the following task after which an experiment stops.

    Raises:
        ValueError: the configured value is not a number of seconds > 0.
    """
    raw = _get("follower_lease") or "600"
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(f"[maggy] follower_lease must be a number of seconds > 0, got {raw!r}")
    return value


def default_workers() -> int | None:
    """Parallel trials when neither the spec nor the operator says; None: the spec's default.

    Raises:
        ValueError: the configured value is not a whole number >= 1.
    """
    raw = _get("default_workers")
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"[maggy] default_workers must be a whole number >= 1, got {raw!r}")
    return int(raw)


def allow_local_deferral() -> bool:
    """Whether ``deferrable=True`` may run the driver on the worker machine (client mode).

    Raises:
        ValueError: the configured value is not a boolean.
    """
    given = _get("allow_local_deferral")
    raw = (given or "False").lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"[maggy] allow_local_deferral must be True or False, got {given!r}")
    return raw in ("true", "1", "yes")


def storage_options(conn_id: str | None) -> dict[str, Any]:
    """fsspec storage options for the results store from an Airflow connection, as
    ``ObjectStoragePath`` takes its credentials from one.

    An ``aws`` connection gives s3fs's options: login -> ``key``, password ->
    ``secret``, the extras ``aws_session_token`` -> ``token``, ``endpoint_url``
    (or ``service_config.s3.endpoint_url``) and ``region_name`` ->
    ``client_kwargs``. Any connection may also carry fsspec options as they are,
    in the extra ``storage_options`` (a JSON object; it wins). ``None`` or an
    empty id: ``{}`` (the store's own defaults: environment, instance identity).

    Raises:
        ValueError: the connection does not exist, or its ``storage_options``
            extra is not a JSON object (the message names the connection and the
            field, never a secret).
    """
    if not conn_id:
        return {}
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ValueError(f"results_conn_id: no Airflow connection {conn_id!r}") from None
    extra = conn.extra_dejson or {}
    options: dict[str, Any] = {}
    if (conn.conn_type or "").lower() in ("aws", "s3"):
        if conn.login:
            options["key"] = conn.login
        if conn.password:
            options["secret"] = conn.password
        if extra.get("aws_session_token"):
            options["token"] = extra["aws_session_token"]
        client: dict[str, Any] = {}
        service = extra.get("service_config")
        endpoint = extra.get("endpoint_url") or (
            ((service or {}).get("s3") or {}).get("endpoint_url")
            if isinstance(service, dict)
            else None
        )
        if endpoint:
            client["endpoint_url"] = str(endpoint)
        if extra.get("region_name"):
            client["region_name"] = str(extra["region_name"])
        if client:
            options["client_kwargs"] = client
    given = extra.get("storage_options")
    if given is not None:
        if not isinstance(given, dict):
            raise ValueError(
                f"results_conn_id {conn_id!r}: the extra 'storage_options' must be a JSON "
                "object of fsspec options"
            )
        options.update(given)
    return options
