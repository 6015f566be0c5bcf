"""Typed config tree, experiment files, dotted overrides and validation.

An experiment is a Python file in ``configs/`` with a ``get_config() -> Config`` function; its
module docstring holds the command that runs it. ``--set model.depth=4`` overrides one field.
Unknown keys and bad values raise :class:`ConfigError` with a one-line message that names the key
(and the closest valid key). The resolved config is written to the run directory as JSON.

This is the only place constants live: the training code reads every knob from here.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxstage.diffusion.guidance_rules import KINDS as GUIDANCE_KINDS
from jaxstage.diffusion.guidance_rules import GuidanceRule
from jaxstage.stage.guidance import AlignmentConfig
from jaxstage.stage.regime import MODES, ProgressConfig
from jaxstage.stage.structure import KINDS, StructureConfig
from jaxstage.stage.timesteps import AdaptiveTimestepConfig


class ConfigError(ValueError):
    """A bad config file, key or value; the message is one line naming the culprit."""


# ----------------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    """Where training audio and captions come from."""

    source: str = "synthetic"  # synthetic | synthetic_speech (speech-like clips, task=sr) | prepared (a `jaxstage prepare` directory at data.path)
    path: str = ""  # prepared only: the prepared directory (dataset.json + ArrayRecord shards)
    sample_rate: int = 8000  # prepared: must equal dataset.json's sample_rate
    clip_seconds: float = 1.0  # prepared: sample_rate * clip_seconds must equal dataset.json's num_samples
    num_examples: int = 200_000  # synthetic, synthetic_speech: size of the procedural dataset (indices are seeds)
    mix_prob: float = 0.2  # synthetic only: probability a clip mixes two sources
    seed: int = 0  # data order (and, synthetic, content) seed
    text_max_length: int = 16  # text.kind=learned: caption length in hash tokens
    # prepared + codec.kind=oobleck: train on the records' pre-encoded latents (`jaxstage prepare
    # --autoencoder`, the same autoencoder); the step then runs no encoder
    latents: bool = False
    prefetch_threads: int = 2  # grain read threads per process
    prefetch_buffer: int = 8  # grain prefetch buffer (elements)


@dataclass
class CodecConfig:
    """Audio representation the diffusion model works in."""

    kind: str = "stft"  # stft | mel | oobleck (the latents of a frozen Oobleck VAE: codec.autoencoder)
    n_fft: int = 256
    hop_length: int = 128
    compress: float = 0.5  # stft: magnitude exponent
    scale: float = 1.0  # stft: multiplier after compression
    n_mels: int = 64  # mel only
    f_min: float = 0.0  # mel only
    f_max: float = 0.0  # mel only; 0 means Nyquist
    griffin_lim_iters: int = 32  # mel only
    stats_examples: int = 256  # clips used to fit the data-derived normalization
    per_channel_stats: bool = False
    # oobleck only: a jaxstage autoencoder directory (`jaxstage import-autoencoder`, or the
    # `autoencoder/` of a `configs/synth_oobleck.py` run); its sample rate must be data.sample_rate
    # and data.sample_rate * data.clip_seconds a multiple of its samples per latent
    autoencoder: str = ""
    # oobleck only: SHA-256 of its weights; "" takes the directory's when a run starts, and config.json
    # records it, so a resume or a sampler refuses a different autoencoder at that path
    autoencoder_sha256: str = ""
    latent: str = "mean"  # oobleck only: mean (the bottleneck mean) | sample (mean + stdev * noise, per step)
    chunk_frames: int = 128  # oobleck only: longer latent sequences are coded in overlapping chunks (0: never)
    chunk_overlap: int = 32  # oobleck only: latents shared by neighbouring chunks (stable-audio-tools' 32)


@dataclass
class SRConfig:
    """Audio super-resolution (``task=sr``): the low-band condition simulated per example in the pipeline.

    Each example's (cutoff, method, order) is drawn from a generator seeded by (data.seed, example
    index) (``jaxstage.data.lowpass.draw_low_band``): the same example always gets the same low band.
    """

    cutoff_min_hz: float = 1000.0  # cutoff ~ U[cutoff_min_hz, cutoff_max_hz], below data.sample_rate / 2
    cutoff_max_hz: float = 3000.0
    methods: tuple[str, ...] = ("cheby1", "butter", "bessel", "ellip", "stft_cut")  # see jaxstage/data/lowpass.py
    orders: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 10)  # IIR orders, each in [2, 10]
    cutoff_features: int = 16  # Fourier features of cutoff / (sample_rate / 2), the DiT's global condition
    replace_low_band: bool = False  # sampling: put the input's own band below the cutoff back into the output
    replace_n_fft: int = 1024  # STFT size of the replacement (hop n_fft / 4)
    replace_transition_hz: float = 0.0  # > 0: linear cross-fade from input to output bins just below the cutoff
    window_overlap_seconds: float = 0.1  # inputs longer than a clip: overlap of consecutive windows (cross-faded)


@dataclass
class TextConfig:
    """The text conditioner (id ``prompt``): a learned encoder over hash tokens, embeddings precomputed
    at prepare time, or a frozen T5 run inside the step."""

    kind: str = "learned"  # learned | precomputed (the records' text_emb/text_mask; needs data.source=prepared)
    #                        | t5 (captions tokenized by the T5 tokenizer, the frozen T5 encoder in the step)
    # a local transformers T5 directory (config.json, weights, tokenizer): text.kind=t5 runs it in the step;
    # text.kind=precomputed uses it to encode free-text prompts at sampling (default: the T5 directory
    # dataset.json names as the records' text encoder, when it is a T5 that exists here)
    encoder_dir: str = ""
    vocab_size: int = 2048  # learned only
    width: int = 128  # learned only (precomputed: the width is dataset.json's text_emb dim)
    depth: int = 2  # learned only
    num_heads: int = 4  # learned only


@dataclass
class ConditioningConfig:
    """Conditioners routed by id, as stable-audio-tools' conditioning config (docs/conditioning.md).

    The text conditioner (``text.*``) has id ``prompt``. A number conditioner reads the batch key named
    by its id (``seconds_start`` / ``seconds_total``: every data source provides them) and outputs one
    token as wide as the text conditioner's output.
    """

    numbers: tuple[tuple[str, float, float], ...] = ()  # (id, min_val, max_val) per number conditioner
    cross_attention_ids: tuple[str, ...] = ("prompt",)  # concatenated along tokens -> cross-attention
    global_ids: tuple[str, ...] = ()  # number ids, concatenated along channels -> the global condition
    prepend_ids: tuple[str, ...] = ()  # concatenated along tokens -> prepended to the DiT's sequence
    # training dropout of single conditioners (id, probability), drawn independently per example on top
    # of diffusion.cond_dropout (which nulls the whole cross-attention and prepend condition, as CFG does)
    dropout: tuple[tuple[str, float], ...] = ()


@dataclass
class ModelConfig:
    """The Stable Audio family diffusion transformer."""

    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    ff_mult: int = 4
    qk_norm: bool = False
    global_cond_type: str = "prepend"  # prepend | adaLN
    timestep_features_dim: int = 256
    project_cond_tokens: bool = True
    # cross-attention ignores padded text tokens; false = stable-audio-tools 0.0.19 (which attends to them)
    cross_attn_mask: bool = True
    # activation rematerialization of each block in the backward pass (docs/scaling.md; the policies are
    # jaxstage.models.transformer.REMAT_POLICIES): none (keep every activation) | full (keep the block input,
    # recompute the block) | dots (keep every matmul output, attention scores included) | dots_no_batch (keep
    # the projections, recompute attention and elementwise ops) | attention_out (keep q/k/v, context k/v and
    # the attention result; recompute the feed-forward) | offload (full, with the tagged projections copied to
    # pinned host memory instead of recomputed); true/false in older configs mean full/none
    remat: str = "none"
    # attention kernel (docs/precision.md): auto (cuDNN fused attention on NVIDIA GPUs when dtype and head size
    # allow, the Pallas splash kernel on TPU, XLA elsewhere) | xla | cudnn | splash (an explicit choice the
    # hardware or shapes cannot honour is an error)
    attention: str = "auto"


@dataclass
class PrecisionConfig:
    """Mixed precision (docs/precision.md): master weights, optimizer moments and EMA stay float32; the
    DiT's matmuls run in ``compute``; layer norms, softmax, the loss, the regime and structure math stay
    float32 whatever ``compute`` is. The codec, the text and SSL encoders keep their own dtypes."""

    compute: str = "auto"  # auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | bfloat16


@dataclass
class DiffusionConfig:
    """Objective and training noise-level distribution."""

    objective: str = "rf"  # edm | v | rf
    sigma_data: float = 0.5  # edm only
    level_dist: str = "logit_normal"  # lognormal | logit_normal | uniform | logsnr_uniform
    loc: float = 0.0  # logit_normal mean m / lognormal P_mean (the location the regime moves)
    scale: float = 1.0  # logit_normal s / lognormal P_std
    logsnr_min: float = -10.0  # logsnr_uniform range
    logsnr_max: float = 10.0
    t_eps: float = 1e-4  # time objectives: levels clamped to [t_eps, 1 - t_eps]
    sigma_min: float = 0.002  # edm: range of the uniform (floor) draw in ln sigma
    sigma_max: float = 80.0
    uniform_prob: float = 0.1  # probability a level is drawn uniformly (the floor)
    cond_dropout: float = 0.1  # training probability of dropping the text condition


@dataclass
class SampleConfig:
    """Sampling during and after training."""

    sampler: str = "euler"  # euler | heun | dpmpp_2m | pingpong
    steps: int = 32
    cfg_scale: float = 3.0
    cfg_interval: tuple[float, float] = (0.0, 1e9)  # EDM-sigma range where CFG applies (hi >= 1e9: no upper
    #                                                 bound, the pure-noise level sigma = inf included)
    # how the guided prediction is formed (docs/guidance.md): cfg | rescale (CFG rescale, Lin et al.) |
    # apg (adaptive projected guidance without momentum, Sadat et al.); each reads only its own options
    guidance: str = "cfg"
    cfg_rescale: float = 0.7  # rescale: φ, the fraction of the std-matched prediction, in [0, 1]
    apg_eta: float = 0.0  # apg: η >= 0, weight of the update's component parallel to D_c
    apg_norm_threshold: float = 0.0  # apg: r >= 0 caps the per-example norm of D_c − D_u (0 = no cap)
    every: int = 1000  # write sample WAVs every N steps (0 = only at the end)
    num: int = 4  # clips per sampling event
    final_eval_prompts: int = 90  # at the end (0 = off): t2a, held-out prompts judged by signal analysis;
    #   sr, held-out clips scored by LSD / LSD-HF against the unprocessed input (sr_eval.json)
    seed: int = 1234
    # every WAV jaxstage writes: a clip whose peak exceeds full scale (1.0) is scaled down to this peak
    # instead of being clipped by 16-bit PCM; raw_levels=true writes the model's levels as they are
    peak_level: float = 0.98
    raw_levels: bool = False


@dataclass
class EvalConfig:
    """Periodic evaluation during training: ``eval_*`` lines in metrics.jsonl and TensorBoard.

    t2a: attribute accuracy (synthetic data) and FD on the spectral embedding over held-out prompts
    (the first ``eval.num`` of the end-of-run set, sampled with sample.sampler / steps / cfg_scale).
    sr: LSD / LSD-HF / LSD-LF of the output with low-band replacement on held-out clips.
    """

    every: int = 0  # evaluate every N steps (0 = off)
    num: int = 32  # held-out prompts (t2a) or clips (sr) per evaluation


@dataclass
class OptimConfig:
    """AdamW with warm-up and cosine decay, clipping and EMA."""

    lr: float = 1e-3
    warmup_steps: int = 200
    end_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.99
    grad_clip: float = 1.0
    ema_decay: float = 0.995


@dataclass
class MeshConfig:
    """Device mesh shape and logical-to-mesh axis rules. -1 takes the remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    # logical axis name -> mesh axis (or "" for replicated)
    rules: tuple[tuple[str, str], ...] = (
        ("batch", "data,fsdp"),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("vocab", ""),
    )


