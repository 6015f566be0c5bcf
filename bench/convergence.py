"""The convergence study (SPEC §3.8): does stage-adaptive training beat static training, and does the
*measured* switch matter?

Every recipe of the study trains on the synthetic text-to-audio task and the synthetic SR task with
several seeds at one fixed design (``DESIGN``: run length, batch, evaluation cadence and held-out set
size). A finished run writes one small result file (its overrides, metric trajectory, p trajectory,
measured start, a second, independent evaluation of its final weights and, for SR, a large final
evaluation on ``LARGE_EVAL`` further clips) under ``docs/convergence/``; those files are committed,
and the study skips every run whose result is complete, so it can be completed in several sittings on
different machines. ``docs/convergence.md``, its
figures and the README's summary are regenerated from the result files alone
(``bench/convergence_report.py``).

    python bench/convergence.py                      # run what is missing (2 pinned workers), then report
    python bench/convergence.py --report-only        # regenerate docs/convergence.md + figures, no training
    python bench/convergence.py --only t2a:static,adaptive --seeds 0 1   # a part of the study
    python bench/convergence.py --measure-parallel   # one-at-a-time vs two side by side (parallel.json)
    python bench/convergence.py --check-sampler-steps  # 16 vs 32/64 evaluation sampler steps (sampler_steps.json)
    python bench/convergence.py --results /tmp/r --steps 40 --eval-every 20 --eval-num 4 --seeds 0 \\
        --only t2a:static,adaptive --no-sweep --no-pilot   # a smoke run of the machinery

Work is done by worker subprocesses (``--workers``, default 2 on a machine with at least 2 cores), each
pinned to one core with single-threaded XLA: on the 2-core CPU two such runs side by side finish more
steps per second in total than one run using both cores (``--measure-parallel`` measures it).
Stopping the study: a run sent SIGTERM saves a checkpoint and writes no result file, and the next
invocation resumes it; a run killed outright (SIGKILL, a lost machine) has no checkpoint before its
last step (``train.ckpt_every`` = the run's length) and starts over.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from convergence_stats import event_lag, measured_start, step_reaching  # noqa: E402

RESULTS = ROOT / "docs" / "convergence"  # committed result files
RUNS = ROOT / "runs" / "convergence"  # run directories (checkpoints removed once the result is written)

# The study's scale. A result file records the design it was run under; one from another design is
# neither reused nor reported. Chosen by the pilot (docs/convergence.md, "Design"): p completes its rise
# and the static recipes flatten out within 1800 steps of batch 16 on both tasks.
DESIGN: dict[str, Any] = {"steps": 1800, "batch": 16, "eval_every": 300, "eval_num": 128, "sample_steps": 16,
                          "log_every": 50}
PILOT_STEPS = 2400  # the pilot runs past the design's length to show where the curves flatten
SEEDS = (0, 1, 2, 3, 4)
SWEEP_SEEDS = (0, 1, 2)
SECOND_EVAL_SEED_OFFSET = 1  # the second evaluation samples with sample.seed + this
# The large final evaluation: on SR the 128-clip evaluations' noise is not below the seed spread
# (docs/convergence.md, "Evaluation noise"), so every SR run of the study proper also scores its final
# weights on this many further clips (after both 128-clip sets) in two halves: the halves measure the
# noise again, their mean is the final metric with 1/√8 of a 128-clip set's noise. Added to finished result
# files by the next invocation while the run's checkpoint is still there.
LARGE_EVAL: dict[str, int] = {"sr": 1024}
LARGE_EVAL_SEED_OFFSET = 2
# p "has completed its rise" at this level: past ~0.9 the measured rate, not the Δmax cap, limits each
# event's rise, so p creeps towards 1 (the pilot: 0.91 at step 1400, 0.99 at 1800, 1.0 at 2300)
RISE_LEVEL = 0.95


def rise_end(result: dict) -> int | None:
    """First logged step at which a run's p reaches RISE_LEVEL (None: never)."""
    return step_reaching(result["progress"]["steps"], result["progress"]["p"], RISE_LEVEL)

