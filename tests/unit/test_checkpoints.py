"""The checkpoint API: reporter.save_checkpoint / checkpoint_path, load_checkpoint,
and the ``checkpoint`` argument the worker injects by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maggy_core.examples.sleep import budgeted
from maggy_core.loading import check_signature
from maggy_core.reporter import CHECKPOINT_FILE, Checkpoint, Reporter, load_checkpoint
from maggy_core.worker import build_kwargs


def test_a_saved_checkpoint_is_json_beside_the_trial_with_its_last_step(tmp_path: Path) -> None:
    r = Reporter(None, "t0003", checkpoint_root=tmp_path)
    r.broadcast(0.5, step=4)
    r.save_checkpoint({"epoch": 4, "lr": [0.1, 0.01]})
    saved = json.loads((tmp_path / "t0003" / CHECKPOINT_FILE).read_text())
    assert saved == {"step": 4, "data": {"epoch": 4, "lr": [0.1, 0.01]}}
    r.save_checkpoint({"epoch": 5})  # replaces the earlier one
    assert load_checkpoint(tmp_path, "t0003") == Checkpoint(
        "t0003", str(tmp_path / "t0003"), {"epoch": 5}, 4
    )
    assert r.checkpoint_path() == str(tmp_path / "t0003")


def test_files_written_to_checkpoint_path_alone_make_a_checkpoint(tmp_path: Path) -> None:
    r = Reporter(None, "t0001", checkpoint_root=tmp_path)
    (Path(r.checkpoint_path()) / "weights.bin").write_bytes(b"\x00\x01")
    found = load_checkpoint(tmp_path, "t0001")
    assert found is not None and found.data is None and found.step is None
    assert (Path(found.path) / "weights.bin").read_bytes() == b"\x00\x01"


def test_a_detached_reporter_checkpoints_to_a_temporary_directory() -> None:
    r = Reporter(None, "t0009")
    path = Path(r.checkpoint_path())
    r.save_checkpoint([1, 2])
    assert path.is_dir() and (path / CHECKPOINT_FILE).exists()


def test_anything_but_json_is_refused_by_name(tmp_path: Path) -> None:
    r = Reporter(None, "t0001", checkpoint_root=tmp_path)
    with pytest.raises(ValueError, match=r"save_checkpoint: 'obj' must be JSON"):
        r.save_checkpoint({"model": object()})
    with pytest.raises(ValueError, match="must be JSON"):
        r.save_checkpoint(float("nan"))
    assert not (tmp_path / "t0001" / CHECKPOINT_FILE).exists()


@pytest.mark.parametrize("trial_id", [None, "", "../t0001", "a/b", "/etc", ".hidden", 7])
def test_an_id_from_the_channel_cannot_point_outside_the_checkpoints(
    tmp_path: Path, trial_id: object
) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "t0001").mkdir()  # outside the checkpoints directory
    assert load_checkpoint(tmp_path / "checkpoints", trial_id) is None


def test_no_root_or_no_directory_gives_none(tmp_path: Path) -> None:
    assert load_checkpoint(None, "t0001") is None
    assert load_checkpoint(tmp_path, "t0001") is None  # another machine: train from scratch


def test_a_torn_checkpoint_file_keeps_the_directory(tmp_path: Path) -> None:
    (tmp_path / "t0002").mkdir()
    (tmp_path / "t0002" / CHECKPOINT_FILE).write_text('{"step": 3, "da')
    assert load_checkpoint(tmp_path, "t0002") == Checkpoint("t0002", str(tmp_path / "t0002"))


def test_checkpoint_is_injected_by_name_and_budgeted_runs_only_the_added_epochs(
    tmp_path: Path,
) -> None:
    assert check_signature(budgeted, ["x"]) == []
    first = Reporter(None, "t0000", checkpoint_root=tmp_path)
    kwargs = build_kwargs(budgeted, {"x": 0.5}, first, 3, "t0000", {"step_seconds": 0.0})
    assert kwargs["checkpoint"] is None
    budgeted(**kwargs)
    assert [s for s, _ in first.history] == [1, 2, 3]
    previous = load_checkpoint(tmp_path, "t0000")
    promoted = Reporter(None, "t0004", checkpoint_root=tmp_path)
    kwargs = build_kwargs(
        budgeted, {"x": 0.5}, promoted, 9, "t0004", {"step_seconds": 0.0}, previous
    )
    assert kwargs["checkpoint"] is previous
    final = budgeted(**kwargs)
    assert [s for s, _ in promoted.history] == list(range(4, 10))
    from_scratch = Reporter(None, "t0010", checkpoint_root=tmp_path)
    assert budgeted(9, from_scratch, step_seconds=0.0, x=0.5) == final