class _StageSection:
    """Base of the sections that extend a ``jaxstage.stage`` config, whose hyperparameters (and
    defaults) they inherit: such a section is checked by :func:`validate` (a ``ConfigError`` naming
    the key), not by the stage class's ``__post_init__``; ``make_recipe`` builds the checked stage
    config from it. ``INTERNAL``: stage fields that are not config keys (they keep their default)."""

    INTERNAL: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        pass


@dataclass
class RegimeConfig(_StageSection, ProgressConfig):
    """The progress variable p (SPEC §3.1-3.2): the estimator and ablation modes
    (:class:`~jaxstage.stage.regime.ProgressConfig`), plus the monitor that measures D."""

    mode: str = "off"  # adaptive | linear | switch_at | random | off (off: a static recipe)
    every: int = 50  # monitor cadence in steps (one no-grad forward on the monitor batch)
    discrepancy: str = "alignment"  # alignment | output
    monitor_size: int = 64  # clips in the fixed monitor batch
    monitor_levels: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)  # RF-time levels (EDM: their sigma equivalents)
    monitor_seed: int = 7


@dataclass
class GuidanceConfig(_StageSection, AlignmentConfig):
    """Mechanism 1 (SPEC §3.3): REPA alignment to SSL targets with weight λ0(1-p)^γ
    (:class:`~jaxstage.stage.guidance.AlignmentConfig`), plus the source of the targets."""

    INTERNAL = ("eps",)
    lambda0: float = 0.0  # 0 disables alignment (and the projector)
    ssl: str = "spectral"  # spectral (stand-in computed from audio) | precomputed (the records' ssl; prepared data)
    #                        | encoder (a wav2vec2/HuBERT/WavLM directory run in JAX inside the step)
    ssl_encoder_dir: str = ""  # encoder only: a saved transformers model directory (converted at start-up)
    ssl_layers: tuple[int, ...] = (6, 7)  # encoder only: hidden_states averaged (0 = input to layer 1)
    ssl_n_mels: int = 40  # spectral only
    ssl_n_mfcc: int = 20  # spectral only
    # spectral stand-in resolutions (n_fft, hop); () derives ((codec.n_fft, codec.hop_length),
    # (codec.n_fft // 2, codec.hop_length)): the first shares the codec's STFT (XLA computes it once)
    ssl_resolutions: tuple[tuple[int, int], ...] = ()


