"""Train-step benchmark: compile time, step time and tokens/s for the tiny and small configs.

    python bench/step.py                      # tiny + small (configs/tiny_t2a.py, configs/synth_t2a.py)
    python bench/step.py --steps 50 --set train.batch_size=64

Timing is wall-clock over ``--steps`` steps on a fixed device-resident batch after one warm-up
step (the input pipeline is excluded; see ``--with-data``). Tokens are DiT tokens (codec frames)
per global batch. Record the printed table in docs/benchmarks.md with the device.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"tiny": ROOT / "configs" / "tiny_t2a.py", "small": ROOT / "configs" / "synth_t2a.py"}


def bench_config(name: str, path: Path, overrides: list[str], steps: int, with_data: bool) -> dict:
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
    stream = BatchStream(cfg, jax.process_index(), jax.process_count())
    batch = parallel.global_batch(next(stream), exp.batch_sharding)
    state, metrics = step(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        if with_data:
            batch = parallel.global_batch(next(stream), exp.batch_sharding)
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
    tokens = cfg.train.batch_size * exp.codec.num_frames(cfg.num_samples)
    params = sum(x.size for x in jax.tree.leaves(state.params))
    return {
        "config": name, "params": params, "batch": cfg.train.batch_size, "tokens_per_batch": tokens,
        "compile_s": round(step.compile_seconds, 2), "step_ms": round(step_s * 1000, 2),
        "tokens_per_s": round(tokens / step_s), "steps_per_s": round(1 / step_s, 2),
        "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}", "with_data": with_data,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--with-data", action="store_true", help="include the grain input pipeline")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    rows = [bench_config(n, CONFIGS[n], args.overrides, args.steps, args.with_data) for n in args.configs]
    for row in rows:
        print(json.dumps(row))
    print("\n| config | params | batch | tokens/batch | compile s | step ms | tokens/s | device |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['params']:,} | {r['batch']} | {r['tokens_per_batch']} | {r['compile_s']} | "
              f"{r['step_ms']} | {r['tokens_per_s']:,} | {r['device']} |")


if __name__ == "__main__":
    main()
