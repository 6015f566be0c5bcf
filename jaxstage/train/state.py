"""The train state pytree and everything static that the compiled step closes over.

``TrainState`` holds only device arrays (step, params, optimizer state, EMA params, RNG key, the
regime sub-state and the codec normalization), so it can be donated, sharded, checkpointed and
restored onto any mesh. ``Experiment`` holds the static parts built from the config: the
denoiser's (``inference.model.InferenceModel``: graph, codec, objective, shardings) plus the
optimizer and the stage-adaptive recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from jaxstage import parallel
from jaxstage.config import Config
from jaxstage.data.pipeline import example_spec
from jaxstage.inference.model import InferenceModel, Params, inference_parts
from jaxstage.models.codecs import CodecStats
from jaxstage.models.denoiser import Denoiser
from jaxstage.run.non_finite import SkipCount, init_skips
from jaxstage.train.recipe import MonitorBatch, Recipe, RegimeState, init_regime, make_recipe

@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree of arrays."""

    step: jax.Array
    params: Params
    opt_state: optax.OptState
    ema_params: Params
    rng: jax.Array
    regime: RegimeState
    codec_stats: CodecStats
    monitor: MonitorBatch | None  # fixed held-out batch for the discrepancy D (None: nothing to measure)
    skips: SkipCount  # non-finite steps skipped (``run.non_finite``)


def make_optimizer(cfg: Config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warm-up, cosine decay and global-norm clipping."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.optim.lr, warmup_steps=cfg.optim.warmup_steps,
        decay_steps=max(cfg.train.steps, cfg.optim.warmup_steps + 1),
        end_value=cfg.optim.lr * cfg.optim.end_lr_ratio,
    )
    parts = [optax.clip_by_global_norm(cfg.optim.grad_clip)] if cfg.optim.grad_clip > 0 else []
    parts.append(optax.adamw(schedule, b1=cfg.optim.b1, b2=cfg.optim.b2, weight_decay=cfg.optim.weight_decay))
    return optax.chain(*parts), schedule


@dataclass
class Experiment(InferenceModel):
    """Static pieces of a training run, built once from the config: the denoiser's (as for
    sampling) plus the optimizer, the recipe and the frozen SSL encoder."""

    tx: optax.GradientTransformation
    lr_schedule: optax.Schedule
    recipe: Recipe
    ssl_params: Any = None  # frozen SSL encoder weights, replicated on the mesh (guidance.ssl=encoder)

    def frozen_params(self) -> dict[str, Any]:
        """The frozen weights the train step reads, by name (``ssl``, ``codec``, ``text``: the T5 of
        text.kind=t5): a separate, replicated, non-donated argument of the compiled step, never part of
        the train state."""
        frozen = {"ssl": self.ssl_params, "codec": self.codec_params, "text": self.text_params}
        return {k: v for k, v in frozen.items() if v is not None}


def build_experiment(cfg: Config, mesh: Mesh | None = None) -> Experiment:
    """Codec, objective, model graph, optimizer and shardings for ``cfg`` on ``mesh``."""
    mesh = parallel.make_mesh(cfg.mesh) if mesh is None else mesh
    spec = example_spec(cfg)
    neural_ssl, ssl_params = load_ssl_encoder(cfg, mesh)
    recipe = make_recipe(cfg, ssl_dim=spec["ssl_targets"][0][-1] if "ssl_targets" in spec else 0,
                         neural_ssl=neural_ssl)
    parts = inference_parts(cfg, mesh, projector_dim=recipe.projector_dim, spec=spec)
    divisor = parallel.batch_divisor(mesh, parts["rules"])
    if cfg.train.batch_size % divisor:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by the batch mesh axes ({divisor} ways)")
    tx, schedule = make_optimizer(cfg)
    return Experiment(**parts, tx=tx, lr_schedule=schedule, recipe=recipe, ssl_params=ssl_params)


def load_ssl_encoder(cfg: Config, mesh: Mesh):
    """(NeuralSSL, replicated frozen weights) for guidance.ssl=encoder when targets or D need it, else (None, None)."""
    g = cfg.guidance
    if g.ssl != "encoder" or not (g.lambda0 > 0 or cfg.regime.discrepancy == "output"):
        return None, None
    from jaxstage.models.ssl_encoder import load_neural_ssl

    neural, params = load_neural_ssl(g.ssl_encoder_dir, tuple(g.ssl_layers), cfg.data.sample_rate)
    params = jax.device_put(params, parallel.replicated(mesh))
    return neural, params


