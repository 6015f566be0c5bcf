"""Stable Audio Open-shaped PyTorch models built by stable-audio-tools 0.0.19 itself, for the import tests.

    config = sao_model_config("reduced")                    # or "sao1", "small"
    t5_dir = save_reduced_t5(tmp / "t5")                    # random 1-layer T5, d_model 512
    model = build_sat_model(config, t5_dir, seed=0)         # SAT's own create_model_from_config
    save_sat_checkpoint(model, config, tmp / "sat")         # model.safetensors + model_config.json
    x0 = torch_sample(model, x_T, levels, "v", cond, cfg_scale=3.0)   # jaxstage's Euler, SAT's forward

The model is `stable_audio_tools.models.factory.create_model_from_config` (a
`ConditionedDiffusionModelWrapper`: DiT, `MultiConditioner` with the T5 and number conditioners, Oobleck
`AutoencoderPretransform`). Its heavy third-party imports that these paths never call (torchaudio has
no wheel here, alias_free_torch, k_diffusion, einops_exts) are stubbed while the modules import; the
T5 conditioner's hub download (`from_pretrained("t5-base")`) is redirected to a local directory.

Sampling: stable-audio-tools' `generate_diffusion_cond` draws its own torch noise and, for the v
objective, samples through k-diffusion (not installed) or v-DDIM on a linear-t grid; neither can
start from jaxstage's noise on jaxstage's level grid. `torch_sample` is therefore the jaxstage sampler
loop (`jaxstage/diffusion/samplers.py`: `euler`, `pingpong`) written in torch against the SAT model's
own forward (`model(x, t, cond=..., cfg_scale=w, batch_cfg=True)`, CFG done by SAT inside the DiT).
For rectified flow, SAT's own `sample_rf(sampler_type="euler")` uses the same logSNR grid as
jaxstage (`schedules.logsnr_linear`), so `sat_sample_rf` runs SAT's own sampler code too.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import json
import math
import sys
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np

# ----------------------------------------------------------------------------- configs

SAO_OOBLECK = {  # Stable Audio Open 1.0's pretransform (SAO.md); SAO Small uses the same VAE there
    "type": "autoencoder",
    "iterate_batch": True,
    "config": {
        "encoder": {"type": "oobleck", "requires_grad": False,
                    "config": {"in_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                               "strides": [2, 4, 4, 8, 8], "latent_dim": 128, "use_snake": True}},
        "decoder": {"type": "oobleck",
                    "config": {"out_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                               "strides": [2, 4, 4, 8, 8], "latent_dim": 64, "use_snake": True,
                               "final_tanh": False}},
        "bottleneck": {"type": "vae"},
        "latent_dim": 64,
        "downsampling_ratio": 2048,
        "io_channels": 2,
    },
}

SAO_TRAINING = {  # SAO.md: AdamW 5e-5, betas (0.9, 0.999), wd 1e-3, InverseLR, EMA on
    "use_ema": True,
    "log_loss_info": False,
    "optimizer_configs": {"diffusion": {
        "optimizer": {"type": "AdamW", "config": {"lr": 5e-5, "betas": [0.9, 0.999], "weight_decay": 1e-3}},
        "scheduler": {"type": "InverseLR", "config": {"inv_gamma": 1000000, "power": 0.5, "warmup": 0.99}}}},
}

# The reduced T5: "t5-small"'s width (512). A T5 conditioner's width is fixed by its hub name in SAT
# (`T5Conditioner.T5_MODEL_DIMS`; another cond_dim would add a projection SAO does not have, which the
# importer refuses), and with SAO's project_cond_tokens=false the DiT's cross-attention keys/values keep
# that width, split into heads of the DiT's head width: so the DiT is 512 wide too (8 heads of 64).
REDUCED_T5_NAME = "t5-small"
REDUCED_T5_DIM = 512
REDUCED_MAX_LENGTH = 12


def _number(id_: str, max_val: int) -> dict:
    return {"id": id_, "type": "number", "config": {"min_val": 0, "max_val": max_val}}


def sao_model_config(kind: str) -> dict[str, Any]:
    """A stable-audio-tools `model_config.json` dict: "sao1" (Stable Audio Open 1.0, as published),
    "small" (Stable Audio Open Small as SAO.md reconstructs it, not verified against the release; its
    project_cond_tokens is left at SAT's default, true: with false, 768-wide T5 keys/values cannot be
    split into its 8 heads of 128, which SAT's attention cannot run and jaxstage refuses), or
    "reduced_small" (SAO Small's structure: rectified flow, qk layer norm, seconds_total only; at the
    reduced sizes) or "reduced" (SAO 1.0's structure at test sizes: VAE 8 channels, strides [2, 2], latent 8; DiT width
    512, depth 2, 8 heads of 64; T5 "t5-small" (width 512), a 1-layer random one: `save_reduced_t5`)."""
    if kind == "sao1":
        return {
            "model_type": "diffusion_cond", "sample_size": 2097152, "sample_rate": 44100, "audio_channels": 2,
            "model": {
                "pretransform": copy.deepcopy(SAO_OOBLECK),
                "conditioning": {"configs": [
                    {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 128}},
                    _number("seconds_start", 512), _number("seconds_total", 512)], "cond_dim": 768},
                "diffusion": {
                    "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                    "global_cond_ids": ["seconds_start", "seconds_total"],
                    "type": "dit",
                    "diffusion_objective": "v",
                    "config": {"io_channels": 64, "embed_dim": 1536, "depth": 24, "num_heads": 24,
                               "cond_token_dim": 768, "global_cond_dim": 1536, "project_cond_tokens": False,
                               "transformer_type": "continuous_transformer"}},
                "io_channels": 64},
            "training": copy.deepcopy(SAO_TRAINING),
        }
    if kind == "small":
        return {
            "model_type": "diffusion_cond", "sample_size": 524288, "sample_rate": 44100, "audio_channels": 2,
            "model": {
                "pretransform": copy.deepcopy(SAO_OOBLECK),
                "conditioning": {"configs": [
                    {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 64}},
                    _number("seconds_total", 256)], "cond_dim": 768},
                "diffusion": {
                    "cross_attention_cond_ids": ["prompt", "seconds_total"],
                    "global_cond_ids": ["seconds_total"],
                    "type": "dit",
                    "diffusion_objective": "rectified_flow",
                    "config": {"io_channels": 64, "embed_dim": 1024, "depth": 16, "num_heads": 8,
                               "cond_token_dim": 768, "global_cond_dim": 768,
                               "transformer_type": "continuous_transformer", "attn_kwargs": {"qk_norm": "ln"}}},
                "io_channels": 64},
            "training": copy.deepcopy(SAO_TRAINING),
        }
    if kind == "reduced":
        config = sao_model_config("sao1")
        config["sample_size"] = 256  # 64 latent frames
        config["sample_rate"] = 8000
        ae = config["model"]["pretransform"]["config"]
        ae["encoder"]["config"].update(channels=8, c_mults=[1, 2], strides=[2, 2], latent_dim=16)
        ae["decoder"]["config"].update(channels=8, c_mults=[1, 2], strides=[2, 2], latent_dim=8)
        ae.update(latent_dim=8, downsampling_ratio=4)
        cond = config["model"]["conditioning"]
        cond["cond_dim"] = REDUCED_T5_DIM
        cond["configs"][0]["config"].update(t5_model_name=REDUCED_T5_NAME, max_length=REDUCED_MAX_LENGTH)
        config["model"]["diffusion"]["config"].update(io_channels=8, embed_dim=512, depth=2, num_heads=8,
                                                      cond_token_dim=REDUCED_T5_DIM,
                                                      global_cond_dim=2 * REDUCED_T5_DIM)
        config["model"]["io_channels"] = 8
        return config
    if kind == "reduced_small":
        config = sao_model_config("small")
        reduced = sao_model_config("reduced")
        for key in ("sample_size", "sample_rate"):
            config[key] = reduced[key]
        config["model"]["pretransform"] = reduced["model"]["pretransform"]
        cond = config["model"]["conditioning"]
        cond["cond_dim"] = REDUCED_T5_DIM
        cond["configs"][0]["config"].update(t5_model_name=REDUCED_T5_NAME, max_length=REDUCED_MAX_LENGTH)
        config["model"]["diffusion"]["config"].update(io_channels=8, embed_dim=512, depth=2, num_heads=8,
                                                      cond_token_dim=REDUCED_T5_DIM,
                                                      global_cond_dim=REDUCED_T5_DIM)
        config["model"]["io_channels"] = 8
        return config
    raise ValueError(f"unknown SAO config kind {kind!r}: reduced, reduced_small, sao1 or small")


def latent_frames(config: dict) -> int:
    return config["sample_size"] // config["model"]["pretransform"]["config"]["downsampling_ratio"]


# ----------------------------------------------------------------------------- stable-audio-tools import

THIRD_PARTY_STUBS = ("torchaudio", "torchaudio.transforms", "alias_free_torch", "k_diffusion", "einops_exts")
# SAT modules that `jaxstage.tools.export.sat_reference` may have imported against stubbed SAT siblings
# (its placeholders then sit in their globals): dropped so that they import again against the real ones.
_SAT_REIMPORT = ("stable_audio_tools.models.factory", "stable_audio_tools.models.diffusion",
                 "stable_audio_tools.models.autoencoders", "stable_audio_tools.models.conditioners",
                 "stable_audio_tools.models.pretransforms", "stable_audio_tools.models.bottleneck",
                 "stable_audio_tools.models.adp", "stable_audio_tools.models.utils",
                 "stable_audio_tools.inference.generation", "stable_audio_tools.inference.sampling",
                 "stable_audio_tools.inference.utils", "stable_audio_tools.data.utils")


@functools.cache
def load_sat() -> types.SimpleNamespace:
    """stable-audio-tools' ``factory``, ``conditioners``, ``sampling`` and ``utils`` modules, imported for real.

    The packages are bare namespaces (their `__init__`s pull gradio, laion-clap, ...); the third-party
    modules in `THIRD_PARTY_STUBS` are placeholders while SAT's modules import: torchaudio serves only
    resampling of init audio, alias_free_torch only antialiased Oobleck activations (SAO does not use
    them), k_diffusion only the v-objective k-samplers, einops_exts only ADP UNets.
    """
    from jaxstage.tools.export.sat_reference import _import_with_stubs, load_dit_class

    load_dit_class()  # registers stable_audio_tools and stable_audio_tools.models as bare namespaces
    root = Path(sys.modules["stable_audio_tools"].__path__[0])
    for name in ("inference", "data"):
        full = f"stable_audio_tools.{name}"
        if not hasattr(sys.modules.get(full), "__path__"):
            package = types.ModuleType(full)
            package.__path__ = [str(root / name)]
            sys.modules[full] = package
    for name in _SAT_REIMPORT:
        sys.modules.pop(name, None)

    def load():
        return types.SimpleNamespace(
            factory=importlib.import_module("stable_audio_tools.models.factory"),
            diffusion=importlib.import_module("stable_audio_tools.models.diffusion"),
            conditioners=importlib.import_module("stable_audio_tools.models.conditioners"),
            autoencoders=importlib.import_module("stable_audio_tools.models.autoencoders"),
            sampling=importlib.import_module("stable_audio_tools.inference.sampling"),
            utils=importlib.import_module("stable_audio_tools.models.utils"))

    return _import_with_stubs(THIRD_PARTY_STUBS, load)


@contextlib.contextmanager
def local_t5(t5_dir: str | Path, names: tuple[str, ...] = ("t5-small", "t5-base")):
    """While active, SAT's T5 conditioner loads ``names`` from the local ``t5_dir`` (tokenizer and
    `T5EncoderModel`) and takes their width from that model's d_model, not from its hub table."""
    from unittest import mock

    import transformers

    sat = load_sat()
    t5_dir = str(t5_dir)
    d_model = transformers.T5Config.from_pretrained(t5_dir).d_model
    tokenizer_load = transformers.AutoTokenizer.from_pretrained
    model_load = transformers.T5EncoderModel.from_pretrained

    def redirect(load):
        def from_pretrained(name, *args, **kwargs):
            return load(t5_dir if name in names else name, *args, **kwargs)
        return from_pretrained

    dims = sat.conditioners.T5Conditioner.T5_MODEL_DIMS
    with mock.patch.object(transformers.AutoTokenizer, "from_pretrained", redirect(tokenizer_load)), \
            mock.patch.object(transformers.T5EncoderModel, "from_pretrained", redirect(model_load)), \
            mock.patch.dict(dims, {name: d_model for name in names}):
        yield


