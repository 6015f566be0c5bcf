"""Signal-analysis attribute recovery on the generator's own clips (clean and noisy)."""

import numpy as np
import pytest

from jaxstage.data.synthetic import ENVELOPES, PITCH_BANDS, RHYTHMS, SOURCES, make_example
from jaxstage.eval.attributes import analyze, attribute_accuracy, chance_levels

SAMPLE_RATE = 8000
NUM_CLIPS = 150
CLEAN_FLOOR = {"source": 0.9, "pitch_band": 0.9, "rhythm": 0.9, "envelope": 0.9}  # measured: 1.0 each
NOISY_FLOOR = {"source": 0.9, "pitch_band": 0.85, "rhythm": 0.85, "envelope": 0.85}  # measured: >= 0.99


@pytest.fixture(scope="module")
def clips():
    examples = [make_example(2024, i, SAMPLE_RATE, SAMPLE_RATE, mix_prob=0.0) for i in range(NUM_CLIPS)]
    return np.stack([e["audio"] for e in examples]), [e["attributes"] for e in examples]


@pytest.fixture(scope="module")
def clean_predictions(clips):
    return [analyze(clip, SAMPLE_RATE) for clip in clips[0]]


def _with_white_noise(audio: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    power = np.mean(audio.astype(np.float64) ** 2, axis=1, keepdims=True)
    return audio + rng.standard_normal(audio.shape) * np.sqrt(power / 10 ** (snr_db / 10))


def test_clean_clips_are_recovered(clips, clean_predictions):
    accuracy = attribute_accuracy(clean_predictions, clips[1])
    for key, floor in CLEAN_FLOOR.items():
        assert accuracy[key] >= floor, accuracy


def test_recovery_survives_white_noise_at_20_db(clips):
    audio, truth = clips
    noisy = _with_white_noise(audio, 20.0, seed=7)
    accuracy = attribute_accuracy([analyze(clip, SAMPLE_RATE) for clip in noisy], truth)
    for key, floor in NOISY_FLOOR.items():
        assert accuracy[key] >= floor, accuracy


def test_every_source_class_is_predicted(clips, clean_predictions):
    assert {p["source"] for p in clean_predictions} == {t["source"] for t in clips[1]} == set(SOURCES)


def test_mismatched_references_score_near_chance(clips, clean_predictions):
    truth = clips[1]
    shifted = attribute_accuracy(clean_predictions, truth[1:] + truth[:1])
    assert shifted["source"] < 3 * chance_levels()["source"]


def test_other_rates_and_lengths_work():
    examples = [make_example(9, i, 16000, 24000, mix_prob=0.0) for i in range(36)]
    accuracy = attribute_accuracy([analyze(e["audio"], 16000) for e in examples], [e["attributes"] for e in examples])
    assert min(accuracy.values()) >= 0.85, accuracy


DEGENERATE = [np.zeros(8000), np.zeros(50), np.full(8000, np.nan), np.ones(8000),
              np.random.default_rng(0).standard_normal(300)]


@pytest.mark.parametrize("audio", DEGENERATE)
def test_degenerate_input_gives_valid_labels(audio):
    result = analyze(audio, SAMPLE_RATE)
    assert result["source"] in SOURCES and result["pitch_band"] in PITCH_BANDS
    assert result["rhythm"] in RHYTHMS and result["envelope"] in ENVELOPES


def test_attribute_accuracy_and_chance_levels():
    truth = [{"source": "sine", "pitch_band": "low", "rhythm": "steady", "envelope": "constant"}] * 4
    predicted = [dict(t) for t in truth]
    predicted[0]["source"] = "square"
    predicted[1]["envelope"] = "fade_in"
    predicted[2]["envelope"] = "fade_out"
    assert attribute_accuracy(predicted, truth) == {"source": 0.75, "pitch_band": 1.0, "rhythm": 1.0, "envelope": 0.5}
    assert attribute_accuracy(predicted, truth, keys=("source",)) == {"source": 0.75}
    with pytest.raises(ValueError):
        attribute_accuracy(predicted[:2], truth)
    assert chance_levels() == pytest.approx({"source": 1 / 9, "pitch_band": 1 / 3, "rhythm": 1 / 3, "envelope": 1 / 3})