@dataclass
class _TimestepSwitch:
    adaptive: bool = False


@dataclass
class TimestepConfig(_StageSection, AdaptiveTimestepConfig, _TimestepSwitch):
    """Mechanism 2 (SPEC §3.4): the level distribution's location moves with p when ``adaptive``
    (:class:`~jaxstage.stage.timesteps.AdaptiveTimestepConfig`; ``adaptive`` leads the keys)."""


@dataclass
class _StructSwitch:
    enabled: bool = False
    every: int = 100  # structure check cadence in steps


@dataclass
class StructConfig(_StageSection, StructureConfig, _StructSwitch):
    """Mechanism 3 (SPEC §3.5): structure-aware regularization over transformer blocks when ``enabled``
    (:class:`~jaxstage.stage.structure.StructureConfig`; ``enabled``, ``every`` lead the keys)."""

    INTERNAL = ("eps", "freeze_groups")


@dataclass
class TrainConfig:
    """Run length, batch, logging and checkpoint cadence."""

    steps: int = 3000
    batch_size: int = 32  # global batch
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 1000
    ckpt_keep: int = 2
    async_checkpoint: bool = True
    workdir: str = "runs/synth_t2a"
    # a run directory (from `jaxstage train` or `jaxstage import`) whose newest checkpoint's weights
    # (raw and EMA) and codec statistics start this run; optimizer, step and regime start fresh.
    # Read only when the workdir has no checkpoint yet (a resume continues from its own).
    init_from: str = ""
    # resume from this finished checkpoint instead of the newest (0: the newest); newer ones are moved
    # to checkpoints_set_aside/ and their metrics rows to metrics.discarded.jsonl (`--resume-step N`)
    resume_step: int = 0
    # a step whose loss or gradient norm is not finite is skipped (nothing updated); this many
    # consecutive skips are tolerated, one more stops the run (0: stop at the first)
    max_skipped_steps: int = 5
    progress_bar: bool = True
    compilation_cache: str = "~/.cache/jaxstage/jax_cache"  # "" disables the persistent cache


@dataclass
class ARCConfig:
    """ARC post-training (SPEC §5): a pretrained rectified-flow run becomes a few-step sampler by
    adversarial relativistic-contrastive training. Read only by ``jaxstage posttrain``."""

    init_from: str = ""  # the pretrained run directory (``jaxstage posttrain --init-from`` overrides)
    disc_depth: int = 2  # DiT blocks kept by the discriminator (a truncated copy of the pretrained DiT)
    head_hidden: int = 64  # channels of the discriminator's conv head
    head_kernel: int = 3  # time kernel of the head's first conv (ours)
    gen_lr: float = 1e-5  # generator AdamW learning rate (constant after warm-up)
    disc_lr: float = 1e-5  # discriminator AdamW learning rate
    b1: float = 0.5  # AdamW betas of both optimizers (ours: a common GAN choice)
    b2: float = 0.99
    warmup_steps: int = 50
    grad_clip: float = 1.0  # global-norm clipping of each player's gradient (0 = off)
    gen_level_loc: float = 0.0  # generator times t ~ logit-normal(loc, scale) (SPEC: p_gen)
    gen_level_scale: float = 1.0
    dis_level_loc: float = 0.0  # re-noising times tau ~ logit-normal(loc, scale) (SPEC: p_dis)
    dis_level_scale: float = 1.0
    contrastive_weight: float = 1.0  # weight of the contrastive discriminator loss L_C
    r1_weight: float = 0.0  # weight of the approximate R1 (real) + R2 (fake) penalty (0 = off)
    r1_sigma: float = 0.05  # std of the input perturbation of the approximate R1/R2
    ema_decay: float = 0.9999  # EMA of the generator (the weights sampled from)


@dataclass
class AutoencoderConfig:
    """The Oobleck VAE trainer (``task=autoencoder``, ``configs/synth_oobleck.py``): the VAE's shape
    (``jaxstage.models.oobleck.OobleckConfig``), its losses and the optional adversarial
    discriminator (stable-audio-tools' ``EncodecDiscriminator``). Read only with task=autoencoder."""

    audio_channels: int = 1  # the data pipeline is mono: must be 1
    channels: int = 32
    c_mults: tuple[int, ...] = (1, 2, 4, 8)
    strides: tuple[int, ...] = (2, 4, 4, 4)  # their product (the hop) must divide the clip length
    latent_dim: int = 16
    use_snake: bool = True  # SnakeBeta activations (else ELU)
    final_tanh: bool = False
    use_nearest_upsample: bool = False
    # multi-resolution STFT loss (jaxstage.autoencoder.losses): (fft size, hop) pairs; each fft size
    # must be below twice the clip length (reflect padding)
    stft_resolutions: tuple[tuple[int, int], ...] = ((1024, 256), (512, 128), (256, 64), (128, 32), (64, 16),
                                                     (32, 8))
    stft_weight: float = 1.0
    kl_weight: float = 1e-4  # stable-audio-tools' VAE bottleneck weight
    l1_weight: float = 0.0  # time-domain L1 (0 = off)
    # scale of the posterior noise the decoder sees in training (mean + latent_noise * stdev * noise):
    # 1 trains the VAE as stable-audio-tools does; below 1 lets a short run learn to reconstruct before
    # the encoder has shrunk its stdev (softplus(0) ~ 0.69 at initialization, large against the mean)
    latent_noise: float = 1.0
    # train on random crops of this many samples out of each clip (0 = the whole clip): a new offset per
    # example and step, drawn in the compiled step from the step's key (fold_in(train.seed key, step)),
    # so a resumed run crops exactly as the uninterrupted one. The conv VAE is length-agnostic, so a crop
    # of a quarter of the clip makes a step about 4x cheaper; evaluation and the reconstruction report
    # stay on whole clips. Must be a multiple of the hop (product of strides), at most the clip length,
    # above half the largest stft_resolutions fft size (and >= the largest disc_n_ffts when enabled).
    train_crop: int = 0
    # adversarial training (stable-audio-tools' EncodecDiscriminator: multi-scale STFT discriminator,
    # hinge loss, feature matching); the disc_* keys and the two weights are read only when enabled
    disc_enabled: bool = False
    disc_filters: int = 32
    disc_n_ffts: tuple[int, ...] = (512, 256, 128)  # one sub-discriminator each: hop n_fft // 4, window n_fft
    disc_kernel: tuple[int, int] = (3, 9)  # (time, frequency) kernel of its 2-D convolutions
    disc_dilations: tuple[int, ...] = (1, 2, 4)  # time dilations of its inner convolutions
    adversarial_weight: float = 0.1
    feature_matching_weight: float = 5.0
    disc_start_step: int = 0  # steps before this train the VAE alone (no GAN terms, discriminator frozen)
    disc_lr: float = 1e-4  # discriminator AdamW learning rate (constant; betas, decay, clipping from optim.*)


