"""ARC post-training (`jaxstage posttrain`) as a trainer of the shared host loop (``jaxstage.run.loop``):
the generator starts from a pretrained rectified-flow run's EMA weights, the discriminator from its
first ``arc.disc_depth`` DiT blocks. The loop gives it everything else (checkpoints and exact resume,
coordinated stop, metrics, ``eval.every``, samples with the post-trained sampler from ``sample.*``,
the end-of-run attribute check, the report).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax

from jaxstage.config import Config, ConfigError
from jaxstage.inference.load import load_run
from jaxstage.posttrain.state import ARCState, arc_restore_target, build_arc_experiment, init_arc_state
from jaxstage.posttrain.step import compile_arc_step
from jaxstage.run.compiled_step import CompiledStep
from jaxstage.run.logging import RunLogger
from jaxstage.run.loop import run
from jaxstage.run.trainer import RunResult, Trainer
from jaxstage.run.workdir import ARC_SOURCE_RECORD, run_kind
from jaxstage.train.init_from import first_difference, shapes, source_run

class ARCTrainer(Trainer, kind="posttrain", title="ARC post-training", headline="loss_g",
                 init_from_key="arc.init_from"):
    """Both ARC players and the generator EMA in one ARCState, one compiled step."""

    def build(self) -> None:
        self.ax = build_arc_experiment(self.cfg)
        self.sampling_model = self.ax.gen

    def restore_target(self) -> ARCState:
        return arc_restore_target(self.ax)

    def fresh_state(self, workdir: Path, logger: RunLogger) -> ARCState:
        """The ARC state from the pretrained run's newest checkpoint (its EMA weights and codec statistics)."""
        ax, init_from = self.ax, self.cfg.arc.init_from
        if not init_from:
            raise ConfigError("ARC post-training needs the pretrained run: --init-from RUN_DIR (or arc.init_from)")
        path, source_cfg = source_run(init_from, "--init-from")
        if run_kind(path) != "train":
            raise ConfigError(f"--init-from {path} is itself a post-training run; give the pretrained run")
        _, pretrained = load_run(source_cfg, path, mesh=ax.mesh)
        if shapes(pretrained.ema_params) != shapes(ax.gen.abstract_params):
            raise ConfigError(f"--init-from {path}: its model differs from this config's "
                              f"({first_difference(ax.gen.abstract_params, pretrained.ema_params)}); start from the "
                              f"pretrained run's own config")
        state = init_arc_state(ax, pretrained.ema_params, pretrained.codec_stats)
        source = {"init_from": str(path.resolve()), "source_step": int(pretrained.step),
                  "disc_depth": self.cfg.arc.disc_depth}
        if jax.process_index() == 0:
            (workdir / ARC_SOURCE_RECORD).write_text(json.dumps(source, indent=2))
        logger.info(f"post-training {path} (step {source['source_step']}, EMA weights): generator = its denoiser, "
                    f"discriminator = its first {self.cfg.arc.disc_depth} DiT block(s) + a conv head")
        return state

    def compile(self, state: ARCState) -> CompiledStep:
        return compile_arc_step(self.ax, state)


def posttrain(cfg: Config, workdir: str | Path | None = None, init_from: str | None = None) -> RunResult:
    """ARC-post-train ``cfg.arc.init_from`` (or ``init_from``) into ``workdir``; resumes from its checkpoints."""
    if init_from:
        cfg.arc.init_from = init_from
    return run(ARCTrainer(cfg), workdir)
