"""Statistics of the convergence study (pure numpy, no I/O): paired bootstrap intervals over seeds.

Every comparison in the study is paired by seed: runs with the same seed share the data order, the
initialization and the held-out set, so the difference ``a[k] - b[k]`` removes what the seed alone
explains. An interval is the percentile bootstrap over seeds (resampling seed indices with
replacement, ``BOOTSTRAP`` resamples, a fixed generator seed so a regenerated report is identical).
"""

from __future__ import annotations

import dataclasses

import numpy as np

BOOTSTRAP = 10_000
LEVEL = 0.95
RNG_SEED = 0
MIN_SEEDS = 3  # fewer paired seeds give no verdict (a 2-point bootstrap is degenerate)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval; ``n`` values went into it."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        """Whether the interval lies on one side of zero (never with fewer than MIN_SEEDS values)."""
        return self.n >= MIN_SEEDS and (self.low > 0 or self.high < 0)

    def fmt(self, digits: int = 4, signed: bool = False) -> str:
        sign = "+" if signed else ""
        if self.n < 2 or not np.isfinite(self.low):
            return f"{self.mean:{sign}.{digits}f} (n={self.n}, no interval)"
        return f"{self.mean:{sign}.{digits}f} [{self.low:{sign}.{digits}f}, {self.high:{sign}.{digits}f}]"


def _resample_indices(n: int, draws: int = BOOTSTRAP, seed: int = RNG_SEED) -> np.ndarray:
    """[draws, n] seed indices drawn with replacement (the same draws for every statistic of a call)."""
    return np.random.default_rng(seed).integers(0, n, size=(draws, n))


def mean_interval(values: np.ndarray) -> Interval:
    """Mean of ``values`` (one per seed) with its percentile-bootstrap interval."""
    values = np.asarray(values, float)
    n = len(values)
    if n < 2:
        return Interval(float(values.mean()) if n else float("nan"), float("nan"), float("nan"), n)
    means = values[_resample_indices(n)].mean(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(values.mean()), float(low), float(high), n)


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Interval:
    """Mean over the seeds both hold of ``a[seed] - b[seed]``, with its bootstrap interval."""
    seeds = sorted(set(a) & set(b))
    return mean_interval(np.array([a[k] - b[k] for k in seeds], float))


def steps_to_reach(steps: np.ndarray, mean: np.ndarray, target: float, higher: bool) -> int | None:
    """First evaluation step whose mean is at least as good as ``target`` (None: never)."""
    hits = np.nonzero(mean >= target if higher else mean <= target)[0]
    return int(steps[hits[0]]) if hits.size else None


def steps_to_reach_interval(steps: np.ndarray, curves: dict[int, np.ndarray], reference_final: dict[int, float],
                            higher: bool) -> tuple[int | None, float, float, int]:
    """Steps for a recipe's seed-mean curve to reach the reference's seed-mean final value, paired by
    seed: (point estimate, interval low, interval high, seeds). A bootstrap draw that never reaches the
    target counts as infinitely many steps, so a bound can be ``inf`` ("not reached")."""
    seeds = sorted(set(curves) & set(reference_final))
    if not seeds:
        return None, float("nan"), float("nan"), 0
    c = np.stack([curves[k] for k in seeds])  # [seeds, evals]
    r = np.array([reference_final[k] for k in seeds])
    point = steps_to_reach(steps, c.mean(axis=0), float(r.mean()), higher)
    if len(seeds) < 2:
        return point, float("nan"), float("nan"), len(seeds)
    idx = _resample_indices(len(seeds))
    curve_means, targets = c[idx].mean(axis=1), r[idx].mean(axis=1)  # [draws, evals], [draws]
    reached = curve_means >= targets[:, None] if higher else curve_means <= targets[:, None]
    first = np.where(reached.any(axis=1), steps[np.argmax(reached, axis=1)], np.inf)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(first, [tail, 100 - tail], method="nearest")  # no inf - inf interpolation
    return point, float(low), float(high), len(seeds)


def evaluation_noise(pairs: list[tuple[float, float]]) -> float:
    """Standard deviation of one evaluation from pairs of independent evaluations of the same weights:
    std(e1 - e2) / sqrt(2). The weights cancel in the difference; so does an offset between the two
    held-out sets that is the same for every pair. The pairs may be differences of two runs scored on
    the same sets (the noise of a paired comparison)."""
    d = np.array([a - b for a, b in pairs], float)
    return float(np.std(d, ddof=1) / np.sqrt(2)) if len(d) > 1 else float("nan")


def seed_spread(groups: list[list[float]]) -> float:
    """Pooled within-recipe standard deviation over seeds of a metric (each group: one recipe's seeds)."""
    groups = [np.asarray(g, float) for g in groups if len(g) > 1]
    if not groups:
        return float("nan")
    ss = sum(float(((g - g.mean()) ** 2).sum()) for g in groups)
    dof = sum(len(g) - 1 for g in groups)
    return float(np.sqrt(ss / dof))


P_NOISE = 1e-6  # p below this is float32 rounding, not a start (runs before the exact p_raw = 0 fix)


def measured_start(steps: list[int], progress: list[float]) -> int | None:
    """First logged step at which p is above P_NOISE (None: p never left zero)."""
    for step, p in zip(steps, progress):
        if p > P_NOISE:
            return int(step)
    return None


def first_logged_after(step: int, log_every: int) -> int:
    """The first logged step that shows a p set after update ``step`` (a monitor event at ``step``, or a
    switch at ``step``). The run loop logs at step N the metrics of update N, whose p was set by the
    N − 1 updates before it, so that is the first multiple of ``log_every`` above ``step``."""
    return (step // log_every + 1) * log_every


def event_lag(starts: list[int], every: int) -> float:
    """Mean steps from the monitor event that moved p to its logged start. The log shows p set after
    update E at the first logged step above E, so with monitor events each ``every`` steps and
    ``every`` ≥ the log interval, that event is the last multiple of ``every`` below the start."""
    return float(np.mean([m - (m - 1) // every * every for m in starts])) if starts else float("nan")


def step_reaching(steps: list[int], progress: list[float], level: float = 0.999) -> int | None:
    """First logged step at which p reaches ``level`` (None: never)."""
    for step, p in zip(steps, progress):
        if p >= level:
            return int(step)
    return None
