"""The autoencoder trainer's state pytree and the static experiment its compiled step closes over.

``AEState`` holds device arrays only: the VAE (raw params, AdamW state, EMA: the weights exported and
evaluated), the discriminator (params, AdamW state; ``None`` when ``autoencoder.disc_enabled`` is
off), the RNG key and the skip counter. ``AEExperiment`` holds the mesh, both graphs, both optimizers
and the shardings: every parameter replicated, the batch split over the data axes (``parallel``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from jaxstage import parallel
from jaxstage.autoencoder.discriminator import MultiScaleSTFTDiscriminator
from jaxstage.config import Config, ConfigError
from jaxstage.data.pipeline import ExampleSpec, example_spec
from jaxstage.models.oobleck import OobleckConfig, OobleckVAE
from jaxstage.run.checkpoint import abstract_target
from jaxstage.run.non_finite import SkipCount, init_skips
from jaxstage.train.state import make_optimizer  # the pre-training schedule (warm-up, cosine, clipping)

Params = dict[str, Any]


@flax.struct.dataclass
class AEState:
    """Everything autoencoder training changes; a pytree of arrays."""

    step: jax.Array
    params: Params  # VAE (raw)
    opt_state: optax.OptState  # VAE AdamW
    ema_params: Params  # VAE EMA (optim.ema_decay): what reconstructions, the report and the export use
    disc_params: Params | None  # None: autoencoder.disc_enabled=false
    disc_opt_state: optax.OptState | None
    rng: jax.Array
    skips: SkipCount  # non-finite steps skipped (``run.non_finite``)


def oobleck_config(cfg: Config) -> OobleckConfig:
    """The VAE shape of ``autoencoder.*``."""
    a = cfg.autoencoder
    return OobleckConfig(audio_channels=a.audio_channels, channels=a.channels, c_mults=tuple(a.c_mults),
                         strides=tuple(a.strides), latent_dim=a.latent_dim, use_snake=a.use_snake,
                         final_tanh=a.final_tanh, use_nearest_upsample=a.use_nearest_upsample)


@dataclass
class AEExperiment:
    """Static pieces of an autoencoder run, built once from the config."""

    cfg: Config
    mesh: Mesh
    batch_sharding: NamedSharding
    example_spec: ExampleSpec
    vae_config: OobleckConfig
    vae_graphdef: nnx.GraphDef
    vae_rest: Any
    abstract_params: Params
    disc_graphdef: nnx.GraphDef | None
    disc_rest: Any
    abstract_disc_params: Params | None
    tx: optax.GradientTransformation
    disc_tx: optax.GradientTransformation | None

    def vae(self, params: Params) -> OobleckVAE:
        """The VAE bound to ``params`` (use inside jit)."""
        return nnx.merge(self.vae_graphdef, params, self.vae_rest)

    def discriminator(self, params: Params) -> MultiScaleSTFTDiscriminator:
        """The discriminator bound to ``params`` (use inside jit)."""
        return nnx.merge(self.disc_graphdef, params, self.disc_rest)


def _make_vae(cfg: Config, key: jax.Array) -> OobleckVAE:
    return OobleckVAE(oobleck_config(cfg), nnx.Rngs(key))


def _make_disc(cfg: Config, key: jax.Array) -> MultiScaleSTFTDiscriminator:
    a = cfg.autoencoder
    return MultiScaleSTFTDiscriminator(tuple(a.disc_n_ffts), a.disc_filters, a.audio_channels, tuple(a.disc_kernel),
                                       tuple(a.disc_dilations), rngs=nnx.Rngs(key))


def make_disc_optimizer(cfg: Config) -> optax.GradientTransformation:
    """AdamW at the constant ``autoencoder.disc_lr``; betas, weight decay and clipping from ``optim.*``."""
    o = cfg.optim
    parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
    parts.append(optax.adamw(cfg.autoencoder.disc_lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
    return optax.chain(*parts)


def build_ae_experiment(cfg: Config, mesh: Mesh | None = None) -> AEExperiment:
    """Mesh, VAE and discriminator graphs, optimizers and the batch sharding for ``cfg``."""
    if cfg.task != "autoencoder":
        raise ConfigError(f"task={cfg.task}: the autoencoder trainer needs task=autoencoder")
    mesh = parallel.make_mesh(cfg.mesh) if mesh is None else mesh
    rules = parallel.rules_dict(cfg.mesh.rules)
    divisor = parallel.batch_divisor(mesh, rules)
    if cfg.train.batch_size % divisor:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is not divisible by the batch mesh axes "
                          f"({divisor} ways)")
    key = jax.random.PRNGKey(0)
    graphdef, abstract, rest = nnx.split(nnx.eval_shape(lambda: _make_vae(cfg, key)), nnx.Param, ...)
    disc_graphdef = disc_rest = abstract_disc = disc_tx = None
    if cfg.autoencoder.disc_enabled:
        disc_graphdef, abstract_disc, disc_rest = nnx.split(nnx.eval_shape(lambda: _make_disc(cfg, key)),
                                                            nnx.Param, ...)
        abstract_disc = nnx.to_pure_dict(abstract_disc)
        disc_tx = make_disc_optimizer(cfg)
    return AEExperiment(cfg=cfg, mesh=mesh, batch_sharding=parallel.batch_sharding(mesh, rules),
                        example_spec=example_spec(cfg), vae_config=oobleck_config(cfg), vae_graphdef=graphdef,
                        vae_rest=rest, abstract_params=nnx.to_pure_dict(abstract), disc_graphdef=disc_graphdef,
                        disc_rest=disc_rest, abstract_disc_params=abstract_disc, tx=make_optimizer(cfg)[0],
                        disc_tx=disc_tx)


def _initial_state_fn(ax: AEExperiment):
    """``(vae_key, disc_key, state_key) -> AEState`` at step 0 (traced by ``init_ae_state``; shapes
    only in ``ae_restore_target``)."""

    def init_fn(vae_key, disc_key, state_key) -> AEState:
        params = nnx.to_pure_dict(nnx.split(_make_vae(ax.cfg, vae_key), nnx.Param, ...)[1])
        disc = disc_opt = None
        if ax.disc_tx is not None:
            disc = nnx.to_pure_dict(nnx.split(_make_disc(ax.cfg, disc_key), nnx.Param, ...)[1])
            disc_opt = ax.disc_tx.init(disc)
        return AEState(step=jnp.zeros((), jnp.int32), params=params, opt_state=ax.tx.init(params),
                       ema_params=jax.tree.map(jnp.copy, params), disc_params=disc, disc_opt_state=disc_opt,
                       rng=state_key, skips=init_skips())

    return init_fn


def _keys(cfg: Config) -> tuple[jax.Array, jax.Array, jax.Array]:
    return tuple(jax.random.split(jax.random.PRNGKey(cfg.train.seed), 3))


def ae_state_shardings(ax: AEExperiment, abstract: AEState) -> AEState:
    """Every leaf replicated: the VAE and discriminator are small; the batch carries the data parallelism."""
    rep = parallel.replicated(ax.mesh)
    return jax.tree.map(lambda _: rep, abstract)


def init_ae_state(ax: AEExperiment) -> AEState:
    """Fresh VAE, EMA = VAE, fresh discriminator (if enabled) and optimizers, from ``train.seed``.

    jit boundary: built directly with the replicated target shardings (no host copy)."""
    fn = _initial_state_fn(ax)
    keys = _keys(ax.cfg)
    abstract = jax.eval_shape(fn, *keys)
    with jax.set_mesh(ax.mesh):
        return jax.jit(fn, out_shardings=ae_state_shardings(ax, abstract))(*keys)


def ae_restore_target(ax: AEExperiment) -> AEState:
    """Sharded abstract AE state (for restoring a checkpoint onto ``ax``'s mesh)."""
    abstract = jax.eval_shape(_initial_state_fn(ax), *_keys(ax.cfg))
    return abstract_target(abstract, ae_state_shardings(ax, abstract))
