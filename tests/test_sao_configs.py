"""configs/sao_finetune.py and configs/sao_small_finetune.py: they validate, say SAO's shapes and
conditioning, and a reduced version of each (small DiT, short clip, tiny VAE; everything else as the
config has it) compiles through `jaxstage aot-check` on 8 fake devices with FSDP, on stand-in data
built by bench/sao_memory.py."""

import json
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import sao_memory  # noqa: E402

from jaxstage import cli  # noqa: E402
from jaxstage.config import load_config  # noqa: E402
from jaxstage.models.oobleck import OobleckConfig  # noqa: E402

SAO = str(ROOT / "configs" / "sao_finetune.py")
SMALL = str(ROOT / "configs" / "sao_small_finetune.py")
TINY_VAE = OobleckConfig(audio_channels=2, channels=4, c_mults=(1, 2), strides=(8, 8), latent_dim=64)  # hop 64
# a small DiT and a 64-latent clip (93 ms: 4 HuBERT frames); conditioning, objective, codec kind, recipe and the rest as configured
REDUCED = ["model.embed_dim=64", "model.depth=3", "model.num_heads=2", "guidance.hidden=32",
           "regime.monitor_size=4", f"data.clip_seconds={64 * TINY_VAE.hop / 44100!r}",
           "mesh.data=1", "mesh.fsdp=8", "train.batch_size=8"]


def test_configs_validate_with_sao_shapes():
    sao, small = load_config(SAO), load_config(SMALL)
    assert sao.num_samples == 2097152 and small.num_samples == 524288  # 1024 and 256 latents of 2048 samples
    assert (sao.model.embed_dim, sao.model.depth, sao.model.num_heads, sao.model.qk_norm) == (1536, 24, 24, False)
    assert (small.model.embed_dim, small.model.depth, small.model.num_heads, small.model.qk_norm) == (1024, 16, 8, True)
    assert sao.diffusion.objective == "v" and small.diffusion.objective == "rf"
    assert sao.conditioning.cross_attention_ids == ("prompt", "seconds_start", "seconds_total")
    assert sao.conditioning.global_ids == ("seconds_start", "seconds_total")
    assert small.conditioning.numbers == (("seconds_total", 0.0, 256.0),)
    assert not sao.model.project_cond_tokens and small.model.project_cond_tokens
    for cfg in (sao, small):
        assert cfg.data.latents and cfg.codec.kind == "oobleck" and cfg.text.kind == "precomputed"
        assert not cfg.model.cross_attn_mask and cfg.model.remat == "full"
        assert cfg.guidance.ssl == "precomputed" and cfg.regime.mode == "adaptive" and cfg.train.init_from
        assert (cfg.optim.lr, cfg.optim.b1, cfg.optim.b2, cfg.optim.weight_decay) == (5e-5, 0.9, 0.999, 1e-3)
        assert cfg.mesh.fsdp == 8 and cfg.train.batch_size % 64 == 0  # 64 GPUs: 8 replicas of fsdp 8


def test_hubert_frames_match_the_conv_front_end():
    assert sao_memory.hubert_frames(16000, 16000) == 49  # HuBERT: 49 frames per second of 16 kHz audio
    assert sao_memory.hubert_frames(2097152, 44100) == 2377


@pytest.mark.skipif(jax.device_count() != 8, reason="needs the 8 fake devices of tests/conftest.py")
@pytest.mark.parametrize("config, text_len", [(SAO, 8), (SMALL, 8)])
def test_reduced_config_compiles_through_aot_check(config, text_len, tmp_path, monkeypatch):
    ae = sao_memory.write_autoencoder(tmp_path / "ae", TINY_VAE)
    cfg = load_config(config, REDUCED + [f"codec.autoencoder={ae}", f"data.path={tmp_path / 'data'}"])
    # T5/HuBERT widths 64/32 instead of 768: SAO 1.0's unprojected cond tokens need 768 / head dim to
    # divide the query heads, which a 64-wide DiT only allows with a 64-wide context
    prepared = sao_memory.write_prepared(tmp_path / "data", cfg, ae, text_len, text_dim=64, ssl_dim=32)
    out = tmp_path / "aot.json"
    monkeypatch.setenv("XLA_FLAGS", "")  # aot-check --devices appends its flags (JAX has started already)
    sets = [a for o in REDUCED + sao_memory.fixture_overrides(prepared, ae) for a in ("--set", o)]
    assert cli.main(["aot-check", "--config", config, "--devices", "8", *sets, "--device-memory", "80GiB",
                     "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["num_devices"] == 8 and report["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert report["fits"] and report["temporaries"] > 0
    assert any(n.startswith("data.latents: the step reads the stored latents") for n in report["notes"])
    # FSDP over 8: parameters (and EMA, moments) are sharded, so a device holds about an eighth of them
    assert report["state"]["params"] < 4 * report["parameters"] / 2


def test_sao_small_arc_config_validates_for_posttraining():
    from jaxstage.config import validate_posttrain

    cfg = validate_posttrain(load_config(str(ROOT / "configs" / "sao_small_arc.py")))
    assert (cfg.sample.sampler, cfg.sample.steps, cfg.sample.cfg_scale) == ("pingpong", 8, 1.0)
    assert cfg.diffusion.objective == "rf" and cfg.text.kind == "precomputed"
    assert cfg.conditioning.global_ids == ("seconds_total",)