@dataclass
class Config:
    """The whole experiment."""

    name: str = "synth_t2a"
    task: str = "t2a"  # t2a (text-to-audio) | sr (audio super-resolution: low band + cutoff -> full band; see sr.*)
    #                    | autoencoder (an Oobleck VAE on the clips; see autoencoder.*)
    data: DataConfig = field(default_factory=DataConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    text: TextConfig = field(default_factory=TextConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    timesteps: TimestepConfig = field(default_factory=TimestepConfig)
    struct: StructConfig = field(default_factory=StructConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    arc: ARCConfig = field(default_factory=ARCConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)

    @property
    def num_samples(self) -> int:
        """Audio samples per training clip."""
        return int(round(self.data.sample_rate * self.data.clip_seconds))


# ------------------------------------------------------------------------------- validation

# model.remat: names of jaxstage.models.transformer.REMAT_POLICIES (kept here: config imports no model code)
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "attention_out", "offload")
REMAT_ALIASES = {True: "full", False: "none", "true": "full", "false": "none"}  # older configs: a bool


def _remat_policy(value: Any) -> Any:
    """``model.remat`` as a policy name: the booleans of older configs and runs map to full / none."""
    return REMAT_ALIASES.get(value.lower() if isinstance(value, str) else value, value)

CHOICES: dict[str, tuple[str, ...]] = {
    "task": ("t2a", "sr", "autoencoder"),
    "data.source": ("synthetic", "synthetic_speech", "prepared"),
    "codec.kind": ("stft", "mel", "oobleck"),
    "codec.latent": ("mean", "sample"),
    "text.kind": ("learned", "precomputed", "t5"),
    "model.global_cond_type": ("prepend", "adaLN"),
    "model.remat": REMAT_POLICIES,
    "model.attention": ("auto", "xla", "cudnn", "splash"),
    "precision.compute": ("auto", "float32", "bfloat16"),
    "diffusion.objective": ("edm", "v", "rf"),
    "diffusion.level_dist": ("lognormal", "logit_normal", "uniform", "logsnr_uniform"),
    "sample.sampler": ("euler", "heun", "dpmpp_2m", "pingpong"),
    "sample.guidance": GUIDANCE_KINDS,
    "regime.mode": MODES,
    "regime.discrepancy": ("alignment", "output"),
    "guidance.ssl": ("spectral", "precomputed", "encoder"),
    "struct.kind": KINDS,
}

POSITIVE = (
    "data.sample_rate", "data.clip_seconds", "data.num_examples", "data.text_max_length",
    "codec.n_fft", "codec.hop_length", "codec.compress", "codec.scale", "codec.n_mels",
    "codec.stats_examples", "text.vocab_size", "text.width", "text.depth", "text.num_heads",
    "model.embed_dim", "model.depth", "model.num_heads", "model.ff_mult",
    "model.timestep_features_dim", "diffusion.sigma_data", "diffusion.scale", "sample.steps",
    "sample.num", "optim.lr", "regime.every", "regime.monitor_size", "regime.window", "regime.eps",
    "regime.rho_min", "guidance.hidden", "guidance.ssl_n_mels", "guidance.ssl_n_mfcc", "struct.every",
    "struct.num_groups", "struct.patience", "struct.ramp_steps", "train.steps", "train.batch_size", "train.log_every",
    "train.ckpt_every", "train.ckpt_keep", "eval.num", "arc.disc_depth", "arc.gen_lr", "arc.disc_lr", "arc.r1_sigma",
)

PROBABILITIES = ("data.mix_prob", "diffusion.uniform_prob", "diffusion.cond_dropout", "optim.ema_decay",
                 "regime.beta", "regime.max_delta", "guidance.p_off", "struct.p_struct",
                 "sample.cfg_rescale")

NON_NEGATIVE = ("optim.warmup_steps", "optim.weight_decay", "optim.grad_clip", "sample.every", "eval.every",
                "sample.final_eval_prompts", "sample.cfg_scale", "optim.end_lr_ratio", "train.max_skipped_steps",
                "guidance.lambda0", "guidance.gamma", "struct.weight", "struct.delta", "regime.warmup_steps",
                "codec.chunk_frames", "codec.chunk_overlap", "sample.apg_eta", "sample.apg_norm_threshold")


def validate(cfg: Config) -> Config:
    """Raise ConfigError on the first bad value; return cfg unchanged otherwise."""
    cfg.model.remat = _remat_policy(cfg.model.remat)
    for key, choices in CHOICES.items():
        if (value := get_value(cfg, key)) not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")
    ranges = ((POSITIVE, lambda v: not v > 0, "must be > 0"),
              (PROBABILITIES, lambda v: not 0.0 <= v <= 1.0, "must be in [0, 1]"),
              (NON_NEGATIVE, lambda v: v < 0, "must be >= 0"))
    for keys, out_of_range, rule in ranges:
        for key in keys:
            if out_of_range(value := get_value(cfg, key)):
                raise ConfigError(f"{key}={value!r} {rule}")
    if cfg.codec.hop_length > cfg.codec.n_fft:
        raise ConfigError(f"codec.hop_length={cfg.codec.hop_length} must be <= codec.n_fft={cfg.codec.n_fft}")
    _validate_latent_codec(cfg)
    if cfg.model.embed_dim % cfg.model.num_heads:
        raise ConfigError(f"model.embed_dim={cfg.model.embed_dim} is not divisible by model.num_heads={cfg.model.num_heads}")
    if cfg.text.width % cfg.text.num_heads:
        raise ConfigError(f"text.width={cfg.text.width} is not divisible by text.num_heads={cfg.text.num_heads}")
    for axis in ("data", "fsdp", "tensor"):
        size = getattr(cfg.mesh, axis)
        if size == 0 or size < -1:
            raise ConfigError(f"mesh.{axis}={size} must be a positive size or -1")
    if sum(getattr(cfg.mesh, a) == -1 for a in ("data", "fsdp", "tensor")) > 1:
        raise ConfigError("mesh: at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")
    for logical, axes in cfg.mesh.rules:
        for axis in axes.split(","):
            if axis not in ("data", "fsdp", "tensor", ""):
                raise ConfigError(f"mesh.rules: {logical!r} maps to unknown mesh axis {axis!r}")
    if cfg.guidance.ssl == "encoder" and not cfg.guidance.ssl_encoder_dir:
        raise ConfigError("guidance.ssl=encoder needs guidance.ssl_encoder_dir (a saved transformers model directory)")
    if cfg.guidance.ssl != "encoder" and cfg.guidance.ssl_encoder_dir:
        raise ConfigError(f"guidance.ssl_encoder_dir is set but guidance.ssl={cfg.guidance.ssl!r} does not use it")
    for n_fft, hop in cfg.guidance.ssl_resolutions:
        if n_fft < 2 or not 0 < hop <= n_fft:
            raise ConfigError(f"guidance.ssl_resolutions: ({n_fft}, {hop}) needs n_fft >= 2 and 0 < hop <= n_fft")
    if cfg.regime.window < 2:
        raise ConfigError(f"regime.window={cfg.regime.window} must be >= 2 (a slope needs two points)")
    if cfg.regime.mode == "adaptive" and cfg.regime.discrepancy == "alignment" and cfg.guidance.lambda0 == 0:
        raise ConfigError("regime.mode=adaptive measures the alignment discrepancy: set guidance.lambda0 > 0")
    if cfg.regime.linear_end <= cfg.regime.linear_start:
        raise ConfigError(f"regime.linear_end={cfg.regime.linear_end} must be > regime.linear_start={cfg.regime.linear_start}")
    if not 0 <= cfg.regime.random_low <= cfg.regime.random_high:
        raise ConfigError(f"regime.random_low={cfg.regime.random_low} must be in [0, regime.random_high={cfg.regime.random_high}]")
    if not all(0.0 < t < 1.0 for t in cfg.regime.monitor_levels) or not cfg.regime.monitor_levels:
        raise ConfigError(f"regime.monitor_levels={cfg.regime.monitor_levels!r} must be RF times in (0, 1)")
    if cfg.regime.monitor_size % len(cfg.regime.monitor_levels):
        raise ConfigError(f"regime.monitor_size={cfg.regime.monitor_size} must be a multiple of the "
                          f"{len(cfg.regime.monitor_levels)} regime.monitor_levels")
    if cfg.struct.enabled and cfg.struct.num_groups > cfg.model.depth:
        raise ConfigError(f"struct.num_groups={cfg.struct.num_groups} exceeds model.depth={cfg.model.depth}")
    if not (cfg.guidance.layer == -1 or 1 <= cfg.guidance.layer <= cfg.model.depth):
        raise ConfigError(f"guidance.layer={cfg.guidance.layer} must be -1 (depth // 3) or a block in 1..{cfg.model.depth}")
    if cfg.timesteps.adaptive and cfg.diffusion.level_dist not in ("logit_normal", "lognormal"):
        raise ConfigError(f"timesteps.adaptive needs diffusion.level_dist logit_normal or lognormal, "
                          f"not {cfg.diffusion.level_dist!r}")
    if not 1 <= cfg.data.sample_rate * cfg.data.clip_seconds < 2 ** 31:
        raise ConfigError(f"data.sample_rate * data.clip_seconds = {cfg.data.sample_rate * cfg.data.clip_seconds:g} "
                          "must be between 1 and 2**31 samples")
    _validate_data(cfg)
    _validate_conditioning(cfg)
    _validate_sr(cfg)
    _validate_autoencoder(cfg)
    if not 0.0 < cfg.sample.peak_level <= 1.0:
        raise ConfigError(f"sample.peak_level={cfg.sample.peak_level!r} must be in (0, 1] (full scale is 1)")
    lo, hi = cfg.sample.cfg_interval
    if not 0 <= lo <= hi:
        raise ConfigError(f"sample.cfg_interval={cfg.sample.cfg_interval!r} must satisfy 0 <= lo <= hi")
    _validate_guidance_rule(cfg)
    if not 0.0 <= cfg.arc.ema_decay < 1.0:
        raise ConfigError(f"arc.ema_decay={cfg.arc.ema_decay} must be in [0, 1)")
    return cfg


# sample.guidance -> the sample.* options that rule reads; an option of another rule may not be set
GUIDANCE_OPTIONS = {"cfg": (), "rescale": ("cfg_rescale",), "apg": ("apg_eta", "apg_norm_threshold")}


def _validate_guidance_rule(cfg: Config) -> None:
    """``sample.guidance`` and its options: an option of a rule not selected is refused, not ignored."""
    s, default = cfg.sample, SampleConfig()
    for kind, keys in GUIDANCE_OPTIONS.items():
        for key in keys:
            if kind != s.guidance and getattr(s, key) != getattr(default, key):
                raise ConfigError(f"sample.{key} is set but only sample.guidance={kind} reads it "
                                  f"(sample.guidance={s.guidance!r})")
    if cfg.task == "sr" and s.guidance != "cfg":
        raise ConfigError(f"sample.guidance={s.guidance!r}: task=sr samples without classifier-free guidance "
                          "(sample.cfg_scale=1), so no guidance rule applies; leave sample.guidance=cfg")


def guidance_rule(sample: SampleConfig) -> GuidanceRule:
    """The static :class:`GuidanceRule` that ``sample.guidance`` and its options select."""
    return GuidanceRule(sample.guidance, rescale_phi=sample.cfg_rescale, apg_eta=sample.apg_eta,
                        apg_norm_threshold=sample.apg_norm_threshold)


def with_guidance(cfg: Config, guidance: str | None = None, cfg_rescale: float | None = None,
                  apg_eta: float | None = None, apg_norm_threshold: float | None = None) -> Config:
    """A validated copy of ``cfg`` with the guidance settings given (None: the run's) — how
    ``jaxstage sample`` / ``eval`` override a run's rule for one call. A new ``guidance`` drops the
    run's options of the other rules; an option given for a rule that is not selected is refused."""
    s = cfg.sample
    if guidance is not None and guidance != s.guidance:
        default = SampleConfig()
        s = dataclasses.replace(s, guidance=guidance, **{k: getattr(default, k) for keys in GUIDANCE_OPTIONS.values()
                                                          for k in keys})
    given = {"cfg_rescale": cfg_rescale, "apg_eta": apg_eta, "apg_norm_threshold": apg_norm_threshold}
    s = dataclasses.replace(s, **{k: v for k, v in given.items() if v is not None})
    if s.guidance not in GUIDANCE_KINDS:
        raise ConfigError(f"sample.guidance={s.guidance!r} is not one of {', '.join(GUIDANCE_KINDS)}")
    for key, value in given.items():
        if value is not None and key not in GUIDANCE_OPTIONS[s.guidance]:
            raise ConfigError(f"sample.{key}={value!r} is given but only sample.guidance="
                              f"{next(k for k, v in GUIDANCE_OPTIONS.items() if key in v)} reads it "
                              f"(sample.guidance={s.guidance!r})")
    return validate(dataclasses.replace(cfg, sample=s))


def validate_posttrain(cfg: Config) -> Config:
    """:func:`validate`, then what ARC post-training (``jaxstage posttrain``) needs of the pretrained run."""
    validate(cfg)
    if cfg.task != "t2a":
        raise ConfigError(f"task={cfg.task}: ARC post-training is implemented for text-to-audio (task=t2a)")
    if cfg.diffusion.objective != "rf":
        raise ConfigError(f"diffusion.objective={cfg.diffusion.objective}: ARC post-trains a rectified-flow "
                          f"model (rf)")
    if cfg.train.batch_size < 2:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size}: the contrastive loss rolls prompts within "
                          f"the batch and needs at least 2 clips")
    if cfg.arc.disc_depth > cfg.model.depth:  # >= 1: validate
        raise ConfigError(f"arc.disc_depth={cfg.arc.disc_depth} must be in [1, model.depth={cfg.model.depth}]")
    if cfg.text.kind == "t5":
        raise ConfigError("text.kind=t5: ARC post-training does not run T5 in its step; prepare T5 embeddings "
                          "(`jaxstage prepare --text-encoder T5_DIR`) and use text.kind=precomputed")
    return cfg


