"""The pure train step and its one-time compilation over the mesh.

``train_step(state, batch) -> (state, metrics)`` encodes audio with the codec, reads the progress
p from ``state.regime`` (a traced scalar: moving it never recompiles), samples noise levels at the
p-dependent location, drops the text condition with ``diffusion.cond_dropout``, adds the alignment
and structure terms, takes one AdamW step, updates the EMA and runs the periodic regime events.
Metrics are device arrays returned in a dict (fetched by the host loop one log step later).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxstage.diffusion.noise import sample_levels
from jaxstage.models.codecs import denormalize, frame_mask, normalize
from jaxstage.models.dit import block_weight_matrices
from jaxstage.models.ssl import resample_frames
from jaxstage.run.compiled_step import CompiledStep, compile_step
from jaxstage.run.non_finite import NonFiniteGuard
from jaxstage.stage import guidance as guidance_lib
from jaxstage.stage import regime as regime_lib
from jaxstage.stage import structure as structure_lib
from jaxstage.train.recipe import (
    MonitorBatch, bucketed_loss, level_buckets, level_dist_params, level_location_now, ssl_features, ssl_targets,
)
from jaxstage.train.state import Experiment, TrainState, state_shardings

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
FINITE_METRICS = ("loss", "grad_norm")  # a step where either is not finite is skipped (run.non_finite)


def make_discrepancy(exp: Experiment) -> Callable[[Any, MonitorBatch, Any], jax.Array]:
    """D(params, monitor, codec_stats) on the fixed monitor batch (no gradient), SPEC §3.1.

    alignment: D = 1 − mean cos(h_ψ(H_ℓ), y), the projected block-ℓ hidden state against the targets;
    output:    D = 1 − mean cos(φ(decode(x̂₀)), φ(x₀)), x̂₀ the model's clean prediction decoded to
               audio by the codec (Griffin-Lim for `mel`), both at the token rate.
    The means run over the real frames only when ``monitor.frame_mask`` is set (padded prepared clips).
    """
    objective, recipe, cfg = exp.objective, exp.recipe, exp.cfg

    def discrepancy(params, monitor: MonitorBatch, codec_stats, ssl_params=None, codec_params=None,
                    text_params=None) -> jax.Array:
        params = jax.lax.stop_gradient(params)
        model = exp.model(params)
        x_t = objective.add_noise(monitor.x0, monitor.noise, monitor.levels)
        x_in, c_noise = objective.model_input(x_t, monitor.levels)
        text = exp.text_input(monitor.text_ids, monitor.text_mask, text_params)
        out = model(x_in, c_noise, text, monitor.text_mask, numbers=monitor.numbers, low=monitor.low,
                    cutoff=monitor.cutoff, hidden_layer=recipe.hidden_layer)
        if recipe.discrepancy == "alignment":
            return guidance_lib.alignment_loss(model.projector(out.hidden), monitor.targets, mask=monitor.frame_mask)
        x0_hat = objective.denoise(out.out, x_t, monitor.levels)
        audio = exp.bound_codec(codec_params).decode(denormalize(x0_hat, codec_stats), cfg.num_samples)
        predicted = resample_frames(ssl_features(recipe, audio, ssl_params), monitor.targets.shape[1])
        return guidance_lib.alignment_loss(predicted, monitor.targets, mask=monitor.frame_mask)

    return discrepancy


def make_train_step(exp: Experiment) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Build the pure (uncompiled) step function for ``exp``.

    Per step: p = progress(state.regime) (a traced scalar) sets the level-distribution location
    (mechanism 2), λ_ssl(p) (mechanism 1) and, with the structure gate, λ_struct (mechanism 3).
    Periodic work runs under ``lax.cond`` on the step count, never as a host branch: the monitor
    forward that measures D and updates p every ``regime.every`` steps, and the structure check
    every ``struct.every`` steps.

    Padded clips (the batch has ``audio_mask``, prepared data): the diffusion and alignment losses are
    per-example means over the real frames only (``codecs.frame_mask``; the backbone's tokens are the
    codec frames), then the batch mean; without the key the step is unchanged.
    """
    cfg = exp.cfg
    objective = exp.objective
    recipe = exp.recipe
    ema_decay = cfg.optim.ema_decay
    d = cfg.diffusion
    num_groups = recipe.structure.num_groups
    text_key = exp.text_key  # "text_ids" (learned encoder) or "text_emb" (precomputed embeddings)

    sr = cfg.task == "sr"

    def forward(model, x_in, c_noise, ids, mask, keep, drop_key, numbers, low=None, cutoff=None):
        return model(x_in, c_noise, ids, mask, keep, numbers=numbers, drop_key=drop_key, low=low, cutoff=cutoff,
                     hidden_layer=recipe.hidden_layer, normalize_summaries=recipe.struct_enabled)

    def block_similarity(params):
        model = exp.model(params)
        return structure_lib.similarity(structure_lib.block_signatures(block_weight_matrices(model.dit)))

    measure_discrepancy = make_discrepancy(exp)

    def train_step(state: TrainState, batch: Batch, frozen: dict[str, Any] | None = None) -> tuple[TrainState, Metrics]:
        """One step; ``frozen``: the frozen weights (``Experiment.frozen_params``: the SSL encoder's
        under ``ssl``, the latent codec's autoencoder under ``codec``).

        Called uncompiled without them, the Experiment's copies are used (captured as constants);
        ``compile_train_step`` always passes them as an argument instead.
        """
        frozen = exp.frozen_params() if frozen is None else frozen
        ssl_params, codec_params, text_params = frozen.get("ssl"), frozen.get("codec"), frozen.get("text")
        codec = exp.bound_codec(codec_params)
        key = jax.random.fold_in(state.rng, state.step)
        level_key, noise_key, drop_key = jax.random.split(key, 3)
        step = state.step
        p = regime_lib.progress_at_step(state.regime.progress, step, recipe.progress)
        if "latents" in batch:  # static: pre-encoded records (data.latents), no encoder in the step
            x0 = normalize(batch["latents"], state.codec_stats)
            mask = batch["latent_mask"].astype(jnp.float32) if "latent_mask" in batch else None
        else:  # a latent codec with codec.latent=sample draws its latents with a key of their own
            x0 = normalize(codec.encode(batch["audio"], jax.random.fold_in(key, 1)), state.codec_stats)
            mask = frame_mask(codec, batch["audio_mask"]) if "audio_mask" in batch else None  # static
        # task=sr: the low band in the same normalized feature space (input channels) and its cutoff
        low = normalize(codec.encode(batch["low"]), state.codec_stats) if sr else None
        cutoff = batch["cutoff"] if sr else None
        batch_size = x0.shape[0]
        levels = sample_levels(level_key, batch_size, objective, d.level_dist, level_dist_params(cfg, recipe, p),
                               d.uniform_prob, t_eps=d.t_eps, sigma_min=d.sigma_min, sigma_max=d.sigma_max)
        eps = jax.random.normal(noise_key, x0.shape, x0.dtype)
        x_t = objective.add_noise(x0, eps, levels)
        keep_cond = jax.random.bernoulli(drop_key, 1.0 - d.cond_dropout, (batch_size,))
        x_in, c_noise = objective.model_input(x_t, levels)
        targets = ssl_targets(recipe, batch, x0.shape[1], ssl_params) if recipe.guidance is not None else None
        struct_weight = structure_lib.structure_weight(state.regime.structure, p, step, recipe.structure)
        text = exp.text_input(batch[text_key], batch["text_mask"], text_params)  # text.kind=t5: the frozen T5 runs here

        def loss_fn(params):
            model = exp.model(params)
            out = forward(model, x_in, c_noise, text, batch["text_mask"], keep_cond, drop_key,
                          exp.numbers_of(batch), low, cutoff)
            per_example = objective.loss(out.out, x_t, x0, eps, levels, mask)
            loss_diff = jnp.mean(per_example)
            aux = {"loss_diff": loss_diff, "per_example": per_example}
            total = loss_diff
            if recipe.guidance is not None:  # static: alignment on or off for the whole run
                align_total, align = guidance_lib.guided_alignment(out.hidden, model.projector, targets, p,
                                                                   recipe.guidance, mask)
                total = total + align_total
                aux.update(loss_align=align["loss_align"], ssl_weight=align["ssl_weight"])
            if recipe.struct_enabled:
                group_ids = state.regime.structure.group_ids
                if recipe.structure.kind == "decorrelation":
                    loss_struct = structure_lib.decorrelation_loss(out.block_summaries, group_ids, num_groups)
                else:
                    signatures = structure_lib.block_signatures(block_weight_matrices(model.dit))
                    loss_struct = structure_lib.anchoring_loss(signatures, group_ids, num_groups)
                total = total + struct_weight * loss_struct
                aux["loss_struct"] = loss_struct
            return total, aux

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = exp.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = jax.tree.map(lambda e, q: ema_decay * e + (1.0 - ema_decay) * q, state.ema_params, params)

        # ---- regime events, inside the compiled step (lax.cond on the step count)
        new_step = step + 1
        regime = state.regime
        if recipe.monitor_enabled:
            progress = jax.lax.cond(
                new_step % recipe.monitor_every == 0,
                lambda: regime_lib.update_progress(
                    regime.progress, measure_discrepancy(params, state.monitor, state.codec_stats, ssl_params,
                                                         codec_params, text_params),
                    new_step, recipe.progress),
                lambda: regime.progress,
            )
        else:  # nothing to measure: p follows its schedule (or stays 0)
            progress = regime.progress
        p_next = regime_lib.progress_at_step(progress, new_step, recipe.progress)
        structure = regime.structure
        if recipe.struct_enabled:
            structure = jax.lax.cond(
                new_step % recipe.struct_every == 0,
                lambda: structure_lib.update_structure(regime.structure, block_similarity(params), p_next,
                                                       new_step, recipe.structure),
                lambda: regime.structure,
            )
        regime = regime.replace(progress=progress, structure=structure)

        nan = jnp.asarray(jnp.nan, jnp.float32)
        metrics = {
            "loss": loss,
            "loss_diff": aux["loss_diff"],
            "loss_align": aux.get("loss_align", nan),
            "loss_struct": aux.get("loss_struct", nan),
            "grad_norm": grad_norm,
            "lr": exp.lr_schedule(step),
            "progress": p,
            "ssl_weight": aux.get("ssl_weight", jnp.zeros((), jnp.float32)),
            "t_loc": level_location_now(cfg, recipe, p),
            "discrepancy": progress.smoothed,
            "rate": progress.rate,
            "struct_on": structure.on.astype(jnp.float32),
            "struct_weight": struct_weight,
            "groups": structure.group_ids,
            "loss_buckets": bucketed_loss(aux["per_example"], level_buckets(cfg, objective, levels)),
        }
        new_state = state.replace(step=new_step, params=params, opt_state=opt_state, ema_params=ema_params,
                                  regime=regime)
        return new_state, metrics

    return train_step


def abstract_batch(exp: Experiment) -> Batch:
    """Shapes of one global batch: the data pipeline's per-example spec (``exp.example_spec``:
    audio, text ids or precomputed embeddings, mask, precomputed SSL targets; task=sr: low, cutoff)
    with the batch axis."""
    b = exp.cfg.train.batch_size
    return {key: jax.ShapeDtypeStruct((b, *shape), dtype, sharding=exp.batch_sharding)
            for key, (shape, dtype) in exp.example_spec.items()}


def compile_train_step(exp: Experiment, state: TrainState) -> CompiledStep:
    """Compile ``train_step`` once for ``state``'s shapes and the mesh (see ``run.compiled_step``), its
    non-finite steps skipped; frozen weights (guidance.ssl=encoder's encoder, codec.kind=oobleck's
    autoencoder) are a third, replicated, non-donated argument."""
    frozen = (exp.frozen_params(),) if exp.frozen_params() else ()
    guard = NonFiniteGuard(FINITE_METRICS, exp.cfg.train.max_skipped_steps)
    return compile_step(make_train_step(exp), state, state_shardings(exp, state.codec_stats, state.monitor),
                        abstract_batch(exp), exp.mesh, exp.batch_sharding, guard, frozen)
