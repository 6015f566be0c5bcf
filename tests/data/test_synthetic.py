"""Synthetic text-to-audio generator: determinism, ranges, captions, data source, prompts."""

import pickle
import re

import numpy as np
import pytest

from jaxstage.data import synthetic
from jaxstage.data.synthetic import (
    ENVELOPES,
    PITCH_BANDS,
    RHYTHMS,
    SOURCES,
    ClipAttributes,
    SyntheticT2ASource,
    make_example,
    prompt_examples,
    prompt_set,
    render_clip,
    sample_attributes,
)

SAMPLE_RATE = 8000
NUM_SAMPLES = 8000


def _classes_mentioned(text: str, *tables: dict) -> set[str]:
    """Classes any of whose phrases (a leading 'with ' optional) occur in `text` as whole words."""
    found = set()
    for table in tables:
        for cls, phrases in table.items():
            for phrase in phrases:
                core = re.escape(phrase.removeprefix("with "))
                if re.search(rf"(?<![\w-]){core}(?![\w-])", text):
                    found.add(cls)
    return found


def test_make_example_is_deterministic_per_seed_and_index():
    a = make_example(3, 17, SAMPLE_RATE, NUM_SAMPLES, mix_prob=0.3)
    b = make_example(3, 17, SAMPLE_RATE, NUM_SAMPLES, mix_prob=0.3)
    np.testing.assert_array_equal(a["audio"], b["audio"])
    assert a["caption"] == b["caption"] and a["attributes"] == b["attributes"]
    other_index = make_example(3, 18, SAMPLE_RATE, NUM_SAMPLES, mix_prob=0.3)
    other_seed = make_example(4, 17, SAMPLE_RATE, NUM_SAMPLES, mix_prob=0.3)
    assert not np.array_equal(a["audio"], other_index["audio"])
    assert not np.array_equal(a["audio"], other_seed["audio"])


@pytest.mark.parametrize("sample_rate,num_samples", [(8000, 8000), (16000, 4000), (4000, 6000)])
def test_audio_is_finite_float32_mono_in_peak_range(sample_rate, num_samples):
    low, high = synthetic.DEFAULT_SETTINGS.peak_range
    for index in range(40):
        audio = make_example(0, index, sample_rate, num_samples, mix_prob=0.5)["audio"]
        assert audio.dtype == np.float32 and audio.shape == (num_samples,)
        assert np.all(np.isfinite(audio))
        assert low - 1e-4 <= np.max(np.abs(audio)) <= high + 1e-4


def test_caption_names_every_attribute_and_only_it():
    for index in range(200):
        example = make_example(1, index, SAMPLE_RATE, NUM_SAMPLES, mix_prob=0.3)
        text, attrs = example["caption"], example["attributes"]
        sources = {attrs["source"]} | ({attrs["source2"]} if attrs["source2"] else set())
        assert _classes_mentioned(text, synthetic.SOURCE_PHRASES) == sources, text
        assert _classes_mentioned(text, synthetic.PITCH_PHRASES) == {attrs["pitch_band"]}, text
        rhythm_tables = (synthetic.RHYTHM_PHRASES, synthetic.HIT_RHYTHM_PHRASES)
        assert _classes_mentioned(text, *rhythm_tables) == {attrs["rhythm"]}, text
        assert _classes_mentioned(text, synthetic.ENVELOPE_PHRASES) == {attrs["envelope"]}, text


def test_captions_vary_in_wording():
    attrs = ClipAttributes("square", "low", "fast_pulses", "fade_in")
    wordings = {synthetic.caption(attrs, np.random.default_rng(i)) for i in range(30)}
    assert len(wordings) > 5
    assert synthetic.caption(attrs) == "a low square tone with fast pulses, fading in"
    mixture = ClipAttributes("square", "low", "fast_pulses", "fade_in", source2="hits")
    assert synthetic.caption(mixture) == "a low square tone and fast percussive hits, fading in"


def test_sample_attributes_covers_all_classes_and_mixes_on_request():
    rng = np.random.default_rng(0)
    drawn = [sample_attributes(rng, mix_prob=0.0) for _ in range(400)]
    assert {a.source for a in drawn} == set(SOURCES)
    assert {a.pitch_band for a in drawn} == set(PITCH_BANDS)
    assert {a.rhythm for a in drawn} == set(RHYTHMS)
    assert {a.envelope for a in drawn} == set(ENVELOPES)
    assert all(a.source2 is None for a in drawn)
    mixed = [sample_attributes(rng, mix_prob=1.0) for _ in range(100)]
    assert all(a.source2 is not None and a.source2 != a.source for a in mixed)
    keys = ("source", "pitch_band", "rhythm", "envelope", "source2")
    assert mixed[0].to_dict() == {k: getattr(mixed[0], k) for k in keys}


@pytest.mark.parametrize("source", ["square", "sawtooth"])
def test_harmonic_tones_stay_band_limited(source):
    limit = synthetic.partial_limit_hz(SAMPLE_RATE)
    for seed in range(5):
        attrs = ClipAttributes(source, "high", "steady", "constant")
        audio = render_clip(attrs, SAMPLE_RATE, NUM_SAMPLES, np.random.default_rng(seed)).astype(np.float64)
        power = np.abs(np.fft.rfft(audio * np.hanning(audio.size))) ** 2
        freqs = np.fft.rfftfreq(audio.size, 1.0 / SAMPLE_RATE)
        assert power[freqs > limit + 20].sum() < 1e-6 * power.sum()
        assert power[freqs > 1.5 * freqs[np.argmax(power)]].sum() > 1e-3 * power.sum()  # has partials


def test_pitch_bands_are_ordered_and_scale_with_rate():
    for rate in (4000, 8000, 16000, 44100):
        low, mid, high = (synthetic.pitch_band_range(b, rate) for b in PITCH_BANDS)
        assert low[0] < low[1] < mid[0] < mid[1] < high[0] < high[1] < rate / 2
    assert synthetic.pitch_band_range("high", 4000)[1] == pytest.approx(synthetic.pitch_band_range("high", 8000)[1] / 2)
    assert synthetic.pitch_band_range("low", 44100) == synthetic.pitch_band_range("low", 8000)


def test_data_source_is_random_access_and_picklable():
    source = SyntheticT2ASource(seed=5, num_examples=12, sample_rate=SAMPLE_RATE, num_samples=4000, mix_prob=0.2)
    assert len(source) == 12
    restored = pickle.loads(pickle.dumps(source))
    for index in (0, 11):
        expected = make_example(5, index, SAMPLE_RATE, 4000, 0.2)
        np.testing.assert_array_equal(restored[index]["audio"], expected["audio"])
        assert source[index]["caption"] == expected["caption"]
    with pytest.raises(IndexError):
        source[12]


def test_prompt_set_is_deterministic_and_held_out():
    prompts = prompt_set(seed=0, n=10)
    assert prompts == prompt_set(seed=0, n=10) and len(prompts) == 10
    assert all(attrs["source2"] is None for _, attrs in prompts)
    examples = prompt_examples(seed=0, n=10, sample_rate=SAMPLE_RATE, num_samples=2000)
    assert [(e["caption"], e["attributes"]) for e in examples] == prompts
    training = [make_example(0, i, SAMPLE_RATE, 2000, 0.0) for i in range(10)]
    assert all(not np.array_equal(e["audio"], t["audio"]) for e, t in zip(examples, training))
    assert prompt_set(seed=1, n=10) != prompts