def _validate_data(cfg: Config) -> None:
    """Cross-section rules of the data source, precomputed text and precomputed SSL targets."""
    if cfg.data.source == "prepared" and not cfg.data.path:
        raise ConfigError("data.source=prepared needs data.path (the `jaxstage prepare` output directory)")
    if cfg.data.source != "prepared" and cfg.data.path:
        raise ConfigError(f"data.path={cfg.data.path!r} is only read with data.source=prepared, not {cfg.data.source!r}")
    for key in ("text.kind", "guidance.ssl"):
        if get_value(cfg, key) == "precomputed" and cfg.data.source != "prepared":
            raise ConfigError(f"{key}=precomputed reads prepared records: set data.source=prepared, not {cfg.data.source!r}")
    if cfg.guidance.ssl == "precomputed" and cfg.regime.discrepancy == "output":
        raise ConfigError("regime.discrepancy=output computes φ of decoded audio: it needs guidance.ssl=spectral, "
                          "not precomputed")


def _validate_conditioning(cfg: Config) -> None:
    """``conditioning.*``: ids exist, are routed, and go where their kind can go; ``text.encoder_dir``."""
    c = cfg.conditioning
    numbers = [n[0] for n in c.numbers]
    for cid, low, high in c.numbers:
        if not cid.isidentifier() or cid == "prompt":
            raise ConfigError(f"conditioning.numbers: id {cid!r} must be a Python identifier other than 'prompt'")
        if not high > low:
            raise ConfigError(f"conditioning.numbers: {cid!r} needs max_val > min_val, got ({low}, {high})")
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"conditioning.numbers: ids must be unique, got {numbers}")
    known = {"prompt", *numbers}
    for key in ("cross_attention_ids", "global_ids", "prepend_ids"):
        ids = getattr(c, key)
        if len(set(ids)) != len(ids):
            raise ConfigError(f"conditioning.{key}={list(ids)} repeats an id")
        for cid in ids:
            if cid not in known:
                raise ConfigError(f"conditioning.{key}: no conditioner with id {cid!r} (have {sorted(known)})")
    if "prompt" not in c.cross_attention_ids:
        raise ConfigError("conditioning.cross_attention_ids must contain 'prompt' (the text conditioner)")
    if "prompt" in c.global_ids + c.prepend_ids:
        raise ConfigError("conditioning: 'prompt' is routed to cross-attention only (global and prepend conditions "
                          "take number conditioners)")
    routed = set(c.cross_attention_ids + c.global_ids + c.prepend_ids)
    if unused := [cid for cid in numbers if cid not in routed]:
        raise ConfigError(f"conditioning.numbers: {unused[0]!r} is not routed (add it to conditioning.cross_attention_ids, "
                          f"global_ids or prepend_ids)")
    for cid, prob in c.dropout:
        if cid not in known:
            raise ConfigError(f"conditioning.dropout: no conditioner with id {cid!r} (have {sorted(known)})")
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"conditioning.dropout: {cid!r} probability {prob} is not in [0, 1]")
    if cfg.text.kind == "t5" and not cfg.text.encoder_dir:
        raise ConfigError("text.kind=t5 runs a T5 encoder in the step: set text.encoder_dir (a local transformers "
                          "T5 directory)")
    if cfg.text.kind == "learned" and cfg.text.encoder_dir:
        raise ConfigError(f"text.encoder_dir={cfg.text.encoder_dir!r} is set but text.kind=learned does not use it")


