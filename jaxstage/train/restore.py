"""Load a trained run (config + newest or chosen checkpoint) for sampling and evaluation."""

from __future__ import annotations

from pathlib import Path

from jaxstage.config import Config
from jaxstage.train import checkpoint as ckpt_lib
from jaxstage.train.state import Experiment, TrainState, abstract_state, build_experiment, state_shardings


def load_run(cfg: Config, workdir: str | Path, step: int | None = None) -> tuple[Experiment, TrainState]:
    """Experiment and restored train state of ``workdir``; errors name the missing checkpoint."""
    from jaxstage.train.loop import _stats_audio
    from jaxstage.train.state import fit_codec_stats

    exp = build_experiment(cfg)
    ckpt = ckpt_lib.Checkpointer(Path(workdir) / "checkpoints", keep=cfg.train.ckpt_keep, async_save=False)
    available = ckpt.all_steps()
    if not available:
        raise FileNotFoundError(f"{Path(workdir) / 'checkpoints'} holds no checkpoint")
    step = max(available) if step is None else step
    if step not in available:
        raise FileNotFoundError(f"{Path(workdir) / 'checkpoints'} has no step {step} (available: {available})")
    stats_shape = fit_codec_stats(exp, _stats_audio(cfg, count=1))
    target = ckpt_lib.abstract_target(abstract_state(exp, stats_shape), state_shardings(exp, stats_shape))
    state, _ = ckpt.restore(step, target)
    ckpt.close()
    return exp, state
