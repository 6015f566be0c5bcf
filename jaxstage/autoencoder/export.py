"""A trained autoencoder run as a jaxstage autoencoder directory (stable-audio-tools layout), which
``codec.kind=oobleck`` and ``load_autoencoder`` read: ``model_config.json`` (``model_type:
autoencoder``, oobleck encoder/decoder, vae bottleneck, ``sample_rate`` = data.sample_rate,
``jaxstage.scale`` 1.0) + ``model.safetensors`` with the ``encoder.*``/``decoder.*`` keys of the
VAE's **EMA** weights. Written at the end of a run and by ``jaxstage export-autoencoder --src RUN_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxstage import parallel
from jaxstage.autoencoder.state import AEExperiment, build_ae_experiment
from jaxstage.config import Config, ConfigError
from jaxstage.run import checkpoint as ckpt_lib
from jaxstage.run.workdir import read_run_config, run_kind
from jaxstage.tools.export.autoencoder import save_autoencoder

KIND = "autoencoder"  # the run kind of `jaxstage train --config configs/synth_oobleck.py` (run.json)


def write_autoencoder(cfg: Config, ax: AEExperiment, params: Any, out: str | Path, source: str) -> Path:
    """Write ``params`` (VAE weights) as an autoencoder directory at ``out``."""
    return save_autoencoder(ax.vae(jax.device_get(params)), out, cfg.data.sample_rate, scale=1.0, source=source)


def export_run_autoencoder(workdir: str | Path, out: str | Path | None = None, step: int | None = None) -> Path:
    """``jaxstage export-autoencoder --src RUN_DIR [--step N] [--out DIR]``: the EMA VAE of an
    autoencoder run's checkpoint (newest by default) into ``out`` (default ``RUN_DIR/autoencoder``)."""
    workdir, cfg = read_run_config(workdir, "--src")
    if (kind := run_kind(workdir)) != KIND:
        raise ConfigError(f"{workdir} is a `jaxstage {kind}` run, not an autoencoder run (task=autoencoder)")
    ax = build_ae_experiment(cfg)
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", keep=cfg.train.ckpt_keep, async_save=False)
    step = ckpt.existing_step(step)
    rep = parallel.replicated(ax.mesh)
    target = {"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
              "ema_params": ckpt_lib.abstract_target(ax.abstract_params, jax.tree.map(lambda _: rep,
                                                                                      ax.abstract_params))}
    restored = ckpt.restore_fields(step, target)  # weights only: no optimizer, no discriminator
    ckpt.close()
    return write_autoencoder(cfg, ax, restored["ema_params"], Path(out) if out else workdir / "autoencoder",
                             source=f"{workdir.resolve()} step {step} (EMA)")
