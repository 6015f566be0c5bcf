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
from jaxstage.models.conditioning import null_condition
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
    """A jitted ``(params, stats, text, text_mask, key, cfg_scale, codec_params, numbers) -> audio [B, N]``;
    ``text`` is token ids [B, L] or precomputed embeddings [B, L, D] (per ``text.kind``);
    ``codec_params``: a latent codec's frozen autoencoder (None for weight-free codecs); ``numbers``: the
    number conditioners' inputs (id -> [B]; None without number conditioners).

    jit boundary: compiled once per (sampler, steps, guided, batch size); the guidance scale is a
    traced argument, so changing it does not recompile; the autoencoder's weights are an argument, not
    constants baked into the executable; the guidance rule (``sample.guidance``) is static. CFG batches
    the conditional and unconditional passes into one model call; the unconditional branch nulls the
    cross-attention and prepend conditions and keeps the global one
    (``models.conditioning.null_condition``); ``guided=False`` runs the conditional pass alone (``cfg_scale`` is
    then ignored: what a scale of 1 computes, at half the cost).
    """
    objective = exp.objective
    levels = schedules.for_objective(objective, steps)
    interval = tuple(exp.cfg.sample.cfg_interval)

    @jax.jit
    def generate(params: Params, stats: CodecStats, text: jax.Array, text_mask: jax.Array,
                 key: jax.Array, cfg_scale: jax.Array, codec_params: Params | None,
                 numbers: dict[str, jax.Array] | None = None) -> jax.Array:
        model = exp.model(params)
        cond = model.encode_condition(text, text_mask, numbers)

        def denoise_with(x, level, cond):
            x_in, c_noise = objective.model_input(x, level)
            out = model.denoise(x_in, c_noise, cond).out
            return objective.denoise(out, x, level)

        if guided:
            denoise = samplers.cfg_batched(denoise_with, cond, null_condition(cond),
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
        self._t5 = None  # the in-process T5 text encoder, loaded on first use
        self._fn = functools.cache(functools.partial(make_generate_fn, exp))  # one executable per setting

    def __call__(self, params: Params, stats: CodecStats, prompts: list[str], *, sampler: str | None = None,
                 steps: int | None = None, cfg_scale: float | None = None, seed: int = 0,
                 seconds_start: float | None = None, seconds_total: float | None = None) -> np.ndarray:
        """Waveforms [len(prompts), N] as float32 numpy at raw levels. Free text is encoded by the run's
        text conditioner: hash tokens (learned) or the T5 encoder in-process (precomputed T5 embeddings,
        text.kind=t5; :func:`text_encoder_dir`). ``seconds_start`` / ``seconds_total``: the timing
        conditions (defaults: 0 and the training clip length)."""
        text, mask = self.encode_prompts(prompts)
        numbers = self.exp.default_numbers(len(prompts), seconds_start, seconds_total)
        return self.from_text(params, stats, text, mask, sampler=sampler, steps=steps, cfg_scale=cfg_scale,
                              seed=seed, numbers=numbers)

    def encode_prompts(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Prompts -> the model's text input: hash token ids [B, L] (learned) or T5 embeddings [B, L, D]."""
        cfg = self.exp.cfg
        if cfg.text.kind == "learned":
            return self.tokenizer(prompts, cfg.data.text_max_length)
        if self._t5 is None:
            from jaxstage.models.convert_t5 import T5TextEncoder

            self._t5 = T5TextEncoder(text_encoder_dir(cfg), max_length=self.text_length())
        return self._t5(list(prompts))

    def text_length(self) -> int:
        """Tokens per prompt: the records' embedding length (precomputed) or data.text_max_length."""
        spec = self.exp.example_spec
        return spec["text_emb"][0][0] if "text_emb" in spec else self.exp.cfg.data.text_max_length

    def from_text(self, params: Params, stats: CodecStats, text: np.ndarray, text_mask: np.ndarray, *,
                  sampler: str | None = None, steps: int | None = None, cfg_scale: float | None = None,
                  seed: int = 0, numbers: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Waveforms [B, N] from an encoded condition: token ids [B, L] or embeddings [B, L, D]; ``numbers``:
        the number conditioners' inputs (default :meth:`InferenceModel.default_numbers`)."""
        if self.exp.cfg.task != "t2a":
            raise ValueError(f"task={self.exp.cfg.task}: the Generator samples text-to-audio runs (SR: SRGenerator)")
        s = self.exp.cfg.sample
        scale = s.cfg_scale if cfg_scale is None else cfg_scale
        numbers = self.exp.default_numbers(text.shape[0]) if numbers is None else numbers
        fn = self._fn(sampler or s.sampler, steps or s.steps, scale != 1.0)
        audio = fn(params, stats, jnp.asarray(text), jnp.asarray(text_mask), jax.random.PRNGKey(seed),
                   jnp.asarray(scale, jnp.float32), self.exp.codec_params,
                   None if numbers is None else {k: jnp.asarray(v, jnp.float32) for k, v in numbers.items()})
        return np.asarray(jax.device_get(audio), np.float32)  # raw levels: WAV writers fit them to full scale


def text_encoder_dir(cfg) -> str:
    """The T5 directory that encodes free text for a run whose text conditioner takes embeddings:
    ``text.encoder_dir``, else the text encoder dataset.json names (when it is a directory here);
    a ConfigError naming the key otherwise."""
    from pathlib import Path

    from jaxstage.config import ConfigError

    if cfg.text.encoder_dir:
        return cfg.text.encoder_dir
    recorded = ""
    if cfg.data.source == "prepared":
        from jaxstage.data.records import read_dataset_json

        text = (read_dataset_json(cfg.data.path).get("encoders") or {}).get("text")
        text = text if isinstance(text, dict) else {}
        recorded = str(text.get("model_dir", "")) if text.get("model_type", "t5") == "t5" else ""
    if recorded and Path(recorded).is_dir():
        return recorded
    raise ConfigError(f"text.kind={cfg.text.kind}: free-text prompts need the T5 that made the embeddings; set "
                      f"text.encoder_dir (a local transformers T5 directory)"
                      + (f" (dataset.json names {recorded}, not found here)" if recorded else ""))
