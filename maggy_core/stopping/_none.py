"""The rule that never stops a trial."""

from __future__ import annotations

from maggy_core.stopping._base import StoppingRule
from maggy_core.trial import FrozenTrial


class NoStopping(StoppingRule):
    """Lets every trial run to its end (``es_policy: none``)."""

    name = "none"

    def should_stop(self, trial: FrozenTrial) -> bool:
        return False
