"""`jaxstage import`: a stable-audio-tools DiT checkpoint as a jaxstage run directory.

Reads `model_config.json` and the weights (`model.safetensors`, sharded safetensors with an index,
or a torch `.ckpt`/`.pt` state dict), builds the matching jaxstage config (`sat_config`), initializes
a fresh train state for it and puts the DiT weights (raw and EMA) in, then writes a normal run
directory: `config.json`, an Orbax checkpoint at step 0, `import.json` (what was and was not
imported) and `sat_buffers.safetensors` (the source's buffers, so export gives them back bit for
bit). `jaxstage train --workdir OUT` fine-tunes it in place; `--set train.init_from=OUT` starts a new
run from its weights; `jaxstage sample/eval/export --workdir OUT` work as on any run.

Every failure names the file and key: a missing, unexpected or mis-shaped tensor (`key_map`), an
unknown or unsupported config field (`sat_config`), a config that disagrees with the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage import config as config_lib
from jaxstage.config import ConfigError
from jaxstage.tools.export import key_map, safetensors_io
from jaxstage.tools.export.checkpoint_files import read_source
from jaxstage.tools.export.exporter import BUFFER_RTOL, SOURCE_BUFFERS
from jaxstage.tools.export.autoencoder import autoencoder_from_tensors
from jaxstage.tools.export.sat_conditioning import number_keys, numbers_from_torch
from jaxstage.tools.export.sat_config import SAT_VERSION, jaxstage_config, whole_model_conditioning

AUTOENCODER_DIR = "autoencoder"  # a whole-model import's pretransform, as a jaxstage autoencoder directory
PRETRANSFORM_PREFIX = "pretransform.model."

WRAPPER_PREFIXES = (key_map.PREFIX, "diffusion.model.model.", "diffusion_ema.ema_model.model.model.")


def _prefix(tensors: dict[str, np.ndarray], source: Path) -> str:
    for prefix in WRAPPER_PREFIXES:
        if any(k.startswith(prefix) for k in tensors):
            return prefix
    first = next(iter(tensors), None)
    raise key_map.KeyMapError(f"{source}: no diffusion-model keys ({' or '.join(WRAPPER_PREFIXES)}*); "
                              f"first key is {first!r}")


def _check_buffers(source: dict, ours: dict, prefix: str, where: Path) -> None:
    flat_source = key_map.flatten(source)
    for path, value in key_map.flatten(ours).items():
        theirs = flat_source[path]
        if not np.allclose(theirs.astype(np.float64), np.asarray(value, np.float64), rtol=BUFFER_RTOL, atol=0):
            key = key_map.torch_key(path, prefix)
            raise key_map.KeyMapError(f"{where}: buffer {key} differs from the value jaxstage computes (max abs diff "
                                      f"{np.abs(theirs - np.asarray(value)).max():.3g}): a rotary/norm variant "
                                      f"jaxstage does not implement")


def import_checkpoint(src: str | Path, out: str | Path, *, config_path: str | Path | None = None,
                      overrides: list[str] = (), t5_dir: str | Path | None = None) -> dict[str, Any]:
    """Write a jaxstage run directory at ``out`` from the stable-audio-tools checkpoint ``src``.

    A Stable Audio Open-style model (``model.conditioning``: a T5 and number conditioners, an Oobleck
    autoencoder pretransform) is imported whole: the DiT, the number conditioners and, into
    ``out/autoencoder``, the pretransform; the T5 comes from ``t5_dir`` (stable-audio-tools
    checkpoints do not hold it). Returns the import report (also written to ``out/import.json``).
    """
    from jaxstage.data.pipeline import BatchStream
    from jaxstage.run import checkpoint as ckpt_lib
    from jaxstage.run.workdir import prepare_workdir
    from jaxstage.train.state import build_experiment
    from jaxstage.train.trainer import fresh_state

    out = Path(out).resolve()
    if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        raise FileExistsError(f"{out}: already holds checkpoints; import into a new directory")
    tensors, sat, weights, config_file = read_source(src, config_path)
    whole = parse_conditioning_or_none(sat, config_file)
    autoencoder_dir = out / AUTOENCODER_DIR if whole else None
    if t5_dir is not None and not Path(t5_dir).is_dir():
        raise FileNotFoundError(f"--t5 {t5_dir}: no such directory (a local transformers T5 directory)")
    try:
        cfg, parsed = jaxstage_config(sat, list(overrides), t5_dir=str(Path(t5_dir).resolve()) if t5_dir else None,
                                      autoencoder_dir=str(autoencoder_dir) if autoencoder_dir else None)
    except ConfigError as err:
        raise ConfigError(f"{config_file}: {err}") from None
    if autoencoder_dir is not None:  # the pretransform first: building the experiment loads it
        autoencoder_from_tensors(tensors, sat, weights, config_file, autoencoder_dir)
    exp = build_experiment(cfg)
    io = parsed["dit"]["io_channels"]
    if exp.io_channels != io:
        raise ConfigError(f"{config_file}: the DiT has io_channels={io} but codec.kind={cfg.codec.kind} gives "
                          f"{exp.io_channels} channels (set codec.n_mels / codec.n_fft to match)")
    prefix = _prefix(tensors, weights)
    dit_params, dit_buffers = key_map.from_torch_state(tensors, exp.abstract_params["dit"], exp.buffers["dit"],
                                                       prefix=prefix, source=str(weights))
    _check_buffers(dit_buffers, jax.device_get(exp.buffers["dit"]), prefix, weights)
    imported = {"dit": dit_params}
    dit_count = int(sum(a.size for a in jax.tree.leaves(dit_params)))
    dit_tensors = len(key_map.flatten(dit_params)) + len(key_map.flatten(dit_buffers))
    del dit_params  # held by ``imported`` only, so that building the state can release it
    used = {k for k in tensors if k.startswith(prefix)}
    if whole:
        number_ids = [n[0] for n in cfg.conditioning.numbers]
        if number_ids:
            imported["numbers"] = numbers_from_torch(tensors, exp.abstract_params["numbers"], str(weights))
        used |= number_keys(number_ids) | {k for k in tensors if k.startswith(PRETRANSFORM_PREFIX)}
    other = sorted(k for k in tensors if k not in used)
    source_buffers = key_map.to_torch_state({}, dit_buffers)
    originals = {k: tensors[k.replace(key_map.PREFIX, prefix, 1)] for k in source_buffers}
    del tensors  # the source's arrays: gone before the train state is allocated (SAO 1.0: 4.8 GB)
    imported_keys = set(imported)
    if whole and set(imported) == set(exp.abstract_params):  # every parameter imported: no random init
        state = _imported_state(exp, imported)
    else:
        state = _identity_stats_state(exp) if whole else fresh_state(exp)
        placed = jax.device_put(imported, {k: exp.param_shardings[k] for k in imported})
        state = state.replace(params={**state.params, **placed},
                              ema_params={**state.ema_params, **jax.tree.map(lambda a: a.copy(), placed)})

    prepare_workdir(cfg, out)
    ckpt = ckpt_lib.Checkpointer(out / "checkpoints", keep=cfg.train.ckpt_keep, async_save=False)
    stream = BatchStream(cfg, jax.process_index(), jax.process_count())
    ckpt.save(0, state, stream.get_state(), config_lib.to_dict(cfg), force=True)
    ckpt.close()
    report = {
        "source": str(weights), "config": str(config_file), "stable_audio_tools": SAT_VERSION, "prefix": prefix,
        "imported_tensors": len(used) if whole else dit_tensors,
        "dit_parameters": dit_count,
        "not_imported_config": parsed["not_imported"],
        "not_imported_tensors": len(other),
        "not_imported_prefixes": sorted({k.split(".")[0] for k in other}),
        "fresh": sorted(k for k in state.params if k not in imported_keys),
        "from_jaxstage_export": "jaxstage" in sat,
    }
    if whole:
        report.update(used_tensors=len(used), unused_tensors=other, autoencoder=str(autoencoder_dir),
                      t5=cfg.text.encoder_dir, codec_stats="identity (the DiT was trained on raw latents)")
    if jax.process_index() == 0:
        safetensors_io.write_file(out / SOURCE_BUFFERS, originals, {"source": str(weights)})
        safetensors_io.write_text_atomic(out / "import.json", json.dumps(report, indent=2))
    return report


def parse_conditioning_or_none(sat: dict[str, Any], config_file: Path):
    """The checkpoint's conditioning (a whole-model import) or None (a DiT-only import)."""
    try:
        return whole_model_conditioning(sat)
    except ConfigError as err:
        raise ConfigError(f"{config_file}: {err}") from None


