"""Load a trained run (config + newest or chosen checkpoint) for sampling and evaluation."""

from __future__ import annotations

from pathlib import Path

from jax.sharding import Mesh

from jaxstage.config import Config
from jaxstage.train import checkpoint as ckpt_lib
from jaxstage.train.state import Experiment, TrainState, build_experiment


def load_run(cfg: Config, workdir: str | Path, step: int | None = None,
             mesh: Mesh | None = None) -> tuple[Experiment, TrainState]:
    """Experiment and restored train state of ``workdir`` (on ``mesh``, default the config's);
    errors name the missing checkpoint."""
    from jaxstage.train.loop import restore_target

    exp = build_experiment(cfg, mesh)
    ckpt = ckpt_lib.Checkpointer(Path(workdir) / "checkpoints", keep=cfg.train.ckpt_keep, async_save=False)
    available = ckpt.all_steps()
    if not available:
        raise FileNotFoundError(f"{Path(workdir) / 'checkpoints'} holds no checkpoint")
    step = max(available) if step is None else step
    if step not in available:
        raise FileNotFoundError(f"{Path(workdir) / 'checkpoints'} has no step {step} (available: {available})")
    state, _ = ckpt.restore(step, restore_target(exp))
    ckpt.close()
    return exp, state