# ----------------------------------------------------------------------------- building and saving


def hf_tiny() -> types.ModuleType:
    """`tests/data/hf_tiny.py` (tiny random Hugging Face models), importable from tests and bench alike."""
    data = str(Path(__file__).resolve().parents[2] / "data")
    if data not in sys.path:
        sys.path.insert(0, data)
    return importlib.import_module("hf_tiny")


def save_random_t5(directory: str | Path, *, d_model: int = 768, d_kv: int = 64, d_ff: int = 3072,
                   num_layers: int = 12, num_heads: int = 12, vocab_size: int = 32128, seed: int = 0) -> Path:
    """A random `T5EncoderModel` (defaults: t5-base's shape) with the word-level tokenizer of
    `tests/data/hf_tiny.py`, saved to ``directory``."""
    import torch
    from transformers import T5Config, T5EncoderModel

    directory = hf_tiny().save_tiny_t5(directory, seed=seed)  # the tokenizer (its tiny model is replaced)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=num_layers,
                      num_heads=num_heads, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    T5EncoderModel(config).save_pretrained(directory)
    return directory


def save_reduced_t5(directory: str | Path, seed: int = 0) -> Path:
    """The reduced model's T5: t5-small's width (512, 8 heads of 64), 1 layer, d_ff 1024, vocab 128."""
    return save_random_t5(directory, d_model=REDUCED_T5_DIM, d_kv=64, d_ff=1024, num_layers=1, num_heads=8,
                          vocab_size=128, seed=seed)


