"""The autoencoder trainer through the shared loop: a run stopped and resumed equals the uninterrupted
run bit for bit; too many NaN batches stop with the TrainingError line; the autoencoder directory
loads with ``load_autoencoder`` and holds the EMA weights exactly; the reconstruction report; the run
kind refuses sampling, loading and another trainer's resume."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxstage.autoencoder.export import export_run_autoencoder
from jaxstage.autoencoder.state import AEState, ae_restore_target, build_ae_experiment
from jaxstage.autoencoder.trainer import train_autoencoder
from jaxstage.cli import main
from jaxstage.config import ConfigError
from jaxstage.data.pipeline import BatchStream
from jaxstage.models.oobleck import torch_state
from jaxstage.run import checkpoint as ckpt_lib
from jaxstage.run import loop
from jaxstage.run.trainer import TrainingError
from jaxstage.tools.export.autoencoder import load_autoencoder
from tests.autoencoder.conftest import tiny_config

pytestmark = pytest.mark.slow  # tiny runs through the loop: about 2.5 minutes for the module on 2 cores

STEPS = 6
GAN = ["autoencoder.disc_start_step=2", f"train.steps={STEPS}"]


def _rows(workdir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows if "loss" in r]


def _state(workdir: Path, cfg, step: int) -> AEState:
    ax = build_ae_experiment(cfg)
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", keep=10, async_save=False)
    state, _ = ckpt.restore(step, ae_restore_target(ax))
    ckpt.close()
    return jax.device_get(state)


class _StopAt3(loop.StopFlag):
    """SIGTERM, as the loop sees it, at step 3."""

    def stop_at(self, step: int) -> bool:
        if step == 3:
            self.signal_name = "SIGTERM"
        return step == 3


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted tiny run with the discriminator (on from step 2), report and export on."""
    workdir = tmp_path_factory.mktemp("ae") / "reference"
    train_autoencoder(tiny_config(*GAN, "sample.final_eval_prompts=3"), workdir)
    return workdir


def test_stop_and_resume_is_bitwise_identical(reference, tmp_path, monkeypatch):
    cfg = tiny_config(*GAN, "sample.final_eval_prompts=3")
    workdir = tmp_path / "interrupted"
    with monkeypatch.context() as m:
        m.setattr(loop, "StopFlag", _StopAt3)
        result = train_autoencoder(cfg, workdir)
    assert (result.stopped_by, result.final_step) == ("SIGTERM", 3)
    assert not (workdir / "autoencoder").exists()  # end-of-run outputs only for a finished run
    result = train_autoencoder(tiny_config(*GAN, "sample.final_eval_prompts=3"), workdir)
    assert result.final_step == STEPS and result.stopped_by is None
    resumed, expected = _rows(workdir), _rows(reference)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    assert resumed == expected  # every metric, float for float
    assert expected[-1]["gan_active"] == 1.0 and expected[0]["gan_active"] == 0.0
    a, b = _state(workdir, cfg, STEPS), _state(reference, cfg, STEPS)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_stop_and_resume_with_train_crop_is_bitwise_identical(tmp_path, monkeypatch):
    """autoencoder.train_crop: the crop offsets come from the seed and the step, so a run stopped at
    step 3 and resumed equals the uninterrupted one bit for bit."""
    sets = ("autoencoder.train_crop=512", f"train.steps={STEPS}")
    cfg = tiny_config(*sets, disc=False)
    train_autoencoder(cfg, tmp_path / "reference")
    workdir = tmp_path / "interrupted"
    with monkeypatch.context() as m:
        m.setattr(loop, "StopFlag", _StopAt3)
        assert train_autoencoder(tiny_config(*sets, disc=False), workdir).final_step == 3
    assert train_autoencoder(tiny_config(*sets, disc=False), workdir).final_step == STEPS
    assert _rows(workdir) == _rows(tmp_path / "reference")
    a, b = _state(workdir, cfg, STEPS), _state(tmp_path / "reference", cfg, STEPS)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_autoencoder_directory_round_trip(reference, tmp_path):
    """RUN/autoencoder loads with load_autoencoder and equals the final EMA weights bit for bit;
    `jaxstage export-autoencoder --src RUN --step N` writes an earlier checkpoint's."""
    cfg = tiny_config(*GAN)
    vae, info = load_autoencoder(reference / "autoencoder")
    assert info["sample_rate"] == 8000 and info["scale"] == 1.0 and info["config"].hop == 8
    state = _state(reference, cfg, STEPS)
    ours = build_ae_experiment(cfg).vae(state.ema_params)
    loaded, expected = torch_state(vae), torch_state(ours)
    assert sorted(loaded) == sorted(expected) and all(k.startswith(("encoder.", "decoder.")) for k in loaded)
    for key in expected:
        np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(expected[key]), err_msg=key)
    sat = json.loads((reference / "autoencoder" / "model_config.json").read_text())
    assert sat["model_type"] == "autoencoder" and sat["model"]["bottleneck"]["type"] == "vae"
    assert sat["model"]["encoder"]["config"]["latent_dim"] == 8 and sat["model"]["decoder"]["config"]["out_channels"] == 1

    assert main(["export-autoencoder", "--src", str(reference), "--step", "4", "--out", str(tmp_path / "ae4")]) == 0
    early = torch_state(load_autoencoder(tmp_path / "ae4")[0])
    ema4 = torch_state(build_ae_experiment(cfg).vae(_state(reference, cfg, 4).ema_params))
    for key in ema4:
        np.testing.assert_array_equal(np.asarray(early[key]), np.asarray(ema4[key]), err_msg=key)
    assert any(not np.array_equal(early[k], loaded[k]) for k in early)


