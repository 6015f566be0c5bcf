"""The held-out prompt and clip sets (jaxstage.eval.held_out), and the run outputs built on them:
which prompts and seeds the samples and the end-of-run attribute check generate, without a model."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from jaxstage.config import load_config
from jaxstage.data.synthetic import prompt_examples, prompt_set
from jaxstage.eval.held_out import held_out_prompts, sample_prompts, sr_clips
from jaxstage.eval.run_outputs import attribute_check, write_samples

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")


class FakeGenerator:
    """Records (captions, seed) per call and returns each caption's reference clip (a perfect model)."""

    def __init__(self, cfg):
        examples = prompt_examples(cfg.sample.seed + 1, 64, cfg.data.sample_rate, cfg.num_samples)
        self.clips = {e["caption"]: e["audio"] for e in examples}
        self.n = cfg.num_samples
        self.calls = []

    def __call__(self, params, stats, prompts, *, sampler=None, steps=None, cfg_scale=None, seed=0):
        self.calls.append((list(prompts), seed))
        return np.stack([self.clips.get(p, np.zeros(self.n, np.float32)) for p in prompts])


class FakeLogger:
    def __init__(self):
        self.lines, self.audio_calls = [], []

    def info(self, line):
        self.lines.append(line)

    def audio(self, step, labels, audio, sample_rate):
        self.audio_calls.append((step, list(labels), audio.shape))


@pytest.fixture(scope="module")
def cfg():
    return load_config(TINY, ["sample.num=1", "sample.final_eval_prompts=19", "sample.seed=5"])


STATE = SimpleNamespace(step=7, params=None, ema_params=None, codec_stats=None)


def test_evaluation_prompts_are_the_synthetic_held_out_set(cfg):
    prompts = held_out_prompts(cfg, 6)
    truth = prompt_set(cfg.sample.seed + 1, 6)
    assert prompts.captions == [c for c, _ in truth] and prompts.attributes == [a for _, a in truth]
    assert prompts.references.shape == (6, cfg.num_samples)
    assert prompts.source == "synthetic held-out, seed 6"
    assert held_out_prompts(cfg, 3).captions == prompts.captions[:3]  # the periodic set is a prefix
    with pytest.raises(ValueError, match="at least one prompt"):
        held_out_prompts(cfg, 0)


def test_prompts_file_and_sample_prompts(cfg, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text(" a sine \n\na square\nthird\n")
    free = held_out_prompts(cfg, 2, path)
    assert free.captions == ["a sine", "a square"] and free.references is None and free.source == str(path)
    samples = sample_prompts(cfg, 3)
    assert samples.captions == [c for c, _ in prompt_set(cfg.sample.seed, 3)] and samples.references is None


def test_attribute_check_generates_the_held_out_prompts_with_the_old_seeds(cfg, tmp_path):
    gen, logger = FakeGenerator(cfg), FakeLogger()
    accuracy = attribute_check(logger, gen, STATE, cfg, tmp_path)
    truth = [c for c, _ in prompt_set(cfg.sample.seed + 1, 19)]
    # chunks of sample.num * 8 prompts, chunk i seeded sample.seed + i (the last chunk padded by wrapping)
    assert [seed for _, seed in gen.calls] == [5, 13, 21]
    first, second, last = (p for p, _ in gen.calls)
    assert first + second + last[:3] == truth and last[3:] == truth[:5]
    report = json.loads((tmp_path / "attributes.json").read_text())
    assert set(report) == {"step", "num_prompts", "sampler", "steps", "cfg_scale", "accuracy", "chance"}
    assert report["step"] == 7 and report["num_prompts"] == 19 and report["accuracy"] == accuracy
    # scored in prompt order against the prompts' own attributes (the fake model returns the references)
    from jaxstage.eval.attributes import analyze, attribute_accuracy

    held = held_out_prompts(cfg, 19)
    expected = attribute_accuracy([analyze(a, cfg.data.sample_rate) for a in held.references], held.attributes)
    assert accuracy == expected
    assert logger.lines[0].startswith("attribute accuracy of generated audio: source")


def test_write_samples_generates_the_sample_prompts_at_seed_plus_step(cfg):
    gen, logger = FakeGenerator(cfg), FakeLogger()
    write_samples(logger, gen, STATE, load_config(TINY, ["sample.num=3", "sample.seed=5"]), 40)
    captions = [c for c, _ in prompt_set(5, 3)]
    assert gen.calls == [(captions, 45)]
    assert logger.audio_calls == [(40, captions, (3, cfg.num_samples))]


def test_sr_clips_start_after_the_monitor_clips():
    from jaxstage.data.pipeline import sr_held_out_batch

    sr = load_config(TINY, ["task=sr", "data.source=synthetic_speech", "data.sample_rate=8000",
                            "sample.cfg_scale=1", "sr.cutoff_min_hz=1000", "sr.cutoff_max_hz=3000",
                            "regime.monitor_size=4"])
    clips = sr_clips(sr, 2)
    expected = sr_held_out_batch(sr, 2, offset=4)
    assert set(clips) >= {"audio", "low", "cutoff"}
    for key in expected:
        np.testing.assert_array_equal(clips[key], expected[key])
    second = sr_clips(sr, 2, skip=2)  # a disjoint second set (the convergence study's evaluation-noise check)
    np.testing.assert_array_equal(second["audio"], sr_held_out_batch(sr, 2, offset=6)["audio"])
    assert not np.array_equal(second["audio"], clips["audio"])
