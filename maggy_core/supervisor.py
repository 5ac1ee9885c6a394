"""The supervisor: what comes from outside the trial loop.

Stop requests (the whole experiment, or one trial), the follower lease, and Redis
itself: an outage (how long the coordinator rides it out) and a Redis that
restarted and lost the experiment's keys. It reads through the coordinator's
channel and answers with decisions; the coordinator acts on them. Owned by the
coordinator's thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from maggy_core.channel import CoordinatorChannel
from maggy_core.exceptions import MessageError

log = logging.getLogger("maggy")

#: Default bound on how long the coordinator waits for an unreachable Redis.
OUTAGE_LIMIT = 120.0


@dataclass
class Supervisor:
    """Watches stop requests, the follower lease and Redis for the coordinator.

    Args:
        channel: The coordinator's channel.
        epoch: The coordinator's epoch (``meta`` without it: Redis lost the keys).
        follower_lease: Stop once no follower touched its key for this many
            seconds; ``None``: no lease.
        outage_limit: Fail once Redis has been unreachable this long.
        now: The clock reading (``time.monotonic``) at the start.
    """

    channel: CoordinatorChannel
    epoch: int
    follower_lease: float | None = None
    outage_limit: float = OUTAGE_LIMIT
    now: float = 0.0
    _follower_seen: float = field(init=False)
    _outage_since: float | None = field(default=None, init=False)
    _malformed: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._follower_seen = self.now

    # ------------------------------------------------------------ Redis

    def redis_lost_keys(self) -> bool:
        """Whether Redis lost the experiment's keys (a restart without persistence)."""
        return self.channel.epoch() != self.epoch

    def unreachable(self, exc: Exception, now: float) -> str | None:
        """Redis did not answer. Returns why the experiment must fail once the
        outage has lasted longer than ``outage_limit``, else None (keep trying)."""
        if self._outage_since is None:
            self._outage_since = now
            log.warning("Redis unreachable (%s); retrying for %.0f s", exc, self.outage_limit)
        if now - self._outage_since > self.outage_limit:
            return f"Redis was unreachable for more than {self.outage_limit:.0f} s: {exc}"
        return None

    def reachable(self, now: float) -> float | None:
        """Redis answered. Returns how long it had been away, if it had."""
        since, self._outage_since = self._outage_since, None
        if since is None:
            return None
        # Nobody could touch the follower key meanwhile either.
        self._follower_seen = max(self._follower_seen, now)
        return now - since

    # ------------------------------------------------------------ requests

    def experiment_stop(self, now: float) -> str | None:
        """Why the experiment must stop now (someone asked, or the follower is
        gone), or None."""
        requested = self.channel.stop_request()
        if requested is not None:
            return f"stop requested: {requested}"
        if self.follower_lease is None:
            return None
        # Measured on this clock from the last time the key was seen, so a Redis
        # that restarted (and lost the key) gives the follower a whole lease to
        # touch it again.
        if self.channel.follower_present():
            self._follower_seen = now
            return None
        silent = now - self._follower_seen
        if silent <= self.follower_lease:
            return None
        return (
            f"no word from the Airflow task following the experiment for {silent:.0f} s "
            f"(follower_lease {self.follower_lease:g} s): it is gone, so the "
            "experiment stops itself"
        )

    def trial_stops(self) -> list[dict[str, Any]]:
        """The valid single-trial stop requests since the last call; a malformed
        one is dropped (logged once per kind of problem)."""
        out = []
        for msg in self.channel.trial_stop_requests():
            if isinstance(msg, MessageError):
                self.malformed("request", msg)
            else:
                out.append(msg)
        return out

    def malformed(self, where: str, exc: MessageError) -> None:
        """Log a malformed message once per kind of problem."""
        kind = f"{where}: {str(exc).split(':', 1)[0]}"
        if kind not in self._malformed:
            self._malformed.add(kind)
            log.warning(
                "dropped a malformed %s on the channel (logged once per kind): %s", where, exc
            )
