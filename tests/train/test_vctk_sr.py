"""VCTK 0.92 super-resolution: the standard speaker split, `prepare --kind vctk_train`, and
configs/vctk_sr.py (48 kHz, cutoffs 2-16 kHz) training on the prepared records (shrunk model)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxstage.cli import main
from jaxstage.config import load_config
from jaxstage.data.manifests import ManifestError, read_manifest
from jaxstage.train.trainer import train

ROOT = Path(__file__).resolve().parents[2]
VCTK_CONFIG = str(ROOT / "configs" / "vctk_sr.py")
RATE = 48000


def _fake_vctk(root: Path, speakers: dict[str, int], seconds: float = 0.5) -> Path:
    """A VCTK 0.92-shaped tree: wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic{1,2}.flac and txt/<spk>/*.txt."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    for speaker, count in speakers.items():
        audio_dir = root / "wav48_silence_trimmed" / speaker
        audio_dir.mkdir(parents=True)
        for k in range(1, count + 1):
            f0 = rng.uniform(100, 250)
            voice = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 40) if f0 * h < RATE / 2)
            audio = (0.1 * voice + 0.01 * rng.normal(size=t.size)).astype(np.float32)
            for mic in (1, 2):
                sf.write(str(audio_dir / f"{speaker}_{k:03d}_mic{mic}.flac"), audio, RATE)
            if speaker != "p315":  # p315 has no transcripts in VCTK
                (root / "txt" / speaker).mkdir(parents=True, exist_ok=True)
                (root / "txt" / speaker / f"{speaker}_{k:03d}.txt").write_text(f"Please call Stella {k}.\n")
    return root


def test_standard_split_and_mic1_only(tmp_path):
    root = _fake_vctk(tmp_path / "VCTK", {"p225": 2, "p226": 1, "p280": 1, "p315": 1, "p360": 2, "s5": 1})
    train_items = read_manifest(root, "vctk_train")
    assert [i.id for i in train_items] == ["p225/p225_001", "p225/p225_002", "p226/p226_001"]
    assert all(i.audio_path.endswith("_mic1.flac") and i.skip is None for i in train_items)
    assert train_items[0].caption == "Please call Stella 1."
    test_items = read_manifest(root, "vctk_test")
    assert [i.id for i in test_items] == ["p360/p360_001", "p360/p360_002", "s5/s5_001"]
    with pytest.raises(ManifestError, match="not a VCTK 0.92 root"):
        read_manifest(tmp_path, "vctk_train")


def test_vctk_config_trains_on_prepared_48k_records(tmp_path):
    root = _fake_vctk(tmp_path / "VCTK", {"p225": 7, "p226": 6, "p360": 1})
    prepared = tmp_path / "vctk_train"
    assert main(["prepare", "--manifest", str(root), "--kind", "vctk_train", "--out", str(prepared),
                 "--sample-rate", str(RATE), "--clip-seconds", "0.5"]) == 0
    cfg = load_config(VCTK_CONFIG, [
        f"data.path={prepared}", "data.clip_seconds=0.5", "data.prefetch_threads=1", "data.prefetch_buffer=2",
        "model.embed_dim=64", "model.num_heads=2", "model.depth=2", "guidance.hidden=32", "train.batch_size=8",
        "train.steps=2", "train.log_every=1", "train.progress_bar=false", "regime.every=1", "regime.monitor_size=4",
        "struct.every=1", "struct.num_groups=2", "codec.stats_examples=4", "sample.final_eval_prompts=2",
        "sample.num=1", "sample.steps=2", "sr.replace_n_fft=1024"])
    assert cfg.task == "sr" and cfg.data.sample_rate == RATE and cfg.sr.cutoff_max_hz == 16000
    result = train(cfg, tmp_path / "run")
    assert result.final_step == 2 and result.compile_count == 1
    report = result.sr_eval
    assert report["count"] == 2 and report["sample_rate"] == RATE
    for clip in report["per_clip"]:
        assert 2000 <= clip["cutoff_hz"] <= 16000
        assert all(np.isfinite(v) for v in clip["output_replaced"].values())
