"""Procedural text-to-audio clips: the offline default dataset.

Every clip is built from four attributes (plus an optional second source) and carries them next to
its caption, so generated audio can later be checked by signal analysis (`jaxstage.eval.attributes`).
Everything is deterministic in `(seed, index)`; nothing here touches files or jax.

Attribute semantics (all at the reference rate of 8 kHz; bands scale down for lower rates):
- **source**: sine; band-limited square / sawtooth (additive synthesis, partials below 0.95 Nyquist);
  white / pink / brown noise (power slope 0 / -3 / -6 dB per octave); rising / falling exponential
  sine sweep ("chirp"); percussive hits (exponentially decaying sine bursts).
- **pitch_band**: for tonal sources and hits, the fundamental range (low 70-220 Hz, mid 300-700 Hz,
  high 1000-2400 Hz; square and sawtooth stop where their third partial would pass 0.95 Nyquist);
  a chirp sweeps across its band (about an octave or more) and its geometric centre lies in the band.
  For noise the band is a +12 dB spectral emphasis (Gaussian in log-frequency, 0.5 octave wide) at
  the band's geometric centre, laid over the coloured spectrum so that the slope stays measurable.
- **rhythm**: steady = continuous; slow / fast pulses = on/off gating at about 2 / 7 Hz (duty 45-65 %,
  5 ms ramps). For hits the rhythm is the hit rate: slow 2 Hz, steady 4 Hz, fast 8 Hz; each hit
  decays with a 10-25 ms time constant, so hits stay clearly shorter than pulses.
- **envelope**: fade in / fade out = exponential ramp (linear in dB) over 30 dB; constant.
- **source2** (mixtures): a second source sharing pitch band, rhythm and envelope, 6 dB quieter.
Pulse and hit rates carry +-10 % jitter; the peak level is drawn in [0.5, 0.9]. All constants live in
`SynthSettings`, which `jaxstage.eval.attributes` reads to place its decision boundaries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

SOURCES = ("sine", "square", "sawtooth", "white_noise", "pink_noise", "brown_noise", "chirp_up", "chirp_down", "hits")
PITCH_BANDS = ("low", "mid", "high")
RHYTHMS = ("steady", "slow_pulses", "fast_pulses")
ENVELOPES = ("fade_in", "fade_out", "constant")

TONAL_SOURCES = ("sine", "square", "sawtooth")
NOISE_SOURCES = ("white_noise", "pink_noise", "brown_noise")
CHIRP_SOURCES = ("chirp_up", "chirp_down")

# Caption vocabulary. Phrases of different classes never share a whole phrase, so every attribute
# stays recoverable from the words.
SOURCE_PHRASES = {
    "sine": ("sine tone", "pure tone", "sine wave"),
    "square": ("square tone", "square wave"),
    "sawtooth": ("sawtooth tone", "sawtooth wave", "buzzy sawtooth tone"),
    "white_noise": ("white noise",),
    "pink_noise": ("pink noise",),
    "brown_noise": ("brown noise", "brownian noise"),
    "chirp_up": ("rising chirp", "upward sweep", "rising sweep"),
    "chirp_down": ("falling chirp", "downward sweep", "falling sweep"),
    "hits": ("percussive hits", "drum hits", "percussive knocks"),
}
PITCH_PHRASES = {
    "low": ("low", "low-pitched", "deep"),
    "mid": ("mid-pitched", "mid-range", "medium-pitched"),
    "high": ("high", "high-pitched", "bright"),
}
# Tonal and noise sources: "steady" is an adjective before the noun, pulses a phrase after it.
RHYTHM_PHRASES = {
    "steady": ("steady", "continuous", "sustained"),
    "slow_pulses": ("with slow pulses", "pulsing slowly", "in slow pulses"),
    "fast_pulses": ("with fast pulses", "pulsing quickly", "in rapid pulses"),
}
# Hits: the rhythm is an adjective of the hits themselves.
HIT_RHYTHM_PHRASES = {
    "steady": ("steady", "regular", "evenly spaced"),
    "slow_pulses": ("slow", "sparse", "widely spaced"),
    "fast_pulses": ("fast", "rapid", "quick"),
}
ENVELOPE_PHRASES = {
    "fade_in": ("fading in", "growing louder", "swelling in"),
    "fade_out": ("fading out", "getting quieter", "dying away"),
    "constant": ("at a constant volume", "at a constant level", "at an unchanging level"),
}


@dataclass(frozen=True)
class SynthSettings:
    """Every constant of the generator; the analyzer reads the same object to place its boundaries."""

    reference_rate: int = 8000  # bands below are in Hz at this rate and scale down for lower rates
    low_band_hz: tuple[float, float] = (70.0, 220.0)
    mid_band_hz: tuple[float, float] = (300.0, 700.0)
    high_band_hz: tuple[float, float] = (1000.0, 2400.0)
    partial_limit: float = 0.95  # partials stay below this fraction of Nyquist
    min_partials: int = 3  # square / sawtooth f0 keeps at least this many partials below the limit
    chirp_edge_jitter: float = 1.05  # sweep ends drawn within this factor inside the band edges
    noise_highpass_hz: float = 30.0
    noise_emphasis_db: float = 12.0
    noise_emphasis_octaves: float = 0.5  # standard deviation of the Gaussian emphasis
    slow_pulse_hz: float = 2.0
    fast_pulse_hz: float = 7.0
    pulse_duty: tuple[float, float] = (0.45, 0.65)
    pulse_ramp_s: float = 0.005
    slow_hit_hz: float = 2.0
    steady_hit_hz: float = 4.0
    fast_hit_hz: float = 8.0
    rate_jitter: float = 0.1  # rates drawn within +-10% of nominal
    hit_decay_s: tuple[float, float] = (0.01, 0.025)
    hit_first_onset_fraction: float = 0.5  # first hit lands in this leading part of a period
    fade_depth_db: float = 30.0
    mix_gain_db: float = -6.0
    peak_range: tuple[float, float] = (0.5, 0.9)


DEFAULT_SETTINGS = SynthSettings()


@dataclass(frozen=True)
class ClipAttributes:
    """What a clip is made of; `source2` is set only for two-source mixtures."""

    source: str
    pitch_band: str
    rhythm: str
    envelope: str
    source2: str | None = None

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


# -------------------------------------------------------------------------- Attributes and captions

def sample_attributes(rng: np.random.Generator, mix_prob: float) -> ClipAttributes:
    """Draw attributes uniformly; with probability `mix_prob` add a second, different source."""
    source, pitch_band, rhythm, envelope = (_pick(values, rng) for values in (SOURCES, PITCH_BANDS, RHYTHMS, ENVELOPES))
    source2 = _pick(tuple(s for s in SOURCES if s != source), rng) if rng.random() < mix_prob else None
    return ClipAttributes(source, pitch_band, rhythm, envelope, source2)


def _pick(options: tuple[str, ...], rng: np.random.Generator | None) -> str:
    """The first option without an rng (canonical wording), else a random one."""
    return options[0] if rng is None else options[rng.integers(len(options))]


def _with_article(phrase: str, source: str) -> str:
    """Prefix 'a'/'an' for countable sources; noise and hits take none."""
    if source in NOISE_SOURCES or source == "hits":
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _source_phrase(source: str, pitch: str | None, rhythm: str | None, rng: np.random.Generator | None) -> str:
    """Noun phrase for one source, optionally carrying the pitch and the rhythm words."""
    words = []
    if rhythm is not None and source == "hits":
        words.append(_pick(HIT_RHYTHM_PHRASES[rhythm], rng))
    elif rhythm == "steady":
        words.append(_pick(RHYTHM_PHRASES[rhythm], rng))
    if pitch is not None:
        words.append(_pick(PITCH_PHRASES[pitch], rng))
    words.append(_pick(SOURCE_PHRASES[source], rng))
    phrase = " ".join(words)
    if rhythm in ("slow_pulses", "fast_pulses") and source != "hits":
        phrase += " " + _pick(RHYTHM_PHRASES[rhythm], rng)
    return _with_article(phrase, source)


def caption(attrs: ClipAttributes, rng: np.random.Generator | None = None) -> str:
    """English caption naming every attribute, e.g. 'a low square tone with fast pulses, fading in'.

    With an rng the wording is drawn from synonym sets (`*_PHRASES`); without one it is canonical.
    In a mixture the rhythm is written once: on the hits if either source is hits, else after the pair.
    """
    envelope = _pick(ENVELOPE_PHRASES[attrs.envelope], rng)
    if attrs.source2 is None:
        return f"{_source_phrase(attrs.source, attrs.pitch_band, attrs.rhythm, rng)}, {envelope}"
    first = _source_phrase(attrs.source, attrs.pitch_band, attrs.rhythm if attrs.source == "hits" else None, rng)
    second = _source_phrase(attrs.source2, None, attrs.rhythm if attrs.source2 == "hits" else None, rng)
    text = f"{first} and {second}"
    if "hits" not in (attrs.source, attrs.source2):
        text += ", " + _pick(RHYTHM_PHRASES[attrs.rhythm], rng).removeprefix("with ")
    return f"{text}, {envelope}"


# --------------------------------------------------- Frequencies and rates shared with the analyzer

def rate_scale(sample_rate: int, settings: SynthSettings = DEFAULT_SETTINGS) -> float:
    """Factor applied to the reference-rate frequencies: 1 at or above the reference rate."""
    return min(1.0, sample_rate / settings.reference_rate)


def pitch_band_range(band: str, sample_rate: int, settings: SynthSettings = DEFAULT_SETTINGS) -> tuple[float, float]:
    """(low, high) fundamental range in Hz of a pitch band at `sample_rate`."""
    scale = rate_scale(sample_rate, settings)
    lo, hi = {"low": settings.low_band_hz, "mid": settings.mid_band_hz, "high": settings.high_band_hz}[band]
    return lo * scale, hi * scale


def band_centre_hz(band: str, sample_rate: int, settings: SynthSettings = DEFAULT_SETTINGS) -> float:
    """Geometric centre of a pitch band (noise emphasis centre, chirp centre)."""
    lo, hi = pitch_band_range(band, sample_rate, settings)
    return float(np.sqrt(lo * hi))


def band_boundaries_hz(sample_rate: int, settings: SynthSettings = DEFAULT_SETTINGS) -> tuple[float, float]:
    """Geometric midpoints between adjacent pitch bands: (low|mid, mid|high)."""
    low, mid, high = (pitch_band_range(b, sample_rate, settings) for b in PITCH_BANDS)
    return float(np.sqrt(low[1] * mid[0])), float(np.sqrt(mid[1] * high[0]))


def partial_limit_hz(sample_rate: int, settings: SynthSettings = DEFAULT_SETTINGS) -> float:
    """Highest frequency any synthesized partial may have."""
    return settings.partial_limit * sample_rate / 2


def noise_emphasis_db(freqs: np.ndarray, band: str, sample_rate: int,
                      settings: SynthSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """The pitch-band emphasis (dB) laid over noise spectra: a Gaussian bump in log-frequency."""
    octaves = np.log2(np.maximum(freqs, 1e-6) / band_centre_hz(band, sample_rate, settings))
    return settings.noise_emphasis_db * np.exp(-0.5 * (octaves / settings.noise_emphasis_octaves) ** 2)


def pulse_rate_hz(rhythm: str, settings: SynthSettings = DEFAULT_SETTINGS) -> float | None:
    """Nominal gating rate of a tonal/noise rhythm; None for steady."""
    return {"steady": None, "slow_pulses": settings.slow_pulse_hz, "fast_pulses": settings.fast_pulse_hz}[rhythm]


def hit_rate_hz(rhythm: str, settings: SynthSettings = DEFAULT_SETTINGS) -> float:
    """Nominal number of hits per second for a rhythm."""
    rates = {"slow_pulses": settings.slow_hit_hz, "steady": settings.steady_hit_hz, "fast_pulses": settings.fast_hit_hz}
    return rates[rhythm]


# ---------------------------------------------------------------------------------------- Rendering

def _fundamental_hz(source: str, band: str, sample_rate: int, rng: np.random.Generator,
                    settings: SynthSettings) -> float:
    """Log-uniform fundamental within the band; square/saw keep `min_partials` partials."""
    lo, hi = pitch_band_range(band, sample_rate, settings)
    if source in ("square", "sawtooth"):
        hi = min(hi, partial_limit_hz(sample_rate, settings) / settings.min_partials)
        lo = min(lo, hi)
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _additive_tone(f0: float, harmonics: np.ndarray, t: np.ndarray, limit_hz: float, phase: float) -> np.ndarray:
    """Sum of sin(n * f0) / n over the given harmonic numbers below `limit_hz`."""
    harmonics = harmonics[harmonics * f0 < limit_hz]
    return sum((np.sin(2 * np.pi * n * f0 * t + n * phase) / n for n in harmonics), np.zeros_like(t))


def _chirp(band: str, rising: bool, t: np.ndarray, duration: float, sample_rate: int, rng: np.random.Generator,
           settings: SynthSettings) -> np.ndarray:
    """Exponential sine sweep across the band (direction by `rising`)."""
    lo, hi = pitch_band_range(band, sample_rate, settings)
    start = lo * rng.uniform(1.0, settings.chirp_edge_jitter)
    end = hi / rng.uniform(1.0, settings.chirp_edge_jitter)
    if not rising:
        start, end = end, start
    ratio = end / start
    phase = 2 * np.pi * start * duration / np.log(ratio) * (ratio ** (t / duration) - 1.0)
    return np.sin(phase + rng.uniform(0, 2 * np.pi))


def _coloured_noise(colour_exponent: float, band: str, num_samples: int, sample_rate: int,
                    rng: np.random.Generator, settings: SynthSettings) -> np.ndarray:
    """Gaussian noise with power ~ f^-colour_exponent, high-passed, with the pitch-band emphasis."""
    freqs = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
    spectrum = rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)
    gain_db = noise_emphasis_db(freqs, band, sample_rate, settings)
    amplitude = np.maximum(freqs, 1e-6) ** (-colour_exponent / 2) * 10 ** (gain_db / 20)
    amplitude[freqs < settings.noise_highpass_hz * rate_scale(sample_rate, settings)] = 0.0
    return np.fft.irfft(spectrum * amplitude, n=num_samples)


def _hits(band: str, rate_hz: float, t: np.ndarray, sample_rate: int, rng: np.random.Generator,
          settings: SynthSettings) -> np.ndarray:
    """Exponentially decaying sine bursts at `rate_hz`, the first within the first part of a period."""
    f0 = _fundamental_hz("hits", band, sample_rate, rng, settings)
    decay_s = rng.uniform(*settings.hit_decay_s)
    period = 1.0 / rate_hz
    out = np.zeros_like(t)
    first_onset = rng.uniform(0, settings.hit_first_onset_fraction * period)
    for onset in np.arange(first_onset, t[-1] + 1.0 / sample_rate, period):
        since = t - onset
        active = since >= 0
        out[active] += np.sin(2 * np.pi * f0 * since[active]) * np.exp(-since[active] / decay_s)
    return out


def _pulse_gate(t: np.ndarray, rate_hz: float, rng: np.random.Generator, settings: SynthSettings) -> np.ndarray:
    """On/off gate (trapezoid with short ramps) at `rate_hz` with random duty and phase."""
    duty = rng.uniform(*settings.pulse_duty)
    cycle = (t * rate_hz + rng.uniform()) % 1.0
    seconds_to_edge = np.minimum(cycle, duty - cycle) / rate_hz
    return np.where(cycle < duty, np.clip(seconds_to_edge / settings.pulse_ramp_s, 0.0, 1.0), 0.0)


def _jittered(rate_hz: float, rng: np.random.Generator, settings: SynthSettings) -> float:
    return rate_hz * rng.uniform(1 - settings.rate_jitter, 1 + settings.rate_jitter)


def _render_source(source: str, attrs: ClipAttributes, sample_rate: int, num_samples: int,
                   rng: np.random.Generator, settings: SynthSettings) -> np.ndarray:
    """One source with its rhythm applied, peak-normalized to 1."""
    t = np.arange(num_samples) / sample_rate
    duration = num_samples / sample_rate
    limit = partial_limit_hz(sample_rate, settings)
    if source == "hits":
        rate = _jittered(hit_rate_hz(attrs.rhythm, settings), rng, settings)
        signal = _hits(attrs.pitch_band, rate, t, sample_rate, rng, settings)
    else:
        if source in TONAL_SOURCES:
            f0 = _fundamental_hz(source, attrs.pitch_band, sample_rate, rng, settings)
            step = 2 if source == "square" else 1  # square: odd harmonics only
            harmonics = np.array([1]) if source == "sine" else np.arange(1, max(1, int(limit // f0)) + 1, step)
            signal = _additive_tone(f0, harmonics, t, limit, rng.uniform(0, 2 * np.pi))
        elif source in CHIRP_SOURCES:
            signal = _chirp(attrs.pitch_band, source == "chirp_up", t, duration, sample_rate, rng, settings)
        else:
            exponent = {"white_noise": 0.0, "pink_noise": 1.0, "brown_noise": 2.0}[source]
            signal = _coloured_noise(exponent, attrs.pitch_band, num_samples, sample_rate, rng, settings)
        rate = pulse_rate_hz(attrs.rhythm, settings)
        if rate is not None:
            signal = signal * _pulse_gate(t, _jittered(rate, rng, settings), rng, settings)
    return signal / max(np.max(np.abs(signal)), 1e-12)


def _envelope_gain(envelope: str, num_samples: int, settings: SynthSettings) -> np.ndarray:
    """Fade-in / fade-out as a linear-in-dB ramp over `fade_depth_db`; ones for constant."""
    position = np.linspace(0.0, 1.0, num_samples)
    ramp_db = {"fade_in": position - 1.0, "fade_out": -position, "constant": np.zeros_like(position)}[envelope]
    return 10 ** (settings.fade_depth_db * ramp_db / 20)


def render_clip(attrs: ClipAttributes, sample_rate: int, num_samples: int, rng: np.random.Generator,
                settings: SynthSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """Render the attributes as float32 mono audio, peak in `settings.peak_range`."""
    mix = _render_source(attrs.source, attrs, sample_rate, num_samples, rng, settings)
    if attrs.source2 is not None:
        second = _render_source(attrs.source2, attrs, sample_rate, num_samples, rng, settings)
        mix = mix + 10 ** (settings.mix_gain_db / 20) * second
    mix = mix * _envelope_gain(attrs.envelope, num_samples, settings)
    peak = rng.uniform(*settings.peak_range)
    return (mix * peak / max(np.max(np.abs(mix)), 1e-12)).astype(np.float32)


# -------------------------------------------------------- Examples, data source, evaluation prompts

PROMPT_STREAM = 2**31 - 1  # middle seed word of evaluation prompts; training streams are [seed, index]


def _example_from_rng(rng: np.random.Generator, sample_rate: int, num_samples: int, mix_prob: float,
                      settings: SynthSettings) -> dict:
    """Attributes, caption, audio: drawn from `rng` in this order; plus the clip's timing (the whole
    clip: it starts at 0 s and lasts `num_samples / sample_rate` s)."""
    attrs = sample_attributes(rng, mix_prob)
    text = caption(attrs, rng)
    audio = render_clip(attrs, sample_rate, num_samples, rng, settings)
    return {"audio": audio, "caption": text, "attributes": attrs.to_dict(), **clip_timing(num_samples, sample_rate)}


def clip_timing(num_samples: int, sample_rate: int, start_sample: int = 0,
                total_samples: int | None = None) -> dict[str, float]:
    """`seconds_start` / `seconds_total` of a clip (stable-audio-tools' timing conditions): where the
    clip starts in its file and how long the whole file is (default: the clip is the whole file)."""
    total = num_samples if total_samples is None else total_samples
    return {"seconds_start": start_sample / sample_rate, "seconds_total": total / sample_rate}


def make_example(seed: int, index: int, sample_rate: int, num_samples: int, mix_prob: float,
                 settings: SynthSettings = DEFAULT_SETTINGS) -> dict:
    """`{"audio": float32[num_samples], "caption": str, "attributes": dict, "seconds_start": 0.0,
    "seconds_total": float}`, deterministic in (seed, index)."""
    return _example_from_rng(np.random.default_rng([seed, index]), sample_rate, num_samples, mix_prob, settings)


@dataclass(frozen=True)
class SyntheticT2ASource:
    """Random-access source (grain `RandomAccessDataSource` protocol) of synthetic examples."""

    seed: int
    num_examples: int
    sample_rate: int
    num_samples: int
    mix_prob: float
    settings: SynthSettings = dataclasses.field(default=DEFAULT_SETTINGS, repr=False)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for {self.num_examples} examples")
        return make_example(self.seed, index, self.sample_rate, self.num_samples, self.mix_prob, self.settings)


def _prompt_rng(seed: int, i: int) -> np.random.Generator:
    """Evaluation stream, disjoint from the training streams `[seed, index]`."""
    return np.random.default_rng([seed, PROMPT_STREAM, i])


def prompt_set(seed: int, n: int, mix_prob: float = 0.0) -> list[tuple[str, dict]]:
    """Held-out evaluation prompts: `n` (caption, attributes dict) pairs."""
    prompts = []
    for i in range(n):
        rng = _prompt_rng(seed, i)
        attrs = sample_attributes(rng, mix_prob)
        prompts.append((caption(attrs, rng), attrs.to_dict()))
    return prompts


def prompt_examples(seed: int, n: int, sample_rate: int, num_samples: int, mix_prob: float = 0.0,
                    settings: SynthSettings = DEFAULT_SETTINGS) -> list[dict]:
    """The `prompt_set` prompts with reference audio rendered (same captions and attributes)."""
    return [_example_from_rng(_prompt_rng(seed, i), sample_rate, num_samples, mix_prob, settings) for i in range(n)]
