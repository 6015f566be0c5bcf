"""SR sampling: windowing, the generator on a trained tiny SR run, the end-of-run LSD report and
`jaxstage sample --input` (one file, a folder, and bad inputs with one-line errors naming the file)."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxstage.cli import main
from jaxstage.config import load_config
from jaxstage.inference.sr_sampling import crossfade_windows, split_windows
from jaxstage.train.trainer import train

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
SR = ["task=sr", "data.source=synthetic_speech", "data.sample_rate=8000", "sample.cfg_scale=1",
      "sr.cutoff_min_hz=1000", "sr.cutoff_max_hz=3000", "sr.replace_n_fft=256", "sr.window_overlap_seconds=0.05"]


@pytest.mark.parametrize("length,window,overlap", [(100, 64, 16), (64, 64, 16), (10, 64, 8), (1000, 64, 0),
                                                   (129, 64, 32)])
def test_windows_cover_the_signal_and_crossfade_back_exactly(length, window, overlap):
    x = np.random.default_rng(length).normal(size=length).astype(np.float32)
    windows = split_windows(x, window, overlap)
    assert windows.shape[1] == window
    assert (windows.shape[0] - 1) * (window - overlap) + window >= length
    np.testing.assert_allclose(crossfade_windows(windows, overlap, length), x, atol=1e-6)


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    """A tiny SR run: 4 adaptive steps, samples at step 2, the end-of-run check on 4 held-out clips."""
    run = tmp_path_factory.mktemp("sr") / "run"
    sets = SR + ["regime.mode=adaptive", "regime.every=2", "regime.monitor_size=4", "guidance.lambda0=0.5",
                 "guidance.hidden=32", "timesteps.adaptive=true", "train.steps=4", "train.log_every=2",
                 "train.progress_bar=false", "data.num_examples=64", "codec.stats_examples=4", "sample.every=2",
                 "sample.num=1", "sample.final_eval_prompts=4"]
    result = train(load_config(TINY, sets), run)
    return run, result


def test_end_of_run_report_scores_output_replacement_and_input(sr_run):
    run, result = sr_run
    report = json.loads((run / "sr_eval.json").read_text())
    assert result.sr_eval["mean"] == report["mean"]
    assert report["count"] == 4 and len(report["per_clip"]) == 4
    for name in ("output", "output_replaced", "input"):
        for key in ("lsd", "lsd_hf", "lsd_lf", "si_sdr"):
            assert np.isfinite(report["mean"][name][key]), (name, key)
    for clip in report["per_clip"]:
        assert 1000 <= clip["cutoff_hz"] <= 3000
    # an untrained model's low band is wrong; replacement puts the input's back
    mean = report["mean"]
    assert mean["output_replaced"]["lsd_lf"] < mean["output"]["lsd_lf"]
    # samples: input / output / reference per clip, at step 2 and at the end
    for step in (2, 4):
        names = sorted(p.name for p in (run / "samples").glob(f"step{step:07d}_*.wav"))
        assert [n.split("-")[1] for n in names] == ["input", "output", "reference"], names


def _write(path: Path, audio: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, subtype="FLOAT" if path.suffix == ".wav" else None)
    return path


def _speechy(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def test_sample_cli_super_resolves_a_file_of_any_length_and_a_folder(sr_run, tmp_path, capsys):
    run, _ = sr_run
    low = _write(tmp_path / "low.wav", _speechy(0.6, 4000), 4000)  # 2.4 training clips at 8 kHz
    out = tmp_path / "high.wav"
    assert main(["sample", "--workdir", str(run), "--input", str(low), "--out", str(out)]) == 0
    audio, rate = sf.read(str(out))
    assert rate == 8000 and audio.shape == (4800,) and np.all(np.isfinite(audio))
    assert "cutoff 2000 Hz" in capsys.readouterr().err
    # same seed, same output; a folder mirrors its files as .wav
    folder = tmp_path / "in"
    _write(folder / "a.wav", _speechy(0.3, 4000, 1), 4000)
    _write(folder / "sub" / "b.flac", _speechy(0.2, 8000, 2), 8000)
    code = main(["sample", "--workdir", str(run), "--input", str(folder), "--out", str(tmp_path / "out"),
                 "--cutoff", "2000", "--no-replace-low-band"])
    assert code == 0
    assert sf.info(str(tmp_path / "out" / "a.wav")).frames == 2400
    assert sf.info(str(tmp_path / "out" / "sub" / "b.wav")).frames == 1600
    assert main(["sample", "--workdir", str(run), "--input", str(low), "--out", str(tmp_path / "again.wav")]) == 0
    np.testing.assert_array_equal(sf.read(str(out))[0], sf.read(str(tmp_path / "again.wav"))[0])


def test_sample_cli_bad_inputs_give_one_line_errors_naming_the_file(sr_run, tmp_path, capsys):
    run, _ = sr_run
    ok = _write(tmp_path / "ok.wav", _speechy(0.3, 4000), 4000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wav file at all")
    cases = [
        (["--input", str(tmp_path / "missing.wav")], "missing.wav", "not found"),
        (["--input", str(corrupt)], "corrupt.wav", "unreadable"),
        (["--input", str(_write(tmp_path / "silent.wav", np.zeros(2000, np.float32), 4000))], "silent.wav", "silent"),
        (["--input", str(_write(tmp_path / "hi.wav", _speechy(0.3, 16000), 16000))], "hi.wav",
         "above the model's 8000 Hz"),
        (["--input", str(_write(tmp_path / "same.wav", _speechy(0.3, 8000), 8000))], "same.wav", "--cutoff"),
        (["--input", str(ok), "--cutoff", "3000"], "ok.wav", "cutoff 3000 Hz must be"),
        (["--prompt", "a sine"], str(run), "give --input"),
        (["--input", str(ok), "--cfg", "3"], "--cfg 3", "without classifier-free guidance"),
    ]
    for extra, named, reason in cases:
        capsys.readouterr()
        code = main(["sample", "--workdir", str(run), "--out", str(tmp_path / "x.wav")] + extra)
        err = capsys.readouterr().err.strip()
        assert code == 2, (extra, err)
        assert len(err.splitlines()) == 1 and named in err and reason in err, err
    assert not (tmp_path / "x.wav").exists()
    capsys.readouterr()
    assert main(["sample", "--workdir", str(tmp_path / "nowhere"), "--input", str(ok), "--out", "x.wav"]) == 2
    assert "not a jaxstage run directory" in capsys.readouterr().err


def test_eval_workdir_scores_held_out_clips(sr_run, tmp_path, capsys):
    run, _ = sr_run
    out = tmp_path / "eval.json"
    assert main(["eval", "--task", "sr", "--workdir", str(run), "--n", "2", "--steps", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["count"] == 2 and report["steps"] == 2
    assert set(report["mean"]) == {"output", "output_replaced", "input", "oracle_noise_fill"}
    assert "output_replaced" in capsys.readouterr().out
    for argv, message in [(["--workdir", str(run), "--ref", str(tmp_path)], "drop --ref"),
                          (["--workdir", str(tmp_path)], "not a jaxstage run directory"),
                          (["--workdir", str(run), "--n", "0"], "at least one"),
                          ([], "needs --ref DIR and --est DIR")]:
        assert main(["eval", "--task", "sr"] + argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
