"""Encoding and validation of channel messages (no Redis needed)."""

from __future__ import annotations

import json
import pickle

import pytest

from maggy_core.channel import (
    SCHEMA_VERSION,
    CoordinatorChannel,
    WorkerChannel,
    decode,
    encode,
    key_prefix,
)
from maggy_core.exceptions import MessageError


def metric(**over):
    msg = {
        "type": "metric",
        "worker": "w0.1",
        "epoch": 1,
        "trial": "t0001",
        "attempt": 1,
        "seq": 3,
        "step": 2,
        "value": 0.5,
    }
    msg.update(over)
    return msg


def test_round_trip_adds_version():
    raw = encode(metric())
    body = json.loads(raw)
    assert body["v"] == SCHEMA_VERSION
    assert decode(raw) == body


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"v": 99, "type": "metric"}), "field 'v'"),
        (json.dumps({"v": 1, "type": "exec"}), "field 'type'"),
        (json.dumps({**metric(), "v": 1, "value": "high"}), "field 'value'"),
        (
            json.dumps({k: v for k, v in {**metric(), "v": 1}.items() if k != "step"}),
            "field 'step'",
        ),
        (json.dumps({**metric(), "v": 1, "attempt": True}), "field 'attempt'"),
        (json.dumps({**metric(), "v": 1, "earlier": {"1": 2}}), "field 'earlier'"),
        (json.dumps({**metric(), "v": 1, "earlier": [[1]]}), "field 'earlier'"),
        (json.dumps({**metric(), "v": 1, "earlier": [[-1, 0.5]]}), "field 'earlier'"),
        (json.dumps({**metric(), "v": 1, "earlier": [[1.5, 0.5]]}), "field 'earlier'"),
        (json.dumps({**metric(), "v": 1, "earlier": [[1, True]]}), "field 'earlier'"),
        (json.dumps({**metric(), "v": 1, "earlier": [[1, "x"]]}), "field 'earlier'"),
        (
            '{"v": 1, "type": "metric", "worker": "w", "epoch": 1, "trial": "t", "attempt": 1, '
            '"seq": 1, "step": 2, "value": 0.5, "earlier": [[1, NaN]]}',
            "field 'earlier'",
        ),
        (
            json.dumps({**metric(), "v": 1, "earlier": [[i, 0.0] for i in range(257)]}),
            "field 'earlier'",
        ),
    ],
)
def test_bad_messages_name_the_field(raw, needle):
    with pytest.raises(MessageError, match=needle):
        decode(raw)


def test_a_metric_carries_the_reports_held_before_it_in_order():
    from maggy_core.channel import metric_points

    body = decode(encode(metric(step=5, value=0.9, earlier=[[3, 0.7], [4, 0.8]])))
    assert metric_points(body) == [(3, 0.7), (4, 0.8), (5, 0.9)]
    assert metric_points(decode(encode(metric()))) == [(2, 0.5)]


def test_nan_never_leaves_the_process():
    with pytest.raises((MessageError, ValueError)):
        encode(metric(value=float("nan")))


def test_final_status_is_checked():
    final = {
        "type": "final",
        "worker": "w",
        "epoch": 1,
        "trial": "t",
        "attempt": 1,
        "seq": 1,
        "status": "great",
        "metric": 1.0,
        "metrics": {},
        "start": 0.0,
        "duration": 1.0,
    }
    with pytest.raises(MessageError, match="field 'status'"):
        encode(final)


def test_key_prefix_has_a_hash_tag():
    assert key_prefix("exp-1") == "maggy:{exp-1}:"


def test_channels_pickle_without_a_socket():
    ch = WorkerChannel("redis://127.0.0.1:1/0", "e", "w0", 1)
    ch._client = object()  # stands for a live client
    copy = pickle.loads(pickle.dumps(ch))
    assert copy._client is None and copy.worker == "w0"
    co = CoordinatorChannel("redis://127.0.0.1:1/0", "e")
    assert pickle.loads(pickle.dumps(co))._client is None


# --- hostile input --------------------------------------------------------------------

from maggy_core import channel as _ch  # noqa: E402


def _metric(**more):
    return {"v": 1, "type": "metric", "worker": "w", "epoch": 1, "trial": "t0000",
            "attempt": 1, "seq": 1, "step": 0, "value": 0.5, **more}  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("[" * 100_000 + "]" * 100_000, "too deep"),  # would be a RecursionError
        (
            json.dumps(
                _metric(extra=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]])
            ),
            "too deep",
        ),
        (json.dumps(_metric(extra="x" * (_ch.MAX_TEXT + 1))), "too large"),
        ("x" * (_ch.MAX_MESSAGE + 1), "too large"),
        (json.dumps(_metric(extra=list(range(_ch.MAX_ITEMS + 1)))), "too large"),
        (b"\xff\xfe", "not JSON"),
        (json.dumps(_metric(value="0.5")), "field 'value'"),
        (json.dumps(_metric(value=True)), "field 'value'"),
        (json.dumps(_metric(attempt=None)), "field 'attempt'"),
    ],
)
def test_hostile_messages_are_refused_as_malformed(raw, says):
    with pytest.raises(MessageError, match=says):
        decode(raw)


def test_any_exception_while_decoding_an_entry_is_one_malformed_message():
    class Evil(dict):
        def get(self, *_):  # a stream entry whose field access blows up
            raise KeyError("boom")

    bad = _ch._decode_entry(Evil())
    assert isinstance(bad, MessageError) and "not readable" in str(bad)
    assert isinstance(_ch._decode_entry({b"m": 12}), MessageError)


def test_clip_keeps_short_text_and_cuts_long_text_below_the_limit():
    assert _ch.clip("short") == "short"
    cut = _ch.clip("y" * 100_000)
    assert len(cut) <= _ch.MAX_TEXT and cut.endswith("characters cut]")