# Recipes as overrides on the adaptive configs (SPEC §3.8). Placeholders are filled per run
# (run_overrides): {steps}, {half}, {seed}; {start_low}/{start_high}/{ramp_start}/{ramp_end} and
# {aligned_start}/{aligned_end}/{aligned_low}/{aligned_high} come from the adaptive runs' measured starts on the
# same task (NEEDS_ADAPTIVE).
RECIPES: dict[str, list[str]] = {
    "static": ["regime.mode=off", "guidance.lambda0=0", "timesteps.adaptive=false", "struct.enabled=false"],
    "static_repa": ["regime.mode=off", "timesteps.adaptive=false", "struct.enabled=false"],
    "adaptive": [],
    # falsification controls: is the measured start better than a random or a fixed one?
    "random_switch": ["regime.mode=random", "regime.random_low={start_low}", "regime.random_high={start_high}",
                      "regime.seed={seed}"],
    # the same draws moved earlier by the log lag (randint from the same key over a range of the same width)
    "random_switch_aligned": ["regime.mode=random", "regime.random_low={aligned_low}",
                              "regime.random_high={aligned_high}", "regime.seed={seed}"],
    "fixed_switch": ["regime.mode=switch_at", "regime.switch_step={half}"],  # HASTE-like: a preset step
    "linear_ramp": ["regime.mode=linear", "regime.linear_start=0", "regime.linear_end={steps}"],
    "random_ramp": ["regime.mode=linear", "regime.linear_start={ramp_start}", "regime.linear_end={ramp_end}"],
    # the same draws moved earlier by the log lag: drawn over the monitor events that moved the adaptive p
    "random_ramp_aligned": ["regime.mode=linear", "regime.linear_start={aligned_start}",
                            "regime.linear_end={aligned_end}"],
    # each mechanism alone (p still measured; the other two mechanisms off)
    "guidance_only": ["timesteps.adaptive=false", "struct.enabled=false"],
    "timesteps_only": ["struct.enabled=false", "guidance.p_off=0.0"],
    "structure_only": ["timesteps.adaptive=false", "guidance.p_off=0.0"],
}
NEEDS_ADAPTIVE = ("random_switch", "random_switch_aligned", "random_ramp", "random_ramp_aligned")
CONTROLS = ("random_switch", "random_switch_aligned", "fixed_switch", "linear_ramp", "random_ramp",
            "random_ramp_aligned")
MECHANISMS = ("guidance_only", "timesteps_only", "structure_only")
# Run order: the falsification question first, then the other controls, then the ablations, then the
# aligned controls (added after the rest had run, so they come last).
PRIORITY = (("static", "adaptive"), ("random_switch", "fixed_switch"), ("linear_ramp", "random_ramp"),
            ("static_repa",) + MECHANISMS, ("random_ramp_aligned",), ("random_switch_aligned",))

# Sensitivity of the progress estimator (text-to-audio, the adaptive recipe): each key at two values
# besides the config's own (which is the adaptive recipe's runs).
SWEEP: dict[str, tuple[float | int, ...]] = {"regime.max_delta": (0.025, 0.1), "regime.every": (25, 100),
                                             "regime.beta": (0.6, 0.9), "regime.window": (4, 16)}
SWEEP_TASK = "t2a"

