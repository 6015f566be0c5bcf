"""A T5-conditioned run with SAO's timing conditioners, end to end on a tiny random T5 (issue 19):
`jaxstage prepare --text-encoder T5` (the JAX T5) records text embeddings and each clip's timing,
a run trains on them, and `jaxstage sample --prompt "any text" --seconds-total 3` encodes the free
text with the in-process T5. Also the in-step variant (text.kind=t5)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from jaxstage import cli  # noqa: E402
from jaxstage.config import load_config  # noqa: E402
from jaxstage.data.prepared import PreparedSource  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
SR = 8000
SAO_TIMING = ['conditioning.numbers=[["seconds_start", 0, 512], ["seconds_total", 0, 512]]',
              'conditioning.cross_attention_ids=["prompt", "seconds_start", "seconds_total"]',
              'conditioning.global_ids=["seconds_start", "seconds_total"]', "model.cross_attn_mask=false"]
RUN = ["train.steps=2", "train.log_every=1", "train.progress_bar=false",
       "train.async_checkpoint=false", "codec.stats_examples=4", "sample.steps=2"]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from hf_tiny import save_tiny_t5

    return save_tiny_t5(tmp_path_factory.mktemp("t5") / "t5")


def _clips(root: Path, count: int = 8) -> Path:
    (root / "clips").mkdir(parents=True)
    lines = ["path,caption"]
    rng = np.random.default_rng(0)
    for i in range(count):
        seconds = 0.5 + 0.25 * (i % 4)  # 0.5 .. 1.25 s: files longer than the 0.25 s clips
        sf.write(root / f"clips/{i}.wav", (0.3 * rng.standard_normal(int(SR * seconds))).astype(np.float32), SR)
        lines.append(f"clips/{i}.wav,a dog barks {i}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def test_prepared_t5_run_samples_free_text_with_timing(t5_dir, tmp_path):
    manifest = _clips(tmp_path / "data")
    prepared = tmp_path / "prepared"
    assert cli.main(["prepare", "--manifest", str(manifest), "--out", str(prepared), "--sample-rate", str(SR),
                     "--clip-seconds", "0.25", "--text-encoder", str(t5_dir), "--text-max-length", "8",
                     "--batch-size", "4"]) == 0
    meta = json.loads((prepared / "dataset.json").read_text())
    assert meta["encoders"]["text"]["encoder"] == "jax" and meta["features"]["seconds_total"]["shape"] == []
    records = [PreparedSource(prepared)[i] for i in range(meta["count"])]
    totals = sorted(float(r["seconds_total"]) for r in records)
    assert totals == pytest.approx(sorted(0.5 + 0.25 * (i % 4) for i in range(8)))
    assert all(float(r["seconds_start"]) == 0.0 for r in records)

    workdir = tmp_path / "run"
    cfg = load_config(TINY, ["data.source=prepared", f"data.path={prepared}", "text.kind=precomputed",
                             "regime.monitor_size=4", f"train.workdir={workdir}", *SAO_TIMING, *RUN])
    from jaxstage.train.trainer import train

    train(cfg)
    out = tmp_path / "free.wav"
    assert cli.main(["sample", "--workdir", str(workdir), "--prompt", "any text at all", "--seconds-total", "3",
                     "--out", str(out)]) == 0
    audio, rate = sf.read(out)
    assert rate == SR and audio.shape == (cfg.num_samples,) and np.all(np.isfinite(audio))
    # the timing condition reaches the model: another seconds_total gives other audio from the same noise
    other = tmp_path / "other.wav"
    assert cli.main(["sample", "--workdir", str(workdir), "--prompt", "any text at all", "--seconds-start", "1",
                     "--seconds-total", "40", "--out", str(other)]) == 0
    assert np.abs(sf.read(other)[0] - audio).max() > 0


def test_in_step_t5_run_trains_and_samples(t5_dir, tmp_path):
    workdir = tmp_path / "run"
    cfg = load_config(TINY, ["text.kind=t5", f"text.encoder_dir={t5_dir}", "data.text_max_length=8",
                             f"train.workdir={workdir}", *SAO_TIMING, *RUN])
    from jaxstage.train.trainer import train

    train(cfg)
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any(np.isfinite(r.get("loss", np.nan)) for r in rows)
    out = tmp_path / "t5.wav"
    assert cli.main(["sample", "--workdir", str(workdir), "--prompt", "rain and wind", "--seconds-total", "3",
                     "--out", str(out)]) == 0
    assert np.all(np.isfinite(sf.read(out)[0]))


def test_timing_flags_are_refused_without_their_conditioner(tmp_path):
    from jaxstage.inference.wav_files import text_to_wav

    with pytest.raises(ValueError, match="--seconds-total 3: the run has no 'seconds_total' conditioner"):
        text_to_wav(tmp_path, load_config(TINY), ["x"], tmp_path / "x.wav", seconds_total=3.0)
