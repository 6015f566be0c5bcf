"""Output level and attribute accuracy of a trained synthetic run under each guidance rule (issue 19).

    PYTHONPATH=. python bench/guidance_levels.py runs/synth_t2a_mel_cmp --n 90 --cfg 3 \\
        --rules cfg rescale:0.7 apg:0 apg:0:4

Samples the run's held-out prompts (the first ``--n`` of the set ``jaxstage eval --task tta`` uses) with
the run's EMA weights, its sampler and steps, at guidance scale ``--cfg`` under each rule; a row at
CFG 1 (unguided) and one for the rendered reference clips (the training level) come first. Per row:
peak level (max |audio| over the clips at raw levels, and the median of per-clip peaks), RMS level
(over all clips, and the median per clip), clips above full scale, the attribute analyzer's accuracy
(per attribute, their mean, and the share of clips with all four right) and FD on the spectral
embedding. Each row is appended to ``--out`` (a JSON list) as soon as it is measured, and a row
already there for the same run, step and settings is skipped: a stopped run loses nothing.

Rules: ``cfg``, ``rescale:PHI``, ``apg:ETA`` or ``apg:ETA:R`` (R = norm threshold).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "guidance_levels.json"


def parse_rule(text: str) -> dict[str, object]:
    """``cfg`` | ``rescale:PHI`` | ``apg:ETA[:R]`` -> keyword arguments of ``config.with_guidance``."""
    kind, *values = text.split(":")
    options = {"cfg": (), "rescale": ("cfg_rescale",), "apg": ("apg_eta", "apg_norm_threshold")}
    if kind not in options or len(values) > len(options[kind]):
        raise SystemExit(f"--rules: {text!r} is not cfg, rescale:PHI, apg:ETA or apg:ETA:R")
    return {"guidance": kind, **{key: float(v) for key, v in zip(options[kind], values)}}


def level_stats(audio: np.ndarray) -> dict[str, float]:
    """Peak and RMS levels of clips [n, N] at raw levels (full scale is 1)."""
    peaks = np.max(np.abs(audio), axis=1)
    rms = np.sqrt(np.mean(np.square(audio.astype(np.float64)), axis=1))
    return {"peak_max": float(peaks.max()), "peak_median": float(np.median(peaks)),
            "rms": float(np.sqrt(np.mean(np.square(rms)))), "rms_median": float(np.median(rms)),
            "above_full_scale": int(np.sum(peaks > 1.0))}


def attribute_stats(audio: np.ndarray, attributes: list[dict], sample_rate: int) -> dict[str, object]:
    """The attribute analyzer's accuracy: per attribute, their mean, and all four right."""
    from jaxstage.eval.attributes import ATTRIBUTE_KEYS, analyze, attribute_accuracy

    predicted = [analyze(a, sample_rate) for a in audio]
    per_key = attribute_accuracy(predicted, attributes)
    all_right = np.mean([all(p[k] == t[k] for k in ATTRIBUTE_KEYS) for p, t in zip(predicted, attributes)])
    return {"accuracy": per_key, "accuracy_mean": float(np.mean(list(per_key.values()))),
            "accuracy_all": float(all_right)}


def append_row(out: Path, row: dict) -> None:
    """Add ``row`` to the JSON list in ``out`` (written beside it and renamed: never half a file)."""
    rows = json.loads(out.read_text()) if out.is_file() else []
    rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, out)


def done_keys(out: Path) -> set[str]:
    return {row["key"] for row in json.loads(out.read_text())} if out.is_file() else set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", help="a trained synthetic text-to-audio run directory")
    parser.add_argument("--n", type=int, default=90, help="held-out prompts (the first n of the eval set)")
    parser.add_argument("--cfg", type=float, default=3.0, help="guidance scale for every rule")
    parser.add_argument("--rules", nargs="+", default=["cfg", "rescale:0.7", "apg:0"])
    parser.add_argument("--no-unguided", action="store_true", help="skip the CFG 1 reference row")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (as jaxstage eval --seed)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    from jaxstage.config import guidance_rule, with_guidance
    from jaxstage.eval.frechet import frechet_distance_of
    from jaxstage.eval.held_out import held_out_prompts
    from jaxstage.eval.spectral_embedding import spectral_embedding
    from jaxstage.eval.tta import generate
    from jaxstage.inference.load import load_run
    from jaxstage.inference.sampling import Generator
    from jaxstage.run.workdir import read_run_config

    workdir, cfg = read_run_config(args.workdir)
    prompts = held_out_prompts(cfg, args.n)
    if prompts.attributes is None:
        raise SystemExit(f"{workdir}: its held-out prompts have no attributes (a synthetic-data run is needed)")
    exp, state = load_run(cfg, workdir, step=args.step)
    sr, s = cfg.data.sample_rate, cfg.sample
    ref_embedding = spectral_embedding(prompts.references, sr)
    base = {"run": str(workdir.resolve()), "step": int(state.step), "n": len(prompts.captions),
            "sampler": s.sampler, "steps": s.steps, "seed": args.seed}
    device = f"{platform.machine()} CPU, {os.cpu_count()} cores" if exp.mesh.devices.flat[0].platform == "cpu" \
        else str(exp.mesh.devices.flat[0].device_kind)
    done = done_keys(args.out)

    def record(name: str, scale: float | None, rule: dict | None, audio: np.ndarray, seconds: float) -> None:
        row = {**base, "name": name, "cfg_scale": scale, "guidance": rule, **level_stats(audio),
               **attribute_stats(audio, prompts.attributes, sr),
               "fd_spectral": float(frechet_distance_of(ref_embedding, spectral_embedding(audio, sr))),
               "seconds": round(seconds, 1), "device": device, "key": key(name, scale)}
        append_row(args.out, row)
        print(json.dumps({k: row[k] for k in ("name", "peak_max", "peak_median", "rms", "accuracy_mean",
                                              "accuracy_all", "accuracy", "seconds")}), flush=True)

    def key(name: str, scale: float | None) -> str:
        return json.dumps({**base, "name": name, "cfg_scale": scale}, sort_keys=True)

    if key("reference", None) not in done:
        record("reference", None, None, prompts.references, 0.0)
    runs = [] if args.no_unguided else [("unguided", 1.0, {"guidance": "cfg"})]
    runs += [(text, args.cfg, parse_rule(text)) for text in args.rules]
    for name, scale, flags in runs:
        if key(name, scale) in done:
            print(f"{name} at cfg {scale:g}: already in {args.out}, skipped", flush=True)
            continue
        rule_cfg = with_guidance(cfg, **flags)
        generator = Generator(dataclasses.replace(exp, cfg=rule_cfg))  # the rule is read from exp.cfg.sample
        start = time.perf_counter()
        audio = generate(generator, state.ema_params, state.codec_stats, prompts, cfg_scale=scale, seed=args.seed)
        record(name, scale, dataclasses.asdict(guidance_rule(rule_cfg.sample)), audio, time.perf_counter() - start)


if __name__ == "__main__":
    main()