def perturb_constant_parameters(model, seed: int = 0) -> list[str]:
    """Give every parameter that init leaves constant random values (names returned), so parity sees
    every weight: all-zero ones (DiT output projections and 1x1 residual convs, SnakeBeta log-alpha/beta)
    get U(±1/sqrt(fan_in)) (1-D: N(0, 0.1²)); all-one ones (norm gains) get 1 + N(0, 0.1²)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    changed = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() < 2 or not bool((p == p.flatten()[0]).all()):
                continue
            value = float(p.flatten()[0])
            if value not in (0.0, 1.0):
                continue
            if p.ndim >= 2:
                bound = 1.0 / math.sqrt(p[0].numel())
                noise = (torch.rand(p.shape, generator=generator) * 2 - 1) * bound
            else:
                noise = 0.1 * torch.randn(p.shape, generator=generator)
            p.copy_(value + noise)
            changed.append(name)
    return changed


def build_sat_model(config: dict, t5_dir: str | Path, seed: int = 0, perturb: bool = True):
    """``create_model_from_config(config)`` in eval mode, its weights seeded by ``seed`` (T5: ``t5_dir``,
    loaded in float16 as SAT does); with ``perturb``, see `perturb_constant_parameters`."""
    import torch

    sat = load_sat()
    torch.manual_seed(seed)
    with local_t5(t5_dir):
        model = sat.factory.create_model_from_config(config)
    if perturb:
        perturb_constant_parameters(model, seed)
    return model.eval().requires_grad_(False)


def save_sat_checkpoint(model, config: dict, directory: str | Path, fmt: str = "safetensors") -> Path:
    """Write ``model_config.json`` and the model's whole state dict as stable-audio-tools ships it:
    ``model.safetensors`` (`safetensors.torch.save_file`) or ``model.ckpt`` (``{"state_dict": ...}``,
    what its unwrap script saves). SAT's T5 conditioner keeps T5 out of the state dict."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(directory / "model.safetensors"))
    elif fmt == "ckpt":
        torch.save({"state_dict": state}, directory / "model.ckpt")
    else:
        raise ValueError(f"unknown checkpoint format {fmt!r}: safetensors or ckpt")
    return directory


