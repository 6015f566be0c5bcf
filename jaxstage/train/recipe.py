"""The stage-adaptive recipe as used by the train step: config → static stage configs, the regime
sub-state, the fixed monitor batch, and the periodic events run inside the compiled step.

Everything here is either static (built once from the config) or a pure function of arrays, so
the step stays one compiled program: p, λ_ssl(p), the level-distribution location and the
structure gate are all traced values read from ``TrainState.regime``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxstage.config import Config
from jaxstage.models import ssl as models_ssl
from jaxstage.models.ssl import SpectralSSL
from jaxstage.models.ssl_encoder import NeuralSSL
from jaxstage.stage import guidance as guidance_lib
from jaxstage.stage import regime as regime_lib
from jaxstage.stage import structure as structure_lib
from jaxstage.stage.timesteps import AdaptiveTimestepConfig, adaptive_level_params, level_location

NUM_LOSS_BUCKETS = 10


@flax.struct.dataclass
class RegimeState:
    """The regime, as device arrays: the progress estimator and the structure gate."""

    progress: regime_lib.ProgressState
    structure: structure_lib.StructureState


@flax.struct.dataclass
class MonitorBatch:
    """A fixed held-out batch with fixed noise and levels, device-resident for the whole run."""

    x0: jax.Array  # [M, T, C] normalized codec features
    noise: jax.Array  # [M, T, C]
    levels: jax.Array  # [M] in the objective's units
    targets: jax.Array  # [M, T, d_ssl] SSL targets at the token rate
    # token ids [M, L] (text.kind=learned) or precomputed embeddings [M, L, D] (text.kind=precomputed);
    # the name is kept so that existing checkpoints restore
    text_ids: jax.Array
    text_mask: jax.Array
    # task=sr only (None otherwise, no leaves, so T2A checkpoints keep their structure):
    low: jax.Array | None = None  # [M, T, C] normalized codec features of the low band
    cutoff: jax.Array | None = None  # [M] cutoff in Hz
    # prepared data with padding masks only (None otherwise, no leaves): [M, T], 1 = real frame (codecs.frame_mask)
    frame_mask: jax.Array | None = None
    # number conditioners only (None otherwise, no leaves): id -> values [M]
    numbers: dict[str, jax.Array] | None = None


@dataclass(frozen=True)
class Recipe:
    """Static pieces of the stage-adaptive recipe derived from the config."""

    progress: regime_lib.ProgressConfig
    structure: structure_lib.StructureConfig
    guidance: guidance_lib.AlignmentConfig | None  # None: no alignment, no projector
    timesteps: AdaptiveTimestepConfig | None  # None: static level distribution
    ssl: SpectralSSL | NeuralSSL | None  # None: no in-step features (none needed, or guidance.ssl=precomputed)
    target_dim: int  # d_ssl of the alignment targets (spectral: ssl.dim; precomputed: the data's; 0: none)
    hidden_layer: int | None  # 0-based block whose output is aligned
    discrepancy: str  # "alignment" | "output": what the monitor measures
    monitor_every: int
    struct_enabled: bool
    struct_every: int
    depth: int

    @property
    def monitor_enabled(self) -> bool:
        """Whether there is a discrepancy to measure (and so a monitor batch in the state).

        `alignment` needs the projector (guidance.lambda0 > 0); `output` needs only the codec and φ.
        """
        return self.discrepancy == "output" or self.guidance is not None

    @property
    def projector_dim(self) -> int:
        """Output width of the REPA projector (0: no projector)."""
        return self.target_dim if self.guidance is not None else 0


def ssl_resolutions(cfg: Config) -> tuple[tuple[int, int], ...]:
    """The spectral stand-in's (n_fft, hop) pairs: ``guidance.ssl_resolutions`` or, when empty, the
    codec's own STFT (shared: XLA computes the identical transform once) and one at half its window."""
    if cfg.guidance.ssl_resolutions:
        return tuple(tuple(r) for r in cfg.guidance.ssl_resolutions)
    n_fft, hop = cfg.codec.n_fft, cfg.codec.hop_length
    return ((n_fft, hop), (max(n_fft // 2, hop), hop))


def _stage(cls, section, **derived):
    """The stage config ``cls`` (checked, hashable) with the values of ``section``, the config section
    that extends it (its extra fields dropped), and the ``derived`` ones."""
    return cls(**{**{f.name: getattr(section, f.name) for f in dataclasses.fields(cls)}, **derived})


def make_recipe(cfg: Config, ssl_dim: int = 0, neural_ssl: NeuralSSL | None = None) -> Recipe:
    """Translate the config sections regime/guidance/timesteps/struct into stage configs.

    ``ssl_dim``: width of precomputed SSL targets (read from the data; needed with guidance.ssl=precomputed).
    ``neural_ssl``: the loaded encoder (guidance.ssl=encoder; its weights stay with the Experiment).
    """
    r, g, s = cfg.regime, cfg.guidance, cfg.struct
    progress = _stage(regime_lib.ProgressConfig, r)
    structure = _stage(structure_lib.StructureConfig, s, num_groups=min(s.num_groups, cfg.model.depth))
    guidance = _stage(guidance_lib.AlignmentConfig, g) if g.lambda0 > 0 else None
    hidden_layer = None if guidance is None else guidance.hidden_layer(cfg.model.depth)
    ssl = None
    target_dim = 0
    if g.ssl == "precomputed":
        if g.lambda0 > 0 and ssl_dim <= 0:
            raise ValueError(f"guidance.ssl=precomputed needs the targets' width from the data, got ssl_dim={ssl_dim}")
        target_dim = ssl_dim
    elif g.ssl == "encoder" and (g.lambda0 > 0 or r.discrepancy == "output"):
        if neural_ssl is None:
            raise ValueError("guidance.ssl=encoder: the encoder was not loaded (build the Experiment from the config)")
        ssl, target_dim = neural_ssl, neural_ssl.dim
    elif g.lambda0 > 0 or r.discrepancy == "output":
        ssl = SpectralSSL(sample_rate=cfg.data.sample_rate, resolutions=ssl_resolutions(cfg),
                          n_mels=g.ssl_n_mels, n_mfcc=g.ssl_n_mfcc)
        target_dim = ssl.dim
    timesteps = _stage(AdaptiveTimestepConfig, cfg.timesteps) if cfg.timesteps.adaptive else None
    return Recipe(progress=progress, structure=structure, guidance=guidance, timesteps=timesteps, ssl=ssl,
                  target_dim=target_dim, hidden_layer=hidden_layer, discrepancy=r.discrepancy,
                  monitor_every=r.every, struct_enabled=s.enabled, struct_every=s.every, depth=cfg.model.depth)


def init_regime(recipe: Recipe) -> RegimeState:
    """Regime at step 0: p = 0 (or its scheduled value), gate off."""
    return RegimeState(progress=regime_lib.init_progress(recipe.progress),
                       structure=structure_lib.init_structure(recipe.depth, recipe.structure))


# ------------------------------------------------------------------------------ noise levels


def level_dist_params(cfg: Config, recipe: Recipe, p: jax.Array) -> dict[str, jax.Array]:
    """``sample_levels`` params: moved by p (mechanism 2) or the static config values."""
    d = cfg.diffusion
    scale = jnp.asarray(d.scale, jnp.float32)
    if recipe.timesteps is not None:
        family = "edm" if d.objective == "edm" else "rf"
        return adaptive_level_params(p, family, d.level_dist, scale, recipe.timesteps)
    loc = jnp.asarray(d.loc, jnp.float32)
    if d.level_dist == "lognormal":
        return {"p_mean": loc, "p_std": scale}
    if d.level_dist == "logit_normal":
        return {"loc": loc, "scale": scale}
    if d.level_dist == "logsnr_uniform":
        return {"logsnr_min": jnp.asarray(d.logsnr_min, jnp.float32),
                "logsnr_max": jnp.asarray(d.logsnr_max, jnp.float32)}
    return {}


def level_location_now(cfg: Config, recipe: Recipe, p: jax.Array) -> jax.Array:
    """The logged ``t_loc``: μ(p) or P(p) when adaptive, else the static location."""
    if recipe.timesteps is None:
        return jnp.asarray(cfg.diffusion.loc, jnp.float32)
    family = "edm" if cfg.diffusion.objective == "edm" else "rf"
    early, late = recipe.timesteps.endpoints(family)
    return level_location(p, early, late)


def level_buckets(cfg: Config, objective, levels: jax.Array) -> jax.Array:
    """Bucket index in [0, NUM_LOSS_BUCKETS) of each level: by t, or by ln σ over [σ_min, σ_max]."""
    d = cfg.diffusion
    if objective.level_kind == "sigma":
        lo, hi = np.log(d.sigma_min), np.log(d.sigma_max)
        u = (jnp.log(levels) - lo) / (hi - lo)
    else:
        u = levels
    return jnp.clip((u * NUM_LOSS_BUCKETS).astype(jnp.int32), 0, NUM_LOSS_BUCKETS - 1)


def bucketed_loss(per_example: jax.Array, buckets: jax.Array) -> jax.Array:
    """Mean loss per level bucket [NUM_LOSS_BUCKETS]; NaN where a bucket got no example."""
    onehot = jax.nn.one_hot(buckets, NUM_LOSS_BUCKETS, dtype=jnp.float32)
    total = per_example.astype(jnp.float32) @ onehot
    count = onehot.sum(0)
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), jnp.nan)


# ------------------------------------------------------------------------------ SSL targets


def ssl_features(recipe: Recipe, audio: jax.Array, ssl_params=None) -> jax.Array:
    """φ(audio) [B, frames, d] with the recipe's in-step source (the encoder reads ``ssl_params``)."""
    if isinstance(recipe.ssl, NeuralSSL):
        return recipe.ssl.features(ssl_params, audio)
    return recipe.ssl.features(audio)


def ssl_targets(recipe: Recipe, batch: dict[str, jax.Array], num_tokens: int, ssl_params=None) -> jax.Array:
    """SSL targets at the backbone's token rate (no gradient): ``batch["ssl_targets"]`` when the
    data carries precomputed ones, else φ of ``batch["audio"]`` (spectral stand-in or encoder)."""
    if "ssl_targets" in batch or recipe.ssl is None:
        return models_ssl.ssl_targets(batch, num_tokens)
    frames = ssl_features(recipe, batch["audio"], ssl_params)
    return jax.lax.stop_gradient(models_ssl.resample_frames(frames, num_tokens))


def monitor_levels(cfg: Config, objective) -> np.ndarray:
    """The monitor's fixed levels: RF times cycled over the batch, mapped to the objective's units."""
    times = np.resize(np.asarray(cfg.regime.monitor_levels, np.float32), cfg.regime.monitor_size)
    if cfg.diffusion.objective == "rf":
        return times
    # evaluated now even when called under a trace (the abstract restore target / aot-check build the
    # monitor inside jax.eval_shape): the levels are constants of the config, not traced values
    with jax.ensure_compile_time_eval():
        levels = objective.level_from_edm_sigma(jnp.asarray(times / (1.0 - times)))
    return np.asarray(levels, np.float32)


def build_monitor(cfg: Config, recipe: Recipe, codec, objective, stats, audio: np.ndarray,
                  text_ids: np.ndarray, text_mask: np.ndarray,
                  ssl_frames: np.ndarray | None = None, ssl_params=None, low_audio: np.ndarray | None = None,
                  cutoff: np.ndarray | None = None, audio_mask: np.ndarray | None = None,
                  latents: np.ndarray | None = None, latent_mask: np.ndarray | None = None,
                  numbers: dict[str, np.ndarray] | None = None) -> MonitorBatch | None:
    """The fixed monitor batch: clean features, fixed noise (seeded) and fixed levels.

    ``targets`` are φ of the clean clips at the token rate (or ``ssl_frames``, the clips' precomputed
    targets, resampled): the alignment discrepancy compares them with the projected hidden state,
    the output discrepancy with φ of the decoded prediction. ``text_ids`` are token ids or, with
    text.kind=precomputed, embeddings. ``low_audio`` [M, N] and ``cutoff`` [M] (Hz): the SR condition
    (task=sr), the low band encoded and normalized like ``audio``. ``audio_mask`` [M, N] (prepared data,
    True = real audio): the discrepancy then averages over the real frames only. ``latents`` [M, T, C]
    (and ``latent_mask`` [M, T]): the clips pre-encoded (data.latents), used instead of encoding ``audio``.
    ``numbers``: the number conditioners' inputs (id -> [M]).
    Without a discrepancy to measure (alignment kind and ``guidance.lambda0 = 0``): None.
    """
    from jaxstage.models.codecs import normalize
    from jaxstage.models.latent_codec import encode_host

    if not recipe.monitor_enabled:
        return None
    x0 = normalize(jnp.asarray(latents) if latents is not None else encode_host(codec, audio), stats)
    noise = jax.random.normal(jax.random.PRNGKey(cfg.regime.monitor_seed), x0.shape, x0.dtype)
    levels = jnp.asarray(monitor_levels(cfg, objective)[: x0.shape[0]])
    batch = {} if audio is None else {"audio": jnp.asarray(audio)}
    if ssl_frames is not None:
        batch["ssl_targets"] = jnp.asarray(ssl_frames)
    targets = ssl_targets(recipe, batch, x0.shape[1], ssl_params)
    if (low_audio is None) != (cutoff is None):
        raise ValueError("the SR monitor needs both low_audio and cutoff")
    low = None if low_audio is None else normalize(encode_host(codec, low_audio), stats)
    return MonitorBatch(x0=x0, noise=noise, levels=levels, targets=targets,
                        text_ids=jnp.asarray(text_ids), text_mask=jnp.asarray(text_mask), low=low,
                        cutoff=None if cutoff is None else jnp.asarray(cutoff, jnp.float32),
                        frame_mask=_monitor_frame_mask(codec, audio_mask, latent_mask),
                        numbers=None if not numbers else {k: jnp.asarray(v, jnp.float32) for k, v in numbers.items()})


def _monitor_frame_mask(codec, audio_mask: np.ndarray | None, latent_mask: np.ndarray | None) -> jax.Array | None:
    """The monitor's real frames: the records' latent mask, or the audio mask at the codec's frames."""
    from jaxstage.models.codecs import frame_mask

    if latent_mask is not None:
        return jnp.asarray(latent_mask, jnp.float32)
    return None if audio_mask is None else frame_mask(codec, jnp.asarray(audio_mask))
