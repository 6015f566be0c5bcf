"""The autoencoder's adversarial discriminator: stable-audio-tools' ``EncodecDiscriminator`` (its
``MultiScaleSTFTDiscriminator``, Encodec's MS-STFT discriminator) in Flax NNX, with its hinge and
feature-matching losses.

One sub-discriminator per FFT size: a normalized, uncentred periodic-Hann STFT (hop ``n_fft // 4``,
window ``n_fft``; real and imaginary parts as channels, time × frequency), then weight-normalized
2-D convolutions (kernel (time, frequency), the inner ones dilated in time), LeakyReLU(0.2) after
each, and a final convolution to one logit map. Every post-activation map is a feature for feature
matching. Losses (``discriminator_losses``): per sub-discriminator the hinge losses
``relu(1 − D(real)) + relu(1 + D(fake))`` (discriminator) and ``−D(fake)`` (generator), means over the
logit map, and the mean L1 distance of the feature maps; all averaged over sub-discriminators.
Audio is channels-last ``[B, N, C]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

LEAKY_SLOPE = 0.2  # stable-audio-tools' DiscriminatorSTFT activation: LeakyReLU(negative_slope=0.2)


class WNConv2d(nnx.Module):
    """``weight_norm(nn.Conv2d)`` on channels-last maps [B, T, F, C]: ``weight_v`` [out, in, kt, kf],
    ``weight_g`` [out, 1, 1, 1], ``bias`` [out]; symmetric padding ``(k − 1)·d // 2`` per axis."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], *, dilation: tuple[int, int] = (1, 1),
                 rngs: nnx.Rngs):
        bound = 1.0 / math.sqrt(c_in * kernel[0] * kernel[1])  # PyTorch's default Conv2d initialization range
        v = jax.random.uniform(rngs.params(), (c_out, c_in, *kernel), jnp.float32, -bound, bound)
        self.weight_v = nnx.Param(v)
        self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2, 3), keepdims=True)))
        self.bias = nnx.Param(jax.random.uniform(rngs.params(), (c_out,), jnp.float32, -bound, bound))
        self.dilation = dilation
        self.padding = tuple(((k - 1) * d // 2,) * 2 for k, d in zip(kernel, dilation))

    def __call__(self, x: jax.Array) -> jax.Array:
        v = self.weight_v[...]
        kernel = v * (self.weight_g[...] / jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2, 3), keepdims=True)))
        y = jax.lax.conv_general_dilated(x, kernel, window_strides=(1, 1), padding=self.padding,
                                         rhs_dilation=self.dilation, dimension_numbers=("NHWC", "OIHW", "NHWC"))
        return y + self.bias[...]


def normalized_stft(audio: jax.Array, n_fft: int) -> jax.Array:
    """torchaudio's ``Spectrogram(n_fft, hop n_fft // 4, window n_fft, hann, normalized, center=False,
    power=None)`` of every channel as a channels-last map: [B, N, C] -> [B, frames, n_fft // 2 + 1, 2C]
    (real parts of the channels, then imaginary parts)."""
    hop = n_fft // 4
    frames = 1 + (audio.shape[1] - n_fft) // hop
    window = 0.5 - 0.5 * jnp.cos(2 * jnp.pi * jnp.arange(n_fft) / n_fft)  # periodic Hann
    index = jnp.arange(frames)[:, None] * hop + jnp.arange(n_fft)[None, :]
    spec = jnp.fft.rfft(audio[:, index, :] * window[None, None, :, None], axis=2)  # [B, frames, bins, C]
    spec = spec / jnp.sqrt(jnp.sum(jnp.square(window)))
    return jnp.concatenate([spec.real, spec.imag], axis=-1).astype(jnp.float32)


class STFTDiscriminator(nnx.Module):
    """One scale: STFT -> conv (kernel) -> dilated convs -> conv (kt × kt) -> logit conv (kt × kt)."""

    def __init__(self, n_fft: int, filters: int, audio_channels: int, kernel: tuple[int, int],
                 dilations: tuple[int, ...], *, rngs: nnx.Rngs):
        self.n_fft = n_fft
        square = (kernel[0], kernel[0])
        convs = [WNConv2d(2 * audio_channels, filters, kernel, rngs=rngs)]
        convs += [WNConv2d(filters, filters, kernel, dilation=(d, 1), rngs=rngs) for d in dilations]
        convs.append(WNConv2d(filters, filters, square, rngs=rngs))
        self.convs = nnx.List(convs)
        self.conv_post = WNConv2d(filters, 1, square, rngs=rngs)

    def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        """(logit map [B, T, F, 1], the post-activation feature maps)."""
        z = normalized_stft(audio, self.n_fft)
        features = []
        for conv in self.convs:
            z = jax.nn.leaky_relu(conv(z), LEAKY_SLOPE)
            features.append(z)
        return self.conv_post(z), features


class MultiScaleSTFTDiscriminator(nnx.Module):
    """One :class:`STFTDiscriminator` per FFT size; returns lists of logit maps and feature lists."""

    def __init__(self, n_ffts: tuple[int, ...], filters: int, audio_channels: int, kernel: tuple[int, int],
                 dilations: tuple[int, ...], *, rngs: nnx.Rngs):
        self.discriminators = nnx.List([STFTDiscriminator(n, filters, audio_channels, kernel, dilations, rngs=rngs)
                                        for n in n_ffts])

    def __call__(self, audio: jax.Array) -> tuple[list[jax.Array], list[list[jax.Array]]]:
        outputs = [d(audio) for d in self.discriminators]
        return [o[0] for o in outputs], [o[1] for o in outputs]


def hinge_losses(logits_real: jax.Array, logits_fake: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(discriminator loss ``mean relu(1 − real) + mean relu(1 + fake)``, generator loss ``−mean fake``)."""
    d_loss = jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake))
    return d_loss, -jnp.mean(logits_fake)


def feature_matching(features_real: list[jax.Array], features_fake: list[jax.Array]) -> jax.Array:
    """Mean over the layers of ``mean |real − fake|`` (one sub-discriminator)."""
    return sum(jnp.mean(jnp.abs(r - f)) for r, f in zip(features_real, features_fake)) / len(features_real)


def discriminator_losses(real: tuple[list, list], fake: tuple[list, list]) -> dict[str, jax.Array]:
    """``loss_dis``, ``loss_adv``, ``feature_matching`` averaged over the sub-discriminators, from the
    discriminator's outputs ``(logits, features)`` on real and on fake audio (as stable-audio-tools'
    ``EncodecDiscriminator.loss``; the caller chooses where gradients stop)."""
    (logits_r, feats_r), (logits_f, feats_f) = real, fake
    n = len(logits_r)
    d_loss = adv = fm = 0.0
    for lr, lf, fr, ff in zip(logits_r, logits_f, feats_r, feats_f):
        d, a = hinge_losses(lr, lf)
        d_loss, adv, fm = d_loss + d, adv + a, fm + feature_matching(fr, ff)
    return {"loss_dis": d_loss / n, "loss_adv": adv / n, "feature_matching": fm / n}