def t5_in_float32(model) -> None:
    """Run the SAT model's T5 conditioners in float32. SAT casts T5 to float16 (`T5Conditioner.__init__`);
    jaxstage runs it in float32, and half precision alone moves the reduced T5's embeddings by ~2e-3,
    so parity of the diffusion model and sampler is measured with both in float32."""
    for conditioner in model.conditioner.conditioners.values():
        if type(conditioner).__name__ == "T5Conditioner":
            conditioner.model.float()


def load_sat_checkpoint(directory: str | Path, t5_dir: str | Path):
    """stable-audio-tools' own loading path: ``create_model_from_config`` on ``model_config.json``, then
    ``load_state_dict(load_ckpt_state_dict(...), strict=True)`` (raises on any missing or extra key)."""
    directory = Path(directory)
    sat = load_sat()
    config = json.loads((directory / "model_config.json").read_text())
    with local_t5(t5_dir):
        model = sat.factory.create_model_from_config(config)
    path = directory / "model.safetensors"
    if not path.exists():
        path = directory / "model.ckpt"
    model.load_state_dict(sat.utils.load_ckpt_state_dict(str(path)), strict=True)
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- sampling


def jax_initial_noise(seed: int, batch: int, frames: int, channels: int) -> tuple[np.ndarray, Any]:
    """jaxstage's x_T for ``seed`` (`inference.sampling.sample_audio`): ``noise_key, sampler_key =
    split(PRNGKey(seed))``, ``x_T = normal(noise_key, [B, T, C])``. Returns (x_T channels-first
    [B, C, T] numpy, sampler_key)."""
    import jax
    import jax.numpy as jnp

    noise_key, sampler_key = jax.random.split(jax.random.PRNGKey(seed))
    x_T = jax.random.normal(noise_key, (batch, frames, channels), jnp.float32)
    return np.asarray(x_T).transpose(0, 2, 1), sampler_key