def _validate_latent_codec(cfg: Config) -> None:
    """``codec.kind=oobleck`` and the keys only it reads; ``data.latents`` (pre-encoded records)."""
    c = cfg.codec
    if c.kind == "oobleck":
        if not c.autoencoder:
            raise ConfigError("codec.kind=oobleck needs codec.autoencoder (a jaxstage autoencoder directory)")
        if c.chunk_frames and c.chunk_overlap >= c.chunk_frames:
            raise ConfigError(f"codec.chunk_overlap={c.chunk_overlap} must be < codec.chunk_frames={c.chunk_frames}")
    else:
        default = CodecConfig()
        for key in ("autoencoder", "autoencoder_sha256", "latent", "chunk_frames", "chunk_overlap"):
            if getattr(c, key) != getattr(default, key):
                raise ConfigError(f"codec.{key} is set but only codec.kind=oobleck reads it (codec.kind={c.kind!r})")
    if cfg.data.latents:
        if cfg.data.source != "prepared" or c.kind != "oobleck":
            raise ConfigError(f"data.latents=true reads pre-encoded records: it needs data.source=prepared and "
                              f"codec.kind=oobleck, not {cfg.data.source!r} and {c.kind!r}")
        if c.latent != "mean":
            raise ConfigError("data.latents=true: the records hold the bottleneck mean; codec.latent=sample draws "
                              "in the step from an encoder the step does not run (set codec.latent=mean)")


