"""Whole-model import/export in stable-audio-tools' layout (issue 20), without stable-audio-tools:
a Stable Audio Open-shaped checkpoint (DiT + number conditioners + Oobleck pretransform, SAO's
conditioning config and routing, reduced sizes) written here tensor by tensor, imported into a run
that samples from free text with timing, and exported back bit for bit. Parity with
stable-audio-tools' own modules is in test_sao_import.py."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "data"))

from jaxstage import cli  # noqa: E402
from jaxstage.config import ConfigError  # noqa: E402
from jaxstage.models.oobleck import OobleckConfig, OobleckVAE, torch_state  # noqa: E402
from jaxstage.tools.export import key_map, safetensors_io  # noqa: E402
from jaxstage.tools.export.autoencoder import sat_autoencoder_config  # noqa: E402
from jaxstage.tools.export.sat_conditioning import numbers_to_torch  # noqa: E402

VAE = OobleckConfig(audio_channels=2, channels=4, c_mults=(1, 2), strides=(4, 4), latent_dim=8)  # hop 16
SR, FRAMES = 8000, 16


def sao_like_config(cond_dim: int) -> dict:
    """SAO 1.0's model_config.json structure at toy sizes."""
    return {
        "model_type": "diffusion_cond", "sample_size": FRAMES * VAE.hop, "sample_rate": SR, "audio_channels": 2,
        "model": {
            "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": sat_autoencoder_config(VAE)},
            "conditioning": {"configs": [
                {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-small", "max_length": 8}},
                {"id": "seconds_start", "type": "number", "config": {"min_val": 0, "max_val": 512}},
                {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 512}}],
                "cond_dim": cond_dim},
            "diffusion": {
                "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                "global_cond_ids": ["seconds_start", "seconds_total"],
                "type": "dit", "diffusion_objective": "v",
                "config": {"io_channels": VAE.latent_dim, "embed_dim": 64, "depth": 2, "num_heads": 2,
                           "cond_token_dim": cond_dim, "global_cond_dim": 2 * cond_dim,
                           "project_cond_tokens": True, "transformer_type": "continuous_transformer"}},
            "io_channels": VAE.latent_dim},
        "training": {"learning_rate": 5e-5},
    }


@pytest.fixture(scope="module")
def t5_512(tmp_path_factory) -> Path:
    """A 1-layer random T5 as wide as t5-small (512), the width the config's t5_model_name implies."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from hf_tiny import save_tiny_t5
    from transformers import T5Config, T5EncoderModel

    directory = save_tiny_t5(tmp_path_factory.mktemp("t5") / "t5")  # its tokenizer; the model replaced
    config = T5Config(vocab_size=64, d_model=512, d_kv=32, d_ff=64, num_layers=1, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    import torch

    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """model.safetensors + model_config.json: random weights, every zero-init tensor perturbed."""
    from jaxstage.config import Config
    from jaxstage.models.denoiser import Denoiser
    from jaxstage.tools.export.sat_conditioning import apply_conditioning, parse_conditioning

    sat = sao_like_config(512)
    cfg = Config()
    apply_conditioning(cfg, parse_conditioning(sat), "unused")
    cfg.text.kind, cfg.text.encoder_dir = "precomputed", ""
    cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads, cfg.model.project_cond_tokens = 64, 2, 2, True
    model = Denoiser(cfg, VAE.latent_dim, text_dim=512, rngs=nnx.Rngs(3))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: np.asarray(a) + 0.05 * rng.standard_normal(a.shape).astype(np.float32), params)
    buffers = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))["dit"]
    tensors = key_map.to_torch_state(params["dit"], buffers)
    tensors.update(numbers_to_torch(params["numbers"]))
    vae_state = torch_state(OobleckVAE(VAE, nnx.Rngs(1)))
    tensors.update({f"pretransform.model.{k}": np.asarray(v, np.float32) for k, v in vae_state.items()})
    out = tmp_path_factory.mktemp("sao") / "sao_like"
    safetensors_io.write_checkpoint(out, tensors, metadata={"format": "pt"}, show_progress=False)
    (out / "model_config.json").write_text(json.dumps(sat))
    return out


def test_whole_model_import_sample_and_export(checkpoint, t5_512, tmp_path):
    run = tmp_path / "run"
    assert cli.main(["import", "--src", str(checkpoint), "--out", str(run), "--t5", str(t5_512)]) == 0
    report = json.loads((run / "import.json").read_text())
    assert report["unused_tensors"] == [] and report["not_imported_tensors"] == 0
    assert report["not_imported_config"] == ["training", "audio_channels"]  # jaxstage audio is mono
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["text"]["kind"] == "t5" and cfg["model"]["cross_attn_mask"] is False
    assert cfg["codec"]["kind"] == "oobleck" and cfg["codec"]["autoencoder"] == str((run / "autoencoder").resolve())
    assert cfg["conditioning"]["global_ids"] == ["seconds_start", "seconds_total"]
    assert cfg["diffusion"]["objective"] == "v" and cfg["data"]["text_max_length"] == 8

    out = tmp_path / "free.wav"
    assert cli.main(["sample", "--workdir", str(run), "--prompt", "any text", "--seconds-total", "3",
                     "--steps", "2", "--out", str(out)]) == 0
    assert out.is_file()

    exported = tmp_path / "exported"
    assert cli.main(["export", "--workdir", str(run), "--out", str(exported)]) == 0
    theirs = safetensors_io.read_checkpoint(checkpoint / safetensors_io.SINGLE_NAME)
    ours = safetensors_io.read_checkpoint(exported / safetensors_io.SINGLE_NAME)
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)  # bit for bit
    config = json.loads((exported / "model_config.json").read_text())
    source = sao_like_config(512)["model"]
    assert config["model"]["conditioning"] == json.loads(json.dumps(source["conditioning"]))
    assert config["model"]["pretransform"]["config"] == source["pretransform"]["config"]
    for key in ("cross_attention_cond_ids", "global_cond_ids"):
        assert config["model"]["diffusion"][key] == source["diffusion"][key]
    assert config["audio_channels"] == 2


def test_whole_model_import_refusals(checkpoint, t5_512, tmp_path):
    with pytest.raises(ConfigError, match="give --t5"):
        from jaxstage.tools.export.importer import import_checkpoint

        import_checkpoint(checkpoint, tmp_path / "a")
    bad = json.loads((checkpoint / "model_config.json").read_text())
    bad["model"]["conditioning"]["configs"][1]["type"] = "int"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model_config.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"configs\[1\]\.type='int'"):
        import_checkpoint(checkpoint / safetensors_io.SINGLE_NAME, tmp_path / "c",
                          config_path=tmp_path / "b" / "model_config.json", t5_dir=t5_512)
