"""The ARC post-training state and its static experiment.

``ARCState`` holds device arrays only: the generator (raw params, AdamW state, EMA: the weights
sampled from), the discriminator (params, AdamW state), the RNG key and the pretrained run's codec
statistics. Its field names ``step``, ``params``, ``ema_params`` and ``codec_stats`` match
``TrainState``'s, so sampling and evaluation code takes either. ``ARCExperiment`` holds the
generator's ``Experiment`` (the pretrained model's graph, codec, objective, mesh) plus the
discriminator's graph, both optimizers and all shardings.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxstage import parallel
from jaxstage.config import Config, validate_posttrain
from jaxstage.models.codecs import CodecStats
from jaxstage.run.checkpoint import abstract_target
from jaxstage.run.non_finite import SkipCount, init_skips
from jaxstage.posttrain.discriminator import Discriminator, from_pretrained
from jaxstage.train.state import Experiment, Params, build_experiment, optimizer_shardings


@flax.struct.dataclass
class ARCState:
    """Everything ARC post-training changes; a pytree of arrays."""

    step: jax.Array
    params: Params  # generator (raw)
    opt_state: optax.OptState  # generator AdamW
    ema_params: Params  # generator EMA: what `jaxstage sample` and the evaluation use
    disc_params: Params
    disc_opt_state: optax.OptState
    rng: jax.Array
    codec_stats: CodecStats
    skips: SkipCount  # non-finite steps skipped (``run.non_finite``)


@dataclass
class ARCExperiment:
    """Static pieces: the generator's experiment and the discriminator's graph and optimizers."""

    gen: Experiment
    disc_graphdef: nnx.GraphDef
    disc_buffers: Params
    abstract_disc_params: Params
    disc_shardings: Params
    gen_tx: optax.GradientTransformation
    disc_tx: optax.GradientTransformation

    @property
    def cfg(self) -> Config:
        return self.gen.cfg

    @property
    def mesh(self):
        return self.gen.mesh

    def discriminator(self, params: Params) -> Discriminator:
        """A Discriminator module bound to ``params`` (use inside jit)."""
        return nnx.merge(self.disc_graphdef, params, self.disc_buffers)


def make_player_optimizer(cfg: Config, lr: float) -> optax.GradientTransformation:
    """AdamW for one player: linear warm-up to ``lr`` then constant, optional global-norm clipping."""
    a = cfg.arc
    schedule = optax.linear_schedule(0.0, lr, max(a.warmup_steps, 1))
    parts = [optax.clip_by_global_norm(a.grad_clip)] if a.grad_clip > 0 else []
    parts.append(optax.adamw(schedule, b1=a.b1, b2=a.b2, weight_decay=0.0))
    return optax.chain(*parts)


def build_arc_experiment(cfg: Config, mesh=None) -> ARCExperiment:
    """Generator experiment (the pretrained model's graph) + discriminator graph, optimizers, shardings."""
    validate_posttrain(cfg)
    gen = build_experiment(cfg, mesh)
    abstract_disc = nnx.eval_shape(lambda: Discriminator(cfg, gen.io_channels, text_dim=gen.text_dim,
                                                         rngs=nnx.Rngs(0)))
    graphdef, abstract_disc_params, _ = nnx.split(abstract_disc, nnx.Param, ...)
    buffers = jax.jit(lambda: nnx.to_pure_dict(nnx.split(
        Discriminator(cfg, gen.io_channels, text_dim=gen.text_dim, rngs=nnx.Rngs(0)), nnx.Param, ...)[2]))()
    return ARCExperiment(
        gen=gen, disc_graphdef=graphdef, disc_buffers=buffers,
        abstract_disc_params=nnx.to_pure_dict(abstract_disc_params),
        disc_shardings=parallel.state_shardings(gen.mesh, abstract_disc_params, gen.rules),
        gen_tx=make_player_optimizer(cfg, cfg.arc.gen_lr), disc_tx=make_player_optimizer(cfg, cfg.arc.disc_lr),
    )


def arc_state_shardings(ax: ARCExperiment, abstract: ARCState) -> ARCState:
    """Generator and discriminator parameters by the logical rules, moments mirroring them, rest replicated."""
    rep = parallel.replicated(ax.mesh)
    return ARCState(
        step=rep, params=ax.gen.param_shardings,
        opt_state=optimizer_shardings(abstract.opt_state, ax.gen.abstract_params, ax.gen.param_shardings, rep),
        ema_params=ax.gen.param_shardings, disc_params=ax.disc_shardings,
        disc_opt_state=optimizer_shardings(abstract.disc_opt_state, ax.abstract_disc_params, ax.disc_shardings, rep),
        rng=rep, codec_stats=jax.tree.map(lambda _: rep, abstract.codec_stats),
        skips=jax.tree.map(lambda _: rep, abstract.skips),
    )


def _initial_arc_state_fn(ax: ARCExperiment, state_key: jax.Array):
    """``(generator params, codec_stats, head_key) -> ARCState`` at step 0 (traced by ``init_arc_state``;
    shapes only in ``arc_restore_target``)."""

    def init_fn(gen_params, stats, head_key) -> ARCState:
        fresh = nnx.to_pure_dict(nnx.split(
            Discriminator(ax.cfg, ax.gen.io_channels, text_dim=ax.gen.text_dim, rngs=nnx.Rngs(head_key)),
            nnx.Param, ...)[1])
        disc = from_pretrained(fresh, gen_params)
        return ARCState(
            step=jnp.zeros((), jnp.int32), params=gen_params, opt_state=ax.gen_tx.init(gen_params),
            ema_params=jax.tree.map(jnp.copy, gen_params), disc_params=disc, disc_opt_state=ax.disc_tx.init(disc),
            rng=state_key, codec_stats=stats, skips=init_skips(),
        )

    return init_fn


def init_arc_state(ax: ARCExperiment, generator: Params, codec_stats: CodecStats) -> ARCState:
    """Generator (raw and EMA) = ``generator`` (the pretrained EMA weights); discriminator backbone =
    its first ``arc.disc_depth`` blocks, head freshly initialized; fresh optimizers.

    jit boundary: built with the target shardings as out_shardings (no host copy of the weights).
    """
    head_key, state_key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(ax.cfg.train.seed), 17))
    init_fn = _initial_arc_state_fn(ax, state_key)
    abstract = jax.eval_shape(init_fn, generator, codec_stats, head_key)
    with jax.set_mesh(ax.mesh):
        return jax.jit(init_fn, out_shardings=arc_state_shardings(ax, abstract))(generator, codec_stats, head_key)


def arc_restore_target(ax: ARCExperiment) -> ARCState:
    """Sharded abstract ARC state (for restoring a post-training checkpoint onto ``ax``'s mesh)."""
    from jaxstage.models.codecs import fit_stats

    audio = jax.ShapeDtypeStruct((1, ax.cfg.num_samples), jnp.float32)
    stats = jax.eval_shape(lambda a: fit_stats(ax.gen.bound_codec(), a, per_channel=ax.cfg.codec.per_channel_stats),
                           audio)
    key = jax.random.PRNGKey(0)
    abstract = jax.eval_shape(_initial_arc_state_fn(ax, key), ax.gen.abstract_params, stats, key)
    return abstract_target(abstract, arc_state_shardings(ax, abstract))
