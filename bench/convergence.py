"""The convergence study (SPEC §3.8): does stage-adaptive training beat static training here?

Trains every recipe of SPEC §3.8 on the synthetic text-to-audio task and the synthetic SR task for
the same number of steps with several seeds, evaluating every ``--eval-every`` steps (the trainer's
periodic evaluation, ``eval.every``), then writes ``docs/convergence.md`` (mean ± std over seeds at
each evaluation, steps to reach the static recipe's final value, a generated summary) and
``docs/convergence.png`` (metric against step, one line per recipe, ±1 std bands). Nothing in the
document is typed by hand: every number comes from the runs' metrics.jsonl.

    python bench/convergence.py                       # the full study (see docs/convergence.md for its wall time)
    python bench/convergence.py --seeds 0 --steps 40 --eval-every 20 --recipes static adaptive --out /tmp/smoke

Finished runs are kept (``OUT/<task>/<recipe>/seed<k>/``, a ``result.json`` each), so an
interrupted study resumes where it stopped. Scale: toy data, a 2-core CPU, the default configs' 96-wide 4-block DiT;
see the generated document for what that means for the conclusions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Recipes as overrides on the adaptive configs (SPEC §3.8; the README's ablation table).
RECIPES: dict[str, list[str]] = {
    "static": ["regime.mode=off", "guidance.lambda0=0", "timesteps.adaptive=false", "struct.enabled=false"],
    "static_repa": ["regime.mode=off", "timesteps.adaptive=false", "struct.enabled=false"],
    "haste_switch": ["regime.mode=switch_at", "regime.switch_step={half}"],
    "random_switch": ["regime.mode=random", "regime.random_low={sixth}", "regime.random_high={five_sixths}",
                      "regime.seed={seed}"],
    "guidance_only": ["timesteps.adaptive=false", "struct.enabled=false"],
    "timesteps_only": ["struct.enabled=false", "guidance.p_off=0.0"],
    "structure_only": ["timesteps.adaptive=false", "guidance.p_off=0.0"],
    "adaptive": [],
}

# Per task: base config, study-scale overrides, and metrics read from the eval_* lines
# (name -> (how to compute from a record, higher_is_better)). The first metric is the primary one.
ACC_KEYS = ("eval_acc_source", "eval_acc_pitch_band", "eval_acc_rhythm", "eval_acc_envelope")
TASKS = {
    "t2a": {
        "config": "configs/synth_t2a.py",
        "sets": ["train.batch_size=16", "sample.steps=16"],
        "metrics": {"attribute accuracy (mean of 4)": (lambda r: float(np.mean([r[k] for k in ACC_KEYS])), True),
                    "FD-spectral": (lambda r: r["eval_fd_spectral"], False)},
    },
    "sr": {
        "config": "configs/synth_sr.py",
        "sets": ["data.sample_rate=8000", "sr.cutoff_min_hz=1000", "sr.cutoff_max_hz=3000", "codec.n_fft=256",
                 "codec.hop_length=128", "train.batch_size=16", "sample.steps=16"],
        "metrics": {"LSD-HF (output, low band replaced)": (lambda r: r["eval_lsd_hf"], False),
                    "LSD": (lambda r: r["eval_lsd"], False)},
    },
}


def study_overrides(task: str, recipe: str, seed: int, steps: int, eval_every: int, eval_num: int) -> list[str]:
    """Every override of one run: task scale, recipe, seed, cadences scaled to ``steps``."""
    fill = dict(half=steps // 2, sixth=steps // 6, five_sixths=5 * steps // 6, seed=seed)
    every = max(steps // 24, 5)  # ~24 monitor / structure events per run
    common = [f"train.steps={steps}", f"train.seed={seed}", f"data.seed={seed}", "train.progress_bar=false",
              f"train.ckpt_every={steps}", "train.log_every=" + str(min(eval_every, 50)), "sample.every=0",
              "sample.final_eval_prompts=0", f"eval.every={eval_every}", f"eval.num={eval_num}",
              f"regime.every={every}", f"struct.every={every}", f"struct.ramp_steps={max(steps // 6, 1)}",
              "optim.warmup_steps=" + str(max(steps // 10, 1))]
    return TASKS[task]["sets"] + common + [o.format(**fill) for o in RECIPES[recipe]]


def run_one(task: str, recipe: str, seed: int, out: Path, steps: int, eval_every: int, eval_num: int) -> dict:
    """Train one (task, recipe, seed) unless its result.json exists; return the result."""
    from jaxstage.config import load_config
    from jaxstage.run.report import read_metrics
    from jaxstage.train.trainer import train

    workdir = out / task / recipe / f"seed{seed}"
    done = workdir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    if workdir.exists():  # an interrupted run: start it over (results need the whole trajectory)
        import shutil

        shutil.rmtree(workdir)
    cfg = load_config(str(ROOT / TASKS[task]["config"]),
                      study_overrides(task, recipe, seed, steps, eval_every, eval_num))
    start = time.perf_counter()
    train(cfg, workdir)
    wall = time.perf_counter() - start
    records = [r for r in read_metrics(workdir) if any(k.startswith("eval_") for k in r)]
    result = {"task": task, "recipe": recipe, "seed": seed, "wall_s": wall, "steps": [r["step"] for r in records],
              "metrics": {name: [fn(r) for r in records] for name, (fn, _) in TASKS[task]["metrics"].items()}}
    done.write_text(json.dumps(result, indent=2))
    return result


# ------------------------------------------------------------------------------------- report


def _stats(results: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean over seeds, std over seeds) of one recipe's metric."""
    steps = np.array(results[0]["steps"])
    values = np.array([r["metrics"][metric] for r in results], float)
    return steps, values.mean(axis=0), values.std(axis=0, ddof=1) if len(results) > 1 else np.zeros(len(steps))