ACC_KEYS = ("eval_acc_source", "eval_acc_pitch_band", "eval_acc_rhythm", "eval_acc_envelope")
# Per task: base config, study-scale overrides, metrics read from an eval record
# (name -> (function of the record, higher is better)). The first metric is the primary one.
TASKS: dict[str, dict[str, Any]] = {
    "t2a": {
        "config": "configs/synth_t2a.py",
        "sets": [],
        "metrics": {"attribute accuracy": (lambda r: float(np.mean([r[k] for k in ACC_KEYS])), True),
                    "FD-spectral": (lambda r: r["eval_fd_spectral"], False)},
    },
    "sr": {
        "config": "configs/synth_sr.py",
        "sets": ["data.sample_rate=8000", "sr.cutoff_min_hz=1000", "sr.cutoff_max_hz=3000", "codec.n_fft=256",
                 "codec.hop_length=128"],
        "metrics": {"LSD-HF": (lambda r: r["eval_lsd_hf"], False), "LSD": (lambda r: r["eval_lsd"], False),
                    "SI-SDR (dB)": (lambda r: r["eval_si_sdr"], True)},
    },
}


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of the study: a (task, recipe, seed), optionally one sweep override or the pilot length."""

    task: str
    recipe: str
    seed: int
    variant: tuple[str, float | int] | None = None  # (config key, value) of the sensitivity sweep
    pilot: bool = False

    @property
    def name(self) -> str:
        if self.pilot:
            return f"pilot/{self.task}/{self.recipe}/seed{self.seed}"
        if self.variant:
            return f"sweep/{self.variant[0]}={self.variant[1]}/seed{self.seed}"
        return f"{self.task}/{self.recipe}/seed{self.seed}"

    def result_path(self, results: Path) -> Path:
        return results / f"{self.name}.json"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @staticmethod
    def from_json(text: str) -> "Job":
        d = json.loads(text)
        return Job(d["task"], d["recipe"], d["seed"], tuple(d["variant"]) if d["variant"] else None, d["pilot"])


def design_of(design: dict[str, Any], job: Job) -> dict[str, Any]:
    """The design a job runs under (the pilot runs longer)."""
    return dict(design, steps=PILOT_STEPS) if job.pilot else dict(design)


# ------------------------------------------------------------------------------------------ results


def load_results(results: Path, design: dict[str, Any]) -> list[dict]:
    """Every result file under ``results`` (recursively) whose design matches ``design`` (the pilot's
    with its own length). ``measured_start`` is taken from each file's logged p (``measured_start``), so
    a file written by an older rule (p > 0, before P_NOISE) is read by today's."""
    out = []
    for path in sorted(results.rglob("*.json")):
        try:
            r = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a JSON result file ({err})") from None
        if not isinstance(r, dict) or "design" not in r:
            continue  # another file kept beside the results (parallel.json)
        want = dict(design, steps=PILOT_STEPS) if r.get("pilot") else design
        if r["design"] == want:
            last = r["eval_steps"][-1] if r.get("eval_steps") else None
            if last != want["steps"]:
                raise ValueError(f"{path}: incomplete result (last evaluation at step {last} of {want['steps']}); "
                                 "delete it and rerun the study")
            r["measured_start"] = measured_start(r["progress"]["steps"], r["progress"]["p"])
            out.append(r)
    return out


def adaptive_starts(results: list[dict], task: str) -> list[dict]:
    """The finished adaptive runs of ``task`` at the study's design (no sweep, no pilot)."""
    return [r for r in results if r["task"] == task and r["recipe"] == "adaptive" and not r.get("variant")
            and not r.get("pilot")]


def switch_range(results: list[dict], task: str, every: int) -> tuple[int, int, int]:
    """(low, high, ramp length) for the random controls from the adaptive runs' measured starts: the range
    their measured start spans (widened to at least one monitor event each side of a single value) and
    the mean number of steps p took from its start to RISE_LEVEL (runs that never got there count to the end)."""
    runs = adaptive_starts(results, task)
    starts = [r["measured_start"] for r in runs if r["measured_start"] is not None]
    if not starts:
        raise RuntimeError(f"{task}: no finished adaptive run with a measured start; run the adaptive recipe first")
    low, high = min(starts), max(starts)
    if low == high:
        low, high = max(low - every, 0), high + every
    lengths = [(rise_end(r) or r["design"]["steps"]) - r["measured_start"] for r in runs
               if r["measured_start"] is not None]
    ramp = int(round(np.mean(lengths) / every)) * every
    return int(low), int(high), max(ramp, every)


