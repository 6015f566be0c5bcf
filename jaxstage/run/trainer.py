"""What a trainer supplies to the shared host loop (``jaxstage.run.loop``), and what a run reports.

A trainer (pre-training in ``jaxstage.train``, ARC post-training in ``jaxstage.posttrain``, ...) is
the part of a run that differs: its experiment (mesh, model graphs, optimizers, shardings), its
abstract state and restore target, its fresh state, its compiled step, the metric that must stay
finite, and the model it samples from. The loop owns the rest: run directory and resume policy,
signals and coordinated stop, checkpoints, one-step-late metrics, the progress bar,
metrics.jsonl/TensorBoard, periodic evaluation, samples, end-of-run checks and the report.
``docs/architecture.md`` walks through ARC as the worked example.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jax.sharding import Mesh, NamedSharding

from jaxstage.config import Config
from jaxstage.run.compiled_step import CompiledStep
from jaxstage.run.logging import RunLogger


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite loss, inconsistent resume, ...)."""


@dataclass
class RunResult:
    """What a finished (or stopped) run reports back."""

    workdir: Path
    final_step: int
    stopped_by: str | None
    compile_count: int
    attribute_accuracy: dict[str, float] | None = None
    sr_eval: dict | None = None  # task=sr: the held-out LSD report (sr_eval.json)


class Trainer:
    """Base class of the trainers; subclasses set the class attributes and implement the methods."""

    kind: str = ""  # the command that runs it, recorded in run.json (``train``, ``posttrain``)
    title: str = ""  # how log lines name the run ("training", "ARC post-training")
    finite_metric: str = "loss"  # a non-finite value of it stops the run
    init_from_key: str = ""  # the config key naming the run a fresh state starts from

    def __init__(self, cfg: Config):
        self.cfg = cfg

    # ---- supplied by each trainer
    def build(self) -> None:
        """Build the static experiment from ``self.cfg`` (called once, before any state exists)."""
        raise NotImplementedError

    @property
    def mesh(self) -> Mesh:
        raise NotImplementedError

    @property
    def batch_sharding(self) -> NamedSharding:
        raise NotImplementedError

    @property
    def sampling_model(self) -> Any:
        """The static model that ``Generator``/``SRGenerator`` sample from (an ``Experiment``)."""
        raise NotImplementedError

    def restore_target(self) -> Any:
        """The sharded abstract state a checkpoint of this trainer restores into."""
        raise NotImplementedError

    def fresh_state(self, workdir: Path, logger: RunLogger) -> Any:
        """The state at step 0 (its ``.step``, ``.params``, ``.ema_params``, ``.codec_stats`` fields are read
        by the loop's sampling and evaluation)."""
        raise NotImplementedError

    def compile(self, state: Any) -> CompiledStep:
        """The step ``(state, batch) -> (state, metrics)``, compiled once for ``state``'s shapes."""
        raise NotImplementedError
