"""The Oobleck autoencoder against stable-audio-tools 0.0.19's own PyTorch modules: random weights
carried across by key (``load_torch_state``), encoder output, VAE moments and decoder output equal
within 1e-4 of the output's scale; the state dict round-trips bit for bit."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from jaxstage.models.oobleck import OobleckConfig, OobleckVAE, load_torch_state, torch_state, vae_moments  # noqa: E402
from jaxstage.tools.export.sat_reference import load_oobleck_classes  # noqa: E402

REDUCED = dict(channels=4, c_mults=(1, 2), strides=(2, 4), latent_dim=3)
# Chunked coding matches the unchunked result only where the 32-latent overlap covers the receptive
# field. Stable Audio Open's decoder sees about ±10 latents (its first residual units run at 8 samples
# per latent); REDUCED's strides (2, 4) run them at 4 and see about ±20. These strides keep SAO's order.
CHUNKING = dict(channels=4, c_mults=(1, 2), strides=(4, 8), latent_dim=3)


def _torch_vae(cfg: OobleckConfig, seed: int = 0):
    """stable-audio-tools' encoder and decoder for ``cfg``, every weight (SnakeBeta's too) random."""
    encoder_cls, decoder_cls, _ = load_oobleck_classes()
    torch.manual_seed(seed)
    common = dict(channels=cfg.channels, c_mults=list(cfg.c_mults), strides=list(cfg.strides), use_snake=cfg.use_snake)
    encoder = encoder_cls(in_channels=cfg.audio_channels, latent_dim=2 * cfg.latent_dim, **common)
    decoder = decoder_cls(out_channels=cfg.audio_channels, latent_dim=cfg.latent_dim, final_tanh=cfg.final_tanh,
                          use_nearest_upsample=cfg.use_nearest_upsample, **common)
    state = {}
    for name, module in (("encoder", encoder), ("decoder", decoder)):
        with torch.no_grad():
            for param in module.parameters():
                param.copy_(0.3 * torch.randn_like(param) + (0.5 if param.ndim == 3 else 0.0))
        module.eval()
        state.update({f"{name}.{k}": v.numpy() for k, v in module.state_dict().items()})
    return encoder, decoder, state


def _relative_error(got, want) -> float:
    want = np.asarray(want)
    return float(np.max(np.abs(np.asarray(got) - want)) / max(np.max(np.abs(want)), 1e-12))


@pytest.mark.parametrize("options", [
    dict(),  # SnakeBeta, transposed convolutions (the SAO layout)
    dict(use_snake=False, final_tanh=True),  # ELU, tanh output
    dict(use_nearest_upsample=True),  # nearest repeat + "same" convolution
], ids=["snake", "elu-tanh", "nearest"])
def test_matches_stable_audio_tools(options):
    cfg = OobleckConfig(**REDUCED, **options)
    encoder, decoder, state = _torch_vae(cfg)
    vae = OobleckVAE(cfg, nnx.Rngs(1))
    load_torch_state(vae, state)
    audio = np.random.default_rng(0).standard_normal((2, cfg.audio_channels, 8 * cfg.hop)).astype(np.float32)
    with torch.no_grad():
        encoded = encoder(torch.from_numpy(audio)).numpy()
        latents = np.random.default_rng(1).standard_normal((2, cfg.latent_dim, 8)).astype(np.float32)
        decoded = decoder(torch.from_numpy(latents)).numpy()
    ours = vae.encoder(jnp.asarray(audio.transpose(0, 2, 1)))
    assert _relative_error(ours, encoded.transpose(0, 2, 1)) <= 1e-4
    with torch.no_grad():  # stable-audio-tools' VAEBottleneck: mean, scale = x.chunk(2, dim=1)
        mean, scale = torch.from_numpy(encoded).chunk(2, dim=1)
        stdev = torch.nn.functional.softplus(scale) + 1e-4
    got_mean, got_stdev = vae_moments(ours)
    assert _relative_error(got_mean, mean.numpy().transpose(0, 2, 1)) <= 1e-4
    assert _relative_error(got_stdev, stdev.numpy().transpose(0, 2, 1)) <= 1e-4
    assert _relative_error(vae.decode(jnp.asarray(latents.transpose(0, 2, 1))), decoded.transpose(0, 2, 1)) <= 1e-4


def test_state_dict_round_trips_bit_for_bit_and_bad_keys_are_named():
    cfg = OobleckConfig(**REDUCED)
    _, _, state = _torch_vae(cfg, seed=3)
    vae = OobleckVAE(cfg, nnx.Rngs(0))
    load_torch_state(vae, {f"pretransform.model.{k}": v for k, v in state.items()}, prefix="pretransform.model.")
    back = torch_state(vae)
    assert back.keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(np.asarray(back[key]), value, err_msg=key)
    missing = dict(state)
    missing.pop("decoder.layers.0.weight_g")
    with pytest.raises(ValueError, match=r"has no weight 'decoder\.layers\.0\.weight_g'"):
        load_torch_state(vae, missing)
    wider = OobleckVAE(OobleckConfig(**{**REDUCED, "channels": 8}), nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"'decoder\.layers\.0\.bias' has shape \(8,\), this config \(16,\)"):
        load_torch_state(wider, state)


def test_chunked_coding_matches_stable_audio_tools_chunking():
    """Chunked decode and encode (chunk 128, overlap 32 latents, the last chunk anchored to the end) equal
    stable-audio-tools' ``decode_audio``/``encode_audio(chunked=True)`` on the same weights, and equal the
    unchunked result (the overlap covers the receptive field) within the parity tolerance."""
    import sys
    from types import SimpleNamespace

    import jax

    from jaxstage.models.oobleck import chunk_plan, chunked

    cfg = OobleckConfig(**CHUNKING)
    encoder, decoder, state = _torch_vae(cfg, seed=5)
    auto_encoder = sys.modules["stable_audio_tools.models.autoencoders"].AudioAutoencoder
    vae = OobleckVAE(cfg, nnx.Rngs(0))
    load_torch_state(vae, state)
    frames = 300  # 128-frame chunks every 96, the third anchored to the end
    assert chunk_plan(frames) == [(0, 0, 112), (96, 16, 112), (172, 16, 128)]
    latents = np.random.default_rng(2).standard_normal((1, cfg.latent_dim, frames)).astype(np.float32)
    fake = SimpleNamespace(decode=decoder, downsampling_ratio=cfg.hop, out_channels=cfg.audio_channels,
                           latent_dim=cfg.latent_dim, encode=lambda x: encoder(x)[:, :cfg.latent_dim])
    with torch.no_grad():
        want = auto_encoder.decode_audio(fake, torch.from_numpy(latents), chunked=True).numpy().transpose(0, 2, 1)
    z = jnp.asarray(latents.transpose(0, 2, 1))
    got = jax.jit(lambda z: chunked(vae.decode, z, frames, 1, cfg.hop))(z)
    assert _relative_error(got, want) <= 1e-4
    assert _relative_error(got, vae.decode(z)) <= 1e-4

    audio = np.random.default_rng(3).standard_normal((1, cfg.audio_channels, frames * cfg.hop)).astype(np.float32)
    with torch.no_grad():
        want = auto_encoder.encode_audio(fake, torch.from_numpy(audio), chunked=True).numpy().transpose(0, 2, 1)
    x = jnp.asarray(audio.transpose(0, 2, 1))
    got = jax.jit(lambda x: chunked(vae.encode, x, frames, cfg.hop, 1))(x)
    assert _relative_error(got, want) <= 1e-4
    assert _relative_error(got, vae.encode(x)) <= 1e-4


def test_chunked_decode_of_sao_length_sequence_equals_unchunked():
    """1292 latents (60 s at Stable Audio Open's 2048 samples per latent): 14 chunks; the chunked decode
    equals the unchunked one within the parity tolerance everywhere (the 32-latent overlap covers the
    decoder's receptive field)."""
    import jax

    from jaxstage.models.oobleck import chunk_plan, chunked

    cfg = OobleckConfig(**CHUNKING)
    vae = OobleckVAE(cfg, nnx.Rngs(4))
    frames = 1292
    assert len(chunk_plan(frames)) == 14
    z = jnp.asarray(np.random.default_rng(4).standard_normal((1, frames, cfg.latent_dim)), jnp.float32)
    got = jax.jit(lambda z: chunked(vae.decode, z, frames, 1, cfg.hop))(z)
    assert got.shape == (1, frames * cfg.hop, cfg.audio_channels)
    assert _relative_error(got, vae.decode(z)) <= 1e-4


def test_vae_kl_matches_stable_audio_tools():
    """``vae_kl`` of ``vae_moments`` equals the KL that stable-audio-tools' ``vae_sample`` returns."""
    import sys

    from jaxstage.models.oobleck import vae_kl

    load_oobleck_classes()
    vae_sample = sys.modules["stable_audio_tools.models.bottleneck"].vae_sample
    encoded = np.random.default_rng(6).standard_normal((2, 6, 9)).astype(np.float32)  # [B, 2·latent, T]
    mean, scale = torch.from_numpy(encoded).chunk(2, dim=1)
    _, want = vae_sample(mean, scale)
    got = vae_kl(*vae_moments(jnp.asarray(encoded.transpose(0, 2, 1))))
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
