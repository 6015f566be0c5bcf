"""The train state pytree and everything static that the compiled step closes over.

``TrainState`` holds only device arrays (step, params, optimizer state, EMA params, RNG key, the
regime sub-state and the codec normalization), so it can be donated, sharded, checkpointed and
restored onto any mesh. ``Experiment`` holds the static parts built from the config: the NNX
graph definition, the codec, the objective, the optimizer and the shardings.
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
from jaxstage.data.pipeline import ExampleSpec, example_spec
from jaxstage.diffusion.objectives import make_objective
from jaxstage.models.codecs import CodecStats, make_codec
from jaxstage.models.denoiser import Denoiser
from jaxstage.train.recipe import MonitorBatch, Recipe, RegimeState, init_regime, make_recipe

Params = dict[str, Any]


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
class Experiment:
    """Static pieces of a run, built once from the config."""

    cfg: Config
    mesh: Mesh
    rules: dict[str, tuple[str, ...]]
    codec: Any
    objective: Any
    graphdef: nnx.GraphDef
    buffers: Params  # non-trainable model variables (constants captured by jit)
    abstract_params: Params
    param_shardings: Params
    batch_sharding: NamedSharding
    tx: optax.GradientTransformation
    lr_schedule: optax.Schedule
    recipe: Recipe
    example_spec: ExampleSpec  # batch key -> (per-example shape, dtype); prepared data: from dataset.json
    ssl_params: Any = None  # frozen SSL encoder weights, replicated on the mesh (guidance.ssl=encoder)

    @property
    def io_channels(self) -> int:
        return self.codec.channels

    @property
    def text_key(self) -> str:
        """The batch key holding the text condition: ``text_emb`` (precomputed) or ``text_ids``."""
        return "text_emb" if "text_emb" in self.example_spec else "text_ids"

    @property
    def text_dim(self) -> int:
        """Width of precomputed text embeddings (0 with the learned encoder)."""
        return self.example_spec["text_emb"][0][-1] if "text_emb" in self.example_spec else 0

    def model(self, params: Params) -> Denoiser:
        """A Denoiser module bound to ``params`` (use inside jit)."""
        return nnx.merge(self.graphdef, params, self.buffers)


def codec_from_config(cfg: Config):
    """The codec named by ``codec.kind`` with the config's hyperparameters."""
    c = cfg.codec
    if c.kind == "stft":
        return make_codec("stft", sample_rate=cfg.data.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
                          compress=c.compress, scale=c.scale)
    return make_codec("mel", sample_rate=cfg.data.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
                      n_mels=c.n_mels, f_min=c.f_min, f_max=c.f_max or cfg.data.sample_rate / 2,
                      griffin_lim_iters=c.griffin_lim_iters)


def objective_from_config(cfg: Config):
    """The diffusion objective named by ``diffusion.objective``."""
    if cfg.diffusion.objective == "edm":
        return make_objective("edm", sigma_data=cfg.diffusion.sigma_data)
    return make_objective(cfg.diffusion.objective)


