"""`evaluate_dirs` / `jaxstage eval --task sr`: JSON contents, band split, bad inputs, CLI exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, sosfiltfilt

from jaxstage.eval.sr_files import EvalError, evaluate_dirs

SR = 16000
INPUT_SR = 8000
N = SR // 2  # 0.5 s
REPO = Path(__file__).resolve().parents[2]


def _noise(seed: int, n: int = N) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(n)


def _lowpass(x: np.ndarray) -> np.ndarray:
    return sosfiltfilt(butter(8, INPUT_SR / 2, fs=SR, output="sos"), x)


def _write(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype="FLOAT" if path.suffix == ".wav" else "PCM_24")
    return path


def _dirs(tmp_path: Path, names=("a", "b")) -> tuple[Path, Path]:
    ref, est = tmp_path / "ref", tmp_path / "est"
    for i, name in enumerate(names):
        _write(ref / f"{name}.wav", _noise(i))
        _write(est / f"{name}.wav", _noise(i))
    return ref, est


def test_perfect_and_lowpassed_estimates(tmp_path):
    ref, est = tmp_path / "ref", tmp_path / "est"
    x, y = _noise(0), _noise(1)
    _write(ref / "perfect.wav", x)
    _write(est / "perfect.flac", x)  # paired by stem across formats (FLAC is 24-bit: tiny quantisation)
    _write(ref / "sub" / "low.wav", y)
    _write(est / "sub" / "low.wav", _lowpass(y))
    _write(est / "sub" / "extra.wav", y)  # an estimate without a reference is ignored
    out = evaluate_dirs(ref, est, INPUT_SR, progress=False)

    written = json.loads((est / "sr_eval.json").read_text())
    assert written == out
    assert (out["task"], out["input_sr"], out["sample_rate"], out["count"]) == ("sr", INPUT_SR, SR, 2)
    assert set(out["files"]) == {"perfect.wav", "sub/low.wav"}
    perfect, low = out["files"]["perfect.wav"], out["files"]["sub/low.wav"]
    assert perfect["lsd"] < 1e-3 and perfect["si_sdr"] > 100
    assert low["lsd_hf"] > 1.0 > low["lsd_lf"] and low["lsd_hf"] > low["lsd_lf"]
    for metric in ("lsd", "lsd_hf", "lsd_lf", "si_sdr"):
        assert out["mean"][metric] == pytest.approx(np.mean([perfect[metric], low[metric]]))


def test_exact_copy_gives_zero_lsd_and_capped_si_sdr_and_custom_out(tmp_path):
    ref, est = _dirs(tmp_path, names=("a",))
    out_file = tmp_path / "results" / "eval.json"
    evaluate_dirs(ref, est, INPUT_SR, out_file, progress=False)
    res = json.loads(out_file.read_text())
    assert res["files"]["a.wav"]["lsd"] == pytest.approx(0.0, abs=1e-9)
    assert res["mean"]["si_sdr"] == pytest.approx(200.0, abs=1e-6)
    assert not (est / "sr_eval.json").exists() and not list(out_file.parent.glob("*.tmp"))


def test_stereo_is_downmixed_with_a_note(tmp_path):
    ref, est = _dirs(tmp_path, names=("a",))
    x = _noise(0)
    _write(est / "a.wav", np.stack([x, x], axis=1))
    res = evaluate_dirs(ref, est, INPUT_SR, progress=False)
    assert res["files"]["a.wav"]["lsd"] == pytest.approx(0.0, abs=1e-9)
    assert "estimate downmixed from 2 channels" in res["files"]["a.wav"]["note"]


def _expect(tmp_path, match: str, *names: str, **kwargs) -> str:
    with pytest.raises(EvalError, match=match) as info:
        evaluate_dirs(tmp_path / "ref", tmp_path / "est", kwargs.pop("input_sr", INPUT_SR), progress=False, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    for name in names:
        assert name in msg
    assert not (tmp_path / "est" / "sr_eval.json").exists()
    return msg


def test_missing_estimate_names_the_file_unless_allowed(tmp_path):
    ref, est = _dirs(tmp_path)
    os.remove(est / "b.wav")
    _expect(tmp_path, "no matching estimate", str(ref / "b.wav"))
    res = evaluate_dirs(ref, est, INPUT_SR, progress=False, allow_missing=True)
    assert res["count"] == 1 and res["missing"] == ["b.wav"]


def test_missing_directory(tmp_path):
    _dirs(tmp_path)
    with pytest.raises(EvalError, match="estimate directory not found"):
        evaluate_dirs(tmp_path / "ref", tmp_path / "nope", INPUT_SR, progress=False)


def test_sample_rate_mismatch_names_both_files_and_rates(tmp_path):
    ref, est = _dirs(tmp_path)
    _write(est / "b.wav", _noise(1), sr=22050)
    _expect(tmp_path, "sample rate mismatch", str(ref / "b.wav"), str(est / "b.wav"), "16000 Hz", "22050 Hz")


def test_length_beyond_tolerance_names_file_and_lengths(tmp_path):
    ref, est = _dirs(tmp_path)
    _write(est / "b.wav", _noise(1, N + 200))  # tolerance is sr // 100 = 160 samples
    _expect(tmp_path, "length mismatch", str(ref / "b.wav"), str(N), str(N + 200))
    _write(est / "b.wav", _noise(1, N + 100))  # within tolerance: cut to the shorter
    assert evaluate_dirs(ref, est, INPUT_SR, progress=False)["count"] == 2


def test_silent_reference_names_the_file(tmp_path):
    ref, _ = _dirs(tmp_path)
    _write(ref / "b.wav", np.zeros(N))
    _expect(tmp_path, "silent reference", str(ref / "b.wav"))


def test_corrupt_file_names_the_file(tmp_path):
    _, est = _dirs(tmp_path)
    (est / "a.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    _expect(tmp_path, "unreadable audio", str(est / "a.wav"))


def test_input_sr_must_be_below_sample_rate(tmp_path):
    ref, _ = _dirs(tmp_path)
    _expect(tmp_path, "must be below", str(ref / "a.wav"), input_sr=SR)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxstage.cli", "eval", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_cli_success_prints_summary(tmp_path):
    ref, est = _dirs(tmp_path)
    proc = _cli("--task", "sr", "--ref", str(ref), "--est", str(est), "--input-sr", str(INPUT_SR))
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert "\n" not in line and "2 files" in line and "LSD-HF" in line and str(est / "sr_eval.json") in line
    assert json.loads((est / "sr_eval.json").read_text())["count"] == 2


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    ref, est = _dirs(tmp_path)
    _write(est / "b.wav", _noise(1), sr=22050)
    proc = _cli("--task", "sr", "--ref", str(ref), "--est", str(est), "--input-sr", str(INPUT_SR))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxstage eval: error: sample rate mismatch"), proc.stderr
    assert str(est / "b.wav") in lines[0]