def steps_to_reach(steps: np.ndarray, mean: np.ndarray, target: float, higher: bool) -> int | None:
    """First evaluation step whose seed mean is at least as good as ``target``."""
    hits = np.nonzero(mean >= target if higher else mean <= target)[0]
    return int(steps[hits[0]]) if hits.size else None


def summary_lines(task: str, by_recipe: dict[str, list[dict]]) -> list[str]:
    """Generated sentences: best recipe, adaptive vs static with the seed spread, recipes beating static."""
    metric, (_, higher) = next(iter(TASKS[task]["metrics"].items()))
    finals = {name: _stats(rs, metric) for name, rs in by_recipe.items()}
    final = {name: (m[-1], s[-1]) for name, (_, m, s) in finals.items()}
    order = sorted(final, key=lambda n: -final[n][0] if higher else final[n][0])
    better = "higher" if higher else "lower"
    lines = [f"- Best final {metric}: **{order[0]}** ({final[order[0]][0]:.4f}); worst: {order[-1]} "
             f"({final[order[-1]][0]:.4f}); {better} is better."]
    if "static" in final and "adaptive" in final:
        (a, sa), (s, ss) = final["adaptive"], final["static"]
        diff = a - s
        spread = float(np.hypot(sa, ss))
        wins = diff > 0 if higher else diff < 0
        verdict = ("beats" if wins else "does not beat") + " static"
        clear = abs(diff) > 2 * spread
        lines.append(f"- Adaptive (all three) {verdict} at the last evaluation: {a:.4f} vs {s:.4f} "
                     f"(difference {diff:+.4f}; combined seed std {spread:.4f}: "
                     f"{'larger than twice the spread' if clear else 'within twice the seed spread, so not a clear difference'}).")
        seeds = sorted({r["seed"] for r in by_recipe["adaptive"]} & {r["seed"] for r in by_recipe["static"]})
        if len(seeds) > 1:  # same seed = same data order, init and held-out set: a paired comparison
            final_of = {name: {r["seed"]: r["metrics"][metric][-1] for r in by_recipe[name]}
                        for name in ("adaptive", "static")}
            paired = np.array([final_of["adaptive"][k] - final_of["static"][k] for k in seeds])
            won = int(np.sum(paired > 0 if higher else paired < 0))
            lines.append(f"- Paired by seed (same data, initialization and held-out set), adaptive − static at the "
                         f"last evaluation: {paired.mean():+.4f} ± {paired.std(ddof=1):.4f}; adaptive better in "
                         f"{won} of {len(seeds)} seeds.")
    if "static" in final:
        s = final["static"][0]
        winners = [n for n in order if n != "static" and (final[n][0] > s if higher else final[n][0] < s)]
        lines.append(f"- Recipes whose final mean is better than static's: {', '.join(winners) if winners else 'none'}; "
                     f"not better: {', '.join(n for n in order if n not in winners and n != 'static') or 'none'}.")
    return lines