def _validate_sr(cfg: Config) -> None:
    """The super-resolution task and its ``sr.*`` section (read only with task=sr)."""
    if cfg.task != "sr":
        if cfg.data.source == "synthetic_speech":
            raise ConfigError("data.source=synthetic_speech has no captions: it trains task=sr, not task=t2a")
        default = vars(SRConfig())
        changed = [f"sr.{k}" for k, v in vars(cfg.sr).items() if v != default[k]]
        if changed:
            raise ConfigError(f"{changed[0]} is set but only task=sr reads sr.* (task={cfg.task!r})")
        return
    from jaxstage.data.lowpass import MAX_ORDER, METHODS, MIN_ORDER

    if cfg.data.source not in ("synthetic_speech", "prepared"):
        raise ConfigError(f"task=sr trains on data.source=synthetic_speech or prepared, not {cfg.data.source!r}")
    if cfg.text.kind != "learned":
        raise ConfigError("task=sr conditions on the low band and cutoff only (the caption is always empty): "
                          f"set text.kind=learned, not {cfg.text.kind!r}")
    if cfg.sample.cfg_scale != 1.0:
        raise ConfigError(f"sample.cfg_scale={cfg.sample.cfg_scale:g}: task=sr samples without classifier-free "
                          "guidance (the low-band condition is never dropped in training); set sample.cfg_scale=1")
    s, nyquist = cfg.sr, cfg.data.sample_rate / 2
    if not 0 < s.cutoff_min_hz <= s.cutoff_max_hz < nyquist:
        raise ConfigError(f"sr.cutoff_min_hz={s.cutoff_min_hz:g}, sr.cutoff_max_hz={s.cutoff_max_hz:g} must satisfy "
                          f"0 < min <= max < data.sample_rate / 2 = {nyquist:g}")
    if not s.methods:
        raise ConfigError("sr.methods must name at least one low-pass method")
    for method in s.methods:
        if method not in METHODS:
            raise ConfigError(f"sr.methods: {method!r} is not one of {', '.join(METHODS)}")
    if not s.orders:
        raise ConfigError("sr.orders must list at least one filter order")
    for order in s.orders:
        if not MIN_ORDER <= order <= MAX_ORDER:
            raise ConfigError(f"sr.orders: {order} must be in [{MIN_ORDER}, {MAX_ORDER}]")
    if s.cutoff_features <= 0 or s.cutoff_features % 2:
        raise ConfigError(f"sr.cutoff_features={s.cutoff_features} must be a positive even number")
    if s.replace_n_fft < 16 or s.replace_n_fft // 2 >= cfg.num_samples:
        raise ConfigError(f"sr.replace_n_fft={s.replace_n_fft} must be >= 16 and below twice the clip length "
                          f"(data.sample_rate * data.clip_seconds = {cfg.num_samples} samples)")
    if s.replace_transition_hz < 0:
        raise ConfigError(f"sr.replace_transition_hz={s.replace_transition_hz:g} must be >= 0")
    if not 0 <= s.window_overlap_seconds * cfg.data.sample_rate <= cfg.num_samples / 2:
        raise ConfigError(f"sr.window_overlap_seconds={s.window_overlap_seconds:g} must be in [0, half a clip "
                          f"(data.clip_seconds / 2 = {cfg.data.clip_seconds / 2:g} s)]")


# sections the autoencoder trainer never reads: a changed key there is an error with task=autoencoder
AUTOENCODER_UNREAD = ("text", "model", "diffusion", "regime", "guidance", "timesteps", "struct", "arc")
AUTOENCODER_UNREAD_KEYS = ("sample.sampler", "sample.steps", "sample.cfg_scale", "sample.cfg_interval",
                           "sample.guidance", "sample.cfg_rescale", "sample.apg_eta", "sample.apg_norm_threshold",
                           "codec.kind", "codec.stats_examples", "codec.per_channel_stats")
AUTOENCODER_DISC_KEYS = ("disc_filters", "disc_n_ffts", "disc_kernel", "disc_dilations", "adversarial_weight",
                         "feature_matching_weight", "disc_start_step", "disc_lr")


def _changed(section: Any, prefix: str) -> list[str]:
    """Dotted keys of ``section`` whose value differs from the section's default."""
    default = vars(type(section)())
    return [f"{prefix}.{k}" for k in _fields(section) if getattr(section, k) != default[k]]


def _validate_autoencoder(cfg: Config) -> None:
    """The autoencoder task and its ``autoencoder.*`` section (read only with task=autoencoder)."""
    a = cfg.autoencoder
    if cfg.task != "autoencoder":
        if changed := _changed(a, "autoencoder"):
            raise ConfigError(f"{changed[0]} is set but only task=autoencoder reads autoencoder.* (task={cfg.task!r})")
        return
    if cfg.data.source != "synthetic":
        raise ConfigError(f"task=autoencoder trains on data.source=synthetic (its report needs the clips' known "
                          f"attributes), not {cfg.data.source!r}")
    unread = [k for name in AUTOENCODER_UNREAD for k in _changed(getattr(cfg, name), name)]
    unread += [k for k in AUTOENCODER_UNREAD_KEYS if get_value(cfg, k) != get_value(Config(), k)]
    if unread:
        raise ConfigError(f"{unread[0]} is set but task=autoencoder does not read it (no diffusion model; codec.* "
                          f"sets only the stft/mel codecs its report compares against)")
    if a.audio_channels != 1:
        raise ConfigError(f"autoencoder.audio_channels={a.audio_channels}: the data pipeline is mono; must be 1")
    for key in ("channels", "latent_dim", "disc_filters"):
        if getattr(a, key) < 1:
            raise ConfigError(f"autoencoder.{key}={getattr(a, key)} must be >= 1")
    for key in ("c_mults", "strides", "disc_n_ffts", "disc_kernel", "disc_dilations"):
        values = getattr(a, key)
        if not values or min(values) < 1:
            raise ConfigError(f"autoencoder.{key}={values!r} must be a non-empty tuple of values >= 1")
    if len(a.c_mults) != len(a.strides):
        raise ConfigError(f"autoencoder.c_mults={a.c_mults!r} and autoencoder.strides={a.strides!r} differ in length")
    hop = math.prod(a.strides)
    if cfg.num_samples % hop:
        raise ConfigError(f"autoencoder.strides={a.strides!r}: their product {hop} must divide the clip length "
                          f"(data.sample_rate * data.clip_seconds = {cfg.num_samples} samples)")
    if not a.stft_resolutions:
        raise ConfigError("autoencoder.stft_resolutions must list at least one (fft size, hop) pair")
    for n_fft, hop_length in a.stft_resolutions:
        if not 2 <= n_fft < 2 * cfg.num_samples or not 0 < hop_length <= n_fft:
            raise ConfigError(f"autoencoder.stft_resolutions: ({n_fft}, {hop_length}) needs 2 <= fft size < twice the "
                              f"clip length ({cfg.num_samples} samples) and 0 < hop <= fft size")
    if a.train_crop:
        crop, largest = a.train_crop, max(n for n, _ in a.stft_resolutions)
        if not 0 < crop <= cfg.num_samples or crop % hop:
            raise ConfigError(f"autoencoder.train_crop={crop} must be 0 (whole clips) or a multiple of the hop {hop} "
                              f"(product of autoencoder.strides) in [{hop}, the clip length {cfg.num_samples}]")
        if largest >= 2 * crop:
            raise ConfigError(f"autoencoder.train_crop={crop}: the largest autoencoder.stft_resolutions fft size "
                              f"{largest} must be below twice the crop ({2 * crop}; reflect padding)")
        if a.disc_enabled and max(a.disc_n_ffts) > crop:
            raise ConfigError(f"autoencoder.train_crop={crop}: autoencoder.disc_n_ffts {max(a.disc_n_ffts)} must be "
                              f"<= the crop")
    for key in ("stft_weight", "kl_weight", "l1_weight", "adversarial_weight", "feature_matching_weight",
                "disc_start_step", "latent_noise"):
        if getattr(a, key) < 0:
            raise ConfigError(f"autoencoder.{key}={getattr(a, key)!r} must be >= 0")
    if a.stft_weight == 0 and a.l1_weight == 0:
        raise ConfigError("autoencoder.stft_weight and autoencoder.l1_weight are both 0: nothing to reconstruct with")
    if not a.disc_enabled:
        default = AutoencoderConfig()
        for key in AUTOENCODER_DISC_KEYS:
            if getattr(a, key) != getattr(default, key):
                raise ConfigError(f"autoencoder.{key} is set but autoencoder.disc_enabled=false")
        return
    if not a.disc_lr > 0:
        raise ConfigError(f"autoencoder.disc_lr={a.disc_lr!r} must be > 0")
    for n_fft in a.disc_n_ffts:
        if not 4 <= n_fft <= cfg.num_samples:
            raise ConfigError(f"autoencoder.disc_n_ffts: {n_fft} must be in [4, the clip length {cfg.num_samples}]")
    if a.disc_start_step >= cfg.train.steps:
        raise ConfigError(f"autoencoder.disc_start_step={a.disc_start_step} >= train.steps={cfg.train.steps}: "
                          f"the discriminator would never train (set autoencoder.disc_enabled=false)")


