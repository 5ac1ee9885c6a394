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
    ],
)
def test_bad_messages_name_the_field(raw, needle):
    with pytest.raises(MessageError, match=needle):
        decode(raw)


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