def test_reconstruction_report(reference):
    report = json.loads((reference / "reconstruction_eval.json").read_text())
    assert report["num_clips"] == 3 and report["step"] == STEPS
    assert set(report["results"]) == {"oobleck", "stft", "mel", "original"}
    for scores in report["results"].values():
        assert {"mrstft", "si_sdr_db", "attribute_accuracy", "attribute_accuracy_mean"} <= set(scores)
        assert set(scores["attribute_accuracy"]) == {"source", "pitch_band", "rhythm", "envelope"}
    original, stft = report["results"]["original"], report["results"]["stft"]
    assert original["mrstft"] == 0.0 and original["si_sdr_db"] > 100  # the ceiling (SI-SDR capped at 200 dB)
    assert stft["si_sdr_db"] > 60 and stft["mrstft"] < 1e-2  # the STFT codec is exactly invertible...
    assert stft["attribute_accuracy"] == original["attribute_accuracy"]  # ...so the analyzer reads the same labels
    assert report["results"]["oobleck"]["mrstft"] > stft["mrstft"]


def test_run_kind_refuses_sampling_loading_and_other_trainers(reference, capsys):
    from jaxstage.config import load_json
    from jaxstage.inference.load import load_run

    assert json.loads((reference / "run.json").read_text())["kind"] == "autoencoder"
    assert main(["sample", "--workdir", str(reference), "--prompt", "a tone", "--out", "/tmp/x.wav"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is an autoencoder run (task=autoencoder): it samples nothing" in line
    with pytest.raises(ConfigError, match="run kind 'autoencoder' cannot be loaded for inference"):
        load_run(load_json(reference / "config.json"), reference)
    assert main(["train", "--workdir", str(reference), "--set", "train.steps=2"]) == 2
    assert ("holds checkpoints of a `jaxstage autoencoder` run, not a `jaxstage train` run"
            in capsys.readouterr().err.strip().splitlines()[-1])


def test_consecutive_nan_batches_stop_with_the_named_line(tmp_path, monkeypatch):
    """NaN batches 3, 4, 5 with max_skipped_steps=2: stopped at step 5 naming the loss and the newest
    finished checkpoint (step 4), whose weights are finite."""

    class Poisoned(BatchStream):
        served = 0

        def __next__(self):
            batch = super().__next__()
            self.served += 1
            return {**batch, "audio": np.full_like(batch["audio"], np.nan)} if self.served in (3, 4, 5) else batch

    monkeypatch.setattr(loop, "BatchStream", Poisoned)
    cfg = tiny_config("train.steps=8", "train.max_skipped_steps=2", disc=False)
    workdir = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train_autoencoder(cfg, workdir)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith("loss is not finite at step 5: 3 consecutive steps skipped (train.max_skipped_steps=2)")
    assert line.endswith(f"newest finished checkpoint: {(workdir / 'checkpoints' / '4').resolve()}")
    rows = _rows(workdir)
    assert [r["skipped_steps"] for r in rows][:5] == [0, 0, 1, 2, 3]
    state = _state(workdir, cfg, 4)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves((state.params, state.ema_params)))
