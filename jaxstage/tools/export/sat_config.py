"""jaxstage config <-> stable-audio-tools `model_config.json` (model_type "diffusion_cond", DiT).

Export writes the schema stable-audio-tools' `create_model_from_config` reads (no `conditioning` and
no `pretransform`: jaxstage's text encoder and codecs are not PyTorch modules there) plus a
`"jaxstage"` block holding the full resolved jaxstage config, which stable-audio-tools ignores and
import reads back (so export -> import restores the run's config exactly).

Import accepts only fields it understands: an unknown field, or a known one at a value the jaxstage
DiT cannot represent, is a ConfigError naming the dotted key. Fields that describe parts jaxstage
does not import (`model.conditioning`, `model.pretransform`, `training`, ...) are listed back to the
caller as not imported.
"""

from __future__ import annotations

import math
from typing import Any

from jaxstage import config as config_lib
from jaxstage.config import Config, ConfigError
from jaxstage.tools.export.sat_conditioning import SATConditioning, apply_conditioning, parse_conditioning

SAT_VERSION = "0.0.19"
TIMESTEP_FEATURES_DIM = 256  # fixed in stable-audio-tools 0.0.19's DiffusionTransformer
OBJECTIVES = {"v": "v", "rf": "rectified_flow"}  # jaxstage -> stable-audio-tools diffusion_objective

ROUTING_IDS = ("cross_attention_cond_ids", "global_cond_ids", "input_concat_ids", "prepend_cond_ids")
# Parts of a stable-audio-tools config that import reads past (reported, never silently dropped).
NOT_IMPORTED = {
    "training": "training settings",
    "model.conditioning": "conditioners (text encoder, number embedders): jaxstage keeps its own",
    "model.pretransform": "the autoencoder: jaxstage works in its own codec space (codec.*)",
    "model.diffusion.distribution_shift_options": "sampling-time timestep shift",
    **{f"model.diffusion.{key}": "conditioning routing by id" for key in ROUTING_IDS},
}

KNOWN = {
    "": {"model_type", "sample_size", "sample_rate", "audio_channels", "model", "training", "jaxstage"},
    "model": {"io_channels", "diffusion", "conditioning", "pretransform"},
    "model.diffusion": {"type", "diffusion_objective", "config", "distribution_shift_options", *ROUTING_IDS},
}

# DiT constructor fields jaxstage maps onto its own config.
DIT_MAPPED = {"io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "project_cond_tokens",
              "global_cond_dim", "input_concat_dim", "prepend_cond_dim", "global_cond_type", "attn_kwargs",
              "ff_kwargs"}
# DiT constructor fields accepted only at the value jaxstage's DiT implements.
DIT_FIXED: dict[str, Any] = {
    "transformer_type": "continuous_transformer", "patch_size": 1, "project_global_cond": True,
    "timestep_cond_type": "global", "timestep_embed_dim": None, "rotary_pos_emb": True,
    "conformer": False, "layer_scale": False, "use_sinusoidal_emb": False, "use_abs_pos_emb": False,
    "num_memory_tokens": 0, "causal": False, "sliding_window": None, "final_cross_attn_ix": -1,
    "add_rope": False, "remove_norms": False, "norm_kwargs": {},
}
DIT_INIT_ONLY = {"zero_init_branch_outputs"}  # affects initialization only: irrelevant to loaded weights
ATTN_FIXED: dict[str, Any] = {"differential": False, "feat_scale": False, "causal": False}
FF_FIXED: dict[str, Any] = {"glu": True, "no_bias": False, "use_conv": False}
# model.* keys that equal the parsed DiT field of the same name (see `parse_sat_config`)
MODEL_FIELDS = ("embed_dim", "depth", "num_heads", "ff_mult", "qk_norm", "global_cond_type", "project_cond_tokens")


# ----------------------------------------------------------------------------- export


