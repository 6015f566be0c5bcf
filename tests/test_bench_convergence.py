"""bench/convergence.py and its report: every recipe is a valid config on both tasks, the random controls
take their range from the adaptive runs, the statistics are paired bootstrap intervals, and
``--report-only`` regenerates the document, the figures and the README block from result files alone."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import convergence  # noqa: E402
import convergence_report  # noqa: E402
import convergence_stats as stats  # noqa: E402

from jaxstage.config import load_config  # noqa: E402
from jaxstage.stage.regime import random_switch_step  # noqa: E402

DESIGN = dict(convergence.DESIGN, steps=600, eval_every=300, eval_num=8)


def fake_result(task, recipe, seed, *, start=None, end=None, shift=0.0, variant=None, pilot=False, design=DESIGN):
    """A result file's content with made-up trajectories (higher-is-better metrics rise, others fall)."""
    steps = list(range(design["eval_every"], (2400 if pilot else design["steps"]) + 1, design["eval_every"]))
    metrics = {}
    for name, (_, higher) in convergence.TASKS[task]["metrics"].items():
        base = np.linspace(0.3, 0.5, len(steps)) + shift + 0.01 * seed
        metrics[name] = list(base if higher else 2.5 - base)
    p_steps = list(range(50, steps[-1] + 1, 50))
    p = [0.0 if start is None or s < start else min(1.0, (s - start + 50) / ((end or s + 1) - start + 50))
         for s in p_steps]
    return {"task": task, "recipe": recipe, "seed": seed, "variant": list(variant) if variant else None,
            "pilot": pilot, "design": dict(design, steps=2400) if pilot else design, "overrides": [],
            "wall_s": 10.0, "steps_per_s": 5.0, "device": "cpu, jax test", "eval_steps": steps, "metrics": metrics,
            "progress": {"steps": p_steps, "p": p, "ssl_weight": [0.5] * len(p), "t_loc": [0.8] * len(p)},
            "measured_start": convergence.measured_start(p_steps, p),
            "p_reaches_one": convergence.step_reaching(p_steps, p),
            "second_eval": None if pilot else {k: v[-1] + 0.01 * (-1) ** seed for k, v in metrics.items()},
            **({"large_eval": {"num": 1024, "skip": 2 * design["eval_num"], "seed_offset": 2, "halves": [
                {k: v[-1] + 0.002 for k, v in metrics.items()}, {k: v[-1] - 0.002 * (-1) ** seed for k, v in
                                                                 metrics.items()}],
                "all": {k: v[-1] + 0.001 * (1 - (-1) ** seed) for k, v in metrics.items()}}}
               if task in convergence.LARGE_EVAL and not pilot and not variant else {})}


def write(results: Path, r: dict) -> None:
    job = convergence.Job(r["task"], r["recipe"], r["seed"], tuple(r["variant"]) if r["variant"] else None, r["pilot"])
    path = job.result_path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r))


def test_every_recipe_and_task_is_a_valid_config():
    adaptive = [fake_result(t, "adaptive", s, start=200 + 50 * s, end=500 + 50 * s) for t in convergence.TASKS
                for s in range(3)]
    for task, spec in convergence.TASKS.items():
        for recipe in convergence.RECIPES:
            job = convergence.Job(task, recipe, 1)
            cfg = load_config(str(ROOT / spec["config"]), convergence.run_overrides(job, DESIGN, adaptive))
            assert cfg.train.steps == 600 and cfg.eval.every == 300 and cfg.eval.num == 8 and cfg.train.seed == 1
            assert cfg.train.batch_size == DESIGN["batch"] and cfg.sample.steps == DESIGN["sample_steps"]
            assert cfg.task == ("sr" if task == "sr" else "t2a")
            if recipe == "static":
                assert cfg.regime.mode == "off" and cfg.guidance.lambda0 == 0 and not cfg.struct.enabled
            if recipe == "fixed_switch":
                assert cfg.regime.mode == "switch_at" and cfg.regime.switch_step == 300
            if recipe == "linear_ramp":
                assert (cfg.regime.linear_start, cfg.regime.linear_end) == (0, 600)
            if recipe == "random_switch":  # over the range the adaptive runs' measured starts span
                assert cfg.regime.seed == 1 and (cfg.regime.random_low, cfg.regime.random_high) == (200, 300)
            if recipe == "random_ramp":  # a random start in that range, the adaptive runs' mean rise length
                assert 200 <= cfg.regime.linear_start <= 300
                assert cfg.regime.linear_end - cfg.regime.linear_start == 300
            if recipe == "random_switch_aligned":  # random_switch's own draw, one log interval earlier
                switch = load_config(str(ROOT / spec["config"]), convergence.run_overrides(
                    convergence.Job(task, "random_switch", 1), DESIGN, adaptive))
                assert (cfg.regime.random_low, cfg.regime.random_high) == (150, 250) and cfg.regime.seed == 1
                assert int(random_switch_step(cfg.regime)) == int(random_switch_step(switch.regime)) - 50
            if recipe == "random_ramp_aligned":  # the same draw, one log interval earlier (starts 200 + 50 s)
                ramp = load_config(str(ROOT / spec["config"]),
                                   convergence.run_overrides(convergence.Job(task, "random_ramp", 1), DESIGN, adaptive))
                assert cfg.regime.linear_start == ramp.regime.linear_start - 50
                assert cfg.regime.linear_end == ramp.regime.linear_end - 50
    sweep = convergence.Job("t2a", "adaptive", 0, ("regime.max_delta", 0.1))
    cfg = load_config(str(ROOT / "configs/synth_t2a.py"), convergence.run_overrides(sweep, DESIGN, []))
    assert cfg.regime.max_delta == 0.1 and cfg.regime.mode == "adaptive"


