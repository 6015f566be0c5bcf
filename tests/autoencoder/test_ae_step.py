"""The compiled autoencoder step: metrics and shapes, the discriminator's hinge signs, GAN terms off
before ``disc_start_step`` (discriminator frozen), a NaN batch skipped with nothing updated, training
on random crops (``autoencoder.train_crop``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxstage import parallel
from jaxstage.autoencoder.discriminator import (
    MultiScaleSTFTDiscriminator, discriminator_losses, feature_matching, hinge_losses,
)
from jaxstage.autoencoder.state import build_ae_experiment, init_ae_state
from jaxstage.autoencoder.losses import multi_resolution_stft_loss
from jaxstage.autoencoder.step import CROP_STREAM, compile_ae_step, crop_offsets, random_crops
from jaxstage.data.pipeline import BatchStream
from jaxstage.models.oobleck import vae_moments
from tests.autoencoder.conftest import tiny_config


def _setup(*sets, disc=True):
    cfg = tiny_config(*sets, disc=disc)
    ax = build_ae_experiment(cfg, parallel.make_mesh(cfg.mesh, jax.devices()[:1]))
    state = init_ae_state(ax)
    return cfg, ax, state, compile_ae_step(ax, state), BatchStream(cfg, 0, 1)


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_hinge_signs():
    """D wants real > 1 and fake < -1 (zero loss there); the generator's loss falls as D(fake) rises."""
    ones = jnp.ones((2, 3))
    assert float(hinge_losses(2 * ones, -2 * ones)[0]) == 0.0
    assert float(hinge_losses(-ones, ones)[0]) == 4.0  # relu(1 + 1) + relu(1 + 1)
    assert float(hinge_losses(ones, 3 * ones)[1]) == -3.0
    assert float(hinge_losses(ones, -3 * ones)[1]) == 3.0
    assert float(feature_matching([ones], [ones])) == 0.0


def test_discriminator_shapes_and_losses():
    disc = MultiScaleSTFTDiscriminator((128, 64), 4, 1, (3, 9), (1, 2), rngs=nnx.Rngs(0))
    audio = jax.random.normal(jax.random.PRNGKey(0), (2, 1024, 1))
    logits, features = disc(audio)
    assert [x.shape for x in logits] == [(2, 29, 65, 1), (2, 61, 33, 1)]  # frames 1 + (1024 - n) // (n / 4)
    assert [len(f) for f in features] == [4, 4] and features[0][0].shape == (2, 29, 65, 4)
    same = discriminator_losses(disc(audio), disc(audio))
    assert float(same["feature_matching"]) == 0.0
    other = discriminator_losses(disc(audio), disc(0.5 * audio))
    assert float(other["feature_matching"]) > 0.0


def test_step_metrics_and_gan_start():
    """Steps 1-2 (step < disc_start_step=2): GAN terms zero, discriminator unchanged; step 3 trains both."""
    cfg, ax, state, step, stream = _setup("autoencoder.disc_start_step=2", "optim.warmup_steps=0")
    disc0 = jax.device_get(state.disc_params)
    rows = []
    for _ in range(3):
        params = jax.device_get(state.params)
        state, metrics = step(state, parallel.global_batch(next(stream), ax.batch_sharding))
        rows.append(jax.device_get({k: v for k, v in metrics.items() if k != "_skips"}))
        assert not _leaves_equal(params, jax.device_get(state.params))  # the VAE always trains
        if len(rows) <= 2:
            assert _leaves_equal(disc0, jax.device_get(state.disc_params))
    assert {"loss", "mrstft", "kl", "grad_norm", "loss_dis", "loss_adv", "feature_matching", "grad_norm_disc",
            "gan_active", "latent_std", "skipped_steps"} <= set(rows[0])
    for row in rows[:2]:
        assert row["gan_active"] == 0 and row["loss_dis"] == row["loss_adv"] == row["feature_matching"] == 0
        assert row["grad_norm_disc"] == 0
        np.testing.assert_allclose(row["loss"], row["mrstft"] + cfg.autoencoder.kl_weight * row["kl"], rtol=1e-6)
    gan = rows[2]
    assert gan["gan_active"] == 1 and gan["loss_dis"] > 0 and gan["feature_matching"] > 0 and gan["grad_norm_disc"] > 0
    a = cfg.autoencoder
    np.testing.assert_allclose(gan["loss"], gan["mrstft"] + a.kl_weight * gan["kl"] + a.adversarial_weight
                               * gan["loss_adv"] + a.feature_matching_weight * gan["feature_matching"], rtol=1e-5)
    assert not _leaves_equal(disc0, jax.device_get(state.disc_params))
    assert int(state.step) == 3 and all(np.isfinite(v).all() for v in gan.values())


