"""Host loop: no implicit transfers between log fetches, one compilation, bitwise resume after SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.config import load_config
from jaxstage.train.trainer import train

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
# The full stage-adaptive recipe at a cadence that moves p within a couple of hundred tiny steps.
ADAPTIVE = ["regime.mode=adaptive", "regime.every=2", "regime.monitor_size=8", "guidance.lambda0=0.5",
            "guidance.hidden=64", "timesteps.adaptive=true", "struct.enabled=true", "struct.every=4",
            "struct.num_groups=2", "struct.ramp_steps=20"]


def read_metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_transfer_guard_catches_implicit_transfers():
    """The guard the loop relies on is live on this backend (so the next test can fail).

    On CPU, device buffers are host memory, so only host-to-device transfers are caught here; on
    GPU/TPU the guard also catches implicit device-to-host fetches.
    """
    x = jnp.ones(3)
    with jax.transfer_guard("disallow"):
        with pytest.raises(Exception, match="[Dd]isallowed"):
            x + np.ones(3)  # implicit host -> device


def test_run_is_guarded_and_compiled_once(tmp_path):
    """The adaptive regime moves p past 0.5 and switches the structure regularizer on, inside one
    compiled step, with 25 steps between log fetches under jax.transfer_guard("disallow")."""
    cfg = load_config(TINY, ADAPTIVE + ["train.steps=250", "train.log_every=25", "train.ckpt_every=1000",
                                        "train.progress_bar=false"])
    result = train(cfg, tmp_path / "run")
    assert result.final_step == 250
    assert result.compile_count == 1
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == list(range(25, 251, 25))
    for record in records:
        assert {"step", "loss", "lr", "grad_norm", "steps_per_s", "loss_diff", "loss_align", "loss_struct",
                "progress", "ssl_weight", "t_loc", "discrepancy", "rate", "struct_on", "struct_weight",
                "groups", "loss_buckets"} <= set(record)
        assert np.isfinite(record["loss"]) and len(record["loss_buckets"]) == 10
    progress = [r["progress"] for r in records]
    assert progress == sorted(progress), "p decreased"
    assert progress[-1] > 0.5, f"p only reached {progress[-1]:.2f}"
    assert records[-1]["struct_on"] == 1.0
    assert records[-1]["ssl_weight"] < records[0]["ssl_weight"]
    assert records[-1]["t_loc"] < records[0]["t_loc"]  # RF location moves towards cleaner levels
    run = tmp_path / "run"
    assert (run / "config.json").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["250"]
    assert list((run / "samples").glob("*.wav")), "final samples were not written"
    assert list((run / "tb").glob("events.*")), "no TensorBoard events"


def _train_cmd(workdir: Path, steps: int) -> list[str]:
    sets = ADAPTIVE + [f"train.steps={steps}", "train.log_every=1", "train.ckpt_every=1000", "mesh.data=1",
                       "train.progress_bar=false"]
    return [sys.executable, "-m", "jaxstage.cli", "train", "--config", TINY, "--workdir", str(workdir)] + [
        arg for item in sets for arg in ("--set", item)]


def _env() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = ""  # one CPU device, as a user would run it
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.mark.slow
def test_sigterm_then_resume_is_bitwise_identical(tmp_path):
    steps = 300  # long enough that SIGTERM lands mid-run even on a fast machine
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(reference, steps), check=True, env=_env(), cwd=ROOT, timeout=600)

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_train_cmd(interrupted, steps), env=_env(), cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    metrics = interrupted / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 8:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in err
    stopped_at = read_metrics(interrupted)[-1]["step"]
    assert stopped_at < steps, "the run finished before the signal arrived; nothing was tested"
    assert (interrupted / "checkpoints" / str(stopped_at)).is_dir()

    subprocess.run(_train_cmd(interrupted, steps), check=True, env=_env(), cwd=ROOT, timeout=600)
    resumed = read_metrics(interrupted)
    expected = read_metrics(reference)
    assert [r["step"] for r in resumed] == list(range(1, steps + 1))
    # bitwise: exact float equality of the loss and of the regime trajectory
    for key in ("loss", "grad_norm", "progress", "discrepancy", "ssl_weight", "t_loc", "struct_weight"):
        assert [r[key] for r in resumed] == [r[key] for r in expected], key
    assert max(r["progress"] for r in expected) > 0.5


def test_resume_refuses_changed_model(tmp_path):
    from jaxstage.config import ConfigError
    from jaxstage.run.workdir import prepare_workdir

    cfg = load_config(TINY)
    prepare_workdir(cfg, tmp_path)
    changed = load_config(TINY, ["model.depth=3"])
    with pytest.raises(ConfigError, match="model.depth"):
        prepare_workdir(changed, tmp_path)
    longer = load_config(TINY, ["train.steps=500"])
    prepare_workdir(longer, tmp_path)  # extending a run is allowed


def test_corrupt_checkpoint_is_an_error_naming_it(tmp_path):
    from jaxstage.run.checkpoint import CheckpointError

    cfg = load_config(TINY, ["train.steps=2", "train.log_every=1", "train.progress_bar=false"])
    train(cfg, tmp_path)
    step_dir = tmp_path / "checkpoints" / "2"
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "manifest" not in path.name:
            path.write_bytes(b"garbage")
    longer = load_config(TINY, ["train.steps=4", "train.log_every=1", "train.progress_bar=false"])
    with pytest.raises(CheckpointError, match=str(step_dir)):
        train(longer, tmp_path)
