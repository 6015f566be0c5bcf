"""Oobleck autoencoder directories: import from a stable-audio-tools autoencoder (safetensors) or a
full diffusion checkpoint's ``pretransform.model.*`` (torch .ckpt), export back bit for bit, load
for encoding; unsupported options are one-line errors naming them."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxstage.config import ConfigError
from jaxstage.models.oobleck import OobleckConfig, OobleckVAE, torch_state
from jaxstage.tools.export import safetensors_io
from jaxstage.tools.export.autoencoder import export_autoencoder, import_autoencoder, load_autoencoder

CFG = OobleckConfig(channels=4, c_mults=(1, 2), strides=(2, 4), latent_dim=3)
OOBLECK = {"channels": 4, "c_mults": [1, 2], "strides": [2, 4], "use_snake": True}
AE_CONFIG = {
    "encoder": {"type": "oobleck", "config": {**OOBLECK, "in_channels": 2, "latent_dim": 6}},
    "decoder": {"type": "oobleck", "config": {**OOBLECK, "out_channels": 2, "latent_dim": 3, "final_tanh": False}},
    "bottleneck": {"type": "vae"}, "latent_dim": 3, "downsampling_ratio": 8, "io_channels": 2,
}


def _source_state(seed: int = 0) -> dict[str, np.ndarray]:
    vae = OobleckVAE(CFG, nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    return {k: np.asarray(v) + rng.normal(0, 0.1, v.shape).astype(np.float32) for k, v in torch_state(vae).items()}


def _write_sat_autoencoder(folder, state, config=AE_CONFIG):
    folder.mkdir()
    safetensors_io.write_file(folder / "model.safetensors", state)
    (folder / "model_config.json").write_text(json.dumps({"model_type": "autoencoder", "sample_rate": 16000,
                                                           "audio_channels": 2, "model": config}))
    return folder


def test_import_export_round_trip_and_load(tmp_path):
    state = _source_state()
    source = _write_sat_autoencoder(tmp_path / "sat", state)
    report = import_autoencoder(source, tmp_path / "ae")
    assert (report["tensors"], report["hop"], report["latent_dim"], report["scale"]) == (len(state), 8, 3, 1.0)
    export_autoencoder(tmp_path / "ae", tmp_path / "back")
    back = safetensors_io.read_checkpoint(tmp_path / "back")
    assert back.keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    vae, info = load_autoencoder(tmp_path / "ae")
    assert info["config"] == CFG and info["sample_rate"] == 16000 and len(info["sha256"]) == 64
    reference = OobleckVAE(CFG, nnx.Rngs(7))
    from jaxstage.models.oobleck import load_torch_state

    load_torch_state(reference, state)
    audio = jnp.asarray(np.random.default_rng(1).standard_normal((1, 64, 2)), jnp.float32)
    np.testing.assert_array_equal(vae.encode(audio), reference.encode(audio))


def test_import_from_a_diffusion_checkpoint_pretransform(tmp_path):
    torch = pytest.importorskip("torch")
    state = _source_state(seed=2)
    folder = tmp_path / "sao"
    folder.mkdir()
    full = {f"pretransform.model.{k}": torch.from_numpy(v) for k, v in state.items()}
    full["model.model.transformer.project_in.weight"] = torch.zeros(4, 3)  # a DiT weight: not the autoencoder's
    torch.save({"state_dict": full}, folder / "model.ckpt")
    config = {"model_type": "diffusion_cond", "sample_rate": 44100, "audio_channels": 2,
              "model": {"pretransform": {"type": "autoencoder", "scale": 2.0, "config": AE_CONFIG}}}
    (folder / "model_config.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, "-m", "jaxstage.cli", "import-autoencoder", "--src", str(folder),
                           "--out", str(tmp_path / "ae")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Oobleck VAE" in done.stderr and "scale 2" in done.stderr
    imported = safetensors_io.read_checkpoint(tmp_path / "ae")
    assert imported.keys() == state.keys()
    _, info = load_autoencoder(tmp_path / "ae")
    assert info["scale"] == 2.0 and info["sample_rate"] == 44100


@pytest.mark.parametrize("change, message", [
    ({"decoder": {"type": "dac", "config": {}}}, "decoder type 'dac': jaxstage implements oobleck only"),
    ({"encoder": {"type": "oobleck", "config": {**OOBLECK, "antialias_activation": True}}},
     "encoder.antialias_activation=true: anti-aliased activations are not implemented"),
    ({"bottleneck": {"type": "rvq"}}, "bottleneck 'rvq': jaxstage implements the vae bottleneck only"),
    ({"downsampling_ratio": 16}, "downsampling_ratio=16 does not fit the VAE (expected 8)"),
    ({"decoder": {**AE_CONFIG["decoder"], "soft_clip": True}}, "autoencoder decoder.soft_clip is not implemented"),
])
def test_unsupported_autoencoders_are_one_line_errors(tmp_path, change, message):
    source = _write_sat_autoencoder(tmp_path / "sat", _source_state(), {**AE_CONFIG, **change})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_autoencoder(source, tmp_path / "ae")
    assert not (tmp_path / "ae").exists()


def test_missing_weight_is_named(tmp_path):
    state = _source_state()
    state.pop("encoder.layers.1.layers.3.alpha")
    source = _write_sat_autoencoder(tmp_path / "sat", state)
    with pytest.raises(ValueError, match=r"has no weight 'encoder\.layers\.1\.layers\.3\.alpha'"):
        import_autoencoder(source, tmp_path / "ae")
