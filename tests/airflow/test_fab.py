"""Per-DAG access with the FAB auth manager, on a real api-server.

``apache-airflow-providers-fab`` gives Airflow per-DAG permissions (a role may
read DAG A and nothing else). One api-server for the module, with FAB as its auth
manager: an administrator and a user whose only permission is ``can_read`` on
``DAG:dag_a``; the results folder holds an experiment of ``dag_a``, one of
``dag_b`` and one started outside Airflow, written by the engine's own code.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from airflow_server import AirflowServer
from test_plugin import write_dag_experiments

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

READER = "reader_a"
READER_ROLE = "dag_a_reader"


@pytest.fixture(scope="module")
def server(tmp_path_factory, redis_url) -> Iterator[AirflowServer]:
    home = tmp_path_factory.mktemp("fab-airflow")
    results = home / "results"
    results.mkdir()
    write_dag_experiments(results)
    dags = home / "dags"
    dags.mkdir()
    with AirflowServer(
        home,
        dags,
        results,
        redis_url,
        users={READER: READER_ROLE},
        auth_manager="fab",
        fab_roles={READER_ROLE: [("can_read", "DAG:dag_a")]},
        components=("api-server",),
    ) as running:
        yield running


def client(server: AirflowServer, user: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.token(user)}"} if user else {}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=30.0)


def listed(who: httpx.Client) -> list[str]:
    reply = who.get("/maggy/api/experiments")
    assert reply.status_code == 200, reply.text[:500]
    return sorted(e["experiment_id"] for e in reply.json()["experiments"])


def test_the_users_are_fabs_with_their_roles(server):
    with client(server, "admin") as admin, client(server, READER) as reader:
        reply = admin.get(f"/auth/fab/v1/users/{READER}")
        assert reply.status_code == 200, reply.text[:500]
        assert [r["name"] for r in reply.json()["roles"]] == [READER_ROLE]
        assert reader.get(f"/auth/fab/v1/users/{READER}").status_code == 403


def test_a_user_allowed_dag_a_only_sees_a_and_gets_403_for_b(server):
    with client(server, READER) as reader, client(server, "admin") as admin:
        assert listed(reader) == ["exp-a"]
        assert listed(admin) == ["exp-a", "exp-b", "exp-cli"]
        page = reader.get("/maggy/experiments")
        assert page.status_code == 200 and "exp-a" in page.text and "exp-b" not in page.text
        for path in (
            "/maggy/experiments/{}",
            "/maggy/api/experiments/{}",
            "/maggy/experiments/{}/trials/t0000",
        ):
            assert reader.get(path.format("exp-a")).status_code == 200, path
            refused = reader.get(path.format("exp-b"))
            assert refused.status_code == 403, (path, refused.status_code)
            assert "dag_b" in refused.text
            assert admin.get(path.format("exp-b")).status_code == 200, path
        # Started outside Airflow: administrators only.
        assert reader.get("/maggy/experiments/exp-cli").status_code == 403
        assert admin.get("/maggy/experiments/exp-cli").status_code == 200


def test_the_api_docs_are_refused_without_a_login(server):
    with client(server, None) as anonymous:
        for path in ("/maggy/docs", "/maggy/redoc", "/maggy/openapi.json"):
            reply = anonymous.get(path, follow_redirects=False)
            assert reply.status_code in (401, 403, 404), (path, reply.status_code)
            assert "swagger" not in reply.text.lower() and '"openapi"' not in reply.text
        assert anonymous.get("/maggy/api/experiments").status_code == 401