def build_experiment(cfg: Config, mesh: Mesh | None = None) -> Experiment:
    """Codec, objective, model graph, optimizer and shardings for ``cfg`` on ``mesh``."""
    mesh = parallel.make_mesh(cfg.mesh) if mesh is None else mesh
    rules = parallel.rules_dict(cfg.mesh.rules)
    codec = codec_from_config(cfg)
    spec = example_spec(cfg)
    neural_ssl, ssl_params = load_ssl_encoder(cfg, mesh)
    recipe = make_recipe(cfg, ssl_dim=spec["ssl_targets"][0][-1] if "ssl_targets" in spec else 0,
                         neural_ssl=neural_ssl)
    ssl_dim = recipe.projector_dim
    text_dim = spec["text_emb"][0][-1] if "text_emb" in spec else 0
    abstract_model = nnx.eval_shape(
        lambda: Denoiser(cfg, codec.channels, ssl_dim=ssl_dim, text_dim=text_dim, rngs=nnx.Rngs(0)))
    graphdef, abstract_param_state, _ = nnx.split(abstract_model, nnx.Param, ...)
    # Buffers (non-Param variables, e.g. fixed frequencies) are deterministic constants; under jit
    # XLA computes only them (the parameter initializers are dead code).
    buffers = jax.jit(lambda: nnx.to_pure_dict(
        nnx.split(Denoiser(cfg, codec.channels, ssl_dim=ssl_dim, text_dim=text_dim, rngs=nnx.Rngs(0)),
                  nnx.Param, ...)[2]))()
    tx, schedule = make_optimizer(cfg)
    divisor = parallel.batch_divisor(mesh, rules)
    if cfg.train.batch_size % divisor:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by the batch mesh axes ({divisor} ways)")
    return Experiment(
        cfg=cfg, mesh=mesh, rules=rules, codec=codec, objective=objective_from_config(cfg),
        graphdef=graphdef, buffers=buffers,
        abstract_params=nnx.to_pure_dict(abstract_param_state),
        param_shardings=parallel.state_shardings(mesh, abstract_param_state, rules),
        batch_sharding=parallel.batch_sharding(mesh, rules), tx=tx, lr_schedule=schedule, recipe=recipe,
        example_spec=spec, ssl_params=ssl_params,
    )


def load_ssl_encoder(cfg: Config, mesh: Mesh):
    """(NeuralSSL, replicated frozen weights) for guidance.ssl=encoder when targets or D need it, else (None, None)."""
    g = cfg.guidance
    if g.ssl != "encoder" or not (g.lambda0 > 0 or cfg.regime.discrepancy == "output"):
        return None, None
    from jaxstage.models.ssl_encoder import load_neural_ssl

    neural, params = load_neural_ssl(g.ssl_encoder_dir, tuple(g.ssl_layers), cfg.data.sample_rate)
    params = jax.device_put(params, parallel.replicated(mesh))
    return neural, params


def init_state(exp: Experiment, codec_stats: CodecStats, monitor: MonitorBatch | None) -> TrainState:
    """Initialize parameters, optimizer and regime directly with their target shardings.

    jit boundary: parameters are created already sharded by ``param_shardings`` (no host copy);
    the optimizer moments inherit those shardings by propagation.
    """
    cfg = exp.cfg
    key = jax.random.PRNGKey(cfg.train.seed)
    init_key, state_key = jax.random.split(key)

    ssl_dim = exp.recipe.projector_dim

    def init_fn(init_key, stats, monitor):
        model = Denoiser(cfg, exp.io_channels, ssl_dim=ssl_dim, text_dim=exp.text_dim, rngs=nnx.Rngs(init_key))
        params = nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[1])
        params = jax.lax.with_sharding_constraint(params, exp.param_shardings)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=exp.tx.init(params),
            ema_params=jax.tree.map(jnp.copy, params), rng=state_key,
            regime=init_regime(exp.recipe), codec_stats=stats, monitor=monitor,
        )

    with jax.set_mesh(exp.mesh):
        shardings = state_shardings(exp, codec_stats, monitor)
        return jax.jit(init_fn, out_shardings=shardings)(init_key, codec_stats, monitor)


def abstract_state(exp: Experiment, codec_stats: CodecStats, monitor: MonitorBatch | None) -> TrainState:
    """Shape/dtype tree of the train state (no allocation)."""
    def build(stats, monitor):
        params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), exp.abstract_params)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=exp.tx.init(params),
            ema_params=params, rng=jax.random.PRNGKey(0), regime=init_regime(exp.recipe), codec_stats=stats,
            monitor=monitor,
        )
    return jax.eval_shape(build, codec_stats, monitor)


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
        monitor=jax.tree.map(lambda _: rep, abstract.monitor),
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


def fit_codec_stats(exp: Experiment, audio: np.ndarray) -> CodecStats:
    """Data-derived normalization of the codec features, from a host batch of clips."""
    from jaxstage.models.codecs import fit_stats

    return fit_stats(exp.codec, jnp.asarray(audio), per_channel=exp.cfg.codec.per_channel_stats)
