"""The reporter holds reports back and sends them together (maggy_core.reporter):
the logic alone, against a stand-in for the worker's channel that records what it is
given and fails when told to (the channel itself is tested on a real Redis, in
tests/integration/test_verdict.py)."""

from __future__ import annotations

from typing import Any

import pytest

from maggy_core import reporter as reporter_module
from maggy_core.channel import MAX_EARLIER
from maggy_core.reporter import Reporter


class Channel:
    """Records each report; a report whose step is in ``fail`` does not reach Redis."""

    def __init__(self, fail: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.sent: list[tuple[int, list[tuple[int, float]]]] = []
        self.fail = set(fail)
        self.last_report_sent = True

    def report(
        self,
        trial: str,
        attempt: int,
        step: int,
        value: float,
        wait: float = 0.0,
        earlier: Any = None,
    ) -> bool:
        self.last_report_sent = step not in self.fail
        if self.last_report_sent:
            self.sent.append((step, list(earlier or [])))
        return False


@pytest.fixture(autouse=True)
def hold_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reporter_module, "REPORT_EVERY", 60.0)  # only asks and ends send


def test_held_reports_go_with_the_next_that_asks_and_the_rest_at_the_end() -> None:
    channel = Channel()
    reporter = Reporter(channel, asks={"every": 5})  # type: ignore[arg-type]
    for step in range(8):
        reporter.broadcast(float(step), step=step)
    reporter.flush()
    assert channel.sent == [
        (0, []),
        (5, [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]),
        (7, [(6, 6.0)]),
    ]


def test_the_points_of_a_send_that_failed_go_with_the_next() -> None:
    channel = Channel(fail={5})
    reporter = Reporter(channel, asks={"every": 5})  # type: ignore[arg-type]
    for step in range(11):
        reporter.broadcast(float(step), step=step)
    assert channel.sent == [(0, []), (10, [(s, float(s)) for s in range(1, 10)])]


def test_while_sends_fail_the_newest_points_are_kept() -> None:
    channel = Channel(fail={0})
    reporter = Reporter(channel, asks=None)  # type: ignore[arg-type]
    for step in range(MAX_EARLIER + 50):
        reporter.broadcast(float(step), step=step)
    channel.fail.clear()
    reporter.flush()
    ((last, earlier),) = channel.sent
    points = [*earlier, (last, float(last))]
    assert len(points) == MAX_EARLIER
    assert points[-1] == (MAX_EARLIER + 49, float(MAX_EARLIER + 49))
    assert [s for s, _ in points] == list(range(50, MAX_EARLIER + 50))
