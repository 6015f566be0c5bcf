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
import numpy as np

from jaxstage import config as config_lib
from jaxstage.config import ConfigError
from jaxstage.tools.export import key_map, safetensors_io
from jaxstage.tools.export.checkpoint_files import read_source
from jaxstage.tools.export.exporter import BUFFER_RTOL, SOURCE_BUFFERS
from jaxstage.tools.export.sat_config import SAT_VERSION, jaxstage_config

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
                      overrides: list[str] = ()) -> dict[str, Any]:
    """Write a jaxstage run directory at ``out`` from the stable-audio-tools checkpoint ``src``.

    Returns the import report (also written to ``out/import.json``).
    """
    from jaxstage.data.pipeline import BatchStream
    from jaxstage.run import checkpoint as ckpt_lib
    from jaxstage.run.workdir import prepare_workdir
    from jaxstage.train.trainer import fresh_state
    from jaxstage.train.state import build_experiment

    out = Path(out)
    if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        raise FileExistsError(f"{out}: already holds checkpoints; import into a new directory")
    tensors, sat, weights, config_file = read_source(src, config_path)
    try:
        cfg, parsed = jaxstage_config(sat, list(overrides))
    except ConfigError as err:
        raise ConfigError(f"{config_file}: {err}") from None
    exp = build_experiment(cfg)
    io = parsed["dit"]["io_channels"]
    if exp.io_channels != io:
        raise ConfigError(f"{config_file}: the DiT has io_channels={io} but codec.kind={cfg.codec.kind} gives "
                          f"{exp.io_channels} channels (set codec.n_mels / codec.n_fft to match)")
    prefix = _prefix(tensors, weights)
    dit_params, dit_buffers = key_map.from_torch_state(tensors, exp.abstract_params["dit"], exp.buffers["dit"],
                                                       prefix=prefix, source=str(weights))
    _check_buffers(dit_buffers, jax.device_get(exp.buffers["dit"]), prefix, weights)

    state = fresh_state(exp)
    placed = jax.device_put(dit_params, exp.param_shardings["dit"])
    state = state.replace(params={**state.params, "dit": placed},
                          ema_params={**state.ema_params, "dit": jax.tree.map(lambda a: a.copy(), placed)})

    prepare_workdir(cfg, out)
    ckpt = ckpt_lib.Checkpointer(out / "checkpoints", keep=cfg.train.ckpt_keep, async_save=False)
    stream = BatchStream(cfg, jax.process_index(), jax.process_count())
    ckpt.save(0, state, stream.get_state(), config_lib.to_dict(cfg), force=True)
    ckpt.close()
    other = sorted(k for k in tensors if not k.startswith(prefix))
    report = {
        "source": str(weights), "config": str(config_file), "stable_audio_tools": SAT_VERSION, "prefix": prefix,
        "imported_tensors": len(key_map.flatten(dit_params)) + len(key_map.flatten(dit_buffers)),
        "dit_parameters": int(sum(a.size for a in jax.tree.leaves(dit_params))),
        "not_imported_config": parsed["not_imported"],
        "not_imported_tensors": len(other),
        "not_imported_prefixes": sorted({k.split(".")[0] for k in other}),
        "fresh": sorted(k for k in state.params if k != "dit"),
        "from_jaxstage_export": "jaxstage" in sat,
    }
    if jax.process_index() == 0:
        source_buffers = key_map.to_torch_state({}, dit_buffers)
        originals = {k: tensors[k.replace(key_map.PREFIX, prefix, 1)] for k in source_buffers}
        safetensors_io.write_file(out / SOURCE_BUFFERS, originals, {"source": str(weights)})
        safetensors_io.write_text_atomic(out / "import.json", json.dumps(report, indent=2))
    return report
