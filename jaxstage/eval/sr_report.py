"""Super-resolution during and after training (task=sr): sample WAVs and the held-out LSD check.

The held-out clips are :func:`jaxstage.eval.held_out.sr_clips`. Each clip is scored against its
full-band reference with the SPEC §4 metrics four times: the model's output, the same output with
low-band replacement, the unprocessed low-band input (the baseline a super-resolver has to beat) and
an oracle noise fill (the input plus noise shaped like the reference's average high-band spectrum: a
stronger yardstick). The LSD-HF/LF split of each clip is at its own cutoff (``input_sr = 2 · cutoff``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxstage.config import Config
from jaxstage.eval.held_out import sr_clips
from jaxstage.eval.sr_baselines import oracle_noise_fill
from jaxstage.eval.sr_metrics import METRICS, evaluate_pair
from jaxstage.inference.load import load_run
from jaxstage.inference.sr_sampling import SRGenerator
from jaxstage.models.band_replace import replace_low_band
from jaxstage.run.logging import RunLogger


def write_sr_samples(logger: RunLogger, generator: SRGenerator, state, cfg: Config, step: int) -> None:
    """``sample.num`` held-out clips as low-band input, EMA-model output and reference WAVs."""
    batch = sr_clips(cfg, cfg.sample.num)
    out = generator.clips(state.ema_params, state.codec_stats, batch["low"], batch["cutoff"],
                          seed=cfg.sample.seed + step)
    labels, clips = [], []
    for j, cutoff in enumerate(batch["cutoff"]):
        for role, audio in (("input", batch["low"][j]), ("output", out[j]), ("reference", batch["audio"][j])):
            labels.append(f"{j} {role} cutoff {float(cutoff):.0f} Hz")
            clips.append(audio)
    logger.audio(step, labels, np.stack(clips), cfg.data.sample_rate)


@functools.lru_cache(maxsize=None)
def _replace_fn(sample_rate: int, n_fft: int, transition_hz: float):
    """One jitted replacement per setting (periodic evaluations reuse it instead of re-jitting)."""
    return jax.jit(lambda o, l, c: replace_low_band(o, l, c, sample_rate, n_fft=n_fft, transition_hz=transition_hz))


def replaced(cfg: Config, output: np.ndarray, low: np.ndarray, cutoff: np.ndarray) -> np.ndarray:
    """``output`` with the input's band below each cutoff put back (``sr.replace_*`` settings)."""
    fn = _replace_fn(cfg.data.sample_rate, cfg.sr.replace_n_fft, cfg.sr.replace_transition_hz)
    return np.clip(np.asarray(fn(output, low, cutoff), np.float32), -1.0, 1.0)


def sr_eval(generator: SRGenerator, state, cfg: Config, count: int, *, baselines: bool = True,
            sampler: str | None = None, steps: int | None = None, skip: int = 0,
            seed: int | None = None) -> dict[str, Any]:
    """The module docstring's four scores on ``count`` held-out clips; both model rows come from the same
    samples, ``baselines=False`` scores them only. ``sampler``/``steps`` default to ``sample.*``, the
    sampler ``seed`` to ``sample.seed``; ``skip`` clips of the held-out stream come first (see sr_clips)."""
    sampler, steps = sampler or cfg.sample.sampler, steps or cfg.sample.steps
    batch = sr_clips(cfg, count, skip)
    raw = generator.clips(state.ema_params, state.codec_stats, batch["low"], batch["cutoff"], sampler=sampler,
                          steps=steps, seed=cfg.sample.seed if seed is None else seed, replace=False)
    candidates = {"output": raw, "output_replaced": replaced(cfg, raw, batch["low"], batch["cutoff"])}
    if baselines:
        candidates["input"] = batch["low"]
        candidates["oracle_noise_fill"] = np.stack([
            oracle_noise_fill(ref, low, float(c), cfg.data.sample_rate, seed=j)
            for j, (ref, low, c) in enumerate(zip(batch["audio"], batch["low"], batch["cutoff"]))])
    sr = cfg.data.sample_rate
    per_clip = []
    for j, cutoff in enumerate(batch["cutoff"]):
        input_sr = int(round(2 * float(cutoff)))
        clip: dict[str, Any] = {"cutoff_hz": float(cutoff)}
        for name, audio in candidates.items():
            clip[name] = evaluate_pair(batch["audio"][j], audio[j], sr, input_sr)
        per_clip.append(clip)
    return {"step": int(state.step), "count": len(per_clip), "sample_rate": sr, "sampler": sampler,
            "steps": steps, "replace_low_band": cfg.sr.replace_low_band,
            "mean": {name: {k: float(np.mean([c[name][k] for c in per_clip])) for k in METRICS} for name in candidates},
            "per_clip": per_clip}


def sr_final_eval(logger: RunLogger, generator: SRGenerator, state, cfg: Config, workdir: Path) -> dict[str, Any]:
    """:func:`sr_eval` on ``sample.final_eval_prompts`` clips, written to ``WORKDIR/sr_eval.json``."""
    report = sr_eval(generator, state, cfg, cfg.sample.final_eval_prompts)
    if jax.process_index() == 0:
        (workdir / "sr_eval.json").write_text(json.dumps(report, indent=2))
    mean = report["mean"]
    logger.info(f"SR on {report['count']} held-out clips (LSD / LSD-HF / LSD-LF / SI-SDR dB): " + "; ".join(
        f"{name} {m['lsd']:.3f} / {m['lsd_hf']:.3f} / {m['lsd_lf']:.3f} / {m['si_sdr']:.2f}"
        for name, m in mean.items()))
    return report


def evaluate_run(workdir: str | Path, cfg: Config, *, n: int | None = None, sampler: str | None = None,
                 steps: int | None = None, step: int | None = None, out: str | Path | None = None
                 ) -> tuple[dict[str, Any], Path]:
    """``jaxstage eval --task sr --workdir``: :func:`sr_eval` of a saved run on ``n`` held-out clips
    (default ``sample.final_eval_prompts``) -> (report, ``out`` or WORKDIR/sr_eval.json)."""
    workdir = Path(workdir)
    if cfg.task != "sr":
        raise ValueError(f"{workdir} is task={cfg.task}; --task sr --workdir needs a super-resolution run")
    count = cfg.sample.final_eval_prompts if n is None else n
    if count < 1:
        raise ValueError(f"--n {count}: need at least one held-out clip")
    exp, state = load_run(cfg, workdir, step=step)
    generator = SRGenerator(exp, batch_size=min(cfg.train.batch_size, 16))
    report = sr_eval(generator, state, cfg, count, sampler=sampler, steps=steps)
    out = Path(out or workdir / "sr_eval.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report, out
