"""What sampling needs of a run, and nothing more: the codec (and a latent codec's frozen weights),
the objective, the denoiser's graph and parameter shardings (no optimizer, no SSL encoder, no
regime). Training's ``Experiment`` extends it with the optimizer and the recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from jaxstage import parallel
from jaxstage.config import Config, ConfigError
from jaxstage.data.pipeline import ExampleSpec, example_spec
from jaxstage.diffusion.objectives import make_objective
from jaxstage.models.codecs import make_codec
from jaxstage.models.denoiser import Denoiser

Params = dict[str, Any]


@dataclass
class InferenceModel:
    """Static pieces of a run's denoiser, built once from the config."""

    cfg: Config
    mesh: Mesh
    rules: dict[str, tuple[str, ...]]
    codec: Any
    objective: Any
    graphdef: nnx.GraphDef
    buffers: Params  # non-trainable model variables (constants captured by jit)
    abstract_params: Params
    param_shardings: Params
    batch_sharding: NamedSharding
    example_spec: ExampleSpec  # batch key -> (per-example shape, dtype); prepared data: from dataset.json
    # codec.kind=oobleck: the frozen autoencoder's weights, replicated on the mesh; an argument of every
    # compiled function that encodes or decodes (never a captured constant, never optimized); else None
    codec_params: Params | None
    # text.kind=t5: the frozen T5 (``convert_t5.LoadedT5``; its graph is static) whose weights,
    # ``text_params`` (replicated), are an argument of the compiled train step; else None
    t5: Any
    text_params: Params | None

    @property
    def io_channels(self) -> int:
        return self.codec.channels

    def bound_codec(self, codec_params: Params | None = None):
        """The codec bound to ``codec_params`` (inside jit: the traced argument), default this model's."""
        return self.codec.bind(self.codec_params if codec_params is None else codec_params)

    @property
    def text_key(self) -> str:
        """The batch key holding the text condition: ``text_emb`` (precomputed) or ``text_ids``."""
        return "text_emb" if "text_emb" in self.example_spec else "text_ids"

    @property
    def text_dim(self) -> int:
        """Width of precomputed or T5 text embeddings (0 with the learned encoder)."""
        return _text_dim(self.example_spec, self.t5)

    def text_input(self, text: jax.Array, text_mask: jax.Array, text_params: Params | None = None) -> jax.Array:
        """The text conditioner's input from a batch's text: with text.kind=t5, the frozen T5's hidden
        states of the token ids (zero at padding, as stable-audio-tools), computed with ``text_params``
        (inside jit: the traced argument; default this model's); otherwise ``text`` unchanged."""
        if self.t5 is None:
            return text
        from jaxstage.models.convert_t5 import t5_forward

        params = self.text_params if text_params is None else text_params
        hidden = t5_forward(self.t5.graphdef, params, text, text_mask)
        return hidden * text_mask[..., None].astype(hidden.dtype)

    @property
    def number_ids(self) -> tuple[str, ...]:
        """The number conditioners' ids (``conditioning.numbers``); each is also a batch key."""
        return tuple(n[0] for n in self.cfg.conditioning.numbers)

    def numbers_of(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        """The number conditioners' inputs in ``batch`` (id -> values [B]); None without numbers."""
        return {cid: batch[cid] for cid in self.number_ids} if self.number_ids else None

    def default_numbers(self, batch: int, seconds_start: float | None = None,
                        seconds_total: float | None = None) -> dict[str, Any] | None:
        """Number-conditioner inputs for ``batch`` generated clips: ``seconds_start`` (default 0) and
        ``seconds_total`` (default the training clip length, ``data.clip_seconds``); None without
        numbers. Another number id has no default: a ValueError names it."""
        if not self.number_ids:
            return None
        values = {"seconds_start": 0.0 if seconds_start is None else seconds_start,
                  "seconds_total": self.cfg.data.clip_seconds if seconds_total is None else seconds_total}
        for cid in self.number_ids:
            if cid not in values:
                raise ValueError(f"the number conditioner {cid!r} has no default value for sampling; only "
                                 f"seconds_start and seconds_total do")
        return {cid: np.full((batch,), values[cid], np.float32) for cid in self.number_ids}

    def model(self, params: Params) -> Denoiser:
        """A Denoiser module bound to ``params`` (use inside jit)."""
        return nnx.merge(self.graphdef, params, self.buffers)


def _text_dim(spec: ExampleSpec, t5: Any) -> int:
    if t5 is not None:
        return t5.config.d_model
    return spec["text_emb"][0][-1] if "text_emb" in spec else 0


def codec_from_config(cfg: Config, kind: str | None = None):
    """The codec named by ``kind`` (default ``codec.kind``) with the config's hyperparameters (oobleck:
    see :func:`latent_codec_from_config`, which also loads the weights)."""
    c, kind = cfg.codec, kind or cfg.codec.kind
    if kind == "oobleck":
        return latent_codec_from_config(cfg)[0]
    if kind == "stft":
        return make_codec("stft", sample_rate=cfg.data.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
                          compress=c.compress, scale=c.scale)
    return make_codec("mel", sample_rate=cfg.data.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
                      n_mels=c.n_mels, f_min=c.f_min, f_max=c.f_max or cfg.data.sample_rate / 2,
                      griffin_lim_iters=c.griffin_lim_iters)


def latent_codec_from_config(cfg: Config) -> tuple[Any, Params]:
    """(OobleckCodec, its weights on the host) for ``codec.kind=oobleck``: the autoencoder directory
    ``codec.autoencoder`` checked against the config (its SHA-256 when recorded, sample rate, clip
    length); each failure is one line naming the key."""
    from jaxstage.models.latent_codec import OobleckCodec, vae_params
    from jaxstage.tools.export.autoencoder import load_autoencoder

    c = cfg.codec
    vae, info = load_autoencoder(_autoencoder_dir(cfg))
    if c.autoencoder_sha256 and info["sha256"] != c.autoencoder_sha256:
        raise ConfigError(f"codec.autoencoder={c.autoencoder}: its weights have SHA-256 {info['sha256'][:16]}..., the "
                          f"run was made with {c.autoencoder_sha256[:16]}... (codec.autoencoder_sha256): a different "
                          f"autoencoder")
    if info["sample_rate"] is not None and int(info["sample_rate"]) != cfg.data.sample_rate:
        raise ConfigError(f"codec.autoencoder={c.autoencoder} works at {info['sample_rate']} Hz, "
                          f"data.sample_rate={cfg.data.sample_rate}")
    hop = info["config"].hop
    if cfg.num_samples % hop:
        raise ConfigError(f"data.clip_seconds={cfg.data.clip_seconds:g}: {cfg.num_samples} samples is not a multiple of "
                          f"the autoencoder's {hop} samples per latent (codec.autoencoder={c.autoencoder})")
    codec = OobleckCodec(vae=info["config"], sample_rate=cfg.data.sample_rate, scale=info["scale"],
                         latent=c.latent, chunk_frames=c.chunk_frames, chunk_overlap=c.chunk_overlap)
    return codec, vae_params(vae)


def _autoencoder_dir(cfg: Config) -> str:
    """``codec.autoencoder``, checked to be a directory (one line naming the key otherwise)."""
    from pathlib import Path

    if not Path(cfg.codec.autoencoder).expanduser().is_dir():
        raise ConfigError(f"codec.autoencoder={cfg.codec.autoencoder}: no such directory (a jaxstage autoencoder "
                          f"directory: `jaxstage import-autoencoder` or a task=autoencoder run's autoencoder/)")
    return str(Path(cfg.codec.autoencoder).expanduser())


def pin_autoencoder(cfg: Config) -> None:
    """codec.kind=oobleck: make ``codec.autoencoder`` an absolute path and record the SHA-256 of its
    weights (when not given), so config.json names the exact autoencoder a run was made with."""
    if cfg.codec.kind != "oobleck":
        return
    from pathlib import Path

    from jaxstage.tools.export.autoencoder import autoencoder_sha256

    cfg.codec.autoencoder = str(Path(_autoencoder_dir(cfg)).resolve())
    if not cfg.codec.autoencoder_sha256:
        cfg.codec.autoencoder_sha256 = autoencoder_sha256(cfg.codec.autoencoder)


def objective_from_config(cfg: Config):
    """The diffusion objective named by ``diffusion.objective``."""
    if cfg.diffusion.objective == "edm":
        return make_objective("edm", sigma_data=cfg.diffusion.sigma_data)
    return make_objective(cfg.diffusion.objective)


def inference_parts(cfg: Config, mesh: Mesh | None = None, *, projector_dim: int = 0,
                    spec: ExampleSpec | None = None) -> dict[str, Any]:
    """The fields of an ``InferenceModel`` for ``cfg`` on ``mesh`` (default the config's); the denoiser
    carries the REPA projector when ``projector_dim`` > 0 (its weights are part of the run's params)."""
    mesh = parallel.make_mesh(cfg.mesh) if mesh is None else mesh
    rules = parallel.rules_dict(cfg.mesh.rules)
    codec, codec_params = latent_codec_from_config(cfg) if cfg.codec.kind == "oobleck" else (codec_from_config(cfg), None)
    if codec_params is not None:  # jit boundary: the frozen weights live replicated on every device
        codec_params = jax.device_put(codec_params, parallel.replicated(mesh))
    spec = example_spec(cfg) if spec is None else spec
    t5 = text_params = None
    if cfg.text.kind == "t5":  # jit boundary: the frozen T5 weights live replicated on every device
        from jaxstage.models.convert_t5 import load_t5

        t5 = load_t5(cfg.text.encoder_dir)
        text_params = jax.device_put(t5.params, parallel.replicated(mesh))
    text_dim = _text_dim(spec, t5)

    def denoiser(key: int = 0) -> Denoiser:
        return Denoiser(cfg, codec.channels, ssl_dim=projector_dim, text_dim=text_dim, rngs=nnx.Rngs(key))

    graphdef, abstract_param_state, _ = nnx.split(nnx.eval_shape(denoiser), nnx.Param, ...)
    # Buffers (non-Param variables, e.g. fixed frequencies) are deterministic constants; under jit
    # XLA computes only them (the parameter initializers are dead code).
    buffers = jax.jit(lambda: nnx.to_pure_dict(nnx.split(denoiser(), nnx.Param, ...)[2]))()
    return dict(cfg=cfg, mesh=mesh, rules=rules, codec=codec, objective=objective_from_config(cfg),
                graphdef=graphdef, buffers=buffers, abstract_params=nnx.to_pure_dict(abstract_param_state),
                param_shardings=parallel.state_shardings(mesh, abstract_param_state, rules),
                batch_sharding=parallel.batch_sharding(mesh, rules), example_spec=spec, codec_params=codec_params,
                t5=t5, text_params=text_params)
