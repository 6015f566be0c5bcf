"""The pure ARC post-training step (SPEC §5) and its one-time compilation over the mesh.

``arc_step(state, batch) -> (state, metrics)``, both players in one compiled step:

1. the generator's one-step estimate ``x̂0 = x_t − t·G(x_t, t, c)`` at ``t ~ logit-normal(arc.gen_level_*)``;
2. real ``x0`` and fake ``x̂0`` re-noised with the same noise at ``tau ~ logit-normal(arc.dis_level_*)``;
3. discriminator update: relativistic ``L_D`` + ``arc.contrastive_weight``·``L_C`` (real clips scored
   with prompts rolled by one within the batch; clips whose rolled prompt equals their own weigh 0)
   + ``arc.r1_weight``·(approximate R1 on real + R2 on fake);
4. generator update against the *updated* discriminator: relativistic ``L_G``; EMA of the generator.

The three discriminator passes (real, fake, real with rolled prompts) run as one batch of 3B.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxstage.diffusion.noise import sample_levels
from jaxstage.models.codecs import normalize
from jaxstage.posttrain import arc_losses
from jaxstage.run.compiled_step import CompiledStep, compile_step
from jaxstage.run.non_finite import NonFiniteGuard
from jaxstage.posttrain.state import ARCExperiment, ARCState, arc_state_shardings
from jaxstage.train.step import Batch, Metrics, abstract_batch

FINITE_METRICS = ("loss_g", "loss_d", "grad_norm_g", "grad_norm_d")  # else the step is skipped (run.non_finite)


def make_arc_step(ax: ARCExperiment) -> Callable[[ARCState, Batch], tuple[ARCState, Metrics]]:
    """Build the pure (uncompiled) ARC step for ``ax``."""
    cfg, a = ax.cfg, ax.cfg.arc
    exp = ax.gen
    objective = exp.objective
    text_key = exp.text_key
    t_eps = cfg.diffusion.t_eps

    def levels(key, n, loc, scale):
        params = {"loc": jnp.asarray(loc, jnp.float32), "scale": jnp.asarray(scale, jnp.float32)}
        return sample_levels(key, n, objective, "logit_normal", params, t_eps=t_eps)

    def one_step_x0(gen_params, x_t, t, ids, mask, numbers):
        x_in, c_noise = objective.model_input(x_t, t)
        velocity = exp.model(gen_params)(x_in, c_noise, ids, mask, numbers=numbers).out
        return arc_losses.generator_one_step_x0(x_t, t, velocity)

    def scores(disc_params, x, tau, ids, mask, numbers):
        x_in, c_noise = objective.model_input(x, tau)
        return ax.discriminator(disc_params)(x_in, c_noise, ids, mask, numbers)

    def tiled(numbers, *parts):
        """The number inputs of a batch made of ``parts`` (each: the batch's own or the rolled ones)."""
        return None if numbers is None else jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)

    def arc_step(state: ARCState, batch: Batch, codec_params: Any = None) -> tuple[ARCState, Metrics]:
        """One ARC step; ``codec_params``: a latent codec's frozen autoencoder (compiled: an argument)."""
        key = jax.random.fold_in(state.rng, state.step)
        t_key, eps_key, tau_key, noise_key, r1_key = jax.random.split(key, 5)
        if "latents" in batch:  # static: pre-encoded records (data.latents)
            x0 = normalize(batch["latents"], state.codec_stats)
        else:
            x0 = normalize(exp.bound_codec(codec_params).encode(batch["audio"]), state.codec_stats)
        ids, mask = batch[text_key], batch["text_mask"]
        numbers = exp.numbers_of(batch)  # the number conditioners' inputs (None without them)
        b = x0.shape[0]
        t = levels(t_key, b, a.gen_level_loc, a.gen_level_scale)
        x_t = objective.add_noise(x0, jax.random.normal(eps_key, x0.shape, x0.dtype), t)
        tau = levels(tau_key, b, a.dis_level_loc, a.dis_level_scale)
        noise = jax.random.normal(noise_key, x0.shape, x0.dtype)  # the same noise for real and fake
        real = arc_losses.renoise(x0, noise, tau)
        rolled_ids, rolled_mask, rolled_numbers = arc_losses.roll_prompts((ids, mask, numbers))
        weight = arc_losses.contrastive_weight_mask(ids, mask, rolled_ids, rolled_mask) if text_key == "text_ids" \
            else jnp.ones((b,), jnp.float32)  # precomputed embeddings: rolled rows are distinct clips' captions

        # ---- discriminator update (the fake is a constant here)
        fake = arc_losses.renoise(jax.lax.stop_gradient(one_step_x0(state.params, x_t, t, ids, mask, numbers)),
                                  noise, tau)

        def d_loss_fn(disc_params):
            s = scores(disc_params, jnp.concatenate([real, fake, real]), jnp.tile(tau, 3),
                       jnp.concatenate([ids, ids, rolled_ids]), jnp.concatenate([mask, mask, rolled_mask]),
                       tiled(numbers, numbers, numbers, rolled_numbers))
            s_real, s_fake, s_rolled = s[:b], s[b:2 * b], s[2 * b:]
            loss_adv = arc_losses.relativistic_d_loss(s_real, s_fake)
            loss_c = arc_losses.contrastive_d_loss(s_real, s_rolled, weight=weight)
            total = loss_adv + a.contrastive_weight * loss_c
            aux = {"loss_d": loss_adv, "loss_c": loss_c, "d_real": jnp.mean(s_real), "d_fake": jnp.mean(s_fake),
                   "d_rolled": jnp.mean(s_rolled), "d_accuracy": jnp.mean((s_real > s_fake).astype(jnp.float32))}
            if a.r1_weight > 0:  # static: the penalty is compiled in only when used
                both = jnp.concatenate([real, fake])
                penalty = arc_losses.approx_r1_penalty(
                    lambda x: scores(disc_params, x, jnp.tile(tau, 2), jnp.concatenate([ids, ids]),
                                     jnp.concatenate([mask, mask]), tiled(numbers, numbers, numbers)),
                    both, r1_key, sigma=a.r1_sigma)
                total = total + a.r1_weight * penalty
                aux["loss_r1"] = penalty
            return total, aux

        (_, d_aux), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.disc_params)
        d_updates, disc_opt_state = ax.disc_tx.update(d_grads, state.disc_opt_state, state.disc_params)
        disc_params = optax.apply_updates(state.disc_params, d_updates)

        # ---- generator update against the updated discriminator
        s_real = jax.lax.stop_gradient(scores(disc_params, real, tau, ids, mask, numbers))

        def g_loss_fn(gen_params):
            fake_g = arc_losses.renoise(one_step_x0(gen_params, x_t, t, ids, mask, numbers), noise, tau)
            return arc_losses.relativistic_g_loss(s_real, scores(disc_params, fake_g, tau, ids, mask, numbers))

        loss_g, g_grads = jax.value_and_grad(g_loss_fn)(state.params)
        g_updates, opt_state = ax.gen_tx.update(g_grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, g_updates)
        ema_params = jax.tree.map(lambda e, q: a.ema_decay * e + (1.0 - a.ema_decay) * q, state.ema_params, params)

        metrics = {"loss_g": loss_g, **d_aux, "grad_norm_g": optax.tree.norm(g_grads),
                   "grad_norm_d": optax.tree.norm(d_grads),
                   "loss_r1": d_aux.get("loss_r1", jnp.asarray(jnp.nan, jnp.float32))}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params,
                                  disc_params=disc_params, disc_opt_state=disc_opt_state)
        return new_state, metrics

    return arc_step


def compile_arc_step(ax: ARCExperiment, state_like: ARCState) -> CompiledStep:
    """Compile ``arc_step`` once (see ``run.compiled_step``): both players' params by the logical
    rules, moments mirroring them, the rest replicated; the state is donated; non-finite steps are skipped;
    a latent codec's frozen autoencoder is a third, replicated, non-donated argument."""
    guard = NonFiniteGuard(FINITE_METRICS, ax.cfg.train.max_skipped_steps)
    frozen = () if ax.gen.codec_params is None else (ax.gen.codec_params,)
    return compile_step(make_arc_step(ax), state_like, arc_state_shardings(ax, state_like), abstract_batch(ax.gen),
                        ax.mesh, ax.gen.batch_sharding, guard, frozen)
