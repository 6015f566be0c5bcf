"""Generate audio from text prompts with a trained denoiser (jit-compiled sampler + codec decode).

With ``text.kind=precomputed`` there is no text encoder in-process: free-text prompts are refused and
generation takes precomputed embeddings (``Generator.from_text``, e.g. from prepared records).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage.config import guidance_rule
from jaxstage.diffusion import samplers, schedules
from jaxstage.models.codecs import CodecStats, denormalize
from jaxstage.models.denoiser import null_tokens
from jaxstage.models.text import HashTokenizer
from jaxstage.train.state import Experiment, Params


def sample_audio(exp: Experiment, sampler: str, levels: jax.Array, denoise, stats: CodecStats, key: jax.Array,
                 batch: int, codec_params: Params | None = None) -> jax.Array:
    """Audio [batch, N]: ``sampler`` run from Gaussian noise with ``denoise``, then decoded with the codec
    (bound to ``codec_params``, a latent codec's traced weights) (use inside jit)."""
    noise_key, sampler_key = jax.random.split(key)
    x_T = jax.random.normal(noise_key, (batch, exp.codec.num_frames(exp.cfg.num_samples), exp.io_channels), jnp.float32)
    x0 = samplers.sample(sampler, denoise, exp.objective, levels, x_T, sampler_key)
    return exp.codec.bind(codec_params).decode(denormalize(x0, stats), exp.cfg.num_samples)


def make_generate_fn(exp: Experiment, sampler: str, steps: int, guided: bool = True):
    """A jitted ``(params, stats, text, text_mask, key, cfg_scale, codec_params) -> audio [B, N]``;
    ``text`` is token ids [B, L] or precomputed embeddings [B, L, D] (per ``text.kind``);
    ``codec_params``: a latent codec's frozen autoencoder (None for weight-free codecs).

    jit boundary: compiled once per (sampler, steps, guided, batch size); the guidance scale is a
    traced argument, so changing it does not recompile; the autoencoder's weights are an argument, not
    constants baked into the executable; the guidance rule (``sample.guidance``) is static. CFG batches the conditional and unconditional
    passes into one model call; ``guided=False`` runs the conditional pass alone (``cfg_scale`` is
    then ignored: what a scale of 1 computes, at half the cost).
    """
    objective = exp.objective
    levels = schedules.for_objective(objective, steps)
    interval = tuple(exp.cfg.sample.cfg_interval)

    @jax.jit
    def generate(params: Params, stats: CodecStats, text: jax.Array, text_mask: jax.Array,
                 key: jax.Array, cfg_scale: jax.Array, codec_params: Params | None) -> jax.Array:
        model = exp.model(params)
        tokens, mask = model.encode_text(text, text_mask)

        def denoise_with(x, level, cond):
            x_in, c_noise = objective.model_input(x, level)
            out = model.denoise(x_in, c_noise, cond["tokens"], cond["mask"]).out
            return objective.denoise(out, x, level)

        cond = {"tokens": tokens, "mask": mask}
        if guided:
            denoise = samplers.cfg_batched(denoise_with, cond, {"tokens": null_tokens(tokens), "mask": mask},
                                           objective, cfg_scale, interval, guidance_rule(exp.cfg.sample))
        else:
            def denoise(x, level):
                return denoise_with(x, level, cond)

        return sample_audio(exp, sampler, levels, denoise, stats, key, text.shape[0], codec_params)

    return generate


class Generator:
    """Caches one compiled sampler per (sampler, steps, guided) and turns prompts into waveforms.
    A guidance scale of exactly 1 (no CFG, e.g. ARC post-trained runs) samples unguided: one model
    pass per step instead of two."""

    def __init__(self, exp: Experiment):
        self.exp = exp
        self.tokenizer = HashTokenizer(exp.cfg.text.vocab_size)
        self._fn = functools.cache(functools.partial(make_generate_fn, exp))  # one executable per setting

    def __call__(self, params: Params, stats: CodecStats, prompts: list[str], *, sampler: str | None = None,
                 steps: int | None = None, cfg_scale: float | None = None, seed: int = 0) -> np.ndarray:
        """Waveforms [len(prompts), N] as float32 numpy at raw levels (learned text encoder only)."""
        if self.exp.cfg.text.kind != "learned":
            raise ValueError(f"text.kind={self.exp.cfg.text.kind}: free-text prompts need the prepare-time text "
                             f"encoder; generate from precomputed embeddings (Generator.from_text)")
        ids, mask = self.tokenizer(prompts, self.exp.cfg.data.text_max_length)
        return self.from_text(params, stats, ids, mask, sampler=sampler, steps=steps, cfg_scale=cfg_scale,
                              seed=seed)

    def from_text(self, params: Params, stats: CodecStats, text: np.ndarray, text_mask: np.ndarray, *,
                  sampler: str | None = None, steps: int | None = None, cfg_scale: float | None = None,
                  seed: int = 0) -> np.ndarray:
        """Waveforms [B, N] from an encoded condition: token ids [B, L] or embeddings [B, L, D]."""
        if self.exp.cfg.task != "t2a":
            raise ValueError(f"task={self.exp.cfg.task}: the Generator samples text-to-audio runs (SR: SRGenerator)")
        s = self.exp.cfg.sample
        scale = s.cfg_scale if cfg_scale is None else cfg_scale
        fn = self._fn(sampler or s.sampler, steps or s.steps, scale != 1.0)
        audio = fn(params, stats, jnp.asarray(text), jnp.asarray(text_mask), jax.random.PRNGKey(seed),
                   jnp.asarray(scale, jnp.float32), self.exp.codec_params)
        return np.asarray(jax.device_get(audio), np.float32)  # raw levels: WAV writers fit them to full scale

