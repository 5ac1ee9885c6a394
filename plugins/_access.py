"""Who may see and steer which experiment: Airflow's auth manager decides, per DAG.

- Reading an experiment needs read access (``GET``) to the DAG that started it;
  stopping it (or one of its trials) needs edit access (``PUT``), the permission
  that pausing or clearing the DAG needs in Airflow's own UI.
- An experiment started outside Airflow (``maggy run``, ``lagom``: no ``dag_id``
  in its result) belongs to no DAG: only administrators see or stop it, unless
  ``[maggy] outside_airflow_readers`` is ``all`` (every signed-in user may read
  it; stopping stays with administrators). An administrator here is a user the
  auth manager lets edit Airflow's connections (``is_authorized_connection`` with
  ``PUT``): the Admin and Op roles of the simple and of the FAB auth manager.
  Not "may change the configuration": FAB gives that permission to no role
  (Airflow's configuration is read-only in its UI), so nobody would be one.
- A POST authenticated by the UI's session cookie carries a CSRF token: a value
  signed with ``[api] secret_key`` that names the user, sent both in a cookie and
  in the ``X-Maggy-CSRF`` header (double submit). Another site can make the
  browser send the cookie, but can neither read it nor set the header. A POST
  with an ``Authorization: Bearer`` header needs no token: a browser never adds
  that header by itself.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import Request

    from maggy_airflow.plugins._data import Origin

CSRF_COOKIE = "maggy_csrf"
CSRF_HEADER = "X-Maggy-CSRF"
#: How long a CSRF token is accepted (a page left open longer is reloaded).
CSRF_MAX_AGE = 12 * 3600
_SALT = "maggy-airflow-csrf"


def user_name(user: Any) -> str:
    """The name Airflow knows the user by (``BaseUser.get_name``)."""
    getter = getattr(user, "get_name", None)
    return str(getter() if callable(getter) else user)


def outside_airflow_readers() -> str:
    """``admin`` (default) or ``all``: who reads experiments started outside Airflow.

    Raises:
        ValueError: the setting has another value (named, with the allowed ones).
    """
    from airflow.configuration import conf

    value = (conf.get("maggy", "outside_airflow_readers", fallback="admin") or "admin").lower()
    if value not in ("admin", "all"):
        raise ValueError(f"[maggy] outside_airflow_readers must be 'admin' or 'all', got {value!r}")
    return value


class Access:
    """The auth manager's answers for one user (one request).

    Args:
        user: The user ``get_user`` found.
        manager: The auth manager (default: Airflow's ``get_auth_manager()``).
    """

    def __init__(self, user: Any, manager: Any = None) -> None:
        if manager is None:
            from airflow.api_fastapi.app import get_auth_manager

            manager = get_auth_manager()
        self.user = user
        self.manager = manager
        self.name = user_name(user)
        self._admin: bool | None = None

    def is_admin(self) -> bool:
        if self._admin is None:
            self._admin = bool(self.manager.is_authorized_connection(method="PUT", user=self.user))
        return self._admin

    def _dag(self, method: str, dag_id: str) -> bool:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

        return bool(
            self.manager.is_authorized_dag(
                method=method, user=self.user, details=DagDetails(id=dag_id)
            )
        )

    def can_read(self, where: Origin | None) -> bool:
        """Whether the user may see an experiment of this origin."""
        if where is None:
            return outside_airflow_readers() == "all" or self.is_admin()
        return self._dag("GET", where.dag_id)

    def can_edit(self, where: Origin | None) -> bool:
        """Whether the user may stop an experiment of this origin, or its trials."""
        if where is None:
            return self.is_admin()
        return self._dag("PUT", where.dag_id)

    def readable_dag_ids(self, dag_ids: set[str]) -> set[str]:
        """Those of ``dag_ids`` whose experiments the user may see: the auth
        manager's batch filter (what its ``get_authorized_dag_ids`` applies to the
        DAGs of the metadata database), given the DAGs the experiments name, so an
        experiment of a DAG that was deleted since is still judged by its id."""
        if not dag_ids:
            return set()
        return set(
            self.manager.filter_authorized_dag_ids(dag_ids=dag_ids, user=self.user, method="GET")
        )


# ---------------------------------------------------------------- CSRF


def _serializer() -> Any:
    from airflow.configuration import conf
    from itsdangerous import URLSafeTimedSerializer

    secret = conf.get("api", "secret_key", fallback="") or ""
    if not secret:
        raise RuntimeError("[api] secret_key is not set: the stop buttons need it for CSRF")
    return URLSafeTimedSerializer(secret, salt=_SALT)


def csrf_token(name: str) -> str:
    """A new CSRF token for the user ``name``."""
    return str(_serializer().dumps(name))


def csrf_problem(request: Request, name: str) -> str | None:
    """Why this POST is refused for lack of CSRF protection, or ``None`` when it may go on."""
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return None
    from itsdangerous import BadSignature

    header = request.headers.get(CSRF_HEADER, "")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not header or not cookie:
        return f"missing CSRF token: the {CSRF_HEADER} header and the {CSRF_COOKIE} cookie"
    if not hmac.compare_digest(header, cookie):
        return f"the {CSRF_HEADER} header does not match the {CSRF_COOKIE} cookie"
    try:
        owner = _serializer().loads(header, max_age=CSRF_MAX_AGE)
    except BadSignature:
        return "the CSRF token is not valid or has expired: reload the page"
    if not hmac.compare_digest(str(owner), name):
        return "the CSRF token belongs to another user: reload the page"
    return None