def test_random_controls_need_adaptive_runs():
    with pytest.raises(RuntimeError, match="t2a: no finished adaptive run"):
        convergence.run_overrides(convergence.Job("t2a", "random_switch", 0), DESIGN, [])
    jobs = convergence.study_jobs(["t2a"], list(convergence.RECIPES), [0, 1], sweep=True, pilot=True)
    names = [j.name for j in jobs]
    assert names[:2] == ["pilot/t2a/static/seed0", "pilot/t2a/adaptive/seed0"]
    assert names.index("t2a/adaptive/seed1") < names.index("t2a/random_switch/seed0")
    assert names[-1].startswith("sweep/regime.window=16/seed1") and len(jobs) == 2 + 12 * 2 + 8 * 2
    control = convergence.Job("t2a", "random_switch", 0)
    assert not convergence.ready(control, {"t2a/adaptive/seed0"}, jobs)
    assert convergence.ready(control, {"t2a/adaptive/seed0", "t2a/adaptive/seed1"}, jobs)
    assert convergence.Job.from_json(sweep_json := jobs[-1].to_json()).to_json() == sweep_json
    # both tasks: each priority group runs on every task before the next group (the SR verdict before
    # the t2a ablations); per-task recipe lists restrict each task alone
    both = [j.name for j in convergence.study_jobs(["t2a", "sr"], {"t2a": list(convergence.RECIPES),
                                                                   "sr": ["static", "adaptive"]}, [0], False, False)]
    assert both.index("sr/adaptive/seed0") < both.index("t2a/random_switch/seed0") < both.index("t2a/static_repa/seed0")
    assert not any(n.startswith("sr/") and "static/" not in n and "adaptive/" not in n for n in both)


def test_paired_bootstrap_intervals():
    a = {k: 1.0 + 0.1 * k for k in range(5)}
    b = {k: 0.5 + 0.1 * k + 0.01 * (-1) ** k for k in range(5)}
    d = stats.paired_difference(a, b)  # the seed effect cancels: a tight interval around +0.5
    assert d.n == 5 and d.low <= d.mean <= d.high and 0.48 < d.low and d.high < 0.52 and d.excludes_zero()
    unpaired = stats.mean_interval(np.array(list(a.values())))
    assert unpaired.high - unpaired.low > 5 * (d.high - d.low)
    assert not stats.paired_difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0}).excludes_zero()  # < MIN_SEEDS
    assert stats.mean_interval(np.array([0.3])).fmt() == "0.3000 (n=1, no interval)"
    steps = np.array([100, 200, 300])
    curves = {k: np.array([0.1, 0.4, 0.6]) + 0.01 * k for k in range(5)}
    point, low, high, n = stats.steps_to_reach_interval(steps, curves, {k: 0.5 for k in range(5)}, higher=True)
    assert (point, low, high, n) == (300, 300, 300, 5)
    point, low, high, _ = stats.steps_to_reach_interval(steps, curves, {k: 0.9 for k in range(5)}, higher=True)
    assert point is None and np.isinf(low)
    assert stats.evaluation_noise([(1.0, 1.2), (2.0, 2.2), (3.0, 3.2)]) == pytest.approx(0.0)  # offset only
    assert stats.evaluation_noise([(1.0, 1.2), (2.0, 1.8)]) == pytest.approx(np.std([-0.2, 0.2], ddof=1) / 2 ** 0.5)
    assert stats.seed_spread([[1.0, 3.0], [10.0, 12.0]]) == pytest.approx(np.sqrt(2.0))
    assert stats.measured_start([50, 100, 150], [0.0, 0.0, 0.2]) == 150
    assert stats.measured_start([50, 100, 150], [0.0, 6e-8, 0.05]) == 150  # float32 rounding is no start
    # the log at step N shows the p update N used, set by the N - 1 updates before it
    assert [stats.first_logged_after(s, 50) for s in (449, 450, 451, 225)] == [450, 500, 500, 250]
    assert stats.step_reaching([50, 100], [0.5, 0.9]) is None


