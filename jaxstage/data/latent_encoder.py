"""The autoencoder that `jaxstage prepare --autoencoder DIR` runs once per clip: audio -> the latents
that training with ``codec.kind=oobleck`` and ``data.latents=true`` reads instead of encoding.

The latents are exactly the latent codec's encode (the bottleneck mean divided by the pretransform
scale, chunked like stable-audio-tools for long clips), computed in jit-compiled batches on the
default device (the accelerator when there is one). ``latent_mask`` marks the real latent frames of a
padded clip: frame t is real when its first sample, t·hop, is real audio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage.models.latent_codec import OobleckCodec, vae_params


class AutoencoderEncoder:
    """Audio [B, N] (mono, at ``sample_rate``) -> (latents float32 [B, N / hop, latent_dim],
    latent_mask bool [B, N / hop]); batches are padded to ``batch_size`` so one executable serves all."""

    def __init__(self, directory: str | Path, sample_rate: int, num_samples: int, batch_size: int = 16):
        from jaxstage.tools.export.autoencoder import load_autoencoder

        vae, info = load_autoencoder(directory)
        self.directory, self.sha256 = Path(directory), info["sha256"]
        if info["sample_rate"] is not None and int(info["sample_rate"]) != int(sample_rate):
            raise ValueError(f"--autoencoder {directory} works at {info['sample_rate']} Hz, --sample-rate is "
                             f"{sample_rate}")
        self.codec = OobleckCodec(vae=info["config"], sample_rate=int(sample_rate), scale=info["scale"])
        if num_samples % self.codec.hop_length:
            raise ValueError(f"--clip-seconds: {num_samples} samples per clip is not a multiple of the autoencoder's "
                             f"{self.codec.hop_length} samples per latent")
        self.batch_size = int(batch_size)
        self.params = jax.device_put(vae_params(vae))  # jit boundary: the weights are an argument, not constants
        codec = self.codec
        self._encode = jax.jit(lambda params, audio: codec.bind(params).encode(audio))

    def __call__(self, audio: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        audio = np.asarray(audio, np.float32)
        count = audio.shape[0]
        mask = np.ones(audio.shape, bool) if mask is None else np.asarray(mask, bool)
        out = []
        for start in range(0, count, self.batch_size):
            part = audio[start:start + self.batch_size]
            short = self.batch_size - part.shape[0]
            part = np.pad(part, ((0, short), (0, 0)))  # padded rows are dropped below
            out.append(np.asarray(self._encode(self.params, jnp.asarray(part)))[: self.batch_size - short])
        latents = np.concatenate(out).astype(np.float32)
        return latents, mask[:, :: self.codec.hop_length][:, : latents.shape[1]]

    def describe(self) -> dict[str, Any]:
        c = self.codec
        return {"directory": str(self.directory.resolve()), "sha256": self.sha256, "hop": c.hop_length,
                "latent_dim": c.channels, "scale": c.scale, "latent": c.latent, "chunk_frames": c.chunk_frames,
                "chunk_overlap": c.chunk_overlap}
