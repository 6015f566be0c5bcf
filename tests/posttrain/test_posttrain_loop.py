"""`jaxstage posttrain` end to end on a tiny pretrained run: resumes after SIGTERM bitwise like the
main trainer; a post-trained run samples with its own default (ping-pong, no CFG); bad starts are
one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
ARC = ["arc.disc_depth=1", "arc.gen_lr=1e-4", "arc.disc_lr=1e-4", "arc.warmup_steps=5", "arc.ema_decay=0.9",
       "train.log_every=1", "train.ckpt_every=1000", "train.progress_bar=false", "codec.stats_examples=4",
       "sample.sampler=pingpong", "sample.steps=2", "sample.cfg_scale=1.0", "sample.num=2"]


def _env() -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jaxstage.cli", *args]


def _posttrain(pretrained: Path, workdir: Path, steps: int) -> list[str]:
    sets = [a for kv in ARC + [f"train.steps={steps}"] for a in ("--set", kv)]
    return _cli("posttrain", "--config", TINY, "--init-from", str(pretrained), "--workdir", str(workdir), *sets)


def read_metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny rectified-flow run (a few steps: the text path is no longer zero)."""
    run = tmp_path_factory.mktemp("pretrained") / "run"
    sets = [a for kv in ["train.steps=6", "train.log_every=3", "codec.stats_examples=4", "train.progress_bar=false"]
            for a in ("--set", kv)]
    subprocess.run(_cli("train", "--config", TINY, "--workdir", str(run), *sets), check=True, env=_env(),
                   timeout=600, capture_output=True)
    return run


@pytest.mark.slow
def test_sigterm_then_resume_is_bitwise_identical(tmp_path, pretrained):
    steps = 200  # long enough that SIGTERM lands mid-run
    reference = tmp_path / "reference"
    subprocess.run(_posttrain(pretrained, reference, steps), check=True, env=_env(), timeout=900,
                   capture_output=True)

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_posttrain(pretrained, interrupted, steps), env=_env(), stderr=subprocess.PIPE, text=True)
    metrics = interrupted / "metrics.jsonl"
    deadline = time.time() + 900
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

    subprocess.run(_posttrain(pretrained, interrupted, steps), check=True, env=_env(), timeout=900,
                   capture_output=True)
    resumed, expected = read_metrics(interrupted), read_metrics(reference)
    assert [r["step"] for r in resumed] == list(range(1, steps + 1))
    for key in ("loss_g", "loss_d", "loss_c", "grad_norm_g", "grad_norm_d", "d_real", "d_fake", "d_rolled"):
        assert [r[key] for r in resumed] == [r[key] for r in expected], key
    assert json.loads((interrupted / "posttrain.json").read_text())["source_step"] == 6

    # the post-trained run samples with its config's sampler (ping-pong, no CFG) by default
    out = tmp_path / "clip.wav"
    done = subprocess.run(_cli("sample", "--workdir", str(interrupted), "--prompt", "a low sine tone",
                               "--out", str(out)), env=_env(), timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["--init-from", "/nonexistent/run"], "no config.json"),
    ([], "needs the pretrained run: --init-from RUN_DIR"),
    # the multi-process flags are wired as for `jaxstage train`
    (["--coordinator", "127.0.0.1:1234"], "needs --coordinator, --num-processes, --process-id together"),
])
def test_bad_start_is_a_one_line_error(tmp_path, args, message):
    sets = [a for kv in ARC + ["train.steps=2"] for a in ("--set", kv)]
    done = subprocess.run(_cli("posttrain", "--config", TINY, "--workdir", str(tmp_path / "w"), *args, *sets),
                          env=_env(), timeout=600, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("jaxstage posttrain: error:") and message in last


def test_a_training_run_cannot_be_resumed_as_a_posttrain_run(tmp_path, pretrained):
    sets = [a for kv in ARC + ["train.steps=2"] for a in ("--set", kv)]
    done = subprocess.run(_cli("posttrain", "--config", TINY, "--workdir", str(pretrained), "--init-from",
                               str(pretrained), *sets), env=_env(), timeout=600, capture_output=True, text=True)
    assert done.returncode == 2
    assert "holds checkpoints of a `jaxstage train` run, not a `jaxstage posttrain` run" in done.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_posttrain_gets_periodic_evaluation_and_its_own_report(tmp_path, pretrained):
    """Through the shared loop: eval.every rows in metrics.jsonl and a report of ARC's own losses."""
    from jaxstage.run.report import metric_panels
    from jaxstage.run.report import read_metrics as merged_metrics

    run = tmp_path / "arc"
    sets = [a for kv in ARC + ["train.steps=4", "eval.every=2", "eval.num=2"] for a in ("--set", kv)]
    done = subprocess.run(_cli("posttrain", "--config", TINY, "--init-from", str(pretrained), "--workdir", str(run),
                               *sets), env=_env(), timeout=900, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    evals = [r for r in read_metrics(run) if any(k.startswith("eval_") for k in r)]
    assert [r["step"] for r in evals] == [2, 4]
    assert "eval_fd_spectral" in evals[0] and any(k.startswith("eval_acc_") for k in evals[0])
    assert (run / "report.png").stat().st_size > 10_000
    panels = metric_panels(merged_metrics(run))
    assert {"loss_g", "loss_d", "loss_c"} <= set(panels["loss"])
    assert {"d_real", "d_fake", "d_rolled"} <= set(panels["d"]) and "eval_fd_spectral" in panels["eval"]
    assert json.loads((run / "run.json").read_text())["kind"] == "posttrain"


def test_load_run_builds_no_optimizer_state(tmp_path, pretrained, monkeypatch):
    """Sampling a pre-trained and a post-trained run restores weights only: no optimizer, no SSL
    encoder, no discriminator is built or read, and the weights equal a full restore's."""
    import jax
    import numpy as np

    from jaxstage.config import load_json
    from jaxstage.inference.load import load_run
    from jaxstage.run.checkpoint import Checkpointer
    from jaxstage.train.state import build_experiment
    from jaxstage.train.trainer import restore_target

    arc = tmp_path / "arc"
    sets = [a for kv in ARC + ["train.steps=2"] for a in ("--set", kv)]
    subprocess.run(_cli("posttrain", "--config", TINY, "--init-from", str(pretrained), "--workdir", str(arc), *sets),
                   check=True, env=_env(), timeout=900, capture_output=True)
    cfg = load_json(pretrained / "config.json")
    full = Checkpointer(pretrained / "checkpoints", keep=2, async_save=False)
    reference, _ = full.restore(full.latest_step(), restore_target(build_experiment(cfg)))
    full.close()

    def forbidden(*args, **kwargs):
        raise AssertionError("load_run built training state")

    for target in ("jaxstage.train.state.make_optimizer", "jaxstage.train.state.load_ssl_encoder",
                   "jaxstage.posttrain.state.make_player_optimizer", "optax.adamw", "optax.adam"):
        monkeypatch.setattr(target, forbidden)
    for run in (pretrained, arc):
        model, weights = load_run(load_json(run / "config.json"), run)
        assert not hasattr(weights, "opt_state") and not hasattr(weights, "disc_params")
        assert not hasattr(model, "tx")
        assert jax.tree.structure(weights.ema_params) == jax.tree.structure(reference.ema_params)
    _, weights = load_run(cfg, pretrained)
    for ours, theirs in zip(jax.tree.leaves(weights.ema_params), jax.tree.leaves(reference.ema_params)):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert int(weights.step) == int(reference.step)
