"""Step-time overhead of the stage-adaptive recipe against the static one, measured in one run.

    python bench/regime_overhead.py                     # default cadence of configs/synth_t2a.py
    python bench/regime_overhead.py --steps 100 --set regime.every=10

Three step functions on the same model and batch, each compiled once, timed in interleaved rounds:
  adaptive     configs/synth_t2a.py (monitor every regime.every steps, structure check every
               struct.every steps, alignment, adaptive levels, structure regularizer)
  frozen       the same losses with the regime frozen (regime.mode=off: p = 0, no monitor events)
  static       configs/synth_t2a_static.py (no alignment, no mechanism)

Estimator: the machine is shared and its wall time jumps by 10-30 % for seconds at a time, so
totals over a round are not comparable between variants. Every step is timed on its own (blocking
on its output). Each round runs every variant for the same number of steps, a multiple of both
cadences, so step k of a round is the same kind of step (plain, or with a monitor or structure
event) in every round; the rounds interleave the variants in a rotated order. A variant's step time
is the mean over the positions k of the median over rounds of step k: a burst of machine noise
moves one sample of a median, not the result, and the periodic event steps keep their weight.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, overrides: list[str]):
    from jaxstage import parallel
    from jaxstage.config import load_config
    from jaxstage.data.pipeline import BatchStream
    from jaxstage.train.trainer import fresh_state
    from jaxstage.train.state import build_experiment
    from jaxstage.train.step import compile_train_step

    cfg = load_config(path, overrides)
    exp = build_experiment(cfg)
    state = fresh_state(exp)
    step = compile_train_step(exp, state)
    batch = parallel.global_batch(next(BatchStream(cfg, 0, 1)), exp.batch_sharding)
    return cfg, step, state, batch


def run(step, state, batch, steps: int):
    """Run ``steps`` steps, each timed to completion; returns (state, seconds of each step)."""
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        seconds.append(time.perf_counter() - start)
    return state, seconds


def robust_step_time(rounds: list[list[float]]) -> float:
    """Mean over step positions of the median over rounds (see the module docstring)."""
    return statistics.mean(statistics.median(column) for column in zip(*rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per variant per round (a multiple of the cadences)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    variants = {
        "adaptive": (ROOT / "configs" / "synth_t2a.py", args.overrides),
        "frozen": (ROOT / "configs" / "synth_t2a.py", args.overrides + ["regime.mode=off"]),
        "static": (ROOT / "configs" / "synth_t2a_static.py", args.overrides),
    }
    built = {name: build(path, sets) for name, (path, sets) in variants.items()}
    cfg = built["adaptive"][0]
    cadence = math.lcm(cfg.regime.every, cfg.struct.every)
    if args.steps % cadence:
        parser.error(f"--steps {args.steps} is not a multiple of the regime/structure cadence {cadence}")
    states = {}
    for name, (_, step, state, batch) in built.items():  # warm-up, then align every step count to a round start
        states[name], _ = run(step, state, batch, cadence)
    names = list(built)
    seconds = {name: [] for name in names}
    for r in range(args.rounds):  # interleaved, order rotated, so slow drifts hit all variants alike
        for name in names[r % len(names):] + names[: r % len(names)]:
            _, step, _, batch = built[name]
            states[name], times = run(step, states[name], batch, args.steps)
            seconds[name].append(times)
    step_time = {name: robust_step_time(rounds) for name, rounds in seconds.items()}
    naive = {name: statistics.mean(sum(rounds, [])) for name, rounds in seconds.items()}
    print(json.dumps({
        "step_ms": {k: round(v * 1000, 1) for k, v in step_time.items()},
        "adaptive_over_static": round(step_time["adaptive"] / step_time["static"], 3),
        "adaptive_over_frozen": round(step_time["adaptive"] / step_time["frozen"], 3),
        "plain_mean_step_ms": {k: round(v * 1000, 1) for k, v in naive.items()},
        "regime_every": cfg.regime.every, "struct_every": cfg.struct.every, "steps_per_round": args.steps,
        "rounds": args.rounds, "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
    }))


if __name__ == "__main__":
    main()
