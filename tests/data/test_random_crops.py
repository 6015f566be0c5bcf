"""`prepare --max-seconds`: records longer than a training clip, cropped at a random offset per epoch
(stable-audio-tools' random crops) with `seconds_start` / `seconds_total` following the crop, the
same crops after a resume, and the held-out records cut at their start."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxstage.config import load_config
from jaxstage.data.pipeline import BatchStream, held_out_batch
from jaxstage.data.prepare import prepare
from jaxstage.data.prepared import PreparedSource

ROOT = Path(__file__).resolve().parents[2]
SR, CLIP, LONGEST = 8000, 0.25, 1.0
N = int(SR * CLIP)


def _files(root: Path, count: int = 12) -> Path:
    (root / "clips").mkdir(parents=True)
    lines = ["path,caption"]
    for i in range(count):
        seconds = 0.5 + 0.25 * (i % 4)  # 0.5 .. 1.25 s (the longest is cut at --max-seconds 1.0)
        ramp = (np.arange(int(SR * seconds)) / SR).astype(np.float32) * 0.5 + 0.01 * i  # sample value = its time
        sf.write(root / f"clips/{i}.wav", ramp, SR, subtype="FLOAT")
        lines.append(f"clips/{i}.wav,clip {i}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def long_records(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crops")
    out = root / "prepared"
    meta = prepare(_files(root), out, sample_rate=SR, clip_seconds=CLIP, max_seconds=LONGEST, shard_size=8,
                   progress=False)
    assert meta["record_samples"] == int(SR * LONGEST) and meta["num_samples"] == N
    assert meta["features"]["audio"]["shape"] == [int(SR * LONGEST)]
    return out


def _cfg(path: Path):
    return load_config(str(ROOT / "configs" / "tiny_t2a.py"), [
        "data.source=prepared", f"data.path={path}", f"data.clip_seconds={CLIP}", "regime.monitor_size=4",
        'conditioning.numbers=[["seconds_start", 0, 512], ["seconds_total", 0, 512]]',
        'conditioning.global_ids=["seconds_start", "seconds_total"]', "train.batch_size=8"])


def test_crops_follow_the_file_and_change_per_epoch(long_records):
    cfg = _cfg(long_records)
    source = PreparedSource(long_records)
    by_caption = {}
    stream = BatchStream(cfg, 0, 1)
    for _ in range(6):  # 8 training records, batch 8: one epoch per batch
        batch = next(stream)
        assert batch["audio"].shape == (8, N) and batch["seconds_start"].shape == (8,)
        for audio, start, total, ids in zip(batch["audio"], batch["seconds_start"], batch["seconds_total"],
                                            batch["text_ids"]):
            real = audio[audio != 0]
            # the ramp's value is its time in the file (+ 0.01 i): the window starts at seconds_start
            i = next(k for k in range(12) if abs(real[0] - (0.5 * start + 0.01 * k)) < 1e-4)
            assert total == pytest.approx(0.5 + 0.25 * (i % 4))
            assert start + CLIP <= min(total, LONGEST) + 1e-6
            by_caption.setdefault(i, set()).add(round(float(start), 4))
    assert len(by_caption) == 8  # the 4 held-out records never appear
    assert any(len(starts) > 1 for starts in by_caption.values())  # a new crop in another epoch
    assert max(len(source[i]["audio"]) for i in range(len(source))) == int(SR * LONGEST)


def test_crops_are_the_same_after_a_resume(long_records):
    cfg = _cfg(long_records)
    stream = BatchStream(cfg, 0, 1)
    for _ in range(3):
        next(stream)
    state = stream.get_state()
    expected = [next(stream) for _ in range(2)]
    resumed = BatchStream(cfg, 0, 1)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_held_out_records_are_cut_at_their_start(long_records):
    batch, _ = held_out_batch(_cfg(long_records), 4)
    assert batch["audio"].shape == (4, N)
    np.testing.assert_array_equal(batch["seconds_start"], 0.0)


def test_max_seconds_refuses_precomputed_targets(long_records, tmp_path):
    with pytest.raises(ValueError, match="precomputed SSL targets and latents"):
        prepare(_files(tmp_path / "d", 2), tmp_path / "p", sample_rate=SR, clip_seconds=CLIP, max_seconds=LONGEST,
                ssl_encoder=object(), progress=False)
