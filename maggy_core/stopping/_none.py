"""The rule that never stops a trial."""

from __future__ import annotations

from typing import Any

from maggy_core.stopping._base import StoppingRule


class NoStopping(StoppingRule):
    """Lets every trial run to its end (``es_policy: none``)."""

    name = "none"

    def report(self, trial_id: str, step: int, value: float) -> bool:
        return False  # keeps nothing: no per-report cost at all

    def asks(self) -> dict[str, Any] | None:
        return None  # it never stops a trial: no report waits for a verdict

    def decide(self, step: int, best: float, average: float) -> bool:
        return False
