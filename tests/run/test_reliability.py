"""Faults a long run must survive, each injected: damaged checkpoints (truncated, missing, flipped
bytes), a full disk during a save. Every failure is one line naming what to do; resuming afterwards
continues the uninterrupted run's metrics bit for bit."""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
SETS = ["train.log_every=1", "train.ckpt_every=2", "train.ckpt_keep=10", "train.progress_bar=false",
        "codec.stats_examples=4"]


def _train(workdir: Path, steps: int, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    flags = [e for e in extra if e.startswith("--")]
    sets = [a for kv in SETS + [f"train.steps={steps}"] + [e for e in extra if e not in flags] for a in ("--set", kv)]
    done = subprocess.run([sys.executable, "-m", "jaxstage.cli", "train", "--config", TINY, "--workdir", str(workdir),
                           *sets, *flags], env=env, timeout=900, capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _rows(workdir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 10-step run (checkpoints every 2 steps)."""
    run = tmp_path_factory.mktemp("reliability") / "reference"
    _train(run, 10)
    return run


@pytest.fixture(scope="module")
def stopped_at_8(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reliability") / "at8"
    _train(run, 8)
    return run


def _largest_file(step_dir: Path) -> Path:
    return max((p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"), key=lambda p: p.stat().st_size)


def _truncate(step_dir: Path) -> None:
    path = _largest_file(step_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _delete(step_dir: Path) -> None:
    _largest_file(step_dir).unlink()


def _flip(step_dir: Path) -> None:
    path = _largest_file(step_dir)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate, _delete, _flip], ids=["truncated", "deleted", "flipped"])
def test_damaged_newest_checkpoint_is_named_and_an_older_one_resumes(tmp_path, reference, stopped_at_8, damage):
    run = tmp_path / "run"
    shutil.copytree(stopped_at_8, run)
    damage(run / "checkpoints" / "8")
    done = _train(run, 10, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("jaxstage train: error: checkpoint ") and "/checkpoints/8 is damaged" in last, last
    assert "older finished checkpoints: [2, 4, 6]" in last and "--resume-step" in last, last
    assert not (run / "checkpoints" / "10").exists()  # nothing started fresh or went on

    _train(run, 10, "--resume-step=6")
    assert _rows(run) == _rows(reference)  # steps 1-6 from before, 7-10 resumed: one trajectory, bit for bit
    assert sorted(p.name.split(".")[0] for p in (run / "checkpoints_set_aside").iterdir()) == ["8"]
    assert [json.loads(line)["step"] for line in (run / "metrics.discarded.jsonl").read_text().splitlines()] == [7, 8]


def test_resume_step_without_such_checkpoint_is_one_line(tmp_path, stopped_at_8):
    run = tmp_path / "run"
    shutil.copytree(stopped_at_8, run)
    done = _train(run, 10, "train.resume_step=5", check=False)
    assert done.returncode == 2
    assert "train.resume_step=5" in done.stderr.strip().splitlines()[-1] and "[2, 4, 6, 8]" in done.stderr


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"jaxstage-{uuid.uuid4().hex[:6]}",
                           str(path)], capture_output=True)
    return done.returncode == 0


@pytest.mark.slow
def test_full_disk_during_a_save_is_one_line_and_a_rerun_with_space_resumes(tmp_path, reference):
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    # room for about two of the tiny model's ~4 MiB checkpoints: the save at step 6 or 8 runs out
    if not _mount_tmpfs(checkpoints, "9m"):
        pytest.skip("cannot mount a small tmpfs here (needs root); the injected-error path is tested in "
                    "tests/run/test_checkpoint.py")
    try:
        done = _train(run, 10, check=False)
        assert done.returncode == 1, done.stderr[-2000:]
        # Orbax's writer threads log their own tracebacks while the process exits, sometimes after
        # jaxstage's line: the line checked is jaxstage's last one
        last = [line for line in done.stderr.strip().splitlines() if line.startswith("jaxstage train:")][-1]
        assert last.startswith("jaxstage train: error: saving a checkpoint ") and "No space left" in last, last
        finished = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
        assert finished and "free space and rerun" in last
        kept = _contents(checkpoints / str(finished[-1]))
        shutil.copytree(checkpoints, tmp_path / "saved", ignore=shutil.ignore_patterns("*tmp*"))
    finally:
        subprocess.run(["umount", str(checkpoints)], check=True)
    shutil.rmtree(checkpoints)
    shutil.copytree(tmp_path / "saved", checkpoints)  # the same checkpoints, now with space
    assert kept == _contents(checkpoints / str(finished[-1]))  # the previous checkpoint is intact
    _train(run, 10)
    assert _rows(run) == _rows(reference)