def write_report(results: list[dict], args: argparse.Namespace, wall_s: float, doc: Path, png: Path) -> None:
    """docs/convergence.md and docs/convergence.png from the runs' results."""
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxstage.config import load_config

    tasks = [t for t in args.tasks if any(r["task"] == t for r in results)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 5), constrained_layout=True, squeeze=False)
    lines = ["# Convergence study: stage-adaptive vs static recipes (generated)", "",
             f"Written by `python bench/convergence.py {' '.join(sys.argv[1:])}`".rstrip() + " — every number below "
             "comes from the runs' `metrics.jsonl`; nothing is typed by hand.", "",
             f"- Device: {jax.devices()[0].device_kind} ({jax.device_count()} device(s), {os.cpu_count()} CPU cores), "
             f"jax {jax.__version__}; total wall time of this invocation {wall_s / 60:.1f} min "
             f"(runs finished earlier are reused, so a resumed study reports only its own part; per-run times below).",
             f"- Scale: toy synthetic data, {args.steps} steps per run, batch 16, seeds {args.seeds}, evaluation "
             f"every {args.eval_every} steps on {args.eval_num} held-out prompts/clips (EMA weights, Euler 16 steps). "
             "Treat differences of the size of the seed spread as noise: this is far below the scale where the "
             "paper's claim is made.", ""]
    for col, task in enumerate(tasks):
        cfg = load_config(str(ROOT / TASKS[task]["config"]), study_overrides(task, "adaptive", 0, args.steps,
                                                                            args.eval_every, args.eval_num))
        by_recipe = {name: sorted([r for r in results if r["task"] == task and r["recipe"] == name],
                                  key=lambda r: r["seed"]) for name in args.recipes}
        by_recipe = {k: v for k, v in by_recipe.items() if v}
        metric_items = list(TASKS[task]["metrics"].items())
        metric, (_, higher) = metric_items[0]
        steps = np.array(next(iter(by_recipe.values()))[0]["steps"])
        lines += [f"## {task}: {metric}", "",
                  f"Config `{TASKS[task]['config']}` at study scale: {cfg.data.sample_rate} Hz, "
                  f"{cfg.model.embed_dim}-wide {cfg.model.depth}-block DiT, {cfg.codec.kind} codec. "
                  f"Per-run wall time: {np.mean([r['wall_s'] for rs in by_recipe.values() for r in rs]):.0f} s "
                  "on average (training plus the periodic evaluations).", ""]
        static_final = _stats(by_recipe["static"], metric)[1][-1] if "static" in by_recipe else None
        header = "| recipe | " + " | ".join(f"step {s}" for s in steps) + " | steps to static's final | final " \
                 + metric_items[1][0] + " |"
        lines += [header, "|" + "---|" * (len(steps) + 3)]
        ax = axes[0][col]
        for name, rs in by_recipe.items():
            st, mean, std = _stats(rs, metric)
            reach = steps_to_reach(st, mean, static_final, higher) if static_final is not None else None
            _, m2, s2 = _stats(rs, metric_items[1][0])
            cells = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(mean, std))
            lines.append(f"| {name} | {cells} | {reach if reach is not None else 'not reached'} | "
                         f"{m2[-1]:.4f} ± {s2[-1]:.4f} |")
            style = "-" if name in ("adaptive", "static") else "--"
            ax.plot(st, mean, style, label=name, linewidth=2.5 if name in ("adaptive", "static") else 1.2)
            ax.fill_between(st, mean - std, mean + std, alpha=0.12)
        ax.set(title=f"{task}: {metric}", xlabel="step", ylabel=metric + (" (higher is better)" if higher
                                                                          else " (lower is better)"))
        ax.legend(fontsize=8)
        lines += ["", "What it found:", ""] + summary_lines(task, by_recipe) + [""]
    lines += ["![metric against step](convergence.png)", ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))
    fig.savefig(png, dpi=110)
    print(f"wrote {doc} and {png}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=360)
    parser.add_argument("--eval-every", type=int, default=90)
    parser.add_argument("--eval-num", type=int, default=32)
    parser.add_argument("--out", default="runs/convergence", help="run directories and result.json files")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "convergence.md"))
    parser.add_argument("--png", default=None, help="default: beside --doc as convergence.png")
    args = parser.parse_args(argv)
    if args.steps % args.eval_every:
        parser.error(f"--steps {args.steps} must be a multiple of --eval-every {args.eval_every}")
    out, doc = Path(args.out), Path(args.doc)
    png = Path(args.png) if args.png else doc.with_suffix(".png")
    start = time.perf_counter()
    results = []
    jobs = [(t, r, s) for t in args.tasks for s in args.seeds for r in args.recipes]
    from tqdm import tqdm

    for task, recipe, seed in tqdm(jobs, desc="convergence study", unit="run"):
        results.append(run_one(task, recipe, seed, out, args.steps, args.eval_every, args.eval_num))
    write_report(results, args, time.perf_counter() - start, doc, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
