"""Autoencoder training (``jaxstage train`` with ``task=autoencoder``, ``configs/synth_oobleck.py``) as a
trainer of the shared host loop (``jaxstage.run.loop``): an Oobleck VAE (+ optional multi-scale STFT
discriminator) in one ``AEState``, one compiled step. The loop gives it checkpoints and exact resume,
coordinated stop, non-finite skipping, metrics, ``eval.every``, and calls its own outputs
(``AEOutputs``: reconstructions, the reconstruction report, the autoencoder directory).
"""

from __future__ import annotations

from pathlib import Path

from jaxstage.autoencoder.export import KIND
from jaxstage.autoencoder.outputs import AEOutputs
from jaxstage.autoencoder.state import AEState, ae_restore_target, build_ae_experiment, init_ae_state
from jaxstage.autoencoder.step import compile_ae_step
from jaxstage.config import Config
from jaxstage.run.compiled_step import CompiledStep
from jaxstage.run.logging import RunLogger
from jaxstage.run.loop import run
from jaxstage.run.trainer import RunResult, Trainer


class AutoencoderTrainer(Trainer, kind=KIND, title="autoencoder training", headline="loss"):
    """The Oobleck VAE trainer; ``sampling_model`` is the ``AEExperiment`` (mesh, batch sharding)."""

    def build(self) -> None:
        self.ax = self.sampling_model = build_ae_experiment(self.cfg)

    def restore_target(self) -> AEState:
        return ae_restore_target(self.ax)

    def fresh_state(self, workdir: Path, logger: RunLogger) -> AEState:
        a = self.cfg.autoencoder
        gan = (f"discriminator on from step {a.disc_start_step} ({len(a.disc_n_ffts)} STFT scales)"
               if a.disc_enabled else "no discriminator")
        logger.info(f"Oobleck VAE: {self.ax.vae_config.hop} samples per latent, {a.latent_dim} latent channels; {gan}")
        return init_ae_state(self.ax)

    def compile(self, state: AEState) -> CompiledStep:
        return compile_ae_step(self.ax, state)

    def outputs(self) -> AEOutputs:
        return AEOutputs(self.cfg, self.ax)


def train_autoencoder(cfg: Config, workdir: str | Path | None = None) -> RunResult:
    """Train the VAE of ``cfg`` into ``workdir`` (default ``train.workdir``), resuming from its checkpoints."""
    return run(AutoencoderTrainer(cfg), workdir)