def jax_pingpong_noise(sampler_key, shape_bct: tuple[int, int, int]) -> Callable[[int], np.ndarray]:
    """The fresh noise of jaxstage's ``pingpong`` at step i (``normal(fold_in(key, i))`` drawn channels
    last), as channels-first numpy."""
    import jax
    import jax.numpy as jnp

    b, c, t = shape_bct

    def noise(i: int) -> np.ndarray:
        eps = jax.random.normal(jax.random.fold_in(sampler_key, i), (b, t, c), jnp.float32)
        return np.asarray(eps).transpose(0, 2, 1)

    return noise


def alpha_sigma(objective: str, t):
    """The path ``x_t = a·x0 + s·eps`` as jaxstage computes it (`diffusion/objectives.py`): v:
    a = sin(π(1 − t)/2) (exactly 0 at t = 1), s = sin(πt/2); rf: a = 1 − t, s = t."""
    import torch

    t = torch.as_tensor(t, dtype=torch.float32)
    if objective == "v":
        half_pi = 0.5 * math.pi
        return torch.sin(half_pi * (1.0 - t)), torch.sin(half_pi * t)
    if objective == "rf":
        return 1.0 - t, t
    raise ValueError(f"objective {objective!r}: v or rf")


def sat_denoiser(model, objective: str, conditioning: dict, cfg_scale: float) -> Callable:
    """``D(x, t) -> x̂0`` from the SAT model's forward (`ConditionedDiffusionModelWrapper`: conditioning
    routed by id, CFG on the DiT output inside the DiT, batched): v: x̂0 = a·x − s·v̂; rf: x̂0 = x − t·v̂.
    Plain CFG is affine in the output, so CFG on v̂ equals CFG on x̂0 (what jaxstage does)."""
    import torch

    def denoise(x, t: float):
        level = torch.full((x.shape[0],), float(t), dtype=torch.float32)
        out = model(x, level, cond=conditioning, cfg_scale=float(cfg_scale), batch_cfg=True)
        t = level.view(-1, 1, 1)
        if objective == "rf":
            return x - t * out
        a, s = alpha_sigma(objective, t)
        return a * x - s * out

    return denoise


