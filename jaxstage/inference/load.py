"""Load a trained run (config + newest or chosen checkpoint) for sampling and evaluation."""

from __future__ import annotations

from pathlib import Path

from jax.sharding import Mesh

from jaxstage.config import Config
from jaxstage.run import checkpoint as ckpt_lib
from jaxstage.train.state import Experiment, TrainState, build_experiment


def load_run(cfg: Config, workdir: str | Path, step: int | None = None,
             mesh: Mesh | None = None) -> tuple[Experiment, TrainState]:
    """Experiment and restored train state of ``workdir`` (on ``mesh``, default the config's);
    errors name the missing checkpoint. For an ARC post-training run: the generator's experiment and
    the ARCState (same ``params``/``ema_params``/``codec_stats`` fields)."""
    from jaxstage.posttrain.loop import is_posttrain_run
    from jaxstage.train.loop import restore_target

    if is_posttrain_run(workdir):  # an ARC run: its state's params/ema_params/codec_stats are the generator's
        from jaxstage.posttrain.state import arc_restore_target, build_arc_experiment

        arc = build_arc_experiment(cfg, mesh)
        exp, target = arc.gen, arc_restore_target(arc)
    else:
        exp = build_experiment(cfg, mesh)
        target = restore_target(exp)
    ckpt = ckpt_lib.Checkpointer(Path(workdir) / "checkpoints", keep=cfg.train.ckpt_keep, async_save=False)
    available = ckpt.all_steps()
    if not available:
        raise FileNotFoundError(f"{Path(workdir) / 'checkpoints'} holds no checkpoint")
    step = max(available) if step is None else step
    if step not in available:
        raise FileNotFoundError(f"{Path(workdir) / 'checkpoints'} has no step {step} (available: {available})")
    state, _ = ckpt.restore(step, target)
    ckpt.close()
    return exp, state
