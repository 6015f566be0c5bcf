"""Audio-conditioned super-resolution (task=sr) on the speech-like source: the low-band pipeline and
the stage-adaptive recipe training through the host loop with the low band as input channels."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxstage.config import ConfigError, load_config
from jaxstage.data.pipeline import example_spec, make_dataset, make_source, sr_held_out_batch
from jaxstage.train.trainer import train

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
SR = ["task=sr", "data.source=synthetic_speech", "data.sample_rate=8000", "sample.cfg_scale=1", "sr.cutoff_min_hz=1000",
      "sr.cutoff_max_hz=3000"]
ADAPTIVE = ["regime.mode=adaptive", "regime.every=2", "regime.monitor_size=8", "guidance.lambda0=0.5",
            "guidance.hidden=64", "timesteps.adaptive=true", "struct.enabled=true", "struct.every=4",
            "struct.num_groups=2", "struct.ramp_steps=20"]


def _band_energy(x: np.ndarray, sr: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / sr)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


def test_low_band_is_band_limited_and_deterministic_per_index():
    cfg = load_config(TINY, SR)
    source = make_source(cfg)
    spec = example_spec(cfg)
    assert spec["low"] == ((cfg.num_samples,), np.dtype(np.float32))
    assert spec["cutoff"] == ((), np.dtype(np.float32))
    cutoffs = []
    for index in range(8):
        a, b = source[index], make_source(cfg)[index]
        np.testing.assert_array_equal(a["low"], b["low"])  # a pure function of (seed, index)
        assert a["cutoff"] == b["cutoff"] and a["method"] == b["method"]
        low, cutoff = a["low"], float(a["cutoff"])
        assert low.shape == a["audio"].shape and low.dtype == np.float32
        assert 1000 <= cutoff <= 3000
        cutoffs.append(cutoff)
        # little energy more than 1.5x above the cutoff, relative to the full band above it
        above = _band_energy(low, cfg.data.sample_rate, 1.5 * cutoff, cfg.data.sample_rate / 2)
        full_above = _band_energy(a["audio"], cfg.data.sample_rate, 1.5 * cutoff, cfg.data.sample_rate / 2)
        total = _band_energy(low, cfg.data.sample_rate, 0, cfg.data.sample_rate / 2)
        assert above < 0.05 * full_above + 1e-3 * total, (index, a["method"], cutoff)
    assert len(set(cutoffs)) == len(cutoffs)
    # another data seed gives other low bands
    other = make_source(load_config(TINY, SR + ["data.seed=1"]))[0]
    assert other["cutoff"] != source[0]["cutoff"]
    # the batch stream carries the SR keys; the monitor's held-out clips lie past the training indices
    batch = next(iter(make_dataset(cfg, 0, 1)))
    assert batch["low"].shape == batch["audio"].shape and batch["cutoff"].shape == (cfg.train.batch_size,)
    held = sr_held_out_batch(cfg, 2)
    np.testing.assert_array_equal(held["audio"][0], make_source(load_config(
        TINY, SR + [f"data.num_examples={cfg.data.num_examples + 1}"]))[cfg.data.num_examples]["audio"])


def test_sr_config_validation():
    with pytest.raises(ConfigError, match="task=sr trains on data.source=synthetic_speech or prepared"):
        load_config(TINY, ["task=sr"])
    with pytest.raises(ConfigError, match="only task=sr reads sr"):
        load_config(TINY, ["sr.cutoff_max_hz=2500"])
    with pytest.raises(ConfigError, match="must satisfy"):
        load_config(TINY, SR + ["sr.cutoff_max_hz=4000"])
    load_config(TINY, SR + ["sr.replace_low_band=true"])  # implemented: sampling post-processing
    with pytest.raises(ConfigError, match="without classifier-free guidance"):
        load_config(TINY, [k for k in SR if not k.startswith("sample.cfg_scale")])
    with pytest.raises(ConfigError, match="sr.replace_n_fft"):
        load_config(TINY, SR + ["sr.replace_n_fft=8192"])
    with pytest.raises(ConfigError, match="sr.window_overlap_seconds"):
        load_config(TINY, SR + ["sr.window_overlap_seconds=0.2"])
    with pytest.raises(ConfigError, match="sr.methods"):
        load_config(TINY, SR + ['sr.methods=["lowpass"]'])
    with pytest.raises(ConfigError, match="sr.orders"):
        load_config(TINY, SR + ["sr.orders=[1]"])
    with pytest.raises(ConfigError, match="synthetic_speech has no captions"):
        load_config(TINY, ["data.source=synthetic_speech"])


def test_sr_adaptive_training_compiles_once_and_resumes(tmp_path):
    """The stage-adaptive recipe on SR: one compilation, finite losses, the monitor (with the low-band
    condition) measured so p and the discrepancy are finite; then a resume from the step-4 checkpoint
    (the SR monitor restores into its abstract target) runs to step 8."""
    sets = SR + ADAPTIVE + ["train.log_every=2", "train.ckpt_every=1000", "train.progress_bar=false",
                            "data.num_examples=256", "codec.stats_examples=8"]
    run = tmp_path / "run"
    first = train(load_config(TINY, sets + ["train.steps=4"]), run)
    assert first.final_step == 4 and first.compile_count == 1
    result = train(load_config(TINY, sets + ["train.steps=8"]), run)
    assert result.final_step == 8 and result.compile_count == 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    for r in records:
        for key in ("loss", "loss_diff", "loss_align", "loss_struct", "progress", "discrepancy", "grad_norm"):
            assert r[key] is not None and np.isfinite(r[key]), (key, r)
    # end-of-run SR samples: input, output and reference of sample.num held-out clips
    assert len(list((run / "samples").glob("step0000008_*.wav"))) == 3 * 2


def test_sr_static_baseline_runs(tmp_path):
    """The static recipe (SPEC §3.8's baseline: no regime, no guidance, fixed levels, no structure
    term) on the same SR task and pipeline: compiles once, finite losses, no progress variable."""
    sets = SR + ["regime.mode=off", "guidance.lambda0=0", "timesteps.adaptive=false", "struct.enabled=false",
                 "train.steps=4", "train.log_every=2", "train.progress_bar=false", "data.num_examples=64",
                 "codec.stats_examples=4", "sample.final_eval_prompts=2"]
    run = tmp_path / "static"
    result = train(load_config(TINY, sets), run)
    assert result.final_step == 4 and result.compile_count == 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        assert np.isfinite(r["loss"]) and np.isfinite(r["loss_diff"])
        assert r["loss_align"] is None and r["loss_struct"] is None  # logged as absent (null)
        assert r["progress"] == 0 and r["ssl_weight"] == 0 and r["struct_weight"] == 0
    assert result.sr_eval is not None and result.sr_eval["count"] == 2
