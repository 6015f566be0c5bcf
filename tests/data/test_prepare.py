"""`prepare`: messy input (acceptance A), resume after kills (acceptance B), HF encoders."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxstage.data import prepare as prepare_module
from jaxstage.data.prepare import PROGRESS_JSON, prepare
from jaxstage.data.records import DATASET_JSON, decode_record, read_dataset_json

SR = 8000
REPO = Path(__file__).resolve().parents[2]


def tone(seconds, rate, freq=440.0, amp=0.3):
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def read_records(out):
    """{id: record} and the ids in storage order, from the shards dataset.json lists."""
    from array_record.python.array_record_module import ArrayRecordReader

    meta = read_dataset_json(out)
    order, records = [], {}
    for shard in meta["shards"]:
        reader = ArrayRecordReader(str(Path(out) / shard["file"]))
        raw = reader.read(list(range(reader.num_records())))
        reader.close()
        assert len(raw) == shard["count"]
        for data in raw:
            record = decode_record(data)
            order.append(record["id"])
            records[record["id"]] = record
    assert len(order) == len(records) == meta["count"], "duplicate ids"
    return meta, order, records


def assert_same_records(out_a, out_b):
    meta_a, order_a, rec_a = read_records(out_a)
    meta_b, order_b, rec_b = read_records(out_b)
    assert order_a == order_b
    for key in ("count", "shards", "skipped", "features", "encoders"):
        assert meta_a[key] == meta_b[key], key
    for rid in order_a:
        assert rec_a[rid].keys() == rec_b[rid].keys()
        for key, value in rec_a[rid].items():
            np.testing.assert_array_equal(value, rec_b[rid][key], err_msg=f"{rid}/{key}")
    leftovers = sorted(p.name for p in Path(out_b).iterdir()
                       if p.name != DATASET_JSON and p.name not in {s["file"] for s in meta_b["shards"]})
    assert leftovers == []


# ------------------------------------------------------------------------------ acceptance A

@pytest.fixture
def messy(tmp_path):
    """A manifest mixing good files (WAV/FLAC/96 kHz/stereo/MP3/Opus) with four bad items."""
    d = tmp_path / "data"
    (d / "clips").mkdir(parents=True)
    sf.write(d / "clips/long.wav", tone(1.5, SR), SR, subtype="FLOAT")            # cropped
    sf.write(d / "clips/short_ok.flac", tone(0.7, SR), SR)                         # padded
    sf.write(d / "clips/hi96.wav", tone(1.2, 96000, freq=1000), 96000)             # resampled
    stereo = np.stack([tone(1.2, 16000, amp=0.2), tone(1.2, 16000, amp=0.4)], 1)
    sf.write(d / "clips/stereo.wav", stereo, 16000)                                 # downmixed
    sf.write(d / "clips/c.mp3", tone(1.5, 16000), 16000, format="MP3")
    sf.write(d / "clips/c.opus", tone(1.5, 16000), 16000, format="OGG", subtype="OPUS")
    sf.write(d / "clips/fine.wav", tone(1.0, SR, freq=300), SR, subtype="FLOAT")
    (d / "clips/corrupt.wav").write_bytes(b"RIFF" + os.urandom(3000))
    (d / "clips/empty.wav").write_bytes(b"")
    sf.write(d / "clips/tiny.wav", tone(0.1, SR), SR)
    rows = [
        b"path,caption",
        b"clips/long.wav,a long tone",
        b"clips/corrupt.wav,broken",
        b"clips/short_ok.flac,\"short, padded\"",
        b"clips/hi96.wav,caf\xc3\xa9 at 96 kHz",
        b"clips/empty.wav,nothing",
        b"clips/stereo.wav,two channels",
        b"clips/tiny.wav,a blip",
        b"clips/c.mp3,compressed mp3",
        b"clips/fine.wav,bad \xff\xfe caption",
        b"clips/c.opus,compressed opus",
    ]
    (d / "manifest.csv").write_bytes(b"\n".join(rows) + b"\n")
    return d / "manifest.csv"


def test_acceptance_a_messy_dataset(messy, tmp_path):
    out = tmp_path / "prepared"
    returned = prepare(messy, out, sample_rate=SR, clip_seconds=1.0, shard_size=3, progress=False)
    meta, order, records = read_records(out)
    assert returned == meta and meta["version"] == 1 and meta["manifest"] == str(messy)
    assert meta["sample_rate"] == SR and meta["num_samples"] == SR
    assert meta["encoders"] == {"text": None, "ssl": None}

    skipped = {s["id"]: s for s in meta["skipped"]}
    assert sorted(skipped) == ["clips/corrupt.wav", "clips/empty.wav", "clips/fine.wav", "clips/tiny.wav"]
    assert "corrupt" in skipped["clips/corrupt.wav"]["reason"]
    assert "empty" in skipped["clips/empty.wav"]["reason"]
    assert skipped["clips/tiny.wav"]["reason"] == "too short (0.10 s < 0.50 s)"
    assert skipped["clips/fine.wav"]["reason"] == "caption not valid UTF-8"
    assert [skipped[k]["line"] for k in ("clips/corrupt.wav", "clips/empty.wav", "clips/tiny.wav",
                                         "clips/fine.wav")] == [3, 6, 8, 10]
    assert skipped["clips/corrupt.wav"]["file"].endswith("clips/corrupt.wav")

    good = ["clips/long.wav", "clips/short_ok.flac", "clips/hi96.wav", "clips/stereo.wav", "clips/c.mp3",
            "clips/c.opus"]
    assert order == good and meta["count"] == 6
    assert sum(s["count"] for s in meta["shards"]) == 6 and all(s["count"] > 0 for s in meta["shards"])
    assert meta["features"] == {"audio": {"shape": [SR], "dtype": "float32"},
                                "audio_mask": {"shape": [SR], "dtype": "bool"},
                                "caption": {"shape": [], "dtype": "str"}, "id": {"shape": [], "dtype": "str"},
                                "seconds_start": {"shape": [], "dtype": "float32"},
                                "seconds_total": {"shape": [], "dtype": "float32"}}
    assert float(records["clips/long.wav"]["seconds_total"]) == pytest.approx(1.5)  # the file, not the clip
    for rid, rec in records.items():
        assert float(rec["seconds_start"]) == 0.0, rid
        assert rec["audio"].shape == (SR,) and rec["audio"].dtype == np.float32, rid
        assert rec["audio_mask"].dtype == bool and np.all(np.isfinite(rec["audio"])), rid
    np.testing.assert_array_equal(records["clips/long.wav"]["audio"], tone(1.5, SR)[:SR])
    short = records["clips/short_ok.flac"]
    assert short["audio_mask"].sum() == 5600 and short["audio_mask"][:5600].all()
    assert not short["audio"][5600:].any() and short["caption"] == "short, padded"
    assert records["clips/hi96.wav"]["caption"] == "café at 96 kHz"
    for rid in good[2:]:
        assert records[rid]["audio_mask"].all(), rid
    hi = records["clips/hi96.wav"]["audio"]
    assert abs(np.argmax(np.abs(np.fft.rfft(hi))) * SR / len(hi) - 1000) < 3
    assert abs(np.abs(records["clips/stereo.wav"]["audio"][50:-50]).max() - 0.3) < 0.01  # mean of 0.2, 0.4
    for rid in ("clips/c.mp3", "clips/c.opus"):
        assert 0.2 < np.abs(records[rid]["audio"]).max() < 0.4, rid

    # a finished directory is returned as is; other arguments are refused
    assert prepare(messy, out, sample_rate=SR, clip_seconds=1.0, shard_size=3, progress=False) == meta
    with pytest.raises(ValueError, match="different arguments"):
        prepare(messy, out, sample_rate=SR, clip_seconds=2.0, shard_size=3, progress=False)


# ------------------------------------------------------------------------------ acceptance B

def many_clips(root, count, bad_every=7):
    """`count` short clips at 16 kHz (some too short) and a CSV manifest over them."""
    (root / "clips").mkdir(parents=True)
    lines = ["path,caption"]
    rng = np.random.default_rng(0)
    for i in range(count):
        seconds = 0.2 if i % bad_every == 3 else 0.6 + 0.1 * (i % 5)
        clip = (0.3 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
        sf.write(root / f"clips/{i:04d}.wav", clip, 16000, subtype="FLOAT")
        lines.append(f"clips/{i:04d}.wav,clip number {i}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


ARGS = dict(sample_rate=SR, clip_seconds=1.0, shard_size=4, progress=False)


@pytest.fixture
def reference(tmp_path):
    manifest = many_clips(tmp_path / "data", 30)
    out = tmp_path / "reference"
    prepare(manifest, out, **ARGS)
    return manifest, out


@pytest.mark.parametrize("fail_after", [1, 6, 17])
def test_acceptance_b_interrupted_in_process(reference, tmp_path, monkeypatch, fail_after):
    manifest, ref = reference
    out = tmp_path / "resumed"
    real = prepare_module.audio_io.load_audio_timed
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > fail_after:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_module.audio_io, "load_audio_timed", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare(manifest, out, **ARGS)
    monkeypatch.setattr(prepare_module.audio_io, "load_audio_timed", real)
    assert not (out / DATASET_JSON).exists()
    prepare(manifest, out, **ARGS)
    assert_same_records(ref, out)


def test_acceptance_b_interrupted_between_rename_and_progress(reference, tmp_path, monkeypatch):
    """Killed after a shard was renamed but before progress.json listed it: the shard is redone."""
    manifest, ref = reference
    out = tmp_path / "resumed"
    real = prepare_module._write_json_atomic
    calls = {"n": 0}

    def dies_on_third(path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(prepare_module, "_write_json_atomic", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare(manifest, out, **ARGS)
    monkeypatch.setattr(prepare_module, "_write_json_atomic", real)
    assert len(json.loads((out / PROGRESS_JSON).read_text())["shards"]) == 2
    assert (out / "shard-00002.array_record").exists()  # renamed, not yet recorded
    prepare(manifest, out, **ARGS)
    assert_same_records(ref, out)


def cli(manifest, out):
    return [sys.executable, "-m", "jaxstage.cli", "prepare", "--manifest", str(manifest), "--out", str(out),
            "--sample-rate", str(SR), "--clip-seconds", "1", "--shard-size", "4"]


def test_acceptance_b_sigkill_cli(tmp_path):
    manifest = many_clips(tmp_path / "data", 400, bad_every=50)
    ref = tmp_path / "reference"
    prepare(manifest, ref, **ARGS)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cli(manifest, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / PROGRESS_JSON).exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "prepare never completed a shard"
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / DATASET_JSON).exists(), "the run finished before it could be killed"
    done = len(json.loads((out / PROGRESS_JSON).read_text())["shards"])
    assert 1 <= done < 100

    result = subprocess.run(cli(manifest, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "prepared" in result.stderr and "skipped 8" in result.stderr
    assert_same_records(ref, out)


# ------------------------------------------------------------------------------ encoders

def test_prepare_with_hf_encoders(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from hf_tiny import HUBERT_DIM, T5_DIM, hubert_frames, save_tiny_hubert, save_tiny_t5

    from jaxstage.data.encoders import HFAudioEncoder, HFTextEncoder

    t5 = save_tiny_t5(tmp_path / "t5")
    hubert = save_tiny_hubert(tmp_path / "hubert")
    manifest = many_clips(tmp_path / "data", 6)
    text = HFTextEncoder(t5, max_length=8)
    ssl = HFAudioEncoder(hubert, layers=(1, 2), sample_rate=SR)
    out = tmp_path / "prepared"
    meta = prepare(manifest, out, text_encoder=text, ssl_encoder=ssl, batch_size=2, **ARGS)
    _, order, records = read_records(out)
    frames = hubert_frames(16000)  # 1 s at the encoder's default 16 kHz
    assert len(order) == 5 and [s["id"] for s in meta["skipped"]] == ["clips/0003.wav"]
    assert meta["features"]["text_emb"] == {"shape": [8, T5_DIM], "dtype": "float32"}
    assert meta["features"]["text_mask"] == {"shape": [8], "dtype": "bool"}
    assert meta["features"]["ssl"] == {"shape": [frames, HUBERT_DIM], "dtype": "float32"}
    assert meta["encoders"]["text"] == {"model_dir": str(t5), "model_type": "t5", "max_length": 8, "dim": T5_DIM}
    assert meta["encoders"]["ssl"]["layers"] == [1, 2] and meta["encoders"]["ssl"]["dim"] == HUBERT_DIM
    assert meta["encoders"]["ssl"]["encoder_sample_rate"] == 16000
    rec = records["clips/0000.wav"]
    assert rec["text_mask"][:3].all() and not rec["text_mask"][3:].any()  # "clip number 0" -> 3 tokens
    assert not rec["text_emb"][3:].any() and np.abs(rec["text_emb"][:3]).sum() > 0
    assert np.all(np.isfinite(rec["ssl"]))
    # the same clip encoded alone equals the batched record (no cross-talk inside a batch)
    alone = ssl(rec["audio"][None], rec["audio_mask"][None])[0]
    np.testing.assert_allclose(alone, rec["ssl"], atol=1e-5)
    with pytest.raises(ValueError, match="ssl layer 6 out of range"):
        HFAudioEncoder(hubert, layers=(6, 7), sample_rate=SR)
