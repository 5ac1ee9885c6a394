"""MaggyOperator's pieces without a running Airflow: spec building, ids,
connections, the trigger (against the real Redis) and its serialisation."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
from airflow.sdk.exceptions import AirflowFailException

from maggy_airflow.operators import MaggyOperator, MaggyTrigger, experiment_id_for
from maggy_airflow.operators.hooks import (
    MaggySparkSubmitHook,
    SecretProperties,
    redis_target,
    redis_url_from_connection,
)
from maggy_core.channel import CoordinatorChannel, key_prefix
from maggy_core.spec import ExperimentSpec

pytestmark = pytest.mark.airflow

CONFIG = {
    "searchspace": {"lr": ["DOUBLE", [0.001, 0.1], "log"], "units": ["INTEGER", [8, 64]]},
    "num_trials": 5,
    "direction": "max",
    "optimization_key": "accuracy",
}


def op(**kw) -> MaggyOperator:
    kw.setdefault("task_id", "search")
    kw.setdefault("train_fn", "maggy_core.examples.digits:train")
    return MaggyOperator(**kw)


class TestBuildSpec:
    def test_config_mapping(self):
        spec = op(config=CONFIG, num_workers=3).build_spec("exp-1")
        assert spec.experiment_id == "exp-1"
        assert spec.workers == 3
        assert spec.name == "search"  # the task id when nothing names it
        assert spec.train_fn == "maggy_core.examples.digits:train"
        assert spec.searchspace.names() == ["lr", "units"]

    def test_spec_file_relative_to_the_dag_folder_then_config_overrides(self, tmp_path):
        (tmp_path / "s.yaml").write_text(
            "name: from-file\nsearchspace:\n  x: [DOUBLE, [0, 1]]\nnum_trials: 9\nseed: 4\n"
        )
        spec = op(spec="s.yaml", config={"num_trials": 2}).build_spec("e", dag_folder=str(tmp_path))
        assert (spec.name, spec.num_trials, spec.seed) == ("from-file", 2, 4)

    def test_experiment_spec_object_and_name(self):
        base = ExperimentSpec.from_dict({**CONFIG, "name": "obj"}, require_train_fn=False)
        spec = op(config=base, experiment_name="renamed").build_spec("e")
        assert spec.name == "renamed" and spec.num_trials == 5

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"config": {**CONFIG, "num_trials": 0}}, "num_trials"),
            ({"config": {**CONFIG, "directon": "max"}}, "directon"),
            ({"config": {**CONFIG, "searchspace": {"lr": ["FLOAT", [0, 1]]}}}, "searchspace.lr"),
            ({"config": {**CONFIG}, "train_fn": "no colon"}, "train_fn"),
            ({"config": [1, 2]}, "config"),
        ],
    )
    def test_bad_input_fails_without_retry_and_names_the_field(self, kwargs, field):
        with pytest.raises(AirflowFailException, match=field):
            op(**kwargs).build_spec("e")

    def test_nothing_is_transformed_in_init(self):
        task = op(config={"searchspace": "{{ params.space }}"}, num_workers="{{ params.w }}")
        assert task.config == {"searchspace": "{{ params.space }}"}
        assert task.num_workers == "{{ params.w }}"
        for name in ("config", "results_dir", "spark_conf", "experiment_name", "train_fn"):
            assert name in MaggyOperator.template_fields


class TestExperimentId:
    def test_stable_valid_and_distinct(self):
        a = experiment_id_for("dag", "task", "manual__2026-11-25T04:00:00+00:00")
        assert a == experiment_id_for("dag", "task", "manual__2026-11-25T04:00:00+00:00")
        ExperimentSpec.from_dict({**CONFIG, "experiment_id": a}, require_train_fn=False)
        others = {
            experiment_id_for("dag", "task", "manual__2026-11-25T04:00:00-00:00"),
            experiment_id_for("dag", "task", "manual__2026-11-25T04:00:00+00:00", 0),
            experiment_id_for("dag", "task", "manual__2026-11-25T04:00:00+00:00", 1),
            experiment_id_for("dag2", "task", "manual__2026-11-25T04:00:00+00:00"),
        }
        assert a not in others and len(others) == 4

    def test_long_ids_stay_within_the_limit(self):
        long = experiment_id_for("d" * 200, "t" * 200, "r" * 200)
        assert len(long) <= 100
        ExperimentSpec.from_dict({**CONFIG, "experiment_id": long}, require_train_fn=False)


class TestConnections:
    def test_redis_url_from_a_connection(self, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_MAGGY_REDIS",
            json.dumps(
                {
                    "conn_type": "redis",
                    "host": "cache.internal",
                    "port": 6380,
                    "password": "s3cret/pw",
                    "extra": {"db": 3},
                }
            ),
        )
        assert (
            redis_url_from_connection("maggy_redis") == "redis://:s3cret%2Fpw@cache.internal:6380/3"
        )

    def test_tls_connection(self, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_MAGGY_TLS",
            json.dumps(
                {
                    "conn_type": "redis",
                    "host": "h",
                    "login": "u",
                    "password": "secret",
                    "extra": {"ssl": True, "ssl_cert_reqs": "required"},
                }
            ),
        )
        assert (
            redis_url_from_connection("maggy_tls")
            == "rediss://u:secret@h:6379/0?ssl_cert_reqs=required"
        )

    @staticmethod
    def _conn(monkeypatch, name, **fields):
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{name.upper()}", json.dumps({"conn_type": "redis", **fields})
        )
        return name

    def test_target_keeps_the_password_out_of_the_url(self, monkeypatch):
        name = self._conn(
            monkeypatch, "maggy_pw", host="h", port=6390, login="u", password="p@ss/:w", extra={}
        )
        target = redis_target(name)
        assert target.url == "redis://u@h:6390/0"
        assert target.password == "p@ss/:w"
        assert "p@ss" not in repr(target)
        assert target.full_url() == "redis://u:p%40ss%2F%3Aw@h:6390/0"
        import redis

        kwargs = redis.connection.parse_url(target.full_url())
        assert (kwargs["username"], kwargs["password"]) == ("u", "p@ss/:w")

    def test_tls_extras_are_honoured(self, monkeypatch):
        name = self._conn(
            monkeypatch,
            "maggy_tls_all",
            host="h",
            extra={
                "ssl": True,
                "ssl_cert_reqs": "optional",
                "ssl_ca_certs": "/etc/ca.pem",
                "ssl_check_hostname": False,
                "db": 2,
            },
        )
        url = redis_target(name).url
        import redis

        kwargs = redis.connection.parse_url(url)
        assert url.startswith("rediss://h:6379/2?")
        assert kwargs["connection_class"] is redis.connection.SSLConnection
        assert kwargs["ssl_cert_reqs"] == "optional"
        assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        assert kwargs["ssl_check_hostname"] is False
        assert kwargs["db"] == 2

    def test_without_ssl_the_tls_extras_are_not_used(self, monkeypatch):
        name = self._conn(monkeypatch, "maggy_plain", host="h", extra={"ssl_ca_certs": "/ca"})
        assert redis_target(name).url == "redis://h:6379/0"

    @pytest.mark.parametrize(
        ("extra", "named", "allowed"),
        [
            ({"cluster": True}, "'cluster'", "supported extras: db, ssl"),
            ({"startup_nodes": "a:1,b:2"}, "'startup_nodes'", "supported extras"),
            ({"ssl": "false"}, "'ssl'", "JSON boolean"),
            ({"ssl": True, "ssl_check_hostname": "no"}, "'ssl_check_hostname'", "JSON boolean"),
            ({"ssl": True, "ssl_cert_reqs": "require"}, "'ssl_cert_reqs'", "required, optional"),
            ({"db": "three"}, "'db'", "whole number"),
        ],
    )
    def test_extras_it_cannot_honour_are_refused_by_name(self, monkeypatch, extra, named, allowed):
        name = self._conn(monkeypatch, "maggy_bad", host="h", extra=extra)
        with pytest.raises(ValueError, match=named) as caught:
            redis_target(name)
        assert allowed in str(caught.value)
        with pytest.raises(AirflowFailException, match=named):
            op(config=CONFIG, redis_conn_id=name)._resolve_redis()

    def test_missing_connection_means_the_engine_default(self):
        assert redis_url_from_connection("no_such_connection_" + uuid.uuid4().hex[:6]) is None
        assert redis_url_from_connection(None) is None

    def test_spark_master_falls_back_to_local_not_yarn(self):
        hook = MaggySparkSubmitHook(default_master="local[3,3]", conn_id="no_such_spark_conn")
        assert hook.master == "local[3,3]"

    def test_spark_master_from_the_connection(self, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_MAGGY_SPARK", json.dumps({"conn_type": "spark", "host": "local[5]"})
        )
        hook = MaggySparkSubmitHook(default_master="local[1]", conn_id="maggy_spark")
        assert hook.master == "local[5]"


class TestSecretSubmission:
    """The Redis password reaches spark-submit's environment and a private
    properties file, never its command line."""

    SECRET = "pw:=with spaces\\and#more!"

    def _operator(self, monkeypatch, tmp_path, **kw):
        name = TestConnections._conn(
            monkeypatch, "maggy_secret", host="127.0.0.1", port=6399, password=self.SECRET
        )
        monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
        operator = op(config=CONFIG, redis_conn_id=name, follower_lease=None, **kw)
        operator._resolve_redis()
        return operator

    def test_not_on_the_command_line_but_in_a_private_file(self, monkeypatch, tmp_path):
        (tmp_path / "spark-defaults.conf").write_text("spark.ui.port 4999\n")
        operator = self._operator(monkeypatch, tmp_path)
        spec = ExperimentSpec.from_dict({**CONFIG, "train_fn": "m:f", "name": "n"})
        hook = operator._make_hook(spec, "/tmp/results")
        command = hook.build_command("app.py")
        assert not any(self.SECRET in part for part in command)
        assert hook._env["MAGGY_REDIS_PASSWORD"] == self.SECRET
        assert hook._env["MAGGY_REDIS_URL"] == "redis://127.0.0.1:6399/0"
        path = command[command.index("--properties-file") + 1]
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
        props = _java_properties(path)
        assert props["spark.ui.port"] == "4999"  # the defaults spark-submit would have read
        for key in ("yarn.appMasterEnv", "kubernetes.driverEnv"):
            assert props[f"spark.{key}.MAGGY_REDIS_PASSWORD"] == self.SECRET
        # The executors get theirs in the launch record (their own Redis user).
        assert "spark.executorEnv.MAGGY_REDIS_PASSWORD" not in props
        operator._remove_secret_file()
        assert not os.path.exists(os.path.dirname(path))

    def test_on_yarn_the_env_vars_on_the_command_line_hold_no_password(self, monkeypatch, tmp_path):
        monkeypatch.setenv(
            "AIRFLOW_CONN_MAGGY_YARN",
            json.dumps({"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": "cluster"}}),
        )
        operator = self._operator(monkeypatch, tmp_path, spark_conn_id="maggy_yarn")
        spec = ExperimentSpec.from_dict({**CONFIG, "train_fn": "m:f", "name": "n"})
        hook = operator._make_hook(spec, "/tmp/results")
        command = " ".join(hook.build_command("app.py"))
        assert "spark.yarn.appMasterEnv.MAGGY_REDIS_URL=redis://127.0.0.1:6399/0" in command
        assert self.SECRET not in command and "MAGGY_REDIS_PASSWORD" not in command
        operator._remove_secret_file()

    def test_a_kubernetes_secret_named_in_spark_conf_replaces_the_env(self, monkeypatch, tmp_path):
        ref = "spark.kubernetes.{}.secretKeyRef.MAGGY_REDIS_PASSWORD"
        operator = self._operator(
            monkeypatch,
            tmp_path,
            spark_conf={ref.format("driver"): "redis:pw", ref.format("executor"): "redis:pw"},
        )
        spec = ExperimentSpec.from_dict({**CONFIG, "train_fn": "m:f", "name": "n"})
        command = operator._make_hook(spec, "/tmp/results").build_command("app.py")
        props = _java_properties(command[command.index("--properties-file") + 1])
        assert set(props) == {"spark.yarn.appMasterEnv.MAGGY_REDIS_PASSWORD"}
        operator._remove_secret_file()

    def test_the_users_properties_file_is_kept(self, monkeypatch, tmp_path):
        user = tmp_path / "mine.properties"
        user.write_text("spark.executor.memory=3g\n")
        operator = self._operator(
            monkeypatch, tmp_path, spark_submit_kwargs={"properties_file": str(user)}
        )
        spec = ExperimentSpec.from_dict({**CONFIG, "train_fn": "m:f", "name": "n"})
        command = operator._make_hook(spec, "/tmp/results").build_command("app.py")
        path = command[command.index("--properties-file") + 1]
        assert path != str(user)
        assert _java_properties(path)["spark.executor.memory"] == "3g"
        operator._remove_secret_file()

    def test_escaping_round_trips_through_java_properties(self, tmp_path):
        values = {"spark.a": "x=y:z #!\\ end", "spark.b": "line\nbreak\ttab", "spark.c": "ünï"}
        props = SecretProperties(values)
        try:
            assert _java_properties(props.path) == values
        finally:
            props.remove()


def _java_properties(path: str) -> dict[str, str]:
    """The file as ``java.util.Properties`` reads it (what spark-submit does)."""
    import subprocess

    code = (
        "import java.util.*; import java.io.*; public class P { public static void main(String[] a)"
        " throws Exception { Properties p = new Properties(); p.load(new InputStreamReader("
        'new FileInputStream(a[0]), "UTF-8")); for (String k : p.stringPropertyNames())'
        ' System.out.println(k + "\\t" + Base64.getEncoder().encodeToString('
        'p.getProperty(k).getBytes("UTF-8"))); } }'
    )
    import base64
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "P.java")
        with open(source, "w") as f:
            f.write(code)
        out = subprocess.run(
            ["java", source, path], capture_output=True, text=True, timeout=120, check=True
        )
    return {
        k: base64.b64decode(v).decode()
        for k, v in (line.split("\t") for line in out.stdout.splitlines())
    }


class TestDeferrable:
    def _hook(self, operator):
        spec = ExperimentSpec.from_dict({**CONFIG, "train_fn": "m:f", "name": "n"})
        return operator._make_hook(spec, "/tmp/results")

    def test_client_mode_is_refused_saying_why_and_what_to_set(self, monkeypatch):
        monkeypatch.delenv("AIRFLOW__MAGGY__ALLOW_LOCAL_DEFERRAL", raising=False)
        operator = op(config=CONFIG, deferrable=True)
        with pytest.raises(AirflowFailException) as caught:
            operator._check_deferrable(self._hook(operator))
        message = str(caught.value)
        for part in ("client mode", "slot", "deploy-mode", "cluster", "allow_local_deferral"):
            assert part in message

    def test_cluster_mode_and_local_deferral_are_accepted(self, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_MAGGY_YARN",
            json.dumps({"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": "cluster"}}),
        )
        cluster = op(config=CONFIG, deferrable=True, spark_conn_id="maggy_yarn")
        cluster._check_deferrable(self._hook(cluster))
        monkeypatch.setenv("AIRFLOW__MAGGY__ALLOW_LOCAL_DEFERRAL", "True")
        local = op(config=CONFIG, deferrable=True)
        local._check_deferrable(self._hook(local))
        monkeypatch.setenv("AIRFLOW__MAGGY__ALLOW_LOCAL_DEFERRAL", "sometimes")
        with pytest.raises(AirflowFailException, match="allow_local_deferral must be True or"):
            local._check_deferrable(self._hook(local))

    def test_a_connection_missing_in_the_triggerer_fires_an_error_naming_it(self):
        missing = "no_such_redis_" + uuid.uuid4().hex[:6]
        trigger = MaggyTrigger("e", "redis://h:1/0", redis_conn_id=missing)
        event = TestTrigger()._first_event(trigger, timeout=20)
        assert event.payload["status"] == "error" and missing in event.payload["reason"]

    def test_a_deferral_that_times_out_asks_the_experiment_to_stop(self, redis_url, monkeypatch):
        from types import SimpleNamespace

        from airflow.sdk.exceptions import TaskDeferralTimeout

        from maggy_core.channel import connect, key_prefix

        ti = SimpleNamespace(
            dag_id="d", task_id="t", run_id=f"r-{uuid.uuid4().hex[:6]}", map_index=-1
        )
        experiment_id = experiment_id_for(ti.dag_id, ti.task_id, ti.run_id, ti.map_index)
        client = connect(redis_url)
        meta = key_prefix(experiment_id) + "meta"
        client.hset(meta, "state", "running")
        try:
            operator = op(config=CONFIG, deferrable=True)
            operator.redis_conn_id = None
            monkeypatch.setenv("MAGGY_REDIS_URL", redis_url)
            with pytest.raises(TaskDeferralTimeout):
                operator.resume_execution("__fail__", {"error": "Trigger timeout"}, {"ti": ti})
            assert b"the deferred task failed" in client.hget(meta, "stop_request")
        finally:
            client.delete(meta)

    def test_the_trigger_keeps_no_password(self):
        trigger = MaggyTrigger("e", "redis://u:secret@h:1/0", redis_conn_id="c")
        _, kwargs = trigger.serialize()
        assert "secret" not in json.dumps(kwargs)
        assert kwargs["redis_url"] == "redis://u@h:1/0" and kwargs["redis_conn_id"] == "c"


class TestDriverArchive:
    """The driver JVM of spark-submit starts from the class-data archive when the
    driver runs on this machine (maggy_core/jvm_archive.py)."""

    @staticmethod
    def options(operator: MaggyOperator) -> str:
        spec = ExperimentSpec.from_dict({**CONFIG, "train_fn": "m:f", "name": "n"})
        hook = operator._make_hook(spec, "/tmp/results")
        return hook._conf.get("spark.driver.extraJavaOptions", "")

    def test_an_existing_archive_is_used(self, tmp_path, monkeypatch):
        from maggy_core.jvm_archive import DriverArchive
        from maggy_core.runner import DEFAULT_SPARK_CONF

        monkeypatch.setenv("MAGGY_JVM_CACHE", str(tmp_path))
        path = DriverArchive(DEFAULT_SPARK_CONF["spark.driver.extraJavaOptions"]).path
        path.write_bytes(b"archive")
        for deferrable in (False, True):
            opts = self.options(op(config=CONFIG, deferrable=deferrable))
            assert f"-XX:SharedArchiveFile={path}" in opts
            assert opts.startswith(DEFAULT_SPARK_CONF["spark.driver.extraJavaOptions"])

    def test_a_missing_archive_is_written_only_by_a_task_that_waits(self, tmp_path, monkeypatch):
        monkeypatch.setenv("MAGGY_JVM_CACHE", str(tmp_path))
        waiting = op(config=CONFIG)
        assert f"-XX:ArchiveClassesAtExit={tmp_path}" in self.options(waiting)
        # The JVM wrote it and exited cleanly: it is moved into place.
        waiting._archive.writing.write_bytes(b"archive")
        waiting._archive.jvm_exited(cleanly=True)
        assert [p.suffix for p in tmp_path.iterdir()] == [".jsa"]

        tmp = tmp_path / "other"
        monkeypatch.setenv("MAGGY_JVM_CACHE", str(tmp))
        assert "-XX:" not in self.options(op(config=CONFIG, deferrable=True)).replace(
            "-XX:TieredStopAtLevel=1", ""
        )
        killed = op(config=CONFIG)
        self.options(killed)
        killed._archive.writing.write_bytes(b"half an arch")
        killed._archive.jvm_exited(cleanly=False)
        assert list(tmp.iterdir()) == [], "a killed JVM's archive was kept"

    def test_not_in_cluster_mode_nor_with_the_users_java_options(self, tmp_path, monkeypatch):
        monkeypatch.setenv("MAGGY_JVM_CACHE", str(tmp_path))
        monkeypatch.setenv(
            "AIRFLOW_CONN_MAGGY_CLUSTER",
            json.dumps({"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": "cluster"}}),
        )
        assert "Archive" not in self.options(op(config=CONFIG, spark_conn_id="maggy_cluster"))
        user = op(config=CONFIG, spark_conf={"spark.driver.extraJavaOptions": "-Xss4m"})
        assert self.options(user) == "-Xss4m"


class TestFollowerLease:
    def test_bad_leases_fail_the_task_naming_the_field(self):
        for lease in (0, -5, "10", True):
            with pytest.raises(AirflowFailException, match="follower_lease"):
                op(config=CONFIG, follower_lease=lease)._check_lease()
        with pytest.raises(AirflowFailException, match="poll_interval"):
            op(config=CONFIG, deferrable=True, poll_interval=5, follower_lease=10)._check_lease()
        op(config=CONFIG, follower_lease=None)._check_lease()

    def test_the_task_holds_the_lease_while_it_follows(self, redis_url, experiment_id):
        import time

        operator = op(config=CONFIG, follower_lease=0.4)
        operator._redis_url = redis_url
        channel = CoordinatorChannel(redis_url, experiment_id)
        try:
            with operator._following(experiment_id):
                assert channel.follower_present()  # said at once
                time.sleep(1.0)  # more than two leases: kept alive by the task
                assert channel.follower_present()
            time.sleep(1.3)  # the key lives a whole number of seconds, at least one
            assert not channel.follower_present()  # the task stopped saying it
        finally:
            channel.client.delete(channel.key("follower"))

    def test_the_driver_is_told_the_lease_only_with_a_reachable_redis(self, redis_url):
        spec = ExperimentSpec.from_dict({**CONFIG, "train_fn": "m:f", "name": "n"})
        operator = op(config=CONFIG, follower_lease=120)
        operator._redis_url = redis_url
        args = operator._make_hook(spec, "/tmp/results")._application_args
        assert args[args.index("--follower-lease") + 1] == "120"
        operator._redis_url = None
        assert "--follower-lease" not in operator._make_hook(spec, "/tmp/results")._application_args


class TestTrigger:
    def test_serialize_round_trip(self):
        trigger = MaggyTrigger(
            "exp-9",
            "redis://127.0.0.1:6379/0",
            poll_interval=0.5,
            start_timeout=30,
            submitted_at=123.0,
        )
        path, kwargs = trigger.serialize()
        assert path == "maggy_airflow.operators.triggers.MaggyTrigger"
        json.dumps(kwargs)  # trigger arguments must be JSON
        again = MaggyTrigger(**kwargs)
        assert again.serialize() == (path, kwargs)

    def _first_event(self, trigger, timeout=20.0):
        async def first():
            async for event in trigger.run():
                return event
            return None

        return asyncio.run(asyncio.wait_for(first(), timeout))

    def test_fires_with_the_summary_when_the_experiment_ends(self, redis_url, experiment_id):
        channel = CoordinatorChannel(redis_url, experiment_id)
        channel.open(1, {"state": "running"})
        channel.publish_progress({"line": "trial t0000 finished accuracy=0.9"})
        summary = {"experiment_id": experiment_id, "status": "finished", "best": None}
        channel.set_meta(state="finished", summary=summary)
        try:
            event = self._first_event(MaggyTrigger(experiment_id, redis_url, poll_interval=0.05))
        finally:
            channel.finish(expire_seconds=5)
        assert event.payload == {
            "status": "finished",
            "experiment_id": experiment_id,
            "summary": summary,
            "driver_log": None,
        }

    def test_fires_an_error_when_the_experiment_never_starts(self, redis_url, experiment_id):
        trigger = MaggyTrigger(experiment_id, redis_url, poll_interval=0.05, start_timeout=0.2)
        event = self._first_event(trigger)
        assert event.payload["status"] == "error" and "did not start" in event.payload["reason"]
        assert event.payload["summary"] is None

    def test_waits_while_running_then_on_kill_asks_the_experiment_to_stop(
        self, redis_url, experiment_id
    ):
        channel = CoordinatorChannel(redis_url, experiment_id)
        channel.open(1, {"state": "running"})
        trigger = MaggyTrigger(experiment_id, redis_url, poll_interval=0.05)
        try:
            with pytest.raises(TimeoutError):
                self._first_event(trigger, timeout=0.5)  # still running: no event
            asyncio.run(trigger.on_kill())
            assert channel.stop_request() == "the Airflow task was killed"
        finally:
            channel.finish(expire_seconds=5)
        assert key_prefix(experiment_id) in channel.key("meta")

    def test_while_it_waits_the_trigger_holds_the_follower_lease(self, redis_url, experiment_id):
        channel = CoordinatorChannel(redis_url, experiment_id)
        channel.open(1, {"state": "running"})
        trigger = MaggyTrigger(experiment_id, redis_url, poll_interval=0.05, follower_lease=1.0)
        try:
            assert not channel.follower_present()
            with pytest.raises(TimeoutError):
                self._first_event(trigger, timeout=0.5)
            assert channel.follower_present()
            ttl = channel.client.pttl(channel.key("follower"))
            assert 0 < ttl <= 1000
        finally:
            channel.finish(expire_seconds=5)
            channel.client.delete(channel.key("follower"))

    def test_execute_complete_returns_the_summary_or_raises(self):
        task = op(config=CONFIG)
        summary = {
            "experiment_id": "e",
            "status": "finished",
            "num_trials": 5,
            "counts": {},
            "optimization_key": "accuracy",
            "best": {"trial_id": "t0001", "params": {"lr": 0.01}, "metric": 0.9},
        }
        assert task.execute_complete({}, {"status": "finished", "summary": summary}) == summary
        with pytest.raises(Exception, match="failed: too many"):
            task.execute_complete(
                {},
                {
                    "status": "failed",
                    "summary": {**summary, "status": "failed", "reason": "too many"},
                },
            )
        with pytest.raises(Exception, match="did not start"):
            task.execute_complete(
                {},
                {
                    "status": "error",
                    "experiment_id": "e",
                    "reason": "did not start",
                    "summary": None,
                },
            )
