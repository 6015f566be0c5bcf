"""Quality and latency of an ARC post-trained run against its pretrained run, in one process.

    python bench/arc.py --pretrained runs/synth_t2a --posttrained runs/synth_t2a_arc --prompts 90 \
        --out docs/arc_results.json

Rows: the pretrained run (EMA weights) with multi-step samplers (Heun and DPM-Solver++(2M), 50 steps,
CFG 3; its training-time Euler 32), the pretrained run with the few-step settings (ping-pong without
CFG, 1 to 8 steps), and the post-trained generator (EMA) with ping-pong at 1, 2, 4, 8 steps, no CFG. Quality
(jaxstage.eval.tta on the jaxstage.eval.held_out synthetic prompts): attribute accuracy (4 attributes and
their mean) and FD on the spectral embedding against reference clips. Latency: wall time of one
jitted generation (text encoder, sampler, codec decode) for batch 1 and batch 16 after a warm-up,
the median of --repeats runs, per second of generated audio; the rows are timed interleaved so both
models see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

PRETRAINED_ROWS = [("heun", 50, 3.0), ("dpmpp_2m", 50, 3.0), ("euler", 32, 3.0), ("dpmpp_2m", 8, 3.0)] + [
    ("pingpong", n, 1.0) for n in (1, 2, 4, 8)]  # the post-trained settings without post-training
POSTTRAINED_ROWS = [("pingpong", n, 1.0) for n in (1, 2, 4, 8)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--posttrained", required=True)
    parser.add_argument("--prompts", type=int, default=90)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the table as JSON")
    args = parser.parse_args()

    import jax

    from jaxstage.config import load_json
    from jaxstage.inference.load import load_run
    from jaxstage.inference.sampling import Generator
    from jaxstage.eval.held_out import held_out_prompts
    from jaxstage.eval.tta import generate, score

    runs = {}
    for name, path in (("pretrained", args.pretrained), ("post-trained", args.posttrained)):
        cfg = load_json(Path(path) / "config.json")
        exp, state = load_run(cfg, path)
        runs[name] = (cfg, Generator(exp), state)
    cfg = runs["pretrained"][0]
    prompts = held_out_prompts(cfg, args.prompts)
    seconds = cfg.data.clip_seconds
    rows = [("pretrained", *r) for r in PRETRAINED_ROWS] + [("post-trained", *r) for r in POSTTRAINED_ROWS]

    results = []
    for model, sampler, steps, scale in rows:
        _, generator, state = runs[model]
        audio = generate(generator, state.ema_params, state.codec_stats, prompts, sampler=sampler, steps=steps,
                         cfg_scale=scale, seed=0)
        metrics = score(cfg, prompts, audio)
        accuracy = metrics["attribute_accuracy"]
        results.append({"model": model, "sampler": sampler, "steps": steps, "cfg": scale,
                        "accuracy": accuracy, "mean_accuracy": float(np.mean(list(accuracy.values()))),
                        "fd_spectral": metrics["fd_spectral"]})
        print(json.dumps(results[-1]), flush=True)

    # latency: interleaved rounds over all rows, median per row (compiled executables are warm)
    timings: dict[tuple, list[float]] = {}
    for batch in (1, 16):
        captions = [prompts.captions[i % len(prompts.captions)] for i in range(batch)]
        for model, sampler, steps, scale in rows:  # warm-up: compile every (row, batch) once
            _, generator, state = runs[model]
            generator(state.ema_params, state.codec_stats, captions, sampler=sampler, steps=steps, cfg_scale=scale)
        for _ in range(args.repeats):
            for model, sampler, steps, scale in rows:
                _, generator, state = runs[model]
                start = time.perf_counter()
                generator(state.ema_params, state.codec_stats, captions, sampler=sampler, steps=steps,
                          cfg_scale=scale)  # returns host numpy: the work is finished
                timings.setdefault((model, sampler, steps, scale, batch), []).append(time.perf_counter() - start)
    for row in results:
        for batch in (1, 16):
            t = statistics.median(timings[(row["model"], row["sampler"], row["steps"], row["cfg"], batch)])
            row[f"latency_b{batch}_s"] = t
            row[f"seconds_per_audio_second_b{batch}"] = t / (batch * seconds)
    device = f"{jax.devices()[0].platform} x{jax.device_count()} ({jax.devices()[0].device_kind})"
    report = {"device": device, "jax": jax.__version__, "clip_seconds": seconds, "prompts": len(prompts.captions),
              "pretrained": str(args.pretrained), "posttrained": str(args.posttrained), "rows": results}
    print(_table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


def _table(report: dict) -> str:
    lines = ["| model | sampler | steps | CFG | source | pitch | rhythm | envelope | mean | FD-spectral | "
             "s per audio s (batch 1) | (batch 16) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        a = r["accuracy"]
        lines.append(f"| {r['model']} | {r['sampler']} | {r['steps']} | {r['cfg']:g} | {a['source']:.2f} | "
                     f"{a['pitch_band']:.2f} | {a['rhythm']:.2f} | {a['envelope']:.2f} | {r['mean_accuracy']:.3f} | "
                     f"{r['fd_spectral']:.2f} | {r['seconds_per_audio_second_b1']:.4f} | "
                     f"{r['seconds_per_audio_second_b16']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
