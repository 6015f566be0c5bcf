"""The pure train step and its one-time compilation over the mesh.

``train_step(state, batch) -> (state, metrics)`` encodes audio with the codec, samples noise
levels from a distribution whose location is read from ``state.regime`` (a traced array: moving it
never recompiles), drops the text condition with ``diffusion.cond_dropout``, takes one AdamW step
and updates the EMA. Metrics are device scalars returned in a dict (fetched by the host loop later).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxstage import parallel
from jaxstage.diffusion.noise import sample_levels
from jaxstage.models.codecs import normalize
from jaxstage.train.state import Experiment, TrainState, state_shardings

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def level_params(exp: Experiment, state: TrainState) -> dict[str, jax.Array]:
    """Parameters of the training noise-level distribution, as arrays (location from the regime)."""
    d = exp.cfg.diffusion
    loc, scale = state.regime.level_loc, jnp.asarray(d.scale, jnp.float32)
    if d.level_dist == "lognormal":
        return {"p_mean": loc, "p_std": scale}
    if d.level_dist == "logit_normal":
        return {"loc": loc, "scale": scale}
    if d.level_dist == "logsnr_uniform":
        return {"logsnr_min": jnp.asarray(d.logsnr_min, jnp.float32), "logsnr_max": jnp.asarray(d.logsnr_max, jnp.float32)}
    return {}


def make_train_step(exp: Experiment) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Build the pure (uncompiled) step function for ``exp``."""
    cfg = exp.cfg
    objective = exp.objective
    ema_decay = cfg.optim.ema_decay

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        key = jax.random.fold_in(state.rng, state.step)
        level_key, noise_key, drop_key = jax.random.split(key, 3)
        x0 = normalize(exp.codec.encode(batch["audio"]), state.codec_stats)
        batch_size = x0.shape[0]
        d = cfg.diffusion
        levels = sample_levels(level_key, batch_size, objective, d.level_dist, level_params(exp, state),
                               d.uniform_prob, t_eps=d.t_eps, sigma_min=d.sigma_min, sigma_max=d.sigma_max)
        eps = jax.random.normal(noise_key, x0.shape, x0.dtype)
        x_t = objective.add_noise(x0, eps, levels)
        keep_cond = jax.random.bernoulli(drop_key, 1.0 - cfg.diffusion.cond_dropout, (batch_size,))
        x_in, c_noise = objective.model_input(x_t, levels)

        def loss_fn(params):
            out = exp.model(params)(x_in, c_noise, batch["text_ids"], batch["text_mask"], keep_cond)
            per_example = objective.loss(out.out, x_t, x0, eps, levels)
            return jnp.mean(per_example)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = exp.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": exp.lr_schedule(state.step),
            "progress": state.regime.progress,
            "t_loc": state.regime.level_loc,
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params)
        return new_state, metrics

    return train_step


@dataclass
class CompiledStep:
    """The train step compiled once (AOT) for fixed state/batch shapes and shardings."""

    compiled: Any
    compile_seconds: float
    trace_count: int = 0
    calls: int = field(default=0)

    def __call__(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        self.calls += 1
        return self.compiled(state, batch)

    def memory_analysis(self) -> str:
        """Human-readable per-device memory figures of the compiled step."""
        try:
            m = self.compiled.memory_analysis()
        except Exception as err:  # some backends do not implement it
            return f"memory analysis unavailable: {err}"
        if m is None:
            return "memory analysis unavailable"
        mib = 1 << 20
        return (f"per device: arguments {m.argument_size_in_bytes / mib:.1f} MiB, outputs {m.output_size_in_bytes / mib:.1f} MiB, "
                f"temporaries {m.temp_size_in_bytes / mib:.1f} MiB, generated code {m.generated_code_size_in_bytes / mib:.1f} MiB")


def abstract_batch(exp: Experiment) -> Batch:
    """Shapes of one global batch."""
    cfg = exp.cfg
    b = cfg.train.batch_size
    return {
        "audio": jax.ShapeDtypeStruct((b, cfg.num_samples), jnp.float32, sharding=exp.batch_sharding),
        "text_ids": jax.ShapeDtypeStruct((b, cfg.data.text_max_length), jnp.int32, sharding=exp.batch_sharding),
        "text_mask": jax.ShapeDtypeStruct((b, cfg.data.text_max_length), jnp.bool_, sharding=exp.batch_sharding),
    }


def compile_train_step(exp: Experiment, state: TrainState) -> CompiledStep:
    """Compile ``train_step`` once, ahead of time, for ``state``'s shapes and the mesh.

    jit boundary: in/out shardings are the train-state shardings (params FSDP/TP by the logical
    rules, the rest replicated) and the batch split over (data, fsdp); metrics come back replicated.
    The state argument is donated, so parameters and optimizer moments are updated in place.
    An AOT-compiled step cannot silently retrace: a shape or sharding change raises instead.
    """
    import time

    traces = {"n": 0}
    step_fn = make_train_step(exp)

    def counted(state, batch):
        traces["n"] += 1  # runs once per trace, never per step
        return step_fn(state, batch)

    shardings = state_shardings(exp, state.codec_stats)
    rep = parallel.replicated(exp.mesh)
    jitted = jax.jit(counted, in_shardings=(shardings, exp.batch_sharding), out_shardings=(shardings, rep),
                     donate_argnums=0)
    abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
    start = time.perf_counter()
    with jax.set_mesh(exp.mesh):
        compiled = jitted.lower(abstract_state, abstract_batch(exp)).compile()
    return CompiledStep(compiled=compiled, compile_seconds=time.perf_counter() - start, trace_count=traces["n"])