def torch_sample(model, x_T: np.ndarray, levels: np.ndarray, objective: str, conditioning: dict,
                 cfg_scale: float = 1.0, sampler: str = "euler",
                 step_noise: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
    """jaxstage's ``euler`` / ``pingpong`` (`diffusion/samplers.py`) in torch on the SAT model:
    x = s(level₀)·x_T; per step, D = x̂0(x, level_i) and
      euler:    ε̂ = (x − a_i·D)/s_i,  x ← a_{i+1}·D + s_{i+1}·ε̂
      pingpong: x ← a_{i+1}·D + s_{i+1}·step_noise(i)
    ``x_T`` channels-first [B, C, T]; ``levels`` the N + 1 levels jaxstage samples (level N = 0).
    Returns the latents [B, C, T] as numpy."""
    import torch

    denoise = sat_denoiser(model, objective, conditioning, cfg_scale)
    levels = [float(v) for v in np.asarray(levels, np.float32)]
    a, s = alpha_sigma(objective, torch.tensor(levels))
    with torch.no_grad():
        x = s[0] * torch.from_numpy(np.ascontiguousarray(x_T, np.float32))
        for i in range(len(levels) - 1):
            denoised = denoise(x, levels[i])
            if sampler == "euler":
                eps = (x - a[i] * denoised) / s[i]
            elif sampler == "pingpong":
                eps = torch.from_numpy(step_noise(i))
            else:
                raise ValueError(f"sampler {sampler!r}: euler or pingpong")
            x = a[i + 1] * denoised + s[i + 1] * eps
    return x.numpy()


def sat_sample_rf(model, x_T: np.ndarray, steps: int, conditioning: dict, cfg_scale: float = 1.0) -> np.ndarray:
    """stable-audio-tools' own rectified-flow sampler (`inference.sampling.sample_rf`, sampler_type
    "euler", as `generate_diffusion_cond` calls it, from the given noise): x ← x + (t_{i+1} − t_i)·v̂ on
    t = sigmoid(−linspace(−6, 2, N + 1)) with t₀ = 1, t_N = 0."""
    import torch

    sat = load_sat()
    inputs = model.get_conditioning_inputs(conditioning)
    with torch.no_grad():
        x = sat.sampling.sample_rf(model.model, torch.from_numpy(np.ascontiguousarray(x_T, np.float32)),
                                   steps=steps, sampler_type="euler", device="cpu", cfg_scale=float(cfg_scale),
                                   batch_cfg=True, rescale_cfg=True, disable_tqdm=True, **inputs)
    return x.numpy()


def sat_conditioning(model, prompts: list[str], seconds_start: float | None, seconds_total: float) -> dict:
    """``model.conditioner(metadata, "cpu")`` for prompts with the timing values of each conditioner present."""
    import torch

    ids = set(model.conditioner.conditioners.keys())
    metadata = []
    for prompt in prompts:
        item: dict[str, Any] = {"prompt": prompt}
        if "seconds_start" in ids:
            item["seconds_start"] = seconds_start
        if "seconds_total" in ids:
            item["seconds_total"] = seconds_total
        metadata.append(item)
    with torch.no_grad():
        return model.conditioner(metadata, "cpu")


def sat_decode_mono(model, latents: np.ndarray) -> np.ndarray:
    """``model.pretransform.decode(latents)`` (unchunked) averaged over its channels: jaxstage audio is
    mono, the mean of what the stereo VAE decodes. [B, C, T] latents -> [B, N]."""
    import torch

    with torch.no_grad():
        audio = model.pretransform.decode(torch.from_numpy(np.ascontiguousarray(latents, np.float32)))
    return audio.mean(dim=1).numpy()


def state_dict_numpy(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, as numpy (bit-exact)."""
    from safetensors.numpy import load_file

    return load_file(str(path))
