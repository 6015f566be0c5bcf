"""bench/convergence.py: every recipe is a valid config on both tasks, and the generated summary
reads its numbers from the results (steps-to-reach, paired comparison, verdicts)."""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import convergence  # noqa: E402

from jaxstage.config import load_config  # noqa: E402


def test_every_recipe_and_task_is_a_valid_config():
    for task, spec in convergence.TASKS.items():
        for recipe in convergence.RECIPES:
            cfg = load_config(str(ROOT / spec["config"]),
                              convergence.study_overrides(task, recipe, 1, 360, 90, 32))
            assert cfg.train.steps == 360 and cfg.eval.every == 90 and cfg.train.seed == 1
            assert cfg.task == ("sr" if task == "sr" else "t2a")
            if recipe == "static":
                assert cfg.regime.mode == "off" and cfg.guidance.lambda0 == 0 and not cfg.struct.enabled
            if recipe == "haste_switch":
                assert cfg.regime.switch_step == 180
            if recipe == "random_switch":
                assert cfg.regime.seed == 1 and cfg.regime.random_low == 60 and cfg.regime.random_high == 300


def test_steps_to_reach_and_summary():
    steps = np.array([90, 180, 270])
    assert convergence.steps_to_reach(steps, np.array([0.1, 0.3, 0.5]), 0.3, higher=True) == 180
    assert convergence.steps_to_reach(steps, np.array([3.0, 2.0, 1.5]), 1.0, higher=False) is None

    def result(recipe, seed, values):
        return {"task": "sr", "recipe": recipe, "seed": seed, "wall_s": 1.0, "steps": [90, 180],
                "metrics": {name: values for name in convergence.TASKS["sr"]["metrics"]}}

    by_recipe = {"static": [result("static", s, [2.0, 1.8 + 0.01 * s]) for s in range(3)],
                 "adaptive": [result("adaptive", s, [2.0, 1.7 + 0.01 * s]) for s in range(3)]}
    lines = "\n".join(convergence.summary_lines("sr", by_recipe))
    assert "Best final" in lines and "**adaptive** (1.7100)" in lines
    assert "Adaptive (all three) beats static" in lines and "difference -0.1000" in lines
    assert "adaptive better in 3 of 3 seeds" in lines