def test_l1_term_and_no_discriminator():
    cfg, ax, state, step, stream = _setup("autoencoder.l1_weight=0.5", disc=False)
    assert state.disc_params is None and state.disc_opt_state is None
    state, metrics = step(state, parallel.global_batch(next(stream), ax.batch_sharding))
    m = jax.device_get(metrics)
    assert "loss_dis" not in m
    np.testing.assert_allclose(m["loss"], m["mrstft"] + cfg.autoencoder.kl_weight * m["kl"] + 0.5 * m["l1"], rtol=1e-6)


def test_nan_batch_is_skipped():
    """A NaN batch: VAE, EMA, both optimizers and the discriminator keep their values; the step and
    the skip count advance; the next finite batch trains again."""
    cfg, ax, state, step, stream = _setup()
    state, _ = step(state, parallel.global_batch(next(stream), ax.batch_sharding))
    before = jax.device_get(state)
    poisoned = {**next(stream), "audio": np.full((cfg.train.batch_size, cfg.num_samples), np.nan, np.float32)}
    state, metrics = step(state, parallel.global_batch(poisoned, ax.batch_sharding))
    after = jax.device_get(state)
    assert not np.isfinite(metrics["loss"]) and int(metrics["skipped_steps"]) == 1
    assert int(after.step) == int(before.step) + 1 and int(after.skips.consecutive) == 1
    for field in ("params", "opt_state", "ema_params", "disc_params", "disc_opt_state", "rng"):
        assert _leaves_equal(getattr(before, field), getattr(after, field)), field
    state, metrics = step(state, parallel.global_batch(next(stream), ax.batch_sharding))
    assert np.isfinite(metrics["loss"]) and int(state.skips.consecutive) == 0
    assert not _leaves_equal(after.params, jax.device_get(state.params))


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_latent_noise_scales_the_posterior_sample(noise):
    """autoencoder.latent_noise=0: the decoder sees the mean, so the step's noise key does not change the
    loss; at 1 (stable-audio-tools' VAE training) it does."""
    cfg, ax, state, step, stream = _setup(f"autoencoder.latent_noise={noise}", disc=False)
    batch = parallel.global_batch(next(stream), ax.batch_sharding)
    other = state.replace(rng=jax.device_put(jax.random.PRNGKey(123), state.rng.sharding))
    other = jax.tree.map(jnp.copy, other)  # the step donates its state: keep two independent copies
    _, first = step(jax.tree.map(jnp.copy, state), batch)
    _, second = step(other, batch)
    same = float(first["loss"]) == float(second["loss"])
    assert same == (noise == 0.0)


def test_random_crops_are_windows_of_each_clip():
    audio = jnp.arange(4 * 64, dtype=jnp.float32).reshape(4, 64, 1)
    crops = np.asarray(random_crops(audio, 16, jax.random.PRNGKey(3)))
    offsets = np.asarray(crop_offsets(jax.random.PRNGKey(3), 4, 64, 16))
    assert crops.shape == (4, 16, 1) and len(set(offsets.tolist())) > 1
    for clip, crop, offset in zip(np.asarray(audio), crops, offsets):
        assert 0 <= offset <= 48
        np.testing.assert_array_equal(crop, clip[offset:offset + 16])
    assert np.array_equal(crops, np.asarray(random_crops(audio, 16, jax.random.PRNGKey(3))))  # the key decides
    assert random_crops(audio, 64, jax.random.PRNGKey(3)).shape == (4, 64, 1)  # the whole clip: offset 0


def test_train_crop_trains_on_windows_of_the_configured_length():
    """autoencoder.train_crop=256 of 1024-sample clips: the step's MRSTFT is the VAE's on 256-sample
    windows at the offsets drawn from fold_in(fold_in(rng, step), CROP_STREAM) (decoded from the
    bottleneck mean: latent_noise 0), a new window per example and per step."""
    crop = 256
    cfg, ax, state, step, stream = _setup(f"autoencoder.train_crop={crop}", disc=False)
    assert cfg.num_samples == 1024 and cfg.autoencoder.latent_noise == 0
    offsets = []
    for _ in range(2):
        host = next(stream)
        params, rng, at = jax.device_get((state.params, state.rng, state.step))
        key = jax.random.fold_in(jax.random.fold_in(rng, at), CROP_STREAM)
        starts = [int(o) for o in crop_offsets(key, cfg.train.batch_size, cfg.num_samples, crop)]
        offsets.append(starts)
        windows = np.stack([clip[o:o + crop] for clip, o in zip(host["audio"], starts)])[..., None]
        vae = ax.vae(params)
        mean, _ = vae_moments(vae.encoder(windows))
        decoded = vae.decode(mean)
        assert decoded.shape == (cfg.train.batch_size, crop, 1)
        expected = multi_resolution_stft_loss(decoded, windows, tuple(cfg.autoencoder.stft_resolutions))
        state, metrics = step(state, parallel.global_batch(host, ax.batch_sharding))
        np.testing.assert_allclose(float(metrics["mrstft"]), float(expected), rtol=1e-4)
    assert len(set(offsets[0])) > 1 and offsets[0] != offsets[1]
    assert all(0 <= o <= cfg.num_samples - crop for o in offsets[0] + offsets[1])