def test_report_only_regenerates_the_document_from_result_files(tmp_path):
    results = tmp_path / "results"
    for task in convergence.TASKS:
        for s in range(5):
            write(results, fake_result(task, "static", s))
            write(results, fake_result(task, "adaptive", s, start=150, end=450, shift=0.05))
            write(results, fake_result(task, "random_switch", s, start=200 + 50 * (s % 2), end=200 + 50 * (s % 2),
                                       shift=0.05 + 0.001 * (-1) ** s))
            write(results, fake_result(task, "fixed_switch", s, start=300, end=300, shift=-0.02))
    for s in range(3):
        write(results, fake_result("t2a", "adaptive", s, variant=("regime.max_delta", 0.1), start=450, end=550))
        write(results, fake_result("t2a", "adaptive", s, variant=("regime.window", 4), start=250, end=550))
    write(results, fake_result("t2a", "static", 0, pilot=True))
    write(results, fake_result("t2a", "adaptive", 0, pilot=True, start=150, end=450))
    other = fake_result("t2a", "static", 9, design=dict(DESIGN, steps=900))  # another design: not reported
    write(results, other)
    (results / "parallel.json").write_text(json.dumps({"steps_each": 300, "cores": 2, "one_at_a_time_s": 100.0,
                                                      "side_by_side_pinned_s": 70.0, "speedup": 1.43}))
    (results / "sampler_steps.json").write_text(json.dumps({"steps": [16, 32], "design_steps": 16, "runs": [
        {"run": "t2a/static/seed0", "16": {"attribute accuracy": 0.5, "FD-spectral": 200.0},
         "32": {"attribute accuracy": 0.51, "FD-spectral": 190.0}}]}))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{convergence_report.README_START}\nold text\n{convergence_report.README_END}\nrest\n")
    doc = tmp_path / "docs" / "convergence.md"
    argv = ["--report-only", "--results", str(results), "--doc", str(doc), "--readme", str(readme),
            "--steps", "600", "--eval-every", "300", "--eval-num", "8"]
    assert convergence.main(argv) == 0
    text = doc.read_text()
    for png in ("convergence.png", "convergence_switch.png", "convergence_sensitivity.png",
                "convergence_differences.png"):
        assert (doc.parent / png).stat().st_size > 1000 and png in text
    # every metric at each evaluation against static and random_switch (the appendix); the primary
    # metric against static stays in its task's section, once
    for task, spec in convergence.TASKS.items():
        for i, metric in enumerate(spec["metrics"]):
            assert f"### {task}: {metric} − random_switch" in text
            assert (f"### {task}: {metric} − static" in text) == (i > 0)
            assert text.count(f"Difference to static at each evaluation ({metric},") == 1
    against_random = text.split("### t2a: attribute accuracy − random_switch", 1)[1].split("###", 1)[0]
    assert "| static | -0.0502 [-0.0510, -0.0494] | -0.0502 [-0.0510, -0.0494] |" in against_random
    # the pilot's single-seed differences carry the noise of a paired difference (0 in the fake files)
    assert "From step 600 to 2400 it moves by +0.1714 ± 0.0000, against +0.0286 ± 0.0000 from the first" in text
    # the verdicts are generated from the numbers: +0.05 over static and fixed, ~0 against random
    assert "**t2a** (attribute accuracy, final evaluation, 5 paired seeds): mixed — against random_switch: no " \
           "detectable difference; against fixed_switch: better" in text
    assert "adaptive vs static +0.0500 [+0.0500, +0.0500]: better" in text
    assert "On the second, disjoint held-out set: against random_switch" in text  # the verdict, replicated
    # t2a has no large evaluation: its verdict pools both final evaluations (SR uses its large one instead)
    assert ("  Both final evaluations pooled (the mean of the two scores, 16 items per run; its noise has half the "
            "variance of one set's, so it is this task's best-resolved estimate): against random_switch -0.0002 "
            "[-0.0010, +0.0006]: no detectable difference; against fixed_switch +0.0700 [+0.0700, +0.0700]: better; "
            "against static +0.0500 [+0.0500, +0.0500]: better — on the two switches the first set's words.") in text
    assert text.count("Both final evaluations pooled") == 1
    assert "t2a has no large final evaluation; its verdict also pools both final evaluations" in text
    assert "against fixed_switch +0.0700 [+0.0700, +0.0700]: better — the same words: the verdict replicates" in text
    assert "| t2a | attribute accuracy |" in text and "seed spread" in text  # evaluation noise table
    # paired differences: the fake second evaluation shifts both recipes of a seed alike, so it cancels
    assert "| t2a | attribute accuracy | 0.0000 | 0.0006 | 0.00 | 15 |" in text and "Where the noise" not in text
    assert "t2a static_repa seeds 0, 1, 2, 3, 4; " in text  # missing runs grouped per recipe
    assert "t2a | adaptive | 150 → 450" in text  # measured start → p reaches 0.95, per seed
    # the sweep table: the first step p can move (the buffer's fill time, moved by the swept window), the
    # earliest start (one event later, as the log shows it) and the measured start's distance from it in
    # monitor events (every = 50)
    assert "| `regime.max_delta` | 0.1 | 3 | 400 | 500 | 450 [450, 450] | -1.0 [-1.0, -1.0] |" in text
    assert "| `regime.window` | 4 | 3 | 200 | 300 | 250 [250, 250] | -1.0 [-1.0, -1.0] |" in text
    assert "| `regime.window` | 16 | 0 | 800 | 900 |" in text
    assert "the log shows that at step 500 at the earliest. The measured starts lie -7.0 [-7.0, -7.0]" in text
    assert "which lie 50 steps on average after the monitor event" in text  # fake starts at 150: event 100
    # the sweep in plain words: how the start moves against the fill step, paired by seed with the default
    assert "(t2a, adaptive; 2 of 8 swept values have at least 2 seeds)" in text
    assert ("`regime.window` = 4 (3 seeds) moves the earliest start by -200; the measured start moves "
            "+100 [+100, +100] steps (-50% of that move) and lies -1.0 [-1.0, -1.0] events after it; final attribute accuracy "
            "-0.0500 [-0.0500, -0.0500]: worse.") in text
    assert "`regime.max_delta` = 0.1 (3 seeds) leaves the earliest start; the measured start moves +300 [+300, +300]" in text
    assert ("Where a value moves the earliest start (1 value), the measured start follows -50%–-50% of that move; "
            "where it leaves it (1 value), the start moves +300 to +300 steps.") in text
    # the large final evaluation (SR): its noise table, the recipes on it, the verdict on it
    assert "## sr: the large final evaluation (1024 clips)" in text and "| LSD-HF | 0.0010 | 0.0159 | 0.06 |" in text
    assert "  On the large final evaluation (1024 clips): against random_switch" in text
    assert "see the large final evaluation below" not in text  # the fake SR noise is below its spread
    assert "have their noise below their seed spread on: LSD-HF, LSD, SI-SDR (dB)." in text
    assert "The noise of a single run's score is not below" not in text
    assert ("On the large final evaluation (1024 clips), better than static: adaptive, random_switch; worse: "
            "fixed_switch (of 3 recipes scored on it).") in text
    assert "seed 9" not in text and "1 result file(s) of another design were left out" in text and "Completeness: 48 of" in text and "Missing" in text
    assert "| t2a/static/seed0 | 0.5000 | 0.5100 | 200.0000 | 190.0000 |" in text  # sampler steps check
    assert "1.43× the throughput" in text and "p leaves 0 at step 150 and reaches 0.95 at step 450 and 1 at step 450." in text
    new_readme = readme.read_text()
    assert new_readme.startswith("intro\n") and new_readme.endswith("\nrest\n") and "old text" not in new_readme
    assert "against fixed_switch: better" in new_readme and "docs/convergence.md" in new_readme
    before = text
    assert convergence.main(argv) == 0 and doc.read_text() == before  # regenerated identically
    loaded = convergence.load_results(results, DESIGN)  # the second set disagrees: flagged, not hidden
    for r in loaded:
        if r["recipe"] == "fixed_switch" and r["task"] == "t2a":
            r["second_eval"] = {k: v + 0.1 for k, v in r["second_eval"].items()}
    t2a_line = next(l for l in convergence_report.overall_verdict(loaded) if l.startswith("- **t2a**"))
    assert "**the verdict does not replicate**" in t2a_line and "the two sets pooled (below)" in t2a_line
    assert "Where one score's noise is not below the seed spread" not in text
    assert "Where one score's noise is not below the seed spread (t2a attribute accuracy, t2a FD-spectral)" in \
        "\n".join(convergence_report.noise_section(loaded))  # the +0.1 on one recipe's second set is noise now
    pooled_line = next(l for l in convergence_report.overall_verdict(loaded) if l.startswith("  Both final"))
    assert "against fixed_switch +0.0200 [+0.0200, +0.0200]: better" in pooled_line  # (0.07 + (0.07 - 0.1)) / 2
    loaded.append(dict(fake_result("t2a", "random_ramp", 0, start=150, end=450, shift=0.05), design=DESIGN))
    assert any("isolates the measured start: adaptive − random_ramp" in l and "(n=1, no interval)" in l
               for l in convergence_report.overall_verdict(loaded))
    loaded += [dict(fake_result("t2a", "random_ramp_aligned", s, start=100, end=400, shift=0.05 - 0.01 * s),
                    design=DESIGN) for s in range(5)]
    assert any(l.startswith("  random_ramp_aligned has the same draws moved earlier by that lag: adaptive − "
                            "random_ramp_aligned +0.0200 [") and l.endswith(": better.")
               for l in convergence_report.overall_verdict(loaded))
    assert not any("is the earliest its estimator allows" in l for l in convergence_report.overall_verdict(loaded))
    for r in loaded:  # every adaptive start at the earliest the estimator allows (step 500): said so
        if r["task"] == "t2a" and r["recipe"] == "adaptive" and not r.get("variant") and not r.get("pilot"):
            r["measured_start"] = 500
    assert any("Every adaptive run's start on t2a is the earliest its estimator allows (5 of 5)" in l
               for l in convergence_report.overall_verdict(loaded))
    loaded += [fake_result("t2a", "guidance_only", s, start=150, end=450, shift=0.05) for s in range(3)]
    loaded.append(fake_result("t2a", "structure_only", 0, shift=0.05))
    found = "\n".join(convergence_report.findings(loaded))
    assert "Mechanisms that help alone (of guidance_only; on the final evaluation): guidance_only." in found
    # on SR the mechanisms are judged on the large final evaluation: better on the 128 clips, not on it
    static_sr = {r["seed"]: r for r in loaded if r["task"] == "sr" and r["recipe"] == "static" and not r["pilot"]}
    for s in range(3):
        r = fake_result("sr", "structure_only", s, shift=0.05)
        r["large_eval"] = static_sr[s]["large_eval"]
        loaded.append(r)
    found = "\n".join(convergence_report.findings(loaded))
    assert "better than static with an interval excluding zero: adaptive, random_switch, structure_only" in found
    assert "Mechanisms that help alone (of structure_only; on the large final evaluation): none." in found
    assert "fewer than 3 seeds so far (no verdict): structure_only." in found
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        convergence.main(argv)


