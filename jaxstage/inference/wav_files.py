"""Sample a saved run into WAV files (``jaxstage sample``): prompts to clips (task=t2a), low-band files
of any length to super-resolved files (task=sr). Sampler settings ``None`` mean the run's ``sample.*``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from jaxstage.config import Config
from jaxstage.data.audio_io import fit_full_scale
from jaxstage.data.sr_input import LowBandInput, load_low_band


def write_wav_atomic(path: Path, audio: np.ndarray, sample_rate: int, peak_level: float | None) -> float:
    """16-bit WAV written beside ``path`` and renamed into place (no half-written file on failure);
    above full scale scaled to ``peak_level`` (None: raw levels). Returns the clip's original peak."""
    import soundfile as sf

    from jaxstage.tools.export.safetensors_io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    audio, peak = fit_full_scale(audio, peak_level)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV")
    return peak


def text_to_wav(workdir: str | Path, cfg: Config, prompts: list[str], out: str | Path, *, step: int | None = None,
                ema: bool = True, sampler: str | None = None, steps: int | None = None,
                cfg_scale: float | None = None, seed: int = 0, raw_levels: bool = False,
                seconds_start: float | None = None, seconds_total: float | None = None) -> list[tuple[Path, float]]:
    """One clip per prompt from a text-to-audio run: ``out``, or ``out`` numbered _0, _1, ... for
    several prompts. Returns (path, peak before any scaling) of each file written. ``seconds_start`` /
    ``seconds_total``: the timing conditions of a run with such number conditioners (a ValueError
    names one the run does not have); the clip keeps the run's length, as stable-audio-tools'."""
    ids = {n[0] for n in cfg.conditioning.numbers}
    for name, value in (("seconds_start", seconds_start), ("seconds_total", seconds_total)):
        if value is not None and name not in ids:
            raise ValueError(f"--{name.replace('_', '-')} {value:g}: the run has no {name!r} conditioner "
                             f"(conditioning.numbers: {sorted(ids) or 'none'})")
    from jaxstage.inference.load import load_run
    from jaxstage.inference.sampling import Generator

    exp, state = load_run(cfg, workdir, step=step)
    audio = Generator(exp)(state.ema_params if ema else state.params, state.codec_stats, prompts, sampler=sampler,
                           steps=steps, cfg_scale=cfg_scale, seed=seed, seconds_start=seconds_start,
                           seconds_total=seconds_total)
    out = Path(out)
    paths = [out] if len(audio) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(audio))]
    level = None if raw_levels else cfg.sample.peak_level
    return [(path, write_wav_atomic(path, clip, cfg.data.sample_rate, level)) for path, clip in zip(paths, audio)]


def read_low_band_inputs(cfg: Config, input_path: str | Path, out: str | Path, cutoff_hz: float | None = None
                         ) -> list[tuple[LowBandInput, Path]]:
    """(input, output file) for one file, or every audio file under a folder (mirrored as .wav), each
    decoded and checked before any checkpoint loads; ``cutoff_hz`` default: each file's Nyquist."""
    from jaxstage.eval.sr_files import index_audio

    src, out = Path(input_path), Path(out)
    if src.is_dir():
        files = index_audio(src, "input")
        if not files:
            raise FileNotFoundError(f"{src}: no audio files (.wav/.flac/.ogg/.mp3) in the input folder")
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out}: exists and is not a folder (the input {src} is a folder)")
        jobs = [(path, out / f"{key}.wav") for key, path in files.items()]
    elif not src.is_file():
        raise FileNotFoundError(f"{src}: input file not found")
    elif out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give an output file for the single input {src}")
    else:
        jobs = [(src, out)]
    trained = (cfg.sr.cutoff_min_hz, cfg.sr.cutoff_max_hz)
    return [(load_low_band(path, cfg.data.sample_rate, cutoff_hz, trained), dest) for path, dest in jobs]


def super_resolve_to_wav(workdir: str | Path, cfg: Config, inputs: list[tuple[LowBandInput, Path]], *,
                         step: int | None = None, ema: bool = True, sampler: str | None = None,
                         steps: int | None = None, seed: int = 0, replace: bool | None = None,
                         raw_levels: bool = False) -> Iterator[tuple[LowBandInput, Path, float]]:
    """Super-resolve each input of :func:`read_low_band_inputs` into its output WAV, yielding each
    (input, path, peak before any scaling) once written. ``replace``: low-band replacement (default
    ``sr.replace_low_band``)."""
    from tqdm import tqdm

    from jaxstage.inference.load import load_run
    from jaxstage.inference.sr_sampling import SRGenerator

    exp, state = load_run(cfg, workdir, step=step)
    params = state.ema_params if ema else state.params
    generator = SRGenerator(exp)
    level = None if raw_levels else cfg.sample.peak_level
    for item, dest in tqdm(inputs, desc="super-resolving", unit="file", disable=len(inputs) < 2):
        audio = generator.upsample(params, state.codec_stats, item.audio, item.cutoff_hz, sampler=sampler,
                                   steps=steps, seed=seed, replace=replace)
        yield item, dest, write_wav_atomic(dest, audio, cfg.data.sample_rate, level)