def run_overrides(job: Job, design: dict[str, Any], results: list[dict]) -> list[str]:
    """Every override of one run: the task's scale, the design, the recipe, the seed, the sweep value."""
    d = design_of(design, job)
    steps = d["steps"]
    spec = TASKS[job.task]
    common = [f"train.steps={steps}", f"train.batch_size={d['batch']}", f"train.seed={job.seed}",
              f"data.seed={job.seed}", "train.progress_bar=false", f"train.ckpt_every={steps}",
              f"train.log_every={d['log_every']}", "sample.every=0", "sample.final_eval_prompts=0",
              f"sample.steps={d['sample_steps']}", f"eval.every={d['eval_every']}", f"eval.num={d['eval_num']}"]
    fill: dict[str, Any] = dict(steps=steps, half=steps // 2, seed=job.seed)
    if job.recipe in NEEDS_ADAPTIVE:
        from jaxstage.config import load_config

        cadence = load_config(str(ROOT / spec["config"]), spec["sets"]).regime.every
        low, high, ramp = switch_range(results, job.task, cadence)
        start = int(np.random.default_rng(1000 + job.seed).integers(low, high + 1))
        lag = round(event_lag([r["measured_start"] for r in adaptive_starts(results, job.task)
                               if r["measured_start"] is not None], cadence))
        aligned = max(start - lag, 0)
        shift = min(lag, low)  # the aligned switch range: [low, high] moved earlier, not below step 0
        fill.update(start_low=low, start_high=high, ramp_start=start, ramp_end=start + ramp,
                    aligned_start=aligned, aligned_end=aligned + ramp, aligned_low=low - shift,
                    aligned_high=high - shift)
    variant = [f"{job.variant[0]}={job.variant[1]}"] if job.variant else []
    return spec["sets"] + common + [o.format(**fill) for o in RECIPES[job.recipe]] + variant


def _eval_record_metrics(task: str, record: dict) -> dict[str, float]:
    return {name: float(fn(record)) for name, (fn, _) in TASKS[task]["metrics"].items()}


def second_evaluation(cfg, workdir: Path) -> dict[str, float]:
    """The final EMA weights scored once more on a disjoint held-out set (the next ``eval.num``
    prompts/clips of the evaluation stream) with another sampler seed: against the last periodic
    evaluation it measures the evaluation noise."""
    from jaxstage.inference.load import load_run

    n, seed = cfg.eval.num, cfg.sample.seed + SECOND_EVAL_SEED_OFFSET
    exp, state = load_run(cfg, workdir)
    if cfg.task == "sr":
        from jaxstage.eval.sr_report import sr_eval
        from jaxstage.inference.sr_sampling import SRGenerator

        mean = sr_eval(SRGenerator(exp, batch_size=min(cfg.train.batch_size, 16)), state, cfg, n, baselines=False,
                       skip=n, seed=seed)["mean"]["output_replaced"]
        return _eval_record_metrics("sr", {f"eval_{k}": v for k, v in mean.items()})
    from jaxstage.eval.held_out import PromptSet, held_out_prompts
    from jaxstage.inference.sampling import Generator

    both = held_out_prompts(cfg, 2 * n)
    second = PromptSet(both.captions[n:], both.references[n:], both.attributes[n:], source=both.source + ", second half")
    return t2a_metrics(cfg, Generator(exp), state, second, seed=seed)


def needs_large_eval(job: Job) -> bool:
    """Whether a job's result must carry the large final evaluation (its task's runs of the study proper)."""
    return job.task in LARGE_EVAL and not job.pilot and not job.variant


def large_evaluation(cfg, workdir: Path, task: str) -> dict[str, Any]:
    """The final EMA weights scored on LARGE_EVAL[task] further held-out clips (after the two
    ``eval.num`` sets), with another sampler seed: the metrics of each half and of all of them."""
    from jaxstage.eval.sr_report import sr_eval
    from jaxstage.inference.load import load_run
    from jaxstage.inference.sr_sampling import SRGenerator

    if task != "sr":
        raise NotImplementedError(f"large evaluation of task {task!r}: only sr is implemented")
    count, skip = LARGE_EVAL[task], 2 * cfg.eval.num
    exp, state = load_run(cfg, workdir)
    if int(state.step) != cfg.train.steps:
        raise RuntimeError(f"{workdir}: the newest checkpoint is step {int(state.step)}, not the final "
                           f"{cfg.train.steps}; the large evaluation needs the final weights")
    report = sr_eval(SRGenerator(exp, batch_size=min(cfg.train.batch_size, 16)), state, cfg, count, baselines=False,
                     skip=skip, seed=cfg.sample.seed + LARGE_EVAL_SEED_OFFSET)
    clips = [c["output_replaced"] for c in report["per_clip"]]

    def scored(part: list[dict]) -> dict[str, float]:
        return _eval_record_metrics(task, {f"eval_{k}": float(np.mean([c[k] for c in part])) for k in part[0]})

    return {"num": count, "skip": skip, "seed_offset": LARGE_EVAL_SEED_OFFSET,
            "halves": [scored(clips[: count // 2]), scored(clips[count // 2:])], "all": scored(clips)}


def add_large_eval(job: Job, out: Path, runs_dir: Path) -> dict:
    """Add the large final evaluation to a finished result file from its run's final checkpoint."""
    from jaxstage.config import load_config

    result = json.loads(out.read_text())
    workdir = runs_dir / job.name
    cfg = load_config(str(ROOT / TASKS[job.task]["config"]), result["overrides"])
    ckpt = workdir / "checkpoints" / str(cfg.train.steps)
    if not (_same_config(workdir, cfg) and ckpt.is_dir()):
        raise SystemExit(f"{out}: its large evaluation needs the run's final checkpoint {ckpt} (with the result's "
                         "config), which is not there; rerun the job on the machine that holds it")
    result["large_eval"] = large_evaluation(cfg, workdir, job.task)
    write_result(out, result)
    return result


def write_result(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)  # a result file is complete or absent


def job_done(job: Job, results: Path) -> bool:
    """A job's result file exists and carries every evaluation it needs."""
    out = job.result_path(results)
    return out.is_file() and (not needs_large_eval(job) or "large_eval" in json.loads(out.read_text()))


def t2a_metrics(cfg, generator, state, prompts, *, seed: int, steps: int | None = None) -> dict[str, float]:
    """The study's t2a metrics of the EMA weights on ``prompts`` (the eval_* keys PeriodicEval logs)."""
    from jaxstage.eval.tta import generate, score

    audio = generate(generator, state.ema_params, state.codec_stats, prompts, seed=seed,
                     **({"steps": steps} if steps else {}))
    metrics = score(cfg, prompts, audio)
    record = {f"eval_acc_{k}": v for k, v in metrics["attribute_accuracy"].items()}
    record["eval_fd_spectral"] = metrics["fd_spectral"]
    return _eval_record_metrics("t2a", record)


def _same_config(workdir: Path, cfg) -> bool:
    """Whether ``workdir`` holds a run of exactly ``cfg`` (the work directory aside)."""
    from jaxstage.config import load_json, to_dict

    saved = workdir / "config.json"
    if not saved.is_file():
        return False
    a, b = to_dict(load_json(saved)), to_dict(cfg)
    for d in (a, b):
        d.get("train", {}).pop("workdir", None)
    return a == b


def run_job(job: Job, design: dict[str, Any], results_dir: Path, runs_dir: Path) -> dict:
    """Train one run (unless its result exists), evaluate it a second time and write its result file.
    A run directory of the same config with a checkpoint is adopted: a finished one is not retrained, a
    stopped one (SIGTERM) resumes from its newest checkpoint. Any other leftover is started over.
    A run that stops before its last step writes no result (it exits non-zero)."""
    import jax

    from jaxstage.config import load_config
    from jaxstage.run.report import read_metrics
    from jaxstage.train.trainer import train

    out = job.result_path(results_dir)
    if out.is_file():
        if needs_large_eval(job) and "large_eval" not in json.loads(out.read_text()):
            return add_large_eval(job, out, runs_dir)  # a result of an earlier sitting
        return json.loads(out.read_text())
    overrides = run_overrides(job, design, load_results(results_dir, design))
    cfg = load_config(str(ROOT / TASKS[job.task]["config"]), overrides)
    workdir = runs_dir / job.name
    steps = cfg.train.steps
    ckpts = workdir / "checkpoints"  # a step directory, not just the folder (SIGKILL before any save)
    same = _same_config(workdir, cfg) and ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())
    finished = (same and (workdir / "metrics.jsonl").is_file()
                and any(r.get("step") == steps and any(k.startswith("eval_") for k in r)
                        for r in read_metrics(workdir)))
    start = time.perf_counter()
    if not finished:
        if not same:
            shutil.rmtree(workdir, ignore_errors=True)
        run = train(cfg, workdir)  # resumes from workdir's checkpoints when `same`
        if run.stopped_by is not None or run.final_step != steps:
            raise SystemExit(f"{job.name}: stopped ({run.stopped_by}) at step {run.final_step} of {steps}; no "
                             f"result written. Rerunning the study resumes it from {workdir}/checkpoints")
    wall = time.perf_counter() - start
    records = read_metrics(workdir)
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    logs = [r for r in records if "progress" in r]
    rates = [r["steps_per_s"] for r in logs if "steps_per_s" in r]
    progress_steps, progress = [r["step"] for r in logs], [float(r["progress"]) for r in logs]
    result = {
        "task": job.task, "recipe": job.recipe, "seed": job.seed,
        "variant": list(job.variant) if job.variant else None, "pilot": job.pilot,
        "design": design_of(design, job), "overrides": overrides,
        "wall_s": round(wall, 1) if not same else None,  # None: adopted or resumed
        "steps_per_s": round(float(np.median(rates)), 3) if rates else None,
        "device": f"{jax.devices()[0].device_kind}, jax {jax.__version__}",
        "eval_steps": [r["step"] for r in evals],
        "metrics": {name: [float(fn(r)) for r in evals] for name, (fn, _) in TASKS[job.task]["metrics"].items()},
        "progress": {"steps": progress_steps, "p": progress,
                     "ssl_weight": [float(r.get("ssl_weight", 0.0)) for r in logs],
                     "t_loc": [float(r["t_loc"]) for r in logs if "t_loc" in r]},
        "measured_start": measured_start(progress_steps, progress),
        "p_reaches_one": step_reaching(progress_steps, progress),
        "second_eval": None if job.pilot else second_evaluation(cfg, workdir),
    }
    if needs_large_eval(job):
        result["large_eval"] = large_evaluation(cfg, workdir, job.task)
    write_result(out, result)
    return result  # the run directory (final checkpoint) stays: --check-sampler-steps reads it


# ------------------------------------------------------------------------------------------ jobs


def study_jobs(tasks: list[str], recipes: list[str] | dict[str, list[str]], seeds: list[int], sweep: bool,
               pilot: bool) -> list[Job]:
    """Every job of the study in run order: the pilot first, then each PRIORITY group on every task (so
    both tasks' falsification runs come before either task's ablations), the sweep last. ``recipes`` is
    one list for every task or a list per task."""
    per_task = recipes if isinstance(recipes, dict) else {t: recipes for t in tasks}
    jobs = [Job(t, r, 0, pilot=True) for t in tasks for r in ("static", "adaptive")] if pilot else []
    for group in PRIORITY:
        for task in tasks:
            jobs += [Job(task, r, s) for s in seeds for r in group if r in per_task[task]]
    if sweep and SWEEP_TASK in tasks:
        jobs += [Job(SWEEP_TASK, "adaptive", s, (key, value)) for key, values in SWEEP.items() for value in values
                 for s in SWEEP_SEEDS if s in seeds]
    return jobs


def parse_only(spec: list[str] | None) -> dict[str, list[str]] | None:
    """``--only t2a:static,adaptive sr:static`` -> {task: [recipes]}; errors name the bad part."""
    if not spec:
        return None
    out: dict[str, list[str]] = {}
    for part in spec:
        task, _, names = part.partition(":")
        if task not in TASKS:
            raise SystemExit(f"--only {part}: unknown task {task!r} (known: {', '.join(TASKS)})")
        recipes = names.split(",") if names else list(RECIPES)
        bad = [r for r in recipes if r not in RECIPES]
        if bad:
            raise SystemExit(f"--only {part}: unknown recipe {bad[0]!r} (known: {', '.join(RECIPES)})")
        out.setdefault(task, []).extend(recipes)
    return out


def ready(job: Job, done: set[str], all_jobs: list[Job]) -> bool:
    """A random control waits for every adaptive run of its task in this invocation."""
    if job.recipe not in NEEDS_ADAPTIVE:
        return True
    return all(j.name in done for j in all_jobs
               if j.task == job.task and j.recipe == "adaptive" and not j.variant and not j.pilot)


def worker_env(pin: bool) -> dict[str, str]:
    env = dict(os.environ)
    if pin:  # one core per worker: single-threaded XLA (docs/convergence.md, "Throughput")
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1").strip()
    return env


def launch(job: Job, core: int | None, args: argparse.Namespace) -> subprocess.CompletedProcess:
    """One job in a worker subprocess (pinned to ``core`` when given); its output goes to a log file."""
    log = Path(args.runs) / "logs" / (job.name.replace("/", "_") + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--run-job", job.to_json(), "--results", args.results, "--runs", args.runs,
           "--design", json.dumps(args.design)]
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core)] + cmd
    with open(log, "w") as fh:
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=worker_env(core is not None),
                              cwd=ROOT)


def run_all(jobs: list[Job], args: argparse.Namespace) -> list[str]:
    """Run the missing jobs on ``args.workers`` workers in priority order; returns the failed jobs' names."""
    from tqdm import tqdm

    results = Path(args.results)
    todo = [j for j in jobs if not job_done(j, results)]
    waiting = {j.name for j in todo}
    done = {j.name for j in jobs if j.name not in waiting}
    failed: list[str] = []
    lock = threading.Condition()
    bar = tqdm(total=len(todo), desc="convergence study", unit="run")
    pin = args.workers > 1 and (os.cpu_count() or 1) >= args.workers and not args.no_pin

    def worker(core: int | None) -> None:
        while True:
            with lock:
                while True:
                    pending = [j for j in todo if j.name not in done and j.name not in failed
                               and j.name not in running]
                    if not pending:
                        return
                    job = next((j for j in pending if ready(j, done, jobs)), None)
                    if job is not None:
                        running.add(job.name)
                        break
                    if not running:  # waiting on something that failed
                        failed.extend(j.name for j in pending)
                        return
                    lock.wait()
            proc = launch(job, core, args)
            with lock:
                running.discard(job.name)
                (done.add if proc.returncode == 0 else failed.append)(job.name)
                bar.update(1)
                bar.set_postfix_str(job.name + ("" if proc.returncode == 0 else " FAILED"))
                lock.notify_all()

    running: set[str] = set()
    threads = [threading.Thread(target=worker, args=(i if pin else None,)) for i in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    return failed


def measure_parallel(args: argparse.Namespace, steps: int = 300) -> dict:
    """Wall time of two identical static t2a runs one at a time (all cores each) against side by side
    (one pinned single-threaded core each); written to RESULTS/parallel.json."""
    design = dict(args.design, steps=steps, eval_every=steps, eval_num=8)
    base = Path(args.runs) / "parallel"
    shutil.rmtree(base, ignore_errors=True)

    def one(seed: int, core: int | None, tag: str) -> subprocess.Popen:
        job = Job("t2a", "static", seed)
        cmd = [sys.executable, __file__, "--run-job", job.to_json(), "--results", str(base / tag / "results"),
               "--runs", str(base / tag / "runs"), "--design", json.dumps(design)]
        if core is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(core)] + cmd
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=worker_env(core is not None), cwd=ROOT)

    start = time.perf_counter()
    for seed in (0, 1):
        if one(seed, None, f"sequential{seed}").wait():
            raise RuntimeError("measure-parallel: a sequential run failed")
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    procs = [one(seed, seed, f"side{seed}") for seed in (0, 1)]
    if any(p.wait() for p in procs):
        raise RuntimeError("measure-parallel: a side-by-side run failed")
    side = time.perf_counter() - start
    from jaxstage.data.synthetic import make_example

    render = time.perf_counter()
    for i in range(256):  # what pre-rendering the clips would save: the data pipeline's per-clip cost
        make_example(0, i, 8000, 8000, 0.0)
    render_ms = (time.perf_counter() - render) / 256 * 1000
    out = {"runs": 2, "steps_each": steps, "one_at_a_time_s": round(sequential, 1), "render_ms_per_clip": round(render_ms, 3),
           "side_by_side_pinned_s": round(side, 1), "speedup": round(sequential / side, 3),
           "cores": os.cpu_count(), "what": "two static t2a runs (training + one evaluation of 8 prompts each)"}
    Path(args.results).mkdir(parents=True, exist_ok=True)
    (Path(args.results) / "parallel.json").write_text(json.dumps(out, indent=1))
    return out


