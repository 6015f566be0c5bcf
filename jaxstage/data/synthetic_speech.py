"""Procedural speech-like full-band audio: the offline data source for super-resolution (SPEC §4 SR).

An utterance is a sequence of "syllables": an optional onset consonant (a fricative, or a plosive:
closure silence, noise burst, aspiration), a voiced nucleus, an optional fricative coda, then a
silent gap. The signal is built so that its high band is structured and largely predictable from the
low band, as in real speech:
- **voiced source**: a band-limited harmonic series (closed-form Dirichlet sum; every harmonic up to
  `partial_limit` of Nyquist, the top one faded in continuously as f0 moves) with a slow pitch
  contour (declination, per-syllable accents, vibrato), per-cycle jitter and shimmer, and
  pitch-synchronous breath noise at a drawn harmonics-to-noise ratio;
- **vocal tract**: a spectral tilt (dB/octave above a corner, steepening above a second corner)
  times 3-5 formant resonances (pole/zero peaking sections: unit gain away from the formant) whose
  centres glide linearly between vowel targets (vowel table scaled by a vocal-tract factor tied to
  f0), applied frame by frame in a sqrt-Hann STFT with 50 % overlap (exact overlap-add);
- **noise events**: fricatives, plosive bursts and aspiration, each white noise shaped by a static
  log-Gaussian band (e.g. "s" around 6.5 kHz, "sh" around 3.2 kHz) with raised-cosine ramps;
- a per-syllable amplitude envelope, a very low noise floor, and peak normalization to `peak_level`.

Everything is vectorized numpy apart from a short loop over syllables / noise events, and every
constant is a field of `SpeechSettings`. An utterance is a pure function of `(rng, sample_rate,
num_samples, settings)`; `SyntheticSpeechSource` seeds the rng from `(seed, index)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from jaxstage.data.synthetic import clip_timing

# (F1, F2, F3) of adult male vowels in Hz (Hillenbrand et al. 1995, rounded): i ɪ ɛ æ ɑ ɔ ʊ u ʌ ɝ.
VOWEL_FORMANTS_HZ = (
    (340.0, 2320.0, 3000.0), (430.0, 2020.0, 2660.0), (580.0, 1800.0, 2600.0), (590.0, 1950.0, 2600.0),
    (770.0, 1330.0, 2680.0), (650.0, 1000.0, 2600.0), (470.0, 1120.0, 2430.0), (380.0, 950.0, 2300.0),
    (620.0, 1220.0, 2550.0), (470.0, 1380.0, 1650.0),
)
# Noise bands: (name, centre Hz, width in octaves = std of the log-Gaussian, level dB).
FRICATIVES = (("s", 6500.0, 0.55, 0.0), ("sh", 3200.0, 0.5, 0.0), ("f", 5000.0, 1.5, -8.0),
              ("th", 6000.0, 1.7, -10.0), ("h", 1800.0, 1.2, -8.0))
PLOSIVE_BURSTS = (("p", 1200.0, 1.8, -4.0), ("t", 4500.0, 0.8, 0.0), ("k", 2300.0, 0.6, 0.0))


@dataclass(frozen=True)
class SpeechSettings:
    """Every constant of the speech-like generator (ranges are drawn uniformly unless noted)."""

    peak_level: float = 0.9  # output peak amplitude
    # Pitch
    f0_range_hz: tuple[float, float] = (80.0, 300.0)  # base f0 drawn log-uniformly; contour clipped here
    declination_st: tuple[float, float] = (0.0, 4.0)  # linear fall over the utterance, semitones
    accent_st: float = 2.0  # std of the per-syllable pitch accent, semitones
    pitch_smooth_s: float = 0.06  # box smoothing of the accent contour
    vibrato_hz: tuple[float, float] = (4.0, 7.0)
    vibrato_st: tuple[float, float] = (0.0, 0.3)
    jitter: tuple[float, float] = (0.002, 0.012)  # per-cycle relative f0 std
    shimmer: tuple[float, float] = (0.01, 0.06)  # per-cycle relative amplitude std
    partial_limit: float = 0.95  # harmonics stay below this fraction of Nyquist
    # Source spectrum
    tilt_db_per_oct: tuple[float, float] = (5.0, 8.0)  # above tilt_corner_hz
    tilt_corner_hz: tuple[float, float] = (150.0, 400.0)
    extra_tilt_db_per_oct: tuple[float, float] = (0.0, 6.0)  # added above extra_corner_hz
    extra_corner_hz: tuple[float, float] = (2000.0, 5000.0)
    highpass_hz: float = 60.0  # second-order high-pass of the voiced path
    hnr_db: tuple[float, float] = (12.0, 30.0)  # harmonics-to-breath-noise ratio at low frequency
    breath_tilt_relief_db_per_oct: float = 3.0  # breath noise falls this much slower than harmonics
    breath_modulation: float = 0.8  # depth of the pitch-synchronous breath-noise modulation
    # Vocal tract
    num_formants: tuple[int, int] = (3, 5)  # inclusive range; F4, F5 from higher_formants_hz
    higher_formants_hz: tuple[float, float] = (3400.0, 4300.0)
    formant_bandwidths_hz: tuple[float, ...] = (70.0, 100.0, 140.0, 200.0, 260.0)
    bandwidth_scale: tuple[float, float] = (0.8, 1.5)
    formant_gain_db: tuple[float, float] = (8.0, 18.0)  # peak gain of each resonance, drawn per formant
    formant_jitter: float = 0.06  # relative perturbation of every formant target
    tract_scale: tuple[float, float] = (0.95, 1.25)  # formant scale at the low / high end of f0_range
    tract_scale_jitter: float = 0.05
    diphthong_prob: float = 0.35  # nucleus glides to a second vowel target
    stft_frame_s: float = 0.032  # filtering frame (hop = half)
    # Syllable timing (seconds)
    lead_silence_s: tuple[float, float] = (0.0, 0.1)
    vowel_s: tuple[float, float] = (0.08, 0.25)
    vowel_attack_s: tuple[float, float] = (0.01, 0.03)
    vowel_release_s: tuple[float, float] = (0.02, 0.06)
    syllable_level_db: tuple[float, float] = (-8.0, 0.0)
    gap_s: tuple[float, float] = (0.02, 0.18)
    onset_probs: tuple[float, float, float] = (0.25, 0.45, 0.3)  # none, fricative, plosive
    coda_prob: float = 0.35  # fricative after the nucleus
    fricative_s: tuple[float, float] = (0.06, 0.16)
    fricative_ramp_s: tuple[float, float] = (0.01, 0.03)
    fricative_level_db: tuple[float, float] = (-12.0, -3.0)  # re voiced RMS, plus the table's level
    voiced_fricative_prob: float = 0.3  # fricative carries voicing (z, zh, v)
    voiced_fricative_level_db: float = -10.0
    closure_s: tuple[float, float] = (0.02, 0.07)
    burst_s: tuple[float, float] = (0.005, 0.02)
    burst_attack_s: float = 0.001
    burst_level_db: tuple[float, float] = (-6.0, 0.0)
    aspiration_s: tuple[float, float] = (0.0, 0.05)
    aspiration_level_db: tuple[float, float] = (-18.0, -8.0)
    noise_centre_jitter: float = 0.15  # relative perturbation of a noise band centre / width
    noise_band_floor_db: float = -40.0  # floor of a noise band's shape
    noise_floor_db: float = -60.0  # white background noise re voiced RMS


DEFAULT_SETTINGS = SpeechSettings()


@dataclass(frozen=True)
class Utterance:
    """Rendered audio and its per-sample ground-truth tracks."""

    audio: np.ndarray  # float32 [N], peak = settings.peak_level
    f0_hz: np.ndarray  # [N] pitch contour (defined everywhere, meaningful where voiced)
    voicing: np.ndarray  # [N] voiced amplitude envelope (linear, max 1)
    frication: np.ndarray  # [N] noise-event amplitude envelope (linear, re voiced RMS)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _db(value_db: float) -> float:
    return 10.0 ** (value_db / 20.0)


def _ramp_envelope(length: int, attack: int, release: int) -> np.ndarray:
    """Ones with raised-cosine attack and release ramps (clipped to the length; a zero-length ramp is empty)."""
    env = np.ones(length)
    attack, release = min(attack, length), min(release, length)
    env[:attack] *= 0.5 - 0.5 * np.cos(np.pi * (np.arange(attack) + 0.5) / attack)
    env[length - release:] *= 0.5 + 0.5 * np.cos(np.pi * (np.arange(release) + 0.5) / release)
    return env


def _box_smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average (edges use the available samples)."""
    if width <= 1:
        return x
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(x.size)
    lo, hi = np.maximum(idx - width // 2, 0), np.minimum(idx + width - width // 2, x.size)
    return (c[hi] - c[lo]) / (hi - lo)


class _Timeline:
    """Per-sample envelopes, formant anchors, pitch accents and noise events of one utterance."""

    def __init__(self, num_samples: int, sample_rate: int):
        self.n, self.sr = num_samples, sample_rate
        self.voicing = np.zeros(num_samples)
        self.anchor_t: list[float] = []
        self.anchor_vowel: list[np.ndarray] = []
        self.accent_t: list[float] = []
        self.accent_st: list[float] = []
        self.noise_events: list[tuple[int, np.ndarray, float, float, float]] = []  # start, env, fc, width, gain

    def _span(self, t: float, d: float) -> tuple[int, int]:
        return int(round(t * self.sr)), int(round(d * self.sr))

    def add_voicing(self, t: float, d: float, level: float, attack_s: float, release_s: float) -> None:
        start, length = self._span(t, d)
        stop = min(start + length, self.n)
        if stop <= start:
            return
        env = level * _ramp_envelope(length, int(attack_s * self.sr), int(release_s * self.sr))[: stop - start]
        np.maximum(self.voicing[start:stop], env, out=self.voicing[start:stop])

    def add_noise(self, t: float, d: float, env_fn: Callable[[int], np.ndarray], centre: float, width: float,
                  gain: float) -> None:
        start, length = self._span(t, d)
        length = min(length, self.n - start)
        if length > 0:
            self.noise_events.append((start, env_fn(length), centre, width, gain))


def _noise_band(rng: np.random.Generator, table: tuple, s: SpeechSettings) -> tuple[float, float, float]:
    """A jittered (centre Hz, width octaves, gain) drawn from a noise table."""
    _, centre, width, level_db = table[rng.integers(len(table))]
    j = s.noise_centre_jitter
    return centre * rng.uniform(1 - j, 1 + j), width * rng.uniform(1 - j, 1 + j), _db(level_db)


def _vowel_target(rng: np.random.Generator, tract: float, n_formants: int, s: SpeechSettings) -> np.ndarray:
    """Formant frequencies (Hz) of a random vowel, scaled by the vocal tract factor and jittered."""
    base = VOWEL_FORMANTS_HZ[rng.integers(len(VOWEL_FORMANTS_HZ))] + s.higher_formants_hz
    jitter = rng.uniform(1 - s.formant_jitter, 1 + s.formant_jitter, size=len(base))
    return np.sort(np.asarray(base) * tract * jitter)[:n_formants]


def _build_timeline(rng: np.random.Generator, sample_rate: int, num_samples: int, tract: float,
                    n_formants: int, s: SpeechSettings) -> _Timeline:
    """Lay out syllables until the clip is full."""
    tl = _Timeline(num_samples, sample_rate)
    duration = num_samples / sample_rate
    t = _uniform(rng, s.lead_silence_s)
    sr = sample_rate

    def fricative(t0: float, gain_db: float) -> float:
        d = _uniform(rng, s.fricative_s)
        ramp = int(_uniform(rng, s.fricative_ramp_s) * sr)
        centre, width, gain = _noise_band(rng, FRICATIVES, s)
        tl.add_noise(t0, d, lambda n: _ramp_envelope(n, ramp, ramp), centre, width, gain * _db(gain_db))
        if rng.random() < s.voiced_fricative_prob:
            tl.add_voicing(t0, d, _db(s.voiced_fricative_level_db), ramp / sr, ramp / sr)
        return d

    while t < duration:
        onset = rng.choice(3, p=np.asarray(s.onset_probs) / np.sum(s.onset_probs))
        if onset == 1:
            t += 0.8 * fricative(t, _uniform(rng, s.fricative_level_db))  # overlaps the vowel onset
        elif onset == 2:
            t += _uniform(rng, s.closure_s)
            d = _uniform(rng, s.burst_s)
            centre, width, gain = _noise_band(rng, PLOSIVE_BURSTS, s)
            attack = max(1, int(s.burst_attack_s * sr))
            decay = lambda n: np.minimum(np.arange(n) / attack, 1.0) * np.exp(-3.0 * np.arange(n) / n)
            tl.add_noise(t, d, decay, centre, width, gain * _db(_uniform(rng, s.burst_level_db)))
            t += d
            d = _uniform(rng, s.aspiration_s)
            centre, width, gain = _noise_band(rng, FRICATIVES[-1:], s)
            tl.add_noise(t, d, lambda n: _ramp_envelope(n, 0, n), centre, width,
                         gain * _db(_uniform(rng, s.aspiration_level_db)))
            t += 0.5 * d
        d = _uniform(rng, s.vowel_s)
        tl.add_voicing(t, d, _db(_uniform(rng, s.syllable_level_db)), _uniform(rng, s.vowel_attack_s),
                       _uniform(rng, s.vowel_release_s))
        tl.anchor_t += [t + 0.2 * d, t + 0.8 * d]
        vowel = _vowel_target(rng, tract, n_formants, s)
        glide = _vowel_target(rng, tract, n_formants, s) if rng.random() < s.diphthong_prob else vowel
        tl.anchor_vowel += [vowel, glide]
        tl.accent_t.append(t + 0.5 * d)
        tl.accent_st.append(float(rng.normal(0.0, s.accent_st)))
        t += d
        if rng.random() < s.coda_prob:
            t += fricative(t - 0.02, _uniform(rng, s.fricative_level_db)) - 0.02
        t += _uniform(rng, s.gap_s)
    return tl


def _f0_contour(rng: np.random.Generator, tl: _Timeline, base_f0: float, s: SpeechSettings) -> np.ndarray:
    """Per-sample f0: declination + smoothed accents + vibrato + per-cycle jitter, clipped to range."""
    sr, n = tl.sr, tl.n
    t = np.arange(n) / sr
    semitones = -_uniform(rng, s.declination_st) * t / max(t[-1], 1e-9)
    if tl.accent_t:
        semitones += _box_smooth(np.interp(t, tl.accent_t, tl.accent_st), int(s.pitch_smooth_s * sr))
    semitones += _uniform(rng, s.vibrato_st) * np.sin(2 * np.pi * _uniform(rng, s.vibrato_hz) * t
                                                       + rng.uniform(0, 2 * np.pi))
    f0 = np.clip(base_f0 * 2.0 ** (semitones / 12.0), *s.f0_range_hz)
    cycle = (np.cumsum(f0) / sr + 0.5).astype(np.int64)  # cycle index, boundaries between pulses
    jitter = 1.0 + _uniform(rng, s.jitter) * rng.standard_normal(cycle[-1] + 1)
    return np.clip(f0 * jitter[cycle], *s.f0_range_hz)


def _harmonic_source(f0: np.ndarray, sample_rate: int, s: SpeechSettings) -> tuple[np.ndarray, np.ndarray]:
    """Unit-amplitude cosine harmonics of f0 up to the partial limit (Dirichlet sum) and the phase."""
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    phi = np.mod(phase + np.pi, 2 * np.pi) - np.pi  # wrapped to [-pi, pi)
    top = np.maximum(s.partial_limit * sample_rate / 2 - f0, f0) / f0  # harmonics below limit - f0
    k = np.floor(top)
    fade = top - k  # the (k+1)-th harmonic fades in, so the sum is continuous as f0 moves
    half = np.sin(phi / 2)
    safe = np.abs(half) > 1e-9
    dirichlet = np.where(safe, np.sin((k + 0.5) * phi) / (2 * np.where(safe, half, 1.0)) - 0.5, k)
    return dirichlet + fade * np.cos((k + 1) * phi), phi


def _frames(x: np.ndarray, hop: int) -> np.ndarray:
    """[..., L] (L a multiple of hop) -> [..., L / hop - 1, 2 hop] half-overlapping frames."""
    blocks = x.reshape(*x.shape[:-1], -1, hop)
    return np.concatenate([blocks[..., :-1, :], blocks[..., 1:, :]], axis=-1)


def _overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    out = np.zeros((*frames.shape[:-2], frames.shape[-2] + 1, hop))
    out[..., :-1, :] += frames[..., :hop]
    out[..., 1:, :] += frames[..., hop:]
    return out.reshape(*frames.shape[:-2], -1)


def _peaking_gain(freqs: np.ndarray, centre: np.ndarray, bandwidth: np.ndarray, gain: np.ndarray,
                  sample_rate: int) -> np.ndarray:
    """|H| of pole/zero resonators (poles: bandwidth; zeros: bandwidth * gain), multiplied over formants.

    centre: [T, F]; bandwidth, gain: [F]; returns [T, bins]. Unit gain far from each centre.
    """
    w = 2 * np.pi * freqs / sample_rate
    cos1, sin1, cos2, sin2 = np.cos(w), np.sin(w), np.cos(2 * w), np.sin(2 * w)
    c = np.cos(2 * np.pi * centre / sample_rate)[..., None]  # [T, F, 1]

    def power(radius: np.ndarray) -> np.ndarray:
        r = radius[:, None]
        return (1 - 2 * r * c * cos1 + r * r * cos2) ** 2 + (2 * r * c * sin1 - r * r * sin2) ** 2

    r_pole = np.exp(-np.pi * bandwidth / sample_rate)
    r_zero = np.exp(-np.pi * bandwidth * gain / sample_rate)
    return np.sqrt(np.prod(power(r_zero) / power(r_pole), axis=1))


def _tilt(freqs: np.ndarray, slope_db: float, corner: float) -> np.ndarray:
    """Flat below `corner`, falling `slope_db` per octave above it."""
    return (1 + (freqs / corner) ** 2) ** (-slope_db / (2 * 20 * np.log10(2)))


def _voiced(rng: np.random.Generator, tl: _Timeline, f0: np.ndarray, n_formants: int,
            s: SpeechSettings) -> np.ndarray:
    """Harmonic + breath source through tilt and gliding formants (STFT), before the voicing envelope."""
    sr, n = tl.sr, tl.n
    harmonics, phi = _harmonic_source(f0, sr, s)
    cycle = (np.cumsum(f0) / sr + 0.5).astype(np.int64)
    harmonics *= 1.0 + _uniform(rng, s.shimmer) * rng.standard_normal(cycle[-1] + 1)[cycle]
    # Breath noise with a harmonics-to-noise ratio (per f0-wide band) of hnr_db at low frequency.
    noise_var = sr / (4 * np.mean(f0) * 10 ** (_uniform(rng, s.hnr_db) / 10))
    breath = np.sqrt(noise_var) * rng.standard_normal(n) * (1 + s.breath_modulation * np.cos(phi))

    hop = max(1, int(round(s.stft_frame_s * sr / 2)))
    num_frames = -(-n // hop) + 1  # frames needed to cover the clip after a one-hop lead pad
    padded = np.zeros((2, (num_frames + 1) * hop))
    padded[:, hop:hop + n] = harmonics, breath
    window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2 * hop) / (2 * hop)))  # sqrt periodic Hann
    spectra = np.fft.rfft(_frames(padded, hop) * window, axis=-1)  # [2, T, bins]
    freqs = np.fft.rfftfreq(2 * hop, 1.0 / sr)

    frame_t = np.arange(num_frames) * hop / sr  # frame centres in clip time
    anchors = np.asarray(tl.anchor_vowel) if tl.anchor_vowel else np.zeros((1, n_formants)) + 1000.0
    anchor_t = tl.anchor_t or [0.0]
    centres = np.stack([np.interp(frame_t, anchor_t, anchors[:, i]) for i in range(anchors.shape[1])], -1)
    centres = np.minimum(centres, 0.45 * sr)
    bandwidth = np.asarray(s.formant_bandwidths_hz[:n_formants]) * _uniform(rng, s.bandwidth_scale)
    gain = _db(rng.uniform(*s.formant_gain_db, size=n_formants))
    tract = _peaking_gain(freqs, centres, bandwidth, gain, sr)  # [T, bins]

    slope, corner = _uniform(rng, s.tilt_db_per_oct), _uniform(rng, s.tilt_corner_hz)
    extra = _tilt(freqs, _uniform(rng, s.extra_tilt_db_per_oct), _uniform(rng, s.extra_corner_hz))
    highpass = (freqs / s.highpass_hz) ** 2 / (1 + (freqs / s.highpass_hz) ** 2)
    source = np.stack([_tilt(freqs, slope, corner),
                       _tilt(freqs, max(slope - s.breath_tilt_relief_db_per_oct, 0.0), corner)]) * extra * highpass
    filtered = np.einsum("stb,sb->tb", spectra, source) * tract
    out = _overlap_add(np.fft.irfft(filtered, n=2 * hop, axis=-1) * window, hop)
    return out[hop:hop + n]