def test_parse_only_errors_name_the_part():
    assert convergence.parse_only(["t2a:static,adaptive", "sr"]) == {"t2a": ["static", "adaptive"],
                                                                     "sr": list(convergence.RECIPES)}
    with pytest.raises(SystemExit, match="unknown recipe 'statik'"):
        convergence.parse_only(["t2a:statik"])
    with pytest.raises(SystemExit, match="unknown task 'tts'"):
        convergence.parse_only(["tts"])


def test_a_stopped_run_writes_no_result_and_resumes(tmp_path, monkeypatch):
    """A worker stopped by SIGTERM (train returns early) must not leave a result file: the study would
    skip that run for ever. Rerunning keeps the run directory of the same config (train resumes it)."""
    import jaxstage.train.trainer as trainer
    from jaxstage.config import save_json
    from jaxstage.run.trainer import RunResult

    calls = []

    def stopped_train(cfg, workdir):
        calls.append(sorted(p.name for p in Path(workdir).iterdir()) if Path(workdir).is_dir() else None)
        Path(workdir, "checkpoints", "150").mkdir(parents=True, exist_ok=True)
        save_json(cfg, Path(workdir, "config.json"))
        return RunResult(workdir=Path(workdir), final_step=150, stopped_by="SIGTERM", compile_count=1)

    monkeypatch.setattr(trainer, "train", stopped_train)
    job = convergence.Job("t2a", "static", 0)
    for _ in range(2):
        with pytest.raises(SystemExit, match="stopped \\(SIGTERM\\) at step 150 of 600; no result written"):
            convergence.run_job(job, DESIGN, tmp_path / "results", tmp_path / "runs")
    assert not job.result_path(tmp_path / "results").exists()
    assert calls[0] is None and "checkpoints" in calls[1]  # the second attempt resumed, not started over