def check_sampler_steps(args: argparse.Namespace, steps: tuple[int, ...] = (16, 32, 64)) -> dict:
    """The periodic evaluations sample with DESIGN['sample_steps'] Euler steps to save time: score the
    final weights of the finished t2a static and adaptive runs (seeds 0-1) with more steps on the same
    held-out set and sampler seed; written to RESULTS/sampler_steps.json."""
    from jaxstage.config import load_json
    from jaxstage.eval.held_out import held_out_prompts
    from jaxstage.inference.load import load_run
    from jaxstage.inference.sampling import Generator

    rows = []
    for recipe in ("static", "adaptive"):
        for seed in (0, 1):
            job = Job("t2a", recipe, seed)
            workdir = Path(args.runs) / job.name
            if not job.result_path(Path(args.results)).is_file() or not (workdir / "checkpoints").is_dir():
                continue
            cfg = load_json(workdir / "config.json")
            exp, state = load_run(cfg, workdir)
            prompts = held_out_prompts(cfg, cfg.eval.num)
            row = {"run": job.name}
            for n in steps:
                row[str(n)] = t2a_metrics(cfg, Generator(exp), state, prompts, seed=cfg.sample.seed, steps=n)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    if not rows:
        raise SystemExit("--check-sampler-steps: no finished t2a static/adaptive run directory with a checkpoint")
    out = {"steps": list(steps), "design_steps": args.design["sample_steps"], "runs": rows}
    (Path(args.results) / "sampler_steps.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--only", nargs="+", metavar="TASK:RECIPES",
                        help="restrict to these tasks/recipes, e.g. t2a:static,adaptive sr (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--no-sweep", action="store_true", help="skip the sensitivity sweep")
    parser.add_argument("--no-pilot", action="store_true", help="skip the pilot runs")
    parser.add_argument("--steps", type=int, default=DESIGN["steps"])
    parser.add_argument("--eval-every", type=int, default=DESIGN["eval_every"])
    parser.add_argument("--eval-num", type=int, default=DESIGN["eval_num"])
    parser.add_argument("--workers", type=int, default=2 if (os.cpu_count() or 1) >= 2 else 1)
    parser.add_argument("--no-pin", action="store_true", help="do not pin workers to cores")
    parser.add_argument("--results", default=str(RESULTS), help="result files (committed)")
    parser.add_argument("--runs", default=str(RUNS), help="run directories and worker logs")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "convergence.md"))
    parser.add_argument("--readme", default=str(ROOT / "README.md"),
                        help="README whose generated study summary is rewritten ('' to leave it)")
    parser.add_argument("--report-only", action="store_true", help="regenerate the report from the result files")
    parser.add_argument("--measure-parallel", action="store_true")
    parser.add_argument("--check-sampler-steps", action="store_true",
                        help="score finished runs' final weights with 16/32/64 Euler steps (sampler_steps.json)")
    parser.add_argument("--run-job", help=argparse.SUPPRESS)
    parser.add_argument("--design", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.design = json.loads(args.design) if args.design else dict(
        DESIGN, steps=args.steps, eval_every=args.eval_every, eval_num=args.eval_num)
    if args.design["steps"] % args.design["eval_every"]:
        parser.error(f"--steps {args.design['steps']} must be a multiple of --eval-every {args.design['eval_every']}")
    if args.run_job:  # a worker: one run
        run_job(Job.from_json(args.run_job), args.design, Path(args.results), Path(args.runs))
        return 0
    if args.measure_parallel:
        print(json.dumps(measure_parallel(args)))
        return 0
    if args.check_sampler_steps:
        check_sampler_steps(args)
        return 0
    from convergence_report import write_report

    failed: list[str] = []
    if not args.report_only:
        only = parse_only(args.only)
        tasks = list(only) if only else args.tasks
        recipes = only or {task: list(RECIPES) for task in tasks}
        jobs = study_jobs(tasks, recipes, args.seeds, not args.no_sweep, not args.no_pilot)
        failed = run_all(jobs, args)
    write_report(Path(args.results), args.design, Path(args.doc), Path(args.readme) if args.readme else None)
    if failed:
        print(f"{len(failed)} run(s) failed (logs under {args.runs}/logs): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
