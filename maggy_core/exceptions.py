"""The project's exception taxonomy.

Every error the engine raises on purpose derives from :class:`MaggyError`, so a
caller can catch the project's errors apart from everything else. Bad input
(a spec, a search space, a message on the channel, a training function's return
value) raises a :class:`ValueError` subclass whose message names the field and
what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable


class MaggyError(Exception):
    """Root of every error raised on purpose by maggy-airflow."""


class SpecError(MaggyError, ValueError):
    """An experiment spec, search space or config is invalid.

    Holds every problem found, each as ``(field, message)``, so a user fixes a
    spec in one pass instead of one error at a time.

    Args:
        problems: ``(field, message)`` pairs; ``field`` is a dotted path such as
            ``"searchspace.lr"``.
    """

    #: Longest message kept per problem: a message that quotes a huge value is cut,
    #: so a task log never holds megabytes of someone's input.
    MAX_MESSAGE = 500
    #: Problems listed in the message (all of them stay in :attr:`problems`).
    MAX_LISTED = 50

    def __init__(self, problems: Iterable[tuple[str, str]]) -> None:
        self.problems: list[tuple[str, str]] = [
            (field, _cut(message, self.MAX_MESSAGE)) for field, message in problems
        ]
        lines = [
            f"{field}: {message}" if field else message
            for field, message in self.problems[: self.MAX_LISTED]
        ]
        if len(self.problems) > self.MAX_LISTED:
            lines.append(f"... and {len(self.problems) - self.MAX_LISTED:,} more problems")
        text = lines[0] if len(lines) == 1 else "invalid spec:\n  - " + "\n  - ".join(lines)
        super().__init__(text)

    @classmethod
    def one(cls, field: str, message: str) -> SpecError:
        """An error about a single field."""
        return cls([(field, message)])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 30]}... ({len(text):,} characters)"


class MessageError(MaggyError, ValueError):
    """A message on the Redis channel is malformed (bad JSON, version or field)."""


class TrialResultError(MaggyError, ValueError):
    """A training function returned something that is not a usable metric."""


class ExperimentFailed(MaggyError):
    """The experiment ended without finishing (too many failures, workers lost)."""


class EarlyStopException(MaggyError):
    """Raised inside a training function by ``Reporter.broadcast`` when the
    coordinator has stopped the trial. The worker records the trial as
    ``early_stopped`` with its last reported metric and takes the next trial.

    Training code should let it propagate (Keras does).
    """

    def __init__(self, metric: float | None) -> None:
        super().__init__(f"trial stopped early (last metric {metric})")
        self.metric = metric
