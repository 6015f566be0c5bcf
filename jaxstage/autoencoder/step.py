"""The pure autoencoder training step and its one-time compilation over the mesh.

``ae_step(state, batch) -> (state, metrics)``, one compiled program:

1. with ``autoencoder.train_crop`` C > 0, cut each clip to a random window ``[o, o + C)`` (offset per
   example from ``fold_in(fold_in(state.rng, step), CROP_STREAM)``: a function of the seed and the step
   only, so a resumed run crops as the uninterrupted one did);
   encode the batch's audio ``[B, N]`` (``[B, C]`` when cropped) as ``[B, N, 1]``; a reparameterized sample
   ``mean + stdev·noise`` of the VAE bottleneck (noise from ``fold_in(state.rng, step)``); decode;
2. VAE loss: ``stft_weight·MRSTFT + kl_weight·KL (+ l1_weight·L1)``;
3. with the discriminator (``autoencoder.disc_enabled``) and ``step >= disc_start_step`` (a traced
   ``lax.cond``, never a host branch): ``adversarial_weight·hinge + feature_matching_weight·FM`` for
   the VAE against the current discriminator, and the discriminator's hinge loss on the real clips
   and the (constant) reconstructions; both players update in this step, the discriminator only
   from ``disc_start_step`` on (before, its weights and moments keep their values);
4. AdamW for the VAE, its EMA, AdamW for the discriminator.

One backward pass gives both gradients: the VAE's terms see the discriminator's weights through
``stop_gradient`` and the discriminator's loss sees the reconstructions through it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxstage.autoencoder.discriminator import discriminator_losses
from jaxstage.autoencoder.losses import multi_resolution_stft_loss
from jaxstage.autoencoder.state import AEExperiment, AEState, ae_state_shardings
from jaxstage.models.oobleck import vae_kl, vae_moments
from jaxstage.run.compiled_step import CompiledStep, compile_step
from jaxstage.run.non_finite import NonFiniteGuard

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
FINITE_METRICS = ("loss", "grad_norm")  # else the step is skipped (run.non_finite)
DISC_FINITE_METRICS = ("loss_dis", "grad_norm_disc")  # watched too when the discriminator is on
CROP_STREAM = 0x63726F70  # folded into the step's key for the crop offsets (the noise keeps the step's key)


def crop_offsets(key: jax.Array, batch: int, clip_length: int, length: int) -> jax.Array:
    """``[batch]`` int32 window starts, uniform in ``[0, clip_length - length]``, drawn with ``key``."""
    return jax.random.randint(key, (batch,), 0, clip_length - length + 1)


def random_crops(audio: jax.Array, length: int, key: jax.Array) -> jax.Array:
    """``audio [B, N, ...]`` -> ``[B, length, ...]``: per example the window at ``crop_offsets(key, B, N,
    length)``."""
    offsets = crop_offsets(key, audio.shape[0], audio.shape[1], length)
    return jax.vmap(lambda x, o: jax.lax.dynamic_slice_in_dim(x, o, length, axis=0))(audio, offsets)


def make_ae_step(ax: AEExperiment) -> Callable[[AEState, Batch], tuple[AEState, Metrics]]:
    """Build the pure (uncompiled) autoencoder step for ``ax``."""
    a, ema_decay = ax.cfg.autoencoder, ax.cfg.optim.ema_decay
    disc_on = ax.disc_tx is not None  # static: the discriminator is compiled in only when enabled
    sg = jax.lax.stop_gradient

    def loss_fn(params, disc_params, audio, key, gan_active):
        vae = ax.vae(params)
        mean, stdev = vae_moments(vae.encoder(audio))
        decoded = vae.decode(mean + a.latent_noise * stdev * jax.random.normal(key, mean.shape, mean.dtype))
        mrstft = multi_resolution_stft_loss(decoded, audio, tuple(a.stft_resolutions))
        kl = vae_kl(mean, stdev)
        loss = a.stft_weight * mrstft + a.kl_weight * kl
        aux = {"mrstft": mrstft, "kl": kl, "latent_std": jnp.std(mean), "stdev_mean": jnp.mean(stdev)}
        if a.l1_weight > 0:  # static: compiled in only when used
            aux["l1"] = jnp.mean(jnp.abs(decoded - audio))
            loss = loss + a.l1_weight * aux["l1"]
        total = loss
        if disc_on:
            def gan(_):
                disc = ax.discriminator(disc_params)
                logits, feats = disc(jnp.concatenate([audio, sg(decoded)]))  # real | fake, one pass
                b = audio.shape[0]
                real = ([x[:b] for x in logits], [[f[:b] for f in fs] for fs in feats])
                fake = ([x[b:] for x in logits], [[f[b:] for f in fs] for fs in feats])
                loss_dis = discriminator_losses(real, fake)["loss_dis"]
                for_vae = discriminator_losses(sg(real), ax.discriminator(sg(disc_params))(decoded))
                return loss_dis, for_vae["loss_adv"], for_vae["feature_matching"]

            def off(_):
                zero = jnp.zeros((), jnp.float32)
                return zero, zero, zero

            loss_dis, loss_adv, fm = jax.lax.cond(gan_active, gan, off, None)
            loss = loss + a.adversarial_weight * loss_adv + a.feature_matching_weight * fm
            aux.update(loss_dis=loss_dis, loss_adv=loss_adv, feature_matching=fm)
            total = loss + loss_dis  # disjoint gradients: the VAE's part and the discriminator's part
        aux["loss"] = loss
        return total, aux

    def ae_step(state: AEState, batch: Batch) -> tuple[AEState, Metrics]:
        key = jax.random.fold_in(state.rng, state.step)
        audio = batch["audio"][..., None]  # mono [B, N] -> [B, N, 1]
        if 0 < a.train_crop < audio.shape[1]:  # static: compiled in only when cropping
            audio = random_crops(audio, a.train_crop, jax.random.fold_in(key, CROP_STREAM))
        gan_active = state.step >= a.disc_start_step if disc_on else jnp.asarray(False)
        (_, aux), (grads, disc_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, state.disc_params, audio, key, gan_active)
        updates, opt_state = ax.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
        metrics = {**aux, "grad_norm": optax.tree.norm(grads)}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params)
        if disc_on:
            d_updates, d_opt = ax.disc_tx.update(disc_grads, state.disc_opt_state, state.disc_params)
            d_params = optax.apply_updates(state.disc_params, d_updates)
            keep = lambda new, old: jnp.where(gan_active, new, old)  # noqa: E731 (frozen before disc_start_step)
            new_state = new_state.replace(disc_params=jax.tree.map(keep, d_params, state.disc_params),
                                          disc_opt_state=jax.tree.map(keep, d_opt, state.disc_opt_state))
            metrics.update(grad_norm_disc=optax.tree.norm(disc_grads), gan_active=gan_active.astype(jnp.float32))
        return new_state, metrics

    return ae_step


def abstract_batch(ax: AEExperiment) -> Batch:
    """Shapes of one global batch (the data pipeline's spec; the step reads only ``audio``)."""
    b = ax.cfg.train.batch_size
    return {key: jax.ShapeDtypeStruct((b, *shape), dtype, sharding=ax.batch_sharding)
            for key, (shape, dtype) in ax.example_spec.items()}


def compile_ae_step(ax: AEExperiment, state_like: AEState) -> CompiledStep:
    """Compile ``ae_step`` once (see ``run.compiled_step``): state replicated and donated, the batch
    split over the batch mesh axes; a step whose watched metrics are not finite is skipped."""
    watched = FINITE_METRICS + (DISC_FINITE_METRICS if ax.disc_tx is not None else ())
    guard = NonFiniteGuard(watched, ax.cfg.train.max_skipped_steps)
    return compile_step(make_ae_step(ax), state_like, ae_state_shardings(ax, state_like), abstract_batch(ax),
                        ax.mesh, ax.batch_sharding, guard)
