"""Whole-model import/export in stable-audio-tools' layout (issue 20), without stable-audio-tools:
a Stable Audio Open-shaped checkpoint (DiT + number conditioners + Oobleck pretransform, SAO's
conditioning config and routing, reduced sizes) written here tensor by tensor, imported into a run
that samples from free text with timing, and exported back bit for bit. Parity with
stable-audio-tools' own modules is in test_sao_import.py."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sao_like import sao_like_config, save_wide_t5, write_sao_like_checkpoint  # noqa: E402

from jaxstage import cli  # noqa: E402
from jaxstage.config import ConfigError  # noqa: E402
from jaxstage.tools.export import safetensors_io  # noqa: E402


@pytest.fixture(scope="module")
def t5_512(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return save_wide_t5(tmp_path_factory.mktemp("t5") / "t5", 512)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_sao_like_checkpoint(tmp_path_factory.mktemp("sao") / "sao_like", sao_like_config(512))


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