# ------------------------------------------------------------------------ keys and overrides


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    """The config keys of a section: its fields less a stage section's INTERNAL ones."""
    return {f.name: f for f in dataclasses.fields(obj) if f.name not in getattr(obj, "INTERNAL", ())}


def all_keys(obj: Any = None, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the config tree."""
    obj = Config() if obj is None else obj
    keys = []
    for name in _fields(obj):
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value):
            keys += all_keys(value, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _parent(cfg: Config, key: str) -> tuple[Any, str]:
    """(section holding a dotted key, the key's last part); ConfigError naming the key if it does not exist."""
    obj: Any = cfg
    for part in key.split("."):
        if not dataclasses.is_dataclass(obj) or part not in _fields(obj):
            raise _unknown_key(key)
        parent, obj = obj, getattr(obj, part)
    return parent, part


def get_value(cfg: Config, key: str) -> Any:
    """Value at a dotted key; ConfigError naming the key if it does not exist."""
    return getattr(*_parent(cfg, key))


BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _parse(key: str, text: str, hint: Any) -> Any:
    """Parse an override string into the field's declared type (tuples: JSON or a Python literal)."""
    try:
        if hint is bool:
            return BOOL_WORDS[text.strip().lower()]
        if typing.get_origin(hint) is tuple:
            try:
                return _coerce(json.loads(text), hint)
            except (ValueError, RecursionError):
                return _coerce(ast.literal_eval(text), hint)
        return _coerce({int: int, float: float, str: str}[hint](text), hint)
    except (KeyError, ValueError, TypeError, SyntaxError, MemoryError, RecursionError, OverflowError):
        pass
    raise ConfigError(f"{key}={text!r} is not a valid {_type_name(hint)}")


def _coerce(value: Any, hint: Any) -> Any:
    """A parsed (JSON or literal) value as the type ``hint`` exactly: no truncation of 1.5 to int, no
    str() of numbers, finite floats, 64-bit ints; ValueError otherwise."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        args = args[:1] * len(value) if isinstance(value, list | tuple) and args[1:] == (Ellipsis,) else args
        if not isinstance(value, list | tuple) or len(args) != len(value):
            raise ValueError
        return tuple(_coerce(v, a) for a, v in zip(args, value))
    value = float(value) if hint is float and type(value) is int else value  # OverflowError past 1.8e308
    if (type(value) is not hint or hint is float and not math.isfinite(value)
            or hint is int and not -2 ** 63 <= value < 2 ** 63):
        raise ValueError
    return value


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)  # int, tuple[float, float]


def set_value(cfg: Config, key: str, text: str) -> None:
    """Apply one ``key=value`` override in place (value parsed by the field's type)."""
    obj, name = _parent(cfg, key)
    current = getattr(obj, name)
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"{key!r} is a config section; set one of its fields, e.g. {all_keys(current, key + '.')[0]}")
    setattr(obj, name, _parse(key, text, typing.get_type_hints(type(obj))[name]))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``--set key=value`` strings in order, then validate."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, text = item.split("=", 1)
        set_value(cfg, key.strip(), text.strip())
    return validate(cfg)


# --------------------------------------------------------------------------- files and JSON

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "synth_t2a.py"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``get_config()`` from an experiment file (default: configs/synth_t2a.py), apply overrides."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"jaxstage_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a broken experiment file: name it
        raise ConfigError(f"config file {str(path)!r} failed to import: {type(err).__name__}: {err}") from err
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {str(path)!r} has no get_config() function")
    cfg = module.get_config()
    if not isinstance(cfg, Config):
        raise ConfigError(f"config file {str(path)!r}: get_config() returned {type(cfg).__name__}, not Config")
    return apply_overrides(cfg, overrides or [])


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of the config keys (tuples become lists in JSON)."""
    return {k: to_dict(v) if dataclasses.is_dataclass(v := getattr(cfg, k)) else v for k in _fields(cfg)}


def from_dict(data: dict[str, Any], source: str = "config.json") -> Config:
    """Rebuild a Config from ``to_dict`` output; unknown keys are errors naming ``source``."""
    cfg = Config()

    def fill(obj: Any, values: dict[str, Any], prefix: str) -> None:
        hints = typing.get_type_hints(type(obj))
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the config'} is not a JSON object")
        for name, value in values.items():
            if name not in _fields(obj):
                raise ConfigError(f"{source}: unknown config key {prefix + name!r}")
            current = getattr(obj, name)
            if dataclasses.is_dataclass(current):
                fill(current, value, f"{prefix}{name}.")
            else:
                if prefix + name == "model.remat":  # run directories written before remat policies: a bool
                    value = _remat_policy(value)
                try:
                    setattr(obj, name, _coerce(value, hints[name]))
                except (ValueError, TypeError, OverflowError):
                    raise ConfigError(f"{source}: {prefix + name}={value!r} is not a valid "
                                      f"{_type_name(hints[name])}") from None

    fill(cfg, data, "")
    return validate(cfg)


def save_json(cfg: Config, path: str | Path) -> None:
    """Write the resolved config (atomically: temp file, then rename)."""
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
    tmp.replace(path)


def load_json(path: str | Path) -> Config:
    """Read a resolved config written by :func:`save_json`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{str(path)!r} is not valid JSON: {err}") from err
    return from_dict(data, source=str(path))
