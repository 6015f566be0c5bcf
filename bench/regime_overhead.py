"""Step-time overhead of the stage-adaptive recipe against the static one, measured in one run.

    python bench/regime_overhead.py                     # default cadence of configs/synth_t2a.py
    python bench/regime_overhead.py --steps 200 --set regime.every=10

Three step functions on the same model and batch, each compiled once, timed in interleaved rounds:
  adaptive     configs/synth_t2a.py (monitor every regime.every steps, structure check every
               struct.every steps, alignment, adaptive levels, structure regularizer once on)
  frozen       the same losses with the regime frozen (regime.mode=off: p = 0, no monitor events)
  static       configs/synth_t2a_static.py (no alignment, no mechanism)
The ratios adaptive/static and adaptive/frozen are printed; record them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, overrides: list[str]):
    from jaxstage import parallel
    from jaxstage.config import load_config
    from jaxstage.data.pipeline import BatchStream
    from jaxstage.train.loop import fresh_state
    from jaxstage.train.state import build_experiment
    from jaxstage.train.step import compile_train_step

    cfg = load_config(path, overrides)
    exp = build_experiment(cfg)
    state = fresh_state(exp)
    step = compile_train_step(exp, state)
    batch = parallel.global_batch(next(BatchStream(cfg, 0, 1)), exp.batch_sharding)
    return cfg, step, state, batch


def run(step, state, batch, steps: int):
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return state, (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps per timed round (a multiple of the cadences)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    variants = {
        "adaptive": (ROOT / "configs" / "synth_t2a.py", args.overrides),
        "frozen": (ROOT / "configs" / "synth_t2a.py", args.overrides + ["regime.mode=off"]),
        "static": (ROOT / "configs" / "synth_t2a_static.py", args.overrides),
    }
    built = {name: build(path, sets) for name, (path, sets) in variants.items()}
    states = {}
    for name, (_, step, state, batch) in built.items():  # warm-up
        states[name], _ = run(step, state, batch, 2)
    times = {name: [] for name in built}
    for _ in range(args.rounds):  # interleaved so that machine noise hits all variants alike
        for name, (_, step, _, batch) in built.items():
            states[name], seconds = run(step, states[name], batch, args.steps)
            times[name].append(seconds)
    best = {name: min(t) for name, t in times.items()}
    cfg = built["adaptive"][0]
    print(json.dumps({
        "step_ms": {k: round(v * 1000, 2) for k, v in best.items()},
        "adaptive_over_static": round(best["adaptive"] / best["static"], 3),
        "adaptive_over_frozen": round(best["adaptive"] / best["frozen"], 3),
        "regime_every": cfg.regime.every, "struct_every": cfg.struct.every, "steps_per_round": args.steps,
        "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
    }))


if __name__ == "__main__":
    main()
