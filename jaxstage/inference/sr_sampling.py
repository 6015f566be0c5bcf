"""Super-resolve low-band audio with a trained ``task=sr`` run.

The model was trained on fixed-length clips (``cfg.num_samples``) whose low band enters as input
channels and whose cutoff is the global condition. Generation runs the configured sampler from
noise with that condition (no classifier-free guidance: the condition is never dropped in
training), decodes with the codec and, with ``sr.replace_low_band``, puts the input's own low band
back (``jaxstage.models.band_replace``). Inputs of any length are cut into overlapping windows of
the training length, super-resolved in fixed-size batches (one compilation) and cross-faded back.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage.diffusion import schedules
from jaxstage.inference.sampling import sample_audio
from jaxstage.models.band_replace import replace_low_band
from jaxstage.models.codecs import CodecStats, normalize
from jaxstage.models.text import HashTokenizer
from jaxstage.train.state import Experiment, Params


def make_sr_generate_fn(exp: Experiment, sampler: str, steps: int, replace: bool):
    """A jitted ``(params, stats, low [B, N], cutoff [B] Hz, key, codec_params) -> audio [B, N]`` at the
    model's rate (``codec_params``: a latent codec's frozen autoencoder, an argument; else None);
    ``replace``: put the input's band below the cutoff back (``sr.replace_n_fft``, ``sr.replace_transition_hz``).

    jit boundary: compiled once per (sampler, steps, batch size); the cutoff is a traced per-example
    value, so any cutoff runs on the same executable. The text condition is the hash-tokenized empty
    caption, exactly what SR training feeds (``jaxstage.data.pipeline.TrainExample``).
    """
    cfg = exp.cfg
    objective = exp.objective
    levels = schedules.for_objective(objective, steps)
    empty_ids, empty_mask = HashTokenizer(cfg.text.vocab_size)([""], cfg.data.text_max_length)
    numbers = exp.default_numbers(1)  # number conditioners: each window is a training-length clip from 0 s

    @jax.jit
    def generate(params: Params, stats: CodecStats, low_audio: jax.Array, cutoff: jax.Array,
                 key: jax.Array, codec_params: Params | None) -> jax.Array:
        model = exp.model(params)
        batch = low_audio.shape[0]
        ids = jnp.broadcast_to(jnp.asarray(empty_ids), (batch, empty_ids.shape[1]))
        mask = jnp.broadcast_to(jnp.asarray(empty_mask), (batch, empty_mask.shape[1]))
        cond = model.encode_condition(ids, mask, None if numbers is None else
                                      {k: jnp.broadcast_to(jnp.asarray(v), (batch,)) for k, v in numbers.items()})
        low = normalize(exp.codec.bind(codec_params).encode(low_audio), stats)

        def denoise(x: jax.Array, level: jax.Array) -> jax.Array:
            level = jnp.broadcast_to(jnp.asarray(level, jnp.float32), (batch,))
            x_in, c_noise = objective.model_input(x, level)
            out = model.denoise(x_in, c_noise, cond, low=low, cutoff=cutoff).out
            return objective.denoise(out, x, level)

        audio = sample_audio(exp, sampler, levels, denoise, stats, key, batch, codec_params)
        if replace:
            audio = replace_low_band(audio, low_audio, cutoff, cfg.data.sample_rate, n_fft=cfg.sr.replace_n_fft,
                                     transition_hz=cfg.sr.replace_transition_hz)
        return audio

    return generate


def split_windows(audio: np.ndarray, window: int, overlap: int) -> np.ndarray:
    """[N] -> [K, window]: windows starting every ``window - overlap`` samples, the last zero-padded."""
    hop = window - overlap
    count = max(1, math.ceil((audio.shape[0] - overlap) / hop))
    padded = np.zeros((count - 1) * hop + window, np.float32)
    padded[: audio.shape[0]] = audio
    return np.stack([padded[k * hop: k * hop + window] for k in range(count)])


def crossfade_windows(windows: np.ndarray, overlap: int, length: int) -> np.ndarray:
    """Inverse of :func:`split_windows`: overlap-add with linear cross-fades, cropped to ``length``."""
    count, window = windows.shape
    hop = window - overlap
    out = np.zeros((count - 1) * hop + window, np.float64)
    total = np.zeros_like(out)
    ramp = (np.arange(overlap) + 0.5) / overlap if overlap else np.zeros(0)
    for k in range(count):
        w = np.ones(window)
        if k > 0:
            w[:overlap] = ramp
        if k < count - 1:
            w[window - overlap:] = ramp[::-1]
        out[k * hop: k * hop + window] += w * windows[k]
        total[k * hop: k * hop + window] += w
    return (out / total)[:length].astype(np.float32)


class SRGenerator:
    """Caches one compiled SR sampler per (sampler, steps, replace) and runs it in fixed-size batches."""

    def __init__(self, exp: Experiment, batch_size: int = 8):
        if exp.cfg.task != "sr":
            raise ValueError(f"SRGenerator needs a task=sr run, got task={exp.cfg.task}")
        self.exp = exp
        self.batch_size = max(1, int(batch_size))
        self._fn = functools.cache(functools.partial(make_sr_generate_fn, exp))  # one executable per setting

    def clips(self, params: Params, stats: CodecStats, low: np.ndarray, cutoff: np.ndarray, *,
              sampler: str | None = None, steps: int | None = None, seed: int = 0,
              replace: bool | None = None) -> np.ndarray:
        """Training-length clips: ``low`` [B, num_samples] at the model's rate, ``cutoff`` [B] Hz ->
        float32 [B, num_samples] at raw levels (WAV writers fit them to full scale). ``replace``:
        low-band replacement (default ``sr.replace_low_band``). Batches are padded to ``batch_size`` so
        every call reuses one executable; batch ``g`` draws its noise from ``fold_in(PRNGKey(seed), g)``."""
        low = np.asarray(low, np.float32)
        cutoff = np.asarray(cutoff, np.float32).reshape(-1)
        n = self.exp.cfg.num_samples
        if low.ndim != 2 or low.shape[1] != n or cutoff.shape[0] != low.shape[0]:
            raise ValueError(f"low must be [B, {n}] with one cutoff per row, got {low.shape} and {cutoff.shape}")
        s = self.exp.cfg.sample
        sampler, steps = sampler or s.sampler, steps or s.steps
        replace = self.exp.cfg.sr.replace_low_band if replace is None else bool(replace)
        fn = self._fn(sampler, steps, replace)
        out = []
        for g, start in enumerate(range(0, low.shape[0], self.batch_size)):
            part, cut = low[start: start + self.batch_size], cutoff[start: start + self.batch_size]
            short = self.batch_size - part.shape[0]  # padded with copies of the last row (dropped below)
            part, cut = np.pad(part, ((0, short), (0, 0)), mode="edge"), np.pad(cut, (0, short), mode="edge")
            key = jax.random.fold_in(jax.random.PRNGKey(seed), g)
            audio = fn(params, stats, jnp.asarray(part), jnp.asarray(cut), key, self.exp.codec_params)
            out.append(np.asarray(jax.device_get(audio), np.float32)[: self.batch_size - short])
        return np.concatenate(out)

    def upsample(self, params: Params, stats: CodecStats, audio: np.ndarray, cutoff_hz: float, *,
                 overlap_seconds: float | None = None, sampler: str | None = None, steps: int | None = None,
                 seed: int = 0, replace: bool | None = None) -> np.ndarray:
        """One low-band signal [N] of any length at the model's rate -> its super-resolved [N]."""
        cfg = self.exp.cfg
        window = cfg.num_samples
        seconds = cfg.sr.window_overlap_seconds if overlap_seconds is None else overlap_seconds
        overlap = min(int(round(seconds * cfg.data.sample_rate)), window // 2)
        windows = split_windows(np.asarray(audio, np.float32), window, overlap)
        out = self.clips(params, stats, windows, np.full(windows.shape[0], cutoff_hz, np.float32),
                         sampler=sampler, steps=steps, seed=seed, replace=replace)
        return crossfade_windows(out, overlap, audio.shape[0])
