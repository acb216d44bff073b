"""Checkpoints are atomic: interrupted writes never hide or corrupt the latest complete one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training_app.trainer import checkpoint as ck
from training_app.trainer import latest_checkpoint, train


def _save(out: Path, step: int) -> Path:
    return ck.save_checkpoint(out, step, {"w": torch.full((2,), float(step))}, {"x": step}, {"note": "t"})


def test_latest_picks_newest_complete(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    _save(tmp_path, 5)
    ten = _save(tmp_path, 10)
    root = tmp_path / "checkpoints"
    # A writer killed mid-way leaves a hidden tmp folder with partial files...
    partial = root / ".tmp-step-00000020-deadbeef"
    partial.mkdir()
    (partial / "lora_state.safetensors").write_bytes(b"\x00" * 10)
    # ...and a folder with the final name but no meta file can only come from a foreign copy.
    (root / "step-00000030").mkdir()
    (root / "step-00000030" / "lora_state.safetensors").write_bytes(b"junk")
    (root / "step-00000040").mkdir()
    (root / "step-00000040" / ck.META_FILE).write_text("{ truncated")
    assert latest_checkpoint(tmp_path) == ten
    assert latest_checkpoint(root) == ten
    assert ck.load_checkpoint(ten)["trainable"]["w"].tolist() == [10.0, 10.0]
    with pytest.raises(ck.CheckpointError, match="incomplete"):
        ck.load_checkpoint(root / "step-00000030")


def test_interrupted_write_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _save(tmp_path, 4)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 8)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == good
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    # Next save cleans up and works; resaving an existing step replaces it atomically.
    assert _save(tmp_path, 8).name == "step-00000008"
    again = _save(tmp_path, 8)
    assert json.loads((again / ck.META_FILE).read_text())["complete"] is True
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-00000004", "step-00000008"]


def test_stale_tmp_dirs_are_removed_on_save(tmp_path: Path) -> None:
    stale = tmp_path / "checkpoints" / ".tmp-step-00000002-abc"
    stale.mkdir(parents=True)
    _save(tmp_path, 3)
    assert not stale.exists()


def test_resume_from_latest_after_crash(make_spec, tmp_path: Path) -> None:
    out = tmp_path / "run"
    full = train(make_spec(out=out, max_steps=6, save_every_n_steps=2))
    # Simulate a kill during the step-6 save: only a tmp dir of it exists.
    import shutil

    final = out / "checkpoints" / "step-00000006"
    shutil.move(final, out / "checkpoints" / ".tmp-step-00000006-dead")
    latest = latest_checkpoint(out)
    assert latest is not None and latest.name == "step-00000004"
    resumed = train(make_spec(out=out, max_steps=6, save_every_n_steps=2, resume_from=latest))
    assert list(resumed.losses) == list(full.losses[4:])


def test_a_run_without_step_checkpoints_still_checkpoints_by_wall_time_and_resumes_exactly(
    make_spec, tmp_path: Path
) -> None:
    import dataclasses

    from safetensors.torch import load_file

    from training_app.presets import preset_values

    fast = {k: v for k, v in preset_values("fast").items() if k in ("save_every_n_steps", "rank")}
    assert fast["save_every_n_steps"] == 0  # the preset itself writes no step checkpoints
    base = make_spec(out=tmp_path / "whole", max_steps=6, **fast)
    whole = train(base)
    timed = dataclasses.replace(base, output_dir=tmp_path / "timed", checkpoint_every_seconds=1e-6)
    train(timed)
    steps = sorted(p.name for p in (tmp_path / "timed" / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert len(steps) >= 5, steps  # the wall-time interval wrote checkpoints mid-run
    # A killed run resumes from a mid-run wall-time checkpoint and ends on the same weights.
    mid = tmp_path / "timed" / "checkpoints" / "step-00000003"
    resumed = train(dataclasses.replace(base, output_dir=tmp_path / "resumed", resume_from=mid))
    a, b = load_file(str(whole.lora_kohya_path)), load_file(str(resumed.lora_kohya_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_every_seconds_must_be_positive(make_spec) -> None:
    import dataclasses

    from training_app.trainer import TrainerConfigError

    with pytest.raises(TrainerConfigError, match="checkpoint_every_seconds must be a positive number"):
        dataclasses.replace(make_spec(), checkpoint_every_seconds=0)
