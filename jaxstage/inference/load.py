"""Load a run (config + newest or chosen checkpoint) for sampling, evaluation and export.

Dispatches on the run kind recorded in the run directory (``run.workdir.run_kind``) and builds only
what inference needs: the denoiser's graph, codec and objective (``InferenceModel``), and the
checkpoint's weights and codec statistics, restored without the optimizer moments, the regime or a
discriminator (Orbax partial restore). No optimizer and no SSL encoder is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxstage import parallel
from jaxstage.config import Config, ConfigError
from jaxstage.inference.model import InferenceModel, Params, inference_parts
from jaxstage.models.codecs import CodecStats, fit_stats
from jaxstage.run import checkpoint as ckpt_lib
from jaxstage.run.workdir import run_kind


@flax.struct.dataclass
class RunWeights:
    """The fields of a run's state that inference reads (the same names as ``TrainState``'s)."""

    step: jax.Array
    params: Params
    ema_params: Params  # what sampling and evaluation use by default
    codec_stats: CodecStats


def denoiser_run(cfg: Config, metadata: Any, mesh: Mesh | None) -> InferenceModel:
    """The denoiser of a pre-training or ARC run; ARC's generator is the pretrained denoiser and its
    state uses TrainState's field names. The REPA projector is built when the checkpoint has one (its
    width read from the checkpoint), so ``params`` restore whole (``train.init_from`` copies it)."""
    projector = metadata["params"].get("projector")
    width = 0 if projector is None else jax.tree.leaves(projector)[-1].shape[-1]
    return InferenceModel(**inference_parts(cfg, mesh, projector_dim=width))


# run kind -> builder of its inference model; a new trainer whose runs sample differently adds its own
LOADERS = {"train": denoiser_run, "posttrain": denoiser_run}


def load_run(cfg: Config, workdir: str | Path, step: int | None = None,
             mesh: Mesh | None = None) -> tuple[InferenceModel, RunWeights]:
    """Inference model and restored weights of ``workdir`` (on ``mesh``, default the config's); errors
    name the missing checkpoint or the unknown run kind."""
    workdir = Path(workdir)
    kind = run_kind(workdir)
    if kind not in LOADERS:
        raise ConfigError(f"{workdir}: run kind {kind!r} cannot be loaded for inference (known: {', '.join(LOADERS)})")
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", keep=cfg.train.ckpt_keep, async_save=False)
    step = ckpt.existing_step(step)
    model = LOADERS[kind](cfg, ckpt.state_metadata(step), mesh)
    rep = parallel.replicated(model.mesh)
    stats = jax.eval_shape(lambda: fit_stats(model.bound_codec(), jnp.zeros((1, cfg.num_samples), jnp.float32),
                                             per_channel=cfg.codec.per_channel_stats))
    params = ckpt_lib.abstract_target(model.abstract_params, model.param_shardings)
    target = {"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=rep), "params": params, "ema_params": params,
              "codec_stats": ckpt_lib.abstract_target(stats, jax.tree.map(lambda _: rep, stats))}
    restored = ckpt.restore_fields(step, target)
    ckpt.close()
    return model, RunWeights(**restored)