def _noise_event(rng: np.random.Generator, length: int, centre: float, width: float, sample_rate: int,
                 s: SpeechSettings) -> np.ndarray:
    """Unit-RMS white noise shaped by a log-Gaussian band (floored), `length` samples."""
    freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
    octaves = np.log2(np.maximum(freqs, 1.0) / centre)
    shape = np.exp(-0.5 * (octaves / width) ** 2) + _db(s.noise_band_floor_db)
    shape[0] = 0.0
    shape /= np.sqrt(np.mean(shape**2)) + 1e-12
    spectrum = (rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)) * shape
    return np.fft.irfft(spectrum, n=length) * np.sqrt(length / 2)


def synthesize(rng: np.random.Generator, sample_rate: int, num_samples: int,
               settings: SpeechSettings = DEFAULT_SETTINGS) -> Utterance:
    """Render one utterance with its ground-truth tracks (see the module docstring)."""
    s = settings
    lo, hi = s.f0_range_hz
    base_f0 = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    position = np.log(base_f0 / lo) / np.log(hi / lo)
    tract = (s.tract_scale[0] + position * (s.tract_scale[1] - s.tract_scale[0])) * rng.uniform(
        1 - s.tract_scale_jitter, 1 + s.tract_scale_jitter)
    n_formants = int(rng.integers(s.num_formants[0], s.num_formants[1] + 1))

    tl = _build_timeline(rng, sample_rate, num_samples, tract, n_formants, s)
    f0 = _f0_contour(rng, tl, base_f0, s)
    voiced = _voiced(rng, tl, f0, n_formants, s)
    active = tl.voicing > 0.5 * tl.voicing.max() if tl.voicing.max() > 0 else np.ones(num_samples, bool)
    voiced *= tl.voicing / (np.sqrt(np.mean(voiced[active] ** 2)) + 1e-12)

    mix = voiced + _db(s.noise_floor_db) * rng.standard_normal(num_samples)
    frication = np.zeros(num_samples)
    for start, env, centre, width, gain in tl.noise_events:
        stop = start + env.size
        mix[start:stop] += gain * env * _noise_event(rng, env.size, centre, width, sample_rate, s)
        frication[start:stop] += gain * env
    audio = (mix * s.peak_level / max(np.max(np.abs(mix)), 1e-12)).astype(np.float32)
    return Utterance(audio, f0, tl.voicing, frication)


@dataclass(frozen=True)
class SyntheticSpeechSource:
    """Random-access source (grain `RandomAccessDataSource` protocol) of speech-like clips for SR."""

    seed: int
    num_examples: int
    sample_rate: int
    num_samples: int
    settings: SpeechSettings = field(default=DEFAULT_SETTINGS, repr=False)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for {self.num_examples} examples")
        rng = np.random.default_rng([self.seed, index])
        return {"audio": synthesize(rng, self.sample_rate, self.num_samples, self.settings).audio, "caption": "",
                **clip_timing(self.num_samples, self.sample_rate)}
