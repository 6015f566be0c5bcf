"""Issue 4, end to end and offline: tiny random transformers encoders (T5 + HuBERT / WavLM / wav2vec2)
saved to disk, `prepare` on generated clips, then a few adaptive training steps on the result."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")
pytest.importorskip("transformers")

from jaxstage.config import load_config  # noqa: E402
from jaxstage.data.encoders import HFAudioEncoder, HFTextEncoder  # noqa: E402
from jaxstage.data.prepare import prepare  # noqa: E402
from jaxstage.train.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "data"))
from hf_tiny import (HUBERT_DIM, T5_DIM, save_tiny_hubert, save_tiny_t5, save_tiny_wav2vec2,  # noqa: E402
                     save_tiny_wavlm)

SR = 8000
BUILDERS = {"hubert": save_tiny_hubert, "wavlm": save_tiny_wavlm, "wav2vec2": save_tiny_wav2vec2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """12 generated clips (tones and noise, 0.6-1.4 s, some at 16 kHz) and a path,caption CSV."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    lines = ["path,caption"]
    for i in range(12):
        rate = SR if i % 3 else 16000
        t = np.arange(int(rate * rng.uniform(0.6, 1.4))) / rate
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 1500) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(root / f"clip{i}.wav", audio.astype(np.float32), rate)
        lines.append(f"clip{i}.wav,{'a low hum' if i % 2 else 'a high beep with noise'} {i}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


@pytest.mark.parametrize("ssl_kind", sorted(BUILDERS))
def test_prepare_then_train(tmp_path, corpus, ssl_kind):
    text = HFTextEncoder(save_tiny_t5(tmp_path / "t5"), max_length=8)
    ssl = HFAudioEncoder(BUILDERS[ssl_kind](tmp_path / ssl_kind), layers=(1, 2), sample_rate=SR)
    meta = prepare(corpus, tmp_path / "data", sample_rate=SR, clip_seconds=1.0, text_encoder=text,
                   ssl_encoder=ssl, shard_size=5, progress=False)
    assert meta["count"] == 12 and not meta["skipped"]
    assert meta["features"]["text_emb"]["shape"] == [8, T5_DIM]
    assert meta["features"]["ssl"]["shape"][-1] == HUBERT_DIM
    assert meta["encoders"]["ssl"]["model_type"] == ssl_kind

    cfg = load_config(str(ROOT / "configs" / "tiny_t2a.py"), [
        "data.source=prepared", f"data.path={tmp_path / 'data'}", "data.clip_seconds=1.0",
        "text.kind=precomputed", "guidance.ssl=precomputed", "guidance.lambda0=0.5", "guidance.hidden=32",
        "regime.mode=adaptive", "regime.every=2", "regime.monitor_size=4", "train.batch_size=8",
        "train.steps=4", "train.log_every=2", "train.ckpt_every=1000", "train.progress_bar=false",
        "sample.num=2", "sample.steps=2"])
    result = train(cfg, tmp_path / "run")
    assert result.final_step == 4 and result.compile_count == 1
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["loss_align"]) for r in records)