def dit_dims(dit_params: dict) -> dict[str, int]:
    """io/cond/global/concat widths of a DiT, read from its parameter shapes."""
    io = int(dit_params["postprocess_conv"]["kernel"].shape[-1])
    dim_in = int(dit_params["preprocess_conv"]["kernel"].shape[-1])
    cond = dit_params.get("to_cond_embed")
    glob = dit_params.get("to_global_embed")
    prepend = dit_params.get("to_prepend_embed")
    dims = {"io_channels": io, "input_concat_dim": dim_in - io,
            "cond_token_dim": int(cond[0]["kernel"].shape[0]) if cond else 0,
            "global_cond_dim": int(glob[0]["kernel"].shape[0]) if glob else 0}
    if prepend:  # absent otherwise: configs exported before prepend conditions existed stay identical
        dims["prepend_cond_dim"] = int(prepend[0]["kernel"].shape[0])
    return dims


def check_exportable(cfg: Config) -> None:
    """Raise ConfigError when the run's model has no stable-audio-tools equivalent."""
    if cfg.diffusion.objective not in OBJECTIVES:
        raise ConfigError(f"diffusion.objective={cfg.diffusion.objective!r}: stable-audio-tools {SAT_VERSION} "
                          f"has only the v and rectified_flow objectives (jaxstage v, rf)")
    if cfg.model.timestep_features_dim != TIMESTEP_FEATURES_DIM:
        raise ConfigError(f"model.timestep_features_dim={cfg.model.timestep_features_dim}: stable-audio-tools "
                          f"{SAT_VERSION} fixes it at {TIMESTEP_FEATURES_DIM}")


def dit_config(dims: dict[str, int], *, embed_dim: int, depth: int, num_heads: int, project_cond_tokens: bool,
               global_cond_type: str, qk_norm: str, ff_mult: float) -> dict[str, Any]:
    """`model.diffusion.config`: the stable-audio-tools `DiffusionTransformer` constructor arguments."""
    return {**dims, "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads,
            "project_cond_tokens": project_cond_tokens, "global_cond_type": global_cond_type,
            "transformer_type": "continuous_transformer", "attn_kwargs": {"qk_norm": qk_norm},
            "ff_kwargs": {"mult": ff_mult}}


def to_sat_config(cfg: Config, dims: dict[str, int]) -> dict[str, Any]:
    """The `model_config.json` of a jaxstage run whose DiT has widths ``dims`` (see `dit_dims`)."""
    check_exportable(cfg)
    m = cfg.model
    c = cfg.conditioning
    routed_global = list(c.global_ids) + (["cutoff"] if cfg.task == "sr" else [])
    ids = {"cross_attention_cond_ids": list(c.cross_attention_ids) if dims["cond_token_dim"] else [],
           "global_cond_ids": routed_global if dims["global_cond_dim"] else [],
           "input_concat_ids": ["low_band"] if dims["input_concat_dim"] else []}
    if c.prepend_ids:
        ids["prepend_cond_ids"] = list(c.prepend_ids)
    return {
        "model_type": "diffusion_cond",
        "sample_size": cfg.num_samples,
        "sample_rate": cfg.data.sample_rate,
        "audio_channels": 1,
        "model": {
            "io_channels": dims["io_channels"],
            "diffusion": {
                "type": "dit",
                "diffusion_objective": OBJECTIVES[cfg.diffusion.objective],
                **ids,
                "config": dit_config(dims, embed_dim=m.embed_dim, depth=m.depth, num_heads=m.num_heads,
                                     project_cond_tokens=m.project_cond_tokens,
                                     global_cond_type=m.global_cond_type,
                                     qk_norm="ln" if m.qk_norm else "none", ff_mult=m.ff_mult),
            },
        },
        "jaxstage": {"config": config_lib.to_dict(cfg)},
    }


# ----------------------------------------------------------------------------- import


def _get(section: dict, key: str, where: str):
    if key not in section:
        raise ConfigError(f"missing field {where}.{key} in the stable-audio-tools config")
    return section[key]


def _check_fields(section: dict, where: str, allowed: set[str], fixed: dict[str, Any] | None = None) -> None:
    """Every key of ``section`` is ``allowed``, or a ``fixed`` one at the only value jaxstage's DiT supports."""
    for key, value in section.items():
        dotted = f"{where}.{key}" if where else key
        if key in allowed:
            continue
        if key not in (fixed or {}):
            raise ConfigError(f"unknown field {dotted} in the stable-audio-tools config")
        if value != fixed[key]:
            raise ConfigError(f"{dotted}={value!r}: jaxstage's DiT supports only {fixed[key]!r}")