def _initial_state_fn(exp: Experiment):
    """``(init_key, state_key, codec_stats, monitor) -> TrainState`` at step 0, parameters constrained to
    their target shardings (traced by ``init_state``; shapes only in ``abstract_state``)."""

    def init_fn(init_key, state_key, stats, monitor) -> TrainState:
        model = Denoiser(exp.cfg, exp.io_channels, ssl_dim=exp.recipe.projector_dim, text_dim=exp.text_dim,
                         rngs=nnx.Rngs(init_key))
        params = nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[1])
        params = jax.lax.with_sharding_constraint(params, exp.param_shardings)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=exp.tx.init(params),
            ema_params=jax.tree.map(jnp.copy, params), rng=state_key,
            regime=init_regime(exp.recipe), codec_stats=stats, monitor=monitor, skips=init_skips(),
        )

    return init_fn


def init_state(exp: Experiment, codec_stats: CodecStats, monitor: MonitorBatch | None) -> TrainState:
    """Initialize parameters, optimizer and regime directly with their target shardings.

    jit boundary: parameters are created already sharded by ``param_shardings`` (no host copy);
    the optimizer moments inherit those shardings by propagation.
    """
    init_key, state_key = jax.random.split(jax.random.PRNGKey(exp.cfg.train.seed))
    with jax.set_mesh(exp.mesh):
        shardings = state_shardings(exp, codec_stats, monitor)
        return jax.jit(_initial_state_fn(exp), out_shardings=shardings)(init_key, state_key, codec_stats, monitor)


def abstract_state(exp: Experiment, codec_stats: CodecStats, monitor: MonitorBatch | None) -> TrainState:
    """Shape/dtype tree of the train state (no allocation)."""
    key = jax.random.PRNGKey(0)
    return jax.eval_shape(_initial_state_fn(exp), key, key, codec_stats, monitor)


def state_shardings(exp: Experiment, codec_stats: CodecStats, monitor: MonitorBatch | None) -> TrainState:
    """NamedShardings for every leaf of the train state.

    Parameters and EMA follow the logical rules; optimizer moments mirror the parameter they
    belong to (matched by shape within optax's state tree); everything else is replicated.
    """
    abstract = abstract_state(exp, codec_stats, monitor)
    rep = parallel.replicated(exp.mesh)
    return TrainState(
        step=rep, params=exp.param_shardings,
        opt_state=optimizer_shardings(abstract.opt_state, exp.abstract_params, exp.param_shardings, rep),
        ema_params=exp.param_shardings, rng=rep,
        regime=jax.tree.map(lambda _: rep, abstract.regime),
        codec_stats=jax.tree.map(lambda _: rep, abstract.codec_stats),
        monitor=jax.tree.map(lambda _: rep, abstract.monitor), skips=jax.tree.map(lambda _: rep, abstract.skips),
    )


def optimizer_shardings(abstract_opt_state: Any, abstract_params: Params, param_shardings: Params,
                        replicated: NamedSharding) -> Any:
    """Shardings of an optax state: per-parameter moments mirror the parameters' shardings
    (optax stores them as trees with the params' structure); every other leaf is replicated."""
    param_sh = jax.tree.leaves(param_shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    param_treedef = jax.tree.structure(abstract_params)

    def map_opt(node):
        if jax.tree.structure(node) == param_treedef:
            return jax.tree.unflatten(param_treedef, param_sh)
        if isinstance(node, jax.ShapeDtypeStruct):
            return replicated
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(map_opt(c) for c in node))
        if isinstance(node, (tuple, list)):
            return type(node)(map_opt(c) for c in node)
        if isinstance(node, dict):
            return {k: map_opt(v) for k, v in node.items()}
        return jax.tree.map(lambda _: replicated, node)

    return map_opt(abstract_opt_state)


def fit_codec_stats(exp: Experiment, audio: np.ndarray | None, latents: np.ndarray | None = None) -> CodecStats:
    """Data-derived normalization of the codec features, from a host batch of clips (or their
    pre-encoded ``latents``, data.latents: no encoder runs)."""
    from jaxstage.models.codecs import stats_of_features
    from jaxstage.models.latent_codec import encode_host

    features = jnp.asarray(latents) if latents is not None else encode_host(exp.bound_codec(), audio)
    return stats_of_features(features, per_channel=exp.cfg.codec.per_channel_stats)