def _identity_stats(exp):
    from jaxstage.models.codecs import CodecStats

    channels = exp.io_channels
    return CodecStats(mean=jnp.zeros((channels,), jnp.float32), std=jnp.ones((channels,), jnp.float32))


def _imported_state(exp, imported: dict[str, Any]):
    """The step-0 train state of a whole-model import built around the imported weights: no random
    initialization, the EMA the same arrays as the parameters, zero optimizer moments, identity codec
    statistics (see :func:`_identity_stats_state`). Peak memory: the weights twice (host copy and
    device arrays) plus the moments, not the four copies a fresh state and its replacement hold."""
    from jaxstage.run.non_finite import init_skips
    from jaxstage.train.recipe import init_regime
    from jaxstage.train.state import TrainState
    from jaxstage.train.trainer import make_monitor

    # jit boundary: the imported host arrays go straight onto the parameter shardings
    params = jax.device_put(imported, exp.param_shardings)
    imported.clear()
    with jax.set_mesh(exp.mesh):
        opt_state = jax.jit(exp.tx.init)(params)
    stats = _identity_stats(exp)
    _, state_key = jax.random.split(jax.random.PRNGKey(exp.cfg.train.seed))  # as train.state.init_state
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, ema_params=params,
                      rng=state_key, regime=init_regime(exp.recipe), codec_stats=stats,
                      monitor=make_monitor(exp, stats), skips=init_skips())


def _identity_stats_state(exp):
    """A fresh state whose codec normalization is the identity: an imported DiT was trained on the raw
    latents (stable-audio-tools divides by the pretransform scale only, which the codec does)."""
    from jaxstage.train.state import init_state
    from jaxstage.train.trainer import make_monitor

    stats = _identity_stats(exp)
    return init_state(exp, stats, make_monitor(exp, stats))
