"""The trigger of ``MaggyOperator(deferrable=True)``: follows an experiment in Redis.

It runs in the triggerer's event loop, so it uses ``redis.asyncio`` and never
blocks. It logs a line per ended trial (from the experiment's ``progress``
stream) and fires once, when the experiment has ended and its summary is in
Redis.

Its arguments are stored in Airflow's database and shown in the triggerer's
log, so they hold no secret: the Redis connection's id and a URL without
password. The triggerer resolves the connection itself (as the Redis provider
reads it) when the trigger starts.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

TERMINAL = ("finished", "failed", "stopped")


class MaggyTrigger(BaseTrigger):
    """Waits for a maggy experiment to end.

    Args:
        experiment_id: The experiment to follow.
        redis_url: Its Redis, without password: used when ``redis_conn_id`` is
            ``None``, with the triggerer's ``MAGGY_REDIS_PASSWORD`` (or the password
            of its ``MAGGY_REDIS_URL``).
        redis_conn_id: The Airflow connection of the Redis, resolved in the triggerer.
        driver_log: Where the driver's output is (``host:path``), told to the task
            when the trigger fires.
        poll_interval: Seconds between looks at Redis.
        follower_lease: When set, every look also says that the task still follows
            the experiment (``maggy_core.channel.touch_follower``), for this lease.
        start_timeout: Seconds from ``submitted_at`` within which the experiment
            must appear in Redis; otherwise the trigger fires an error.
        submitted_at: Unix time of the submission.
        summary_grace: Seconds to wait, after the experiment ended, for its
            summary (written after ``result.json``).
    """

    def __init__(
        self,
        experiment_id: str,
        redis_url: str | None,
        redis_conn_id: str | None = None,
        poll_interval: float = 5.0,
        start_timeout: float = 600.0,
        submitted_at: float | None = None,
        summary_grace: float = 120.0,
        follower_lease: float | None = None,
        driver_log: str | None = None,
    ) -> None:
        super().__init__()
        from maggy_core.redis_server import without_password

        self.experiment_id = experiment_id
        # Whatever the caller gave, no password is kept (nor serialized).
        self.redis_url = without_password(redis_url)[0] if redis_url else None
        self.redis_conn_id = redis_conn_id
        self.driver_log = driver_log
        self.poll_interval = poll_interval
        self.start_timeout = start_timeout
        self.submitted_at = submitted_at if submitted_at is not None else time.time()
        self.summary_grace = summary_grace
        self.follower_lease = follower_lease

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "experiment_id": self.experiment_id,
                "redis_url": self.redis_url,
                "redis_conn_id": self.redis_conn_id,
                "poll_interval": self.poll_interval,
                "start_timeout": self.start_timeout,
                "submitted_at": self.submitted_at,
                "summary_grace": self.summary_grace,
                "follower_lease": self.follower_lease,
                "driver_log": self.driver_log,
            },
        )

    def _target(self) -> tuple[str, str | None]:
        """The Redis URL (without password) and its password, found in the triggerer."""
        from maggy_core.redis_server import DEFAULT_URL, ENV_VAR, password, without_password

        if self.redis_conn_id:
            from maggy_airflow.operators.hooks import redis_target

            target = redis_target(self.redis_conn_id)
            if target is None:
                raise LookupError(
                    f"the Redis connection {self.redis_conn_id!r} does not exist in the triggerer"
                )
            return target.url, target.password
        own = os.environ.get(ENV_VAR)
        return self.redis_url or DEFAULT_URL, password(without_password(own)[1] if own else None)

    async def _client(self) -> Any:
        """A ``redis.asyncio`` client; the connection is read in a thread, as the
        triggerer wants for synchronous Airflow calls."""
        import redis.asyncio as aioredis
        from asgiref.sync import sync_to_async

        url, secret = await sync_to_async(self._target)()
        return aioredis.from_url(url, password=secret)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from maggy_core.channel import read_meta_async, read_summary_async

        try:
            client = await self._client()
        except (LookupError, ValueError) as exc:
            yield TriggerEvent(self._event("error", str(exc)))
            return
        last = "0-0"
        ended_at: float | None = None
        try:
            while True:
                last = await self._log_progress(client, last)
                meta = await read_meta_async(client, self.experiment_id)
                state = meta.get("state")
                if not meta:
                    if time.time() - self.submitted_at > self.start_timeout:
                        yield TriggerEvent(
                            self._event(
                                "error",
                                f"the experiment did not start within "
                                f"{self.start_timeout:.0f} s of its submission",
                            )
                        )
                        return
                elif state in TERMINAL:
                    summary = await read_summary_async(client, self.experiment_id)
                    if summary is not None:
                        yield TriggerEvent(
                            {
                                "status": state,
                                "experiment_id": self.experiment_id,
                                "summary": summary,
                                "driver_log": self.driver_log,
                            }
                        )
                        return
                    ended_at = ended_at or time.time()
                    if time.time() - ended_at > self.summary_grace:
                        yield TriggerEvent(
                            self._event(state, meta.get("reason") or "no summary was written")
                        )
                        return
                await self._touch_follower(client)
                await asyncio.sleep(self.poll_interval)
        finally:
            await client.aclose()

    async def _touch_follower(self, client: Any) -> None:
        """Say the task still follows the experiment (see ``follower_lease``)."""
        if self.follower_lease is None:
            return
        from maggy_core.channel import touch_follower_async

        try:
            await touch_follower_async(client, self.experiment_id, "trigger", self.follower_lease)
        except Exception as exc:  # Redis away for a moment: the lease allows it
            self.log.warning("could not refresh the follower lease: %s", exc)

    def _event(self, status: str, reason: str) -> dict[str, Any]:
        return {
            "status": status,
            "experiment_id": self.experiment_id,
            "reason": reason,
            "summary": None,
            "driver_log": self.driver_log,
        }

    async def _log_progress(self, client: Any, last: str) -> str:
        """Log the trials that ended since ``last``; return the new position."""
        from maggy_core.channel import read_progress_async

        entries, last = await read_progress_async(client, self.experiment_id, last)
        for entry in entries:
            self.log.info("%s", entry["line"])
        return last

    async def on_kill(self) -> None:
        """The user killed the deferred task: ask the experiment to stop. Its
        driver then cancels the Spark job, and the trials that ended are kept."""
        from maggy_core.channel import request_experiment_stop_async

        client = await self._client()
        try:
            reason = "the Airflow task was killed"
            if await request_experiment_stop_async(client, self.experiment_id, reason):
                self.log.info("asked experiment %s to stop", self.experiment_id)
        finally:
            await client.aclose()
