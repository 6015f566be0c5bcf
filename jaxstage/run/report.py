"""``jaxstage report``: draw a run's metrics.jsonl into report.png.

A pre-training run (SPEC §3.7), panels against step: loss terms; discrepancy D̃ and rate ρ;
progress p, λ_ssl and the structure weight / gate; the level-distribution location t_loc; the
diffusion loss per noise-level bucket. Any other run (ARC post-training, ...): one panel per family
of its own scalar metrics (``loss_*``, ``d_*``, ``grad_*``, ``eval_*``), see ``metric_panels``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_metrics(workdir: str | Path) -> list[dict]:
    """Records of metrics.jsonl; a missing file or a bad line is an error naming it."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err})") from err
    if not records:
        raise ValueError(f"{path} holds no records")
    # A resumed run may have logged a step twice (before and after the stop): keep the last value of
    # each key. Periodic evaluation writes its own line (eval_* keys) at a step: merged into that step.
    by_step: dict[int, dict] = {}
    for r in records:
        by_step[r["step"]] = {**by_step.get(r["step"], {}), **r}
    return [by_step[s] for s in sorted(by_step)]


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array([r["step"] for r in records if r.get(key) is not None], float)
    values = np.array([r[key] for r in records if r.get(key) is not None], float)
    return steps, values


UNPLOTTED = {"step", "steps_per_s"}


def metric_panels(records: list[dict]) -> dict[str, list[str]]:
    """The scalar metrics of ``records`` grouped by family (the name up to its first ``_``: ``loss_g`` and
    ``loss_d`` share a panel), in order of first appearance."""
    panels: dict[str, list[str]] = {}
    for record in records:
        for key, value in record.items():
            if key not in UNPLOTTED and isinstance(value, (int, float)):
                family = panels.setdefault(key.split("_")[0], [])
                if key not in family:
                    family.append(key)
    return panels


def write_report(workdir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.png`` (or ``out``) for the run in ``workdir``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    out = Path(out) if out is not None else Path(workdir) / "report.png"
    # a pre-training run: the regime panels; any other run: one panel per family of its own metrics
    draw = _pretraining_figure if any("progress" in r for r in records) else _metric_families_figure
    fig = draw(plt, records)
    fig.suptitle(f"jaxstage run: {Path(workdir).resolve().name}")
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _metric_families_figure(plt, records: list[dict]):
    panels = metric_panels(records)
    rows = -(-len(panels) // 2)
    fig, axes = plt.subplots(rows, 2, figsize=(12, 3.6 * rows), constrained_layout=True, squeeze=False)
    for ax, (family, keys) in zip(axes.ravel(), panels.items()):
        for key in keys:
            ax.plot(*_series(records, key), label=key)
        ax.set(title=family, xlabel="step")
        ax.legend(fontsize=8)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    return fig


def _pretraining_figure(plt, records: list[dict]):
    fig, axes = plt.subplots(3, 2, figsize=(12, 11), constrained_layout=True)
    (ax_loss, ax_disc), (ax_p, ax_t), (ax_buckets, ax_groups) = axes

    for key in ("loss", "loss_diff", "loss_align", "loss_struct"):
        ax_loss.plot(*_series(records, key), label=key)
    ax_loss.set(title="losses", xlabel="step", yscale="log")
    ax_loss.legend()

    ax_disc.plot(*_series(records, "discrepancy"), label="D̃ (smoothed discrepancy)", color="tab:purple")
    ax_disc.set(title="monitor discrepancy and relative rate", xlabel="step")
    twin = ax_disc.twinx()
    twin.plot(*_series(records, "rate"), label="ρ (relative rate)", color="tab:gray", alpha=0.7)
    ax_disc.legend(loc="upper right")
    twin.legend(loc="center right")

    for key, label in (("progress", "p (progress)"), ("ssl_weight", "λ_ssl"), ("struct_on", "structure gate"),
                       ("struct_weight", "λ_struct")):
        ax_p.plot(*_series(records, key), label=label)
    ax_p.set(title="regime", xlabel="step", ylim=(-0.05, 1.05))
    ax_p.legend()

    ax_t.plot(*_series(records, "t_loc"), color="tab:red")
    ax_t.set(title="location of the training level distribution (t_loc)", xlabel="step")

    buckets = [(r["step"], r["loss_buckets"]) for r in records if r.get("loss_buckets")]
    if buckets:
        steps = np.array([s for s, _ in buckets], float)
        table = np.array([[np.nan if v is None else v for v in b] for _, b in buckets], float)
        cmap = plt.get_cmap("viridis")
        for i in range(table.shape[1]):
            ax_buckets.plot(steps, table[:, i], color=cmap(i / max(table.shape[1] - 1, 1)), label=f"bucket {i}")
        ax_buckets.legend(ncol=2, fontsize=7)
    ax_buckets.set(title="diffusion loss per noise-level bucket (0 = cleanest)", xlabel="step", yscale="log")

    groups = [(r["step"], r["groups"]) for r in records if r.get("groups")]
    if groups:
        steps = [s for s, _ in groups]
        image = np.array([g for _, g in groups], float).T
        ax_groups.imshow(image, aspect="auto", interpolation="nearest", cmap="tab10",
                         extent=(steps[0], steps[-1], image.shape[0] - 0.5, -0.5))
    ax_groups.set(title="block partition (colour = group)", xlabel="step", ylabel="block")

    return fig