def test_the_measured_start_is_read_from_the_logged_p(tmp_path):
    r = fake_result("t2a", "adaptive", 0, start=300, end=500)
    r["progress"]["p"][r["progress"]["steps"].index(250)] = 6e-8  # float32 rounding, logged as a start before
    write(tmp_path, dict(r, measured_start=250))
    assert [x["measured_start"] for x in convergence.load_results(tmp_path, DESIGN)] == [300]


def test_an_incomplete_result_file_is_an_error_naming_it(tmp_path):
    r = fake_result("t2a", "static", 0)
    write(tmp_path, dict(r, eval_steps=[], metrics={k: [] for k in r["metrics"]}))
    with pytest.raises(ValueError, match=r"t2a/static/seed0.json: incomplete result \(last evaluation at step None of 600\)"):
        convergence.load_results(tmp_path, DESIGN)


def test_sr_runs_carry_a_large_final_evaluation_added_from_the_checkpoint(tmp_path, monkeypatch):
    """A real (tiny) SR run: its result carries the large final evaluation in two halves; a result file
    without it (an earlier sitting) gets it from the run's final checkpoint, with the same numbers; without
    that checkpoint the error names it. The run is the fixed switch, so it also shows the logging convention
    the report's earliest start relies on: a switch at step S shows at the first logged step above S."""
    tiny = ["task=sr", "data.source=synthetic_speech", "data.sample_rate=8000", "sample.cfg_scale=1",
            "sr.cutoff_min_hz=1000", "sr.cutoff_max_hz=3000", "data.num_examples=64", "codec.stats_examples=4"]
    monkeypatch.setitem(convergence.TASKS, "sr", dict(convergence.TASKS["sr"], config="configs/tiny_t2a.py",
                                                      sets=tiny))
    monkeypatch.setitem(convergence.LARGE_EVAL, "sr", 4)
    design = dict(convergence.DESIGN, steps=4, eval_every=4, eval_num=2, log_every=2, sample_steps=2)
    job, results, runs = convergence.Job("sr", "fixed_switch", 0), tmp_path / "results", tmp_path / "runs"
    assert convergence.needs_large_eval(job) and not convergence.job_done(job, results)
    result = convergence.run_job(job, design, results, runs)
    assert result["progress"]["steps"] == [2, 4] and result["progress"]["p"] == [0.0, 1.0]  # switch_step = 2
    assert result["measured_start"] == stats.first_logged_after(2, design["log_every"]) == 4
    first = result["large_eval"]
    assert first["num"] == 4 and first["skip"] == 4 and len(first["halves"]) == 2
    for metric in convergence.TASKS["sr"]["metrics"]:
        halves = [h[metric] for h in first["halves"]]
        assert np.isfinite(halves).all() and first["all"][metric] == pytest.approx(np.mean(halves))
    assert convergence.job_done(job, results)
    out = job.result_path(results)
    r = json.loads(out.read_text())
    del r["large_eval"]
    out.write_text(json.dumps(r))
    assert not convergence.job_done(job, results)
    again = convergence.run_job(job, design, results, runs)["large_eval"]  # from the checkpoint, no training
    assert again == first and json.loads(out.read_text())["large_eval"] == first
    out.write_text(json.dumps(r))  # r lacks it again; the run directory goes away
    import shutil
    shutil.rmtree(runs / job.name)
    with pytest.raises(SystemExit, match="needs the run's final checkpoint .*sr/fixed_switch/seed0/checkpoints/4"):
        convergence.run_job(job, design, results, runs)
