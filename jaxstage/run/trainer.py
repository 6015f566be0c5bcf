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
    reconstruction: dict | None = None  # task=autoencoder: per system, the reconstruction_eval.json scores


class Trainer:
    """Base class of the trainers: subclasses set the class attributes and implement the methods.
    ``build`` sets ``sampling_model``: the model ``Generator``/``SRGenerator`` sample from (an
    ``Experiment``), whose mesh and batch sharding the loop uses."""

    kind: str  # the command that runs it, recorded in run.json (``train``, ``posttrain``)
    title: str  # how log lines name the run ("training", "ARC post-training")
    headline: str  # the metric the progress bar shows
    init_from_key: str  # the config key naming the run a fresh state starts from

    def __init_subclass__(cls, *, kind: str, title: str, headline: str, init_from_key: str = "", **kwargs):
        super().__init_subclass__(**kwargs)
        cls.kind, cls.title, cls.headline, cls.init_from_key = kind, title, headline, init_from_key

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.sampling_model: Any = None

    @property
    def mesh(self) -> Mesh:
        return self.sampling_model.mesh

    @property
    def batch_sharding(self) -> NamedSharding:
        return self.sampling_model.batch_sharding

    def build(self) -> None:
        """Build the static experiment from ``self.cfg`` (once, before any state exists)."""
        raise NotImplementedError

    def restore_target(self) -> Any:
        """The sharded abstract state a checkpoint of this trainer restores into."""
        raise NotImplementedError

    def fresh_state(self, workdir: Path, logger: RunLogger) -> Any:
        """The state at step 0; sampling reads its ``step``, ``params``, ``ema_params``, ``codec_stats``."""
        raise NotImplementedError

    def compile(self, state: Any) -> CompiledStep:
        """The step ``(state, batch) -> (state, metrics)``, compiled once for ``state``'s shapes."""
        raise NotImplementedError

    def outputs(self) -> Any:
        """The run's samples, periodic evaluation and end-of-run checks: an object with ``sample(logger,
        state, step)``, ``evaluate(state) -> eval_* dict`` and ``final_checks(logger, state, workdir,
        result)``. None (the default): the loop's ``RunOutputs`` of ``sampling_model`` (text-to-audio or
        SR samples, the attribute check or the SR report)."""
        return None
