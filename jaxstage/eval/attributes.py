"""Recover synthetic-clip attributes from audio by signal analysis (no learned weights).

The analyzer mirrors `jaxstage.data.synthetic` (it reads the same `SynthSettings` for band edges and
rates) and is meant for generated audio, so every decision uses robust, level-independent features:

1. **Tonality**: per frame, the share of power in bins standing >= 10 dB above a local median of the
   tilt-removed log spectrum; tonal sources score near 1, noise near 0.
   Two frame lengths (128 ms for low pitches, 32 ms for sweeps and bursts) and the larger score count.
2. **Tonal branch**: the loudness envelope of the pitch track's frequency region (power smoothed over
   two periods, so waveform ripple cancels) gives *hits* when the sound spends little time near its
   upper envelope (short decays). Otherwise a robust (Theil-Sen) fit of the pitch track gives chirps
   (>= 0.5 octave over the clip), else partials 2..8 above their local floor decide: none -> sine,
   odd only -> square, even too -> sawtooth. Pitch band: the median pitch (or the chirp's centre)
   against geometric midpoints between the generator's bands.
3. **Noise branch**: 1/6-octave band powers are fit by `offset + slope*log2(f) + a*emphasis_k(f)` for
   each band k's emphasis; the best k is the pitch band, the slope (0 / -3 / -6 dB per octave) the
   colour. The envelope is a variance-weighted mean over STFT bins of dB power relative to each bin's
   average, which stays smooth for brown noise and lets gated bins outvote a steady background.
4. **Envelope and rhythm** from the dB loudness envelope: a line through its loud plateaus and peaks
   gives the fade (its change over the clip); onsets are local rises of 10 dB that reach that line,
   none means steady, else the median inter-onset interval gives the pulse (or hit) rate.
Mixtures report the dominant source. Measured on the generator's own clips (8 kHz, 1 s, single
source): about 99-100 % on every attribute clean and with white noise at 20 dB SNR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal, stats

from jaxstage.data import synthetic
from jaxstage.data.synthetic import ENVELOPES, PITCH_BANDS, RHYTHMS, SOURCES, SynthSettings

ATTRIBUTE_KEYS = ("source", "pitch_band", "rhythm", "envelope")


@dataclass(frozen=True)
class AnalysisSettings:
    """Every constant of the analyzer."""

    synth: SynthSettings = synthetic.DEFAULT_SETTINGS
    spectrum_frame_s: float = 0.128
    spectrum_hop_s: float = 0.032
    short_frame_s: float = 0.032  # a second view that keeps sweeps and short bursts sharp
    short_hop_s: float = 0.016
    min_freq_hz: float = 40.0
    max_freq_fraction: float = 0.95  # of Nyquist
    active_frame_db: float = 25.0  # frames within this of the loudest take part in pitch analysis
    tilt_range_db_per_octave: tuple[float, float] = (-9.0, 3.0)
    local_median_hz: float = 250.0  # width of the local reference around each bin
    local_median_min_bins: int = 9
    local_quantile: float = 0.5
    peak_db: float = 10.0
    tonal_threshold: float = 0.25
    chirp_octaves: float = 0.5
    harmonic_search_fraction: float = 0.03
    harmonic_search_bins: int = 2
    partial_floor_factor: float = 4.0
    max_harmonic: int = 8
    sine_harmonics_db: float = -20.0  # total partial power (re fundamental) below this -> sine
    saw_even_minus_odd_db: float = -8.0  # even-vs-odd partial power above this -> sawtooth
    noise_bands_per_octave: int = 6
    white_pink_slope_db: float = -1.5
    negative_emphasis_penalty: float = 1e6  # a band whose emphasis fits with a negative gain is ruled out
    pink_brown_slope_db: float = -4.5
    envelope_hop_s: float = 0.002
    envelope_min_smooth_s: float = 0.004
    envelope_smooth_periods: float = 2.0
    tonal_band_percentiles: tuple[float, float] = (10.0, 90.0)
    tonal_band_rolloff_octaves: float = 0.5
    noise_envelope_frame_s: float = 0.016
    envelope_floor_db: float = 60.0
    envelope_median_s: float = 0.015  # running median that irons out beating and phase artefacts
    plateau_radius_s: float = 0.02
    plateau_tolerance_db: float = 1.5
    fade_db: float = 10.0  # change of the upper envelope over the clip beyond which it fades
    near_upper_db: float = 6.0
    hits_max_duty: float = 0.35  # share of time within `near_upper_db` of the upper envelope
    onset_rise_db: float = 10.0
    onset_rise_s: float = 0.05
    onset_reach_db: float = 12.0
    background_percentile: float = 10.0
    onset_refractory_s: float = 0.06


DEFAULT_ANALYSIS = AnalysisSettings()


# ---------------------------------------------------------------- Spectra


def _range_power(x: np.ndarray, sample_rate: int, frame_s: float, hop_s: float, s: AnalysisSettings,
                 centred: bool = False) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Hann-windowed power spectra in the analysed frequency range: (power [frames, bins], freqs, n_fft, hop).
    Frames lie fully inside the zero-extended signal; `centred` first pads half a frame at both ends."""
    n_fft = int(2 ** np.ceil(np.log2(max(frame_s * sample_rate, 2))))  # smallest power of two >= frame (and 2)
    hop = max(int(round(hop_s * sample_rate)), 1)
    x = np.pad(x, n_fft // 2) if centred else x
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    keep = (freqs >= _min_freq_hz(sample_rate, s)) & (freqs <= s.max_freq_fraction * sample_rate / 2)
    return (np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2)[:, keep], freqs[keep], n_fft, hop


def _to_db(power: np.ndarray, floor_db: float = 100.0) -> np.ndarray:
    """10*log10 with a floor `floor_db` below the maximum."""
    ref = max(float(np.max(power)), 1e-30)
    return 10 * np.log10(np.maximum(power, ref * 10 ** (-floor_db / 10)))


def _tilt_free_db(power: np.ndarray, freqs: np.ndarray, s: AnalysisSettings) -> np.ndarray:
    """Per-frame log spectrum minus its least-squares line in log-frequency (removes noise colour).

    The slope is clipped to the range of noise colours so that the steep skirts of a low tone are not
    mistaken for colour and flattened away.
    """
    db = _to_db(power)
    log_f = np.log2(freqs) - np.log2(freqs).mean()
    slope = np.clip((db - db.mean(axis=1, keepdims=True)) @ log_f / np.sum(log_f**2), *s.tilt_range_db_per_octave)
    return db - db.mean(axis=1, keepdims=True) - slope[:, None] * log_f


def _tonality_per_frame(power: np.ndarray, freqs: np.ndarray, s: AnalysisSettings) -> np.ndarray:
    """Share of each frame's power in bins >= `peak_db` above the local median of the tilt-free spectrum."""
    residual = _tilt_free_db(power, freqs, s)
    step = freqs[1] - freqs[0]
    width = int(round(max(s.local_median_hz / step, s.local_median_min_bins))) | 1
    local = ndimage.rank_filter(residual, int(round(s.local_quantile * (width - 1))), size=(1, width), mode="nearest")
    peaks = ndimage.binary_dilation(residual - local >= s.peak_db, structure=np.ones((1, 3), bool))
    whitened = 10 ** (residual / 10)
    return np.sum(whitened * peaks, axis=1) / np.sum(whitened, axis=1)


def _parabolic_peak(db: np.ndarray, k: int) -> float:
    """Sub-bin position of a spectral maximum."""
    if 0 < k < db.size - 1:
        a, b, c = db[k - 1], db[k], db[k + 1]
        denom = a - 2 * b + c
        if denom < 0:
            return k + 0.5 * (a - c) / denom
    return float(k)


def _peak_track_hz(power: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Frequency of the strongest bin of each frame (parabolic refinement)."""
    db = _to_db(power)
    step = freqs[1] - freqs[0]
    return np.array([freqs[0] + step * _parabolic_peak(row, int(np.argmax(row))) for row in db])


def _min_freq_hz(sample_rate: int, s: AnalysisSettings) -> float:
    """Lowest analysed frequency, scaled like the generator's bands."""
    return s.min_freq_hz * synthetic.rate_scale(sample_rate, s.synth)


def _band_of(freq_hz: float, sample_rate: int, s: AnalysisSettings) -> str:
    """Pitch band of a frequency: boundaries at the geometric midpoints between bands."""
    low_mid, mid_high = synthetic.band_boundaries_hz(sample_rate, s.synth)
    return "low" if freq_hz < low_mid else ("mid" if freq_hz < mid_high else "high")


# ---------------------------------------------------------------- Tonal sources


def _partial_power(spectrum: np.ndarray, freqs: np.ndarray, target_hz: float, f0: float, s: AnalysisSettings) -> float:
    """Power of the partial near `target_hz` above its local floor.

    The partial is the largest bin within the search window; the floor is `partial_floor_factor` times
    the median within half a harmonic spacing, so broadband noise adds (almost) nothing.
    """
    step = freqs[1] - freqs[0]
    half_width = max(s.harmonic_search_bins * step, s.harmonic_search_fraction * target_hz)
    window = np.abs(freqs - target_hz) <= half_width
    if not np.any(window):
        return 0.0
    neighbourhood = np.abs(freqs - target_hz) <= max(f0 / 2, 2 * half_width)
    floor = s.partial_floor_factor * float(np.median(spectrum[neighbourhood]))
    return max(float(np.max(spectrum[window])) - floor, 0.0)


def _tonal_kind(spectrum: np.ndarray, freqs: np.ndarray, f0: float, limit_hz: float, s: AnalysisSettings) -> str:
    """sine / square / sawtooth from the powers of partials 2..N relative to the fundamental."""
    fundamental = max(_partial_power(spectrum, freqs, f0, f0, s), 1e-30)
    harmonics = np.arange(2, min(int(limit_hz // f0), s.max_harmonic) + 1)
    if harmonics.size == 0:
        return "sine"
    powers = np.array([_partial_power(spectrum, freqs, n * f0, f0, s) for n in harmonics]) / fundamental
    total_db = 10 * np.log10(np.sum(powers) + 1e-30)
    if total_db < s.sine_harmonics_db:
        return "sine"
    even_db = 10 * np.log10(np.sum(powers[harmonics % 2 == 0]) + 1e-30)
    odd_db = 10 * np.log10(np.sum(powers[harmonics % 2 == 1]) + 1e-30)
    return "sawtooth" if even_db - odd_db > s.saw_even_minus_odd_db else "square"


def _sweep_octaves(track_hz: np.ndarray, times: np.ndarray, duration: float) -> tuple[float, float]:
    """(octaves swept over the clip, centre frequency) from a Theil-Sen fit of log2 pitch."""
    if track_hz.size < 3:
        return 0.0, float(np.median(track_hz))
    log_f = np.log2(np.maximum(track_hz, 1e-6))
    slope, intercept, *_ = stats.theilslopes(log_f, times)
    return float(slope * duration), float(2 ** (intercept + slope * duration / 2))


def _band_limited(x: np.ndarray, sample_rate: int, lo_hz: float, hi_hz: float, s: AnalysisSettings) -> np.ndarray:
    """x with only [lo_hz, hi_hz] kept: unit gain inside, Gaussian roll-off (in octaves) outside."""
    padded = 2 * x.size  # zero padding keeps the filter from wrapping the clip's end onto its start
    freqs = np.fft.rfftfreq(padded, 1.0 / sample_rate)
    log_f = np.log2(np.maximum(freqs, 1e-6))
    octaves_out = (log_f - np.log2(lo_hz)).clip(max=0) + (log_f - np.log2(hi_hz)).clip(min=0)
    gain = np.exp(-0.5 * (octaves_out / s.tonal_band_rolloff_octaves) ** 2)
    return np.fft.irfft(np.fft.rfft(x, n=padded) * gain, n=padded)[: x.size]


def _tonal_envelope_db(x: np.ndarray, sample_rate: int, track_hz: np.ndarray, s: AnalysisSettings) -> np.ndarray:
    """Loudness of the fundamental's region (pitch-track range), so broadband noise barely enters:
    power smoothed by a Hann spanning two periods of the lowest pitch (cancels waveform ripple)."""
    lo, hi = np.percentile(track_hz, s.tonal_band_percentiles)
    power = _band_limited(x, sample_rate, lo, hi, s) ** 2
    length = max(s.envelope_smooth_periods / max(lo, 1.0), s.envelope_min_smooth_s)
    window = np.hanning(max(int(round(length * sample_rate)), 3))
    coverage = signal.fftconvolve(np.ones_like(power), window, mode="same")  # edge correction
    power = signal.fftconvolve(power, window, mode="same") / np.maximum(coverage, 1e-12)
    return _to_db(power[:: max(int(round(s.envelope_hop_s * sample_rate)), 1)], s.envelope_floor_db)


# ---------------------------------------------------------------- Noise sources


def _band_powers_db(spectrum: np.ndarray, freqs: np.ndarray, s: AnalysisSettings, sample_rate: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mean power density in fractional-octave bands: (log2 centre frequencies, dB)."""
    lo, hi = _min_freq_hz(sample_rate, s), s.max_freq_fraction * sample_rate / 2
    edges = lo * 2.0 ** (np.arange(int(np.log2(hi / lo) * s.noise_bands_per_octave) + 1) / s.noise_bands_per_octave)
    centres, levels = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        if np.any(inside := (freqs >= a) & (freqs < b)):
            centres.append(np.log2(np.sqrt(a * b)))
            levels.append(np.mean(spectrum[inside]))
    return np.array(centres), 10 * np.log10(np.maximum(np.array(levels), 1e-30))


def _noise_colour_and_band(spectrum: np.ndarray, freqs: np.ndarray, sample_rate: int, s: AnalysisSettings
                           ) -> tuple[str, str]:
    """Fit slope + each band's emphasis; the best-fitting band and the slope's colour."""
    log_f, level_db = _band_powers_db(spectrum, freqs, s, sample_rate)
    fits = []  # (error, band, slope) per band
    for band in PITCH_BANDS:
        emphasis = synthetic.noise_emphasis_db(2.0**log_f, band, sample_rate, s.synth) / s.synth.noise_emphasis_db
        design = np.stack([np.ones_like(log_f), log_f, emphasis], axis=1)
        coef, *_ = np.linalg.lstsq(design, level_db, rcond=None)
        error = float(np.sum((design @ coef - level_db) ** 2)) + (0.0 if coef[2] > 0 else s.negative_emphasis_penalty)
        fits.append((error, band, float(coef[1])))
    _, band, slope = min(fits, key=lambda fit: fit[0])
    colour = "white" if slope > s.white_pink_slope_db else ("pink" if slope > s.pink_brown_slope_db else "brown")
    return f"{colour}_noise", band


def _normalized_bin_envelope_db(x: np.ndarray, sample_rate: int, s: AnalysisSettings) -> np.ndarray:
    """Loudness envelope of noise: mean over bins of the dB STFT power relative to each bin's time average.

    Averaging in dB keeps brown noise (power piled into a few low bins) smooth, and lets bins far above
    a background floor carry the gating even where the floor fills the other bins.
    """
    power = _range_power(x, sample_rate, s.noise_envelope_frame_s, s.envelope_hop_s, s, centred=True)[0]
    relative = power / np.maximum(power.mean(axis=0, keepdims=True), 1e-30)
    relative_db = 10 * np.log10(np.maximum(relative, 10 ** (-s.envelope_floor_db / 10)))
    weights = relative_db.var(axis=0)  # bins that move most (not swamped by a steady floor) count most
    return relative_db @ (weights / max(float(weights.sum()), 1e-30))


# ---------------------------------------------------------------- Envelope: fade, steadiness, onsets


@dataclass(frozen=True)
class EnvelopeShape:
    """Summary of a dB loudness envelope."""

    fade_db: float  # change of the upper line over the clip
    duty: float  # share of time within `near_upper_db` of the upper line
    onset_rate_hz: float


def _upper_class(values: np.ndarray) -> np.ndarray:
    """Mask of the upper group of a two-group (Otsu) split of `values`; all True when they barely differ."""
    order = np.sort(values)
    if order.size < 2 or order[-1] - order[0] < 1e-6:
        return np.ones(values.shape, bool)
    splits = np.arange(1, order.size)
    low_mean = np.cumsum(order)[:-1] / splits
    high_mean = (order.sum() - np.cumsum(order)[:-1]) / (order.size - splits)
    between = splits * (order.size - splits) * (high_mean - low_mean) ** 2
    return values >= order[int(np.argmax(between)) + 1]


def _upper_line(env_db: np.ndarray, hop_s: float, s: AnalysisSettings) -> np.ndarray:
    """Line through the loud parts of a dB envelope.

    Candidates are points within `plateau_tolerance_db` of the maximum around them (plateaus, peaks
    and slow fades, not attack or decay flanks); the line is fit through the upper (Otsu) group of
    them, so the background between pulses or hits is left out. For a steady sound the upper group is
    the louder half, which has the same slope.
    """
    radius = max(int(round(s.plateau_radius_s / hop_s)), 1)
    local_max = ndimage.maximum_filter1d(env_db, 2 * radius + 1, mode="nearest")
    candidate = np.flatnonzero(env_db >= local_max - s.plateau_tolerance_db)
    keep = candidate[_upper_class(env_db[candidate])]
    if keep.size < 2 or np.ptp(keep) == 0:
        return np.full(env_db.shape, float(np.max(env_db)))
    slope, intercept = np.polyfit(keep * hop_s, env_db[keep], 1)
    return slope * np.arange(env_db.size) * hop_s + intercept


def onset_times(env_db: np.ndarray, upper_db: np.ndarray, hop_s: float, s: AnalysisSettings) -> np.ndarray:
    """Starts of the stretches where the envelope stands `onset_rise_db` above its median over the
    last `onset_rise_s` (a local test, so fades do not matter) and, within as long again, comes within
    `onset_reach_db` of the upper line `upper_db` and `onset_rise_db` above the clip's background
    (its `background_percentile`), so flicker of a noise floor does not count.
    Starts closer than `onset_refractory_s` to the previous onset are merged into it."""
    lookback = max(int(round(s.onset_rise_s / hop_s)), 1)
    recent = ndimage.median_filter(env_db, lookback + 1, origin=lookback // 2, mode="nearest")
    coming_max = ndimage.maximum_filter1d(env_db, lookback + 1, origin=-(lookback // 2) - lookback % 2, mode="nearest")
    background = np.percentile(env_db, s.background_percentile)
    rising = ((env_db - recent >= s.onset_rise_db) & (coming_max >= upper_db - s.onset_reach_db)
              & (coming_max >= background + s.onset_rise_db))
    starts = np.flatnonzero(rising & ~np.concatenate([[False], rising[:-1]]))
    onsets: list[int] = []
    for i in starts:
        if not onsets or (i - onsets[-1]) * hop_s >= s.onset_refractory_s:
            onsets.append(int(i))
    return np.array(onsets, dtype=float) * hop_s


def _onset_rate_hz(onsets_s: np.ndarray, duration: float) -> float:
    """1 / median inter-onset interval; with fewer than two onsets, onsets per second."""
    if onsets_s.size >= 2:
        return float(1.0 / np.median(np.diff(onsets_s)))
    return onsets_s.size / duration


def envelope_shape(env_db: np.ndarray, hop_s: float, s: AnalysisSettings) -> EnvelopeShape:
    """Fade, duty and onset rate of a dB loudness envelope sampled every `hop_s`."""
    duration = max(env_db.size * hop_s, hop_s)
    env_db = ndimage.median_filter(env_db, max(int(round(s.envelope_median_s / hop_s)), 1) | 1, mode="nearest")
    line = _upper_line(env_db, hop_s, s)
    duty = float(np.mean(env_db - line > -s.near_upper_db))
    return EnvelopeShape(float(line[-1] - line[0]), duty, _onset_rate_hz(onset_times(env_db, line, hop_s, s), duration))


def _rate_class(rate_hz: float, rates: tuple[float, ...], classes: tuple[str, ...]) -> str:
    """Nearest class in log-rate (boundaries at geometric midpoints)."""
    return classes[int(np.argmin(np.abs(np.log(max(rate_hz, 1e-3)) - np.log(rates))))]


def _rhythm(shape: EnvelopeShape, is_hits: bool, s: AnalysisSettings) -> str:
    """Hits: nearest hit rate. Others: steady without onsets, else nearest pulse rate."""
    if is_hits:
        rates = (s.synth.slow_hit_hz, s.synth.steady_hit_hz, s.synth.fast_hit_hz)
        return _rate_class(shape.onset_rate_hz, rates, ("slow_pulses", "steady", "fast_pulses"))
    if shape.onset_rate_hz == 0.0:
        return "steady"
    rates = (s.synth.slow_pulse_hz, s.synth.fast_pulse_hz)
    return _rate_class(shape.onset_rate_hz, rates, ("slow_pulses", "fast_pulses"))


def _fade(shape: EnvelopeShape, s: AnalysisSettings) -> str:
    """fade_in / fade_out when the upper line changes by more than `fade_db` over the clip."""
    return "fade_in" if shape.fade_db > s.fade_db else ("fade_out" if shape.fade_db < -s.fade_db else "constant")


# ---------------------------------------------------------------- Public API


@dataclass(frozen=True)
class _SpectralView:
    """Loud frames of one STFT resolution."""

    power: np.ndarray  # [active frames, bins in range]
    freqs: np.ndarray
    times: np.ndarray  # centres of the active frames
    tonality: float


def _spectral_view(x: np.ndarray, sample_rate: int, frame_s: float, hop_s: float, s: AnalysisSettings) -> _SpectralView:
    """Power spectra of the loud frames in the analysis range, and their power-weighted tonality."""
    power, freqs, n_fft, hop = _range_power(x, sample_rate, frame_s, hop_s, s)
    frame_power = power.sum(axis=1)
    frame_db = _to_db(frame_power)
    active = frame_db >= frame_db.max() - s.active_frame_db
    times = (np.arange(frame_db.size) * hop + n_fft / 2) / sample_rate
    weights = frame_power[active] / max(float(frame_power[active].sum()), 1e-30)
    tonality = float(np.sum(_tonality_per_frame(power[active], freqs, s) * weights))
    return _SpectralView(power[active], freqs, times[active], tonality)


def _labels(source: str, pitch_band: str, shape: EnvelopeShape, s: AnalysisSettings) -> dict[str, str]:
    """The attribute dict: rhythm and envelope read off the envelope shape."""
    return {"source": source, "pitch_band": pitch_band, "rhythm": _rhythm(shape, source == "hits", s),
            "envelope": _fade(shape, s)}


def analyze(audio: np.ndarray, sample_rate: int, settings: AnalysisSettings = DEFAULT_ANALYSIS) -> dict[str, str]:
    """Attributes {source, pitch_band, rhythm, envelope} recovered from mono audio."""
    s = settings
    x = np.nan_to_num(np.asarray(audio, dtype=np.float64).reshape(-1))
    x = x - x.mean()
    long = _spectral_view(x, sample_rate, s.spectrum_frame_s, s.spectrum_hop_s, s)
    short = _spectral_view(x, sample_rate, s.short_frame_s, s.short_hop_s, s)
    spectrum = long.power.mean(axis=0)

    track = _peak_track_hz(long.power, long.freqs)
    f0 = float(np.median(track))
    noisy = max(long.tonality, short.tonality) < s.tonal_threshold
    env_db = _normalized_bin_envelope_db(x, sample_rate, s) if noisy else _tonal_envelope_db(x, sample_rate, track, s)
    shape = envelope_shape(env_db, s.envelope_hop_s, s)
    if shape.duty < s.hits_max_duty:  # short decays; noise-like: bursts too short to look tonal (low, fast hits)
        return _labels("hits", _band_of(f0, sample_rate, s), shape, s)
    if noisy:
        return _labels(*_noise_colour_and_band(spectrum, long.freqs, sample_rate, s), shape, s)
    sweep, centre = _sweep_octaves(track, long.times, x.size / sample_rate)
    if abs(sweep) >= s.chirp_octaves:
        return _labels("chirp_up" if sweep > 0 else "chirp_down", _band_of(centre, sample_rate, s), shape, s)
    source = _tonal_kind(spectrum, long.freqs, f0, s.max_freq_fraction * sample_rate / 2, s)
    return _labels(source, _band_of(f0, sample_rate, s), shape, s)


def attribute_accuracy(predicted: list[dict], truth: list[dict],
                       keys: tuple[str, ...] = ATTRIBUTE_KEYS) -> dict[str, float]:
    """Per-key share of predictions equal to the truth."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} references")
    if not truth:
        return {key: float("nan") for key in keys}
    return {key: float(np.mean([p[key] == t[key] for p, t in zip(predicted, truth)])) for key in keys}


def chance_levels() -> dict[str, float]:
    """Accuracy of uniform guessing per attribute (attributes are drawn uniformly)."""
    classes = {"source": SOURCES, "pitch_band": PITCH_BANDS, "rhythm": RHYTHMS, "envelope": ENVELOPES}
    return {key: 1 / len(values) for key, values in classes.items()}