def _positive_int(value: Any, dotted: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{dotted}={value!r} must be a positive integer")
    return value


def parse_sat_config(sat: dict[str, Any]) -> dict[str, Any]:
    """Validate a stable-audio-tools DiT config; return its DiT fields and top-level facts.

    Returns {"dit": {...DiT constructor fields...}, "objective": jaxstage objective, "sample_rate",
    "sample_size", "not_imported": [dotted keys present but not imported]}.
    """
    if not isinstance(sat, dict):
        raise ConfigError("the stable-audio-tools config must be a JSON object")
    _check_fields(sat, "", KNOWN[""])
    if _get(sat, "model_type", "") != "diffusion_cond":
        raise ConfigError(f"model_type={sat['model_type']!r}: jaxstage imports diffusion_cond models only")
    model = _get(sat, "model", "")
    _check_fields(model, "model", KNOWN["model"])
    diffusion = _get(model, "diffusion", "model")
    _check_fields(diffusion, "model.diffusion", KNOWN["model.diffusion"])
    if _get(diffusion, "type", "model.diffusion") != "dit":
        raise ConfigError(f"model.diffusion.type={diffusion['type']!r}: jaxstage imports the DiT ('dit') only")
    sat_objective = diffusion.get("diffusion_objective", "v")
    objective = {v: k for k, v in OBJECTIVES.items()}.get(sat_objective)
    if objective is None:
        raise ConfigError(f"model.diffusion.diffusion_objective={sat_objective!r}: jaxstage supports "
                          f"{', '.join(OBJECTIVES.values())}")
    dit = dict(_get(diffusion, "config", "model.diffusion"))
    where = "model.diffusion.config"
    _check_fields(dit, where, DIT_MAPPED | DIT_INIT_ONLY, DIT_FIXED)
    _check_fields(dit.get("attn_kwargs", {}), f"{where}.attn_kwargs", {"qk_norm"}, ATTN_FIXED)
    _check_fields(dit.get("ff_kwargs", {}), f"{where}.ff_kwargs", {"mult"}, FF_FIXED)
    for key in ("embed_dim", "depth", "num_heads"):
        _positive_int(_get(dit, key, where), f"{where}.{key}")
    io = _positive_int(_get(dit, "io_channels", where), f"{where}.io_channels")
    if model.get("io_channels", io) != io:
        raise ConfigError(f"model.io_channels={model['io_channels']} differs from {where}.io_channels={io}")
    qk = dit.get("attn_kwargs", {}).get("qk_norm", "none")
    if qk not in ("none", "ln"):
        raise ConfigError(f"{where}.attn_kwargs.qk_norm={qk!r}: jaxstage configs support 'none' and 'ln'")
    mult = dit.get("ff_kwargs", {}).get("mult", 4)
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or mult <= 0 or mult != int(mult):
        raise ConfigError(f"{where}.ff_kwargs.mult={mult!r}: jaxstage's model.ff_mult is a positive integer")
    gtype = dit.get("global_cond_type", "prepend")
    if gtype not in ("prepend", "adaLN"):
        raise ConfigError(f"{where}.global_cond_type={gtype!r}: jaxstage supports prepend and adaLN")
    if dit["embed_dim"] % dit["num_heads"]:
        raise ConfigError(f"{where}.embed_dim={dit['embed_dim']} is not divisible by num_heads={dit['num_heads']}")
    fields = {
        "io_channels": io, "embed_dim": dit["embed_dim"], "depth": dit["depth"], "num_heads": dit["num_heads"],
        "cond_token_dim": int(dit.get("cond_token_dim", 0)), "global_cond_dim": int(dit.get("global_cond_dim", 0)),
        "input_concat_dim": int(dit.get("input_concat_dim", 0)),
        "prepend_cond_dim": int(dit.get("prepend_cond_dim", 0)),
        "project_cond_tokens": bool(dit.get("project_cond_tokens", True)), "global_cond_type": gtype,
        "qk_norm": qk == "ln", "ff_mult": int(mult),
    }
    present = [k for k in NOT_IMPORTED if _has(sat, k)]
    if sat.get("audio_channels", 1) != 1:
        present.append("audio_channels")  # jaxstage models are mono; channels live in the codec
    return {"dit": fields, "objective": objective, "sample_rate": sat.get("sample_rate"),
            "sample_size": sat.get("sample_size"), "not_imported": present}


def _has(tree: dict, dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return node not in (None, [], {})


def jaxstage_config(sat: dict[str, Any], overrides: list[str] = (), *, t5_dir: str | None = None,
                    autoencoder_dir: str | None = None) -> tuple[Config, dict[str, Any]]:
    """(jaxstage Config, parsed facts) for a stable-audio-tools config, then ``overrides`` (key=value).

    A Stable Audio Open-style config (``model.conditioning`` with a t5 and number conditioners, and an
    autoencoder pretransform: :func:`whole_model_conditioning`) becomes a latent run (a jaxstage export's block is then not read): text.kind=t5 on ``t5_dir`` (required), the conditioners routed by the
    DiT's ids, codec.kind=oobleck on ``autoencoder_dir`` (where the importer writes the pretransform).
    With a `"jaxstage"` block (a jaxstage export of a DiT) that config is the base. Otherwise a
    text-to-audio config is derived: model.* from the DiT, text.width = cond_token_dim (a
    learned text encoder of that width, trained from scratch), codec.kind=mel with codec.n_mels =
    io_channels, data.sample_rate and clip length from sample_rate/sample_size. Either way the DiT
    fields must agree with the base.
    """
    parsed = parse_sat_config(sat)
    cond = whole_model_conditioning(sat)
    parsed["conditioning"] = cond
    if cond is not None:  # imported: the conditioners, their routing and the pretransform
        imported = {"model.conditioning", "model.pretransform", *(f"model.diffusion.{k}" for k in ROUTING_IDS)}
        parsed["not_imported"] = [k for k in parsed["not_imported"] if k not in imported]
    block = sat.get("jaxstage")
    if cond is not None:  # a whole model: its stable-audio-tools config says everything jaxstage needs
        cfg = _latent_config(sat, parsed, cond, t5_dir, autoencoder_dir)
        if block is not None:
            parsed["not_imported"].append("jaxstage (an exported run's config: a whole model is imported from "
                                          "its stable-audio-tools config)")
    elif block is not None:
        if not isinstance(block, dict) or "config" not in block:
            raise ConfigError("jaxstage: expected an object with the exported run's 'config'")
        if not isinstance(block["config"], dict):
            raise ConfigError("jaxstage.config: expected the exported run's config as an object")
        cfg = config_lib.from_dict(block["config"], source="the 'jaxstage' block")
    else:
        cfg = _derived_config(parsed)
    if overrides:
        cfg = config_lib.apply_overrides(cfg, list(overrides))
    _check_agrees(cfg, parsed)
    return config_lib.validate(cfg), parsed


def whole_model_conditioning(sat: dict[str, Any]) -> SATConditioning | None:
    """The conditioning of a whole model (``model.conditioning`` and a ``model.pretransform``: Stable
    Audio Open's layout), else None: a config without a pretransform imports its DiT alone, as before
    whole models existed, and lists its conditioning as not imported."""
    model = sat.get("model") if isinstance(sat, dict) else None
    if not isinstance(model, dict) or not model.get("pretransform"):
        return None
    return parse_conditioning(sat)


def _latent_config(sat: dict[str, Any], parsed: dict[str, Any], cond: SATConditioning, t5_dir: str | None,
                   autoencoder_dir: str | None) -> Config:
    """A Stable Audio Open-style model as a jaxstage config (see :func:`jaxstage_config`)."""
    if not t5_dir:
        raise ConfigError("model.conditioning has a t5 conditioner: give --t5 T5_DIR (a local transformers T5 "
                          "directory; stable-audio-tools checkpoints do not hold the T5 weights)")
    pretransform = (sat.get("model") or {}).get("pretransform") or {}
    if pretransform.get("type") != "autoencoder":
        raise ConfigError(f"model.pretransform.type={pretransform.get('type')!r}: jaxstage imports conditioned "
                          f"models on an autoencoder pretransform (the Oobleck VAE)")
    unknown = sorted(set(pretransform) - {"type", "config", "scale", "iterate_batch", "chunked"})
    if unknown:
        raise ConfigError(f"model.pretransform.{unknown[0]}: not supported by jaxstage")
    if not autoencoder_dir:
        raise ConfigError("model.pretransform: the importer must give the autoencoder directory it writes")
    cfg = _base_config(parsed)
    apply_conditioning(cfg, cond, str(t5_dir))
    cfg.codec.kind = "oobleck"
    cfg.codec.autoencoder = str(autoencoder_dir)
    return cfg


def _base_config(parsed: dict[str, Any]) -> Config:
    """What every imported config takes from the stable-audio-tools one: the DiT's fields, the
    objective, the sample rate and clip length."""
    d = parsed["dit"]
    cfg = Config(name="imported")
    for name in MODEL_FIELDS:
        setattr(cfg.model, name, d[name])
    cfg.model.timestep_features_dim = TIMESTEP_FEATURES_DIM
    cfg.diffusion.objective = parsed["objective"]
    if parsed["sample_rate"]:
        cfg.data.sample_rate = int(parsed["sample_rate"])
        if parsed["sample_size"]:
            cfg.data.clip_seconds = float(parsed["sample_size"]) / cfg.data.sample_rate
    cfg.train.workdir = "runs/imported"
    return cfg


def _derived_config(parsed: dict[str, Any]) -> Config:
    d = parsed["dit"]
    if d["cond_token_dim"] == 0:
        raise ConfigError("model.diffusion.config.cond_token_dim=0: jaxstage's denoiser always cross-attends "
                          "to text tokens")
    if d["input_concat_dim"] or d["global_cond_dim"] or d["prepend_cond_dim"]:
        raise ConfigError(f"model.diffusion.config.global_cond_dim={d['global_cond_dim']}, input_concat_dim="
                          f"{d['input_concat_dim']}, prepend_cond_dim={d['prepend_cond_dim']}: global, prepend or "
                          f"input-concat conditioning needs a model.conditioning block (or a jaxstage export's "
                          f"'jaxstage' block)")
    cfg = _base_config(parsed)
    cfg.text.kind = "learned"
    cfg.text.width = d["cond_token_dim"]
    cfg.text.num_heads = next(h for h in (8, 4, 2, 1) if d["cond_token_dim"] % h == 0)
    cfg.codec.kind = "mel"
    cfg.codec.n_mels = d["io_channels"]
    return cfg


def _check_agrees(cfg: Config, parsed: dict[str, Any]) -> None:
    """The jaxstage config must build exactly the DiT the stable-audio-tools config describes."""
    d = parsed["dit"]
    for name in MODEL_FIELDS:
        if getattr(cfg.model, name) != d[name]:
            raise ConfigError(f"model.{name}={getattr(cfg.model, name)!r} disagrees with the checkpoint's "
                              f"model.diffusion.config.{name}={d[name]!r}")
    if cfg.diffusion.objective != parsed["objective"]:
        raise ConfigError(f"diffusion.objective={cfg.diffusion.objective!r} disagrees with the checkpoint's "
                          f"diffusion_objective ({OBJECTIVES.get(parsed['objective'])})")
    cond = parsed.get("conditioning")
    if cond is not None:
        where = "model.diffusion.config"
        expected = {"cond_token_dim": cond.cond_dim, "global_cond_dim": len(cond.global_ids) * cond.cond_dim,
                    "prepend_cond_dim": cond.cond_dim if cond.prepend_ids else 0}
        for key, want in expected.items():
            if d[key] != want:
                raise ConfigError(f"{where}.{key}={d[key]} does not fit model.conditioning (cond_dim {cond.cond_dim}, "
                                  f"routing: expected {want})")
    check_exportable(cfg)
    if not math.isfinite(cfg.data.clip_seconds):
        raise ConfigError(f"data.clip_seconds={cfg.data.clip_seconds!r} is not finite")
