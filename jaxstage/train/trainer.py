"""Pre-training (`jaxstage train`): the trainer of the stage-adaptive diffusion recipe, plugged into
the shared host loop (``jaxstage.run.loop``). It supplies the experiment (``train.state``), the
compiled step (``train.step``), the fresh state (codec statistics fitted, the fixed monitor batch
built, or weights from ``train.init_from``) and the restore target.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage.config import Config
from jaxstage.data.pipeline import held_out_batch, make_source, num_training, sr_held_out_batch
from jaxstage.run import checkpoint as ckpt_lib
from jaxstage.run.compiled_step import CompiledStep
from jaxstage.run.logging import RunLogger
from jaxstage.run.loop import run
from jaxstage.run.trainer import RunResult, Trainer
from jaxstage.train.recipe import MonitorBatch, build_monitor
from jaxstage.train.state import (
    Experiment, TrainState, abstract_state, build_experiment, fit_codec_stats, init_state, state_shardings,
)
from jaxstage.train.step import compile_train_step


class PretrainTrainer(Trainer, kind="train", title="training", headline="loss",
                      init_from_key="train.init_from"):
    """The stage-adaptive pre-training run: TrainState (regime inside), one compiled train step."""

    def build(self) -> None:
        self.exp = self.sampling_model = build_experiment(self.cfg)

    def restore_target(self) -> TrainState:
        return restore_target(self.exp)

    def fresh_state(self, workdir: Path, logger: RunLogger) -> TrainState:
        if not self.cfg.train.init_from:
            return fresh_state(self.exp)
        state, note = state_from_run(self.exp, self.cfg.train.init_from)
        logger.info(note)
        return state

    def compile(self, state: TrainState) -> CompiledStep:
        return compile_train_step(self.exp, state)


def train(cfg: Config, workdir: str | Path | None = None) -> RunResult:
    """Train ``cfg`` into ``workdir`` (default ``cfg.train.workdir``), resuming if it has checkpoints."""
    return run(PretrainTrainer(cfg), workdir)


def fresh_state(exp: Experiment) -> TrainState:
    """A newly initialized train state: codec normalization fitted, monitor batch built."""
    stats = fit_codec_stats(exp, *_stats_clips(exp.cfg))
    return init_state(exp, stats, make_monitor(exp, stats))


def state_from_run(exp: Experiment, init_from: str) -> tuple[TrainState, str]:
    """A fresh state whose weights (and codec statistics, same codec only) come from another run's
    newest checkpoint; returns it with a log line saying what was copied."""
    from jaxstage.train.init_from import merge_params, same_codec, source_run
    from jaxstage.inference.load import load_run

    path, source_cfg = source_run(init_from)
    _, source = load_run(source_cfg, path, mesh=exp.mesh)
    reuse_stats = same_codec(exp.cfg, source_cfg)
    stats = source.codec_stats if reuse_stats else fit_codec_stats(exp, *_stats_clips(exp.cfg))
    state = init_state(exp, stats, make_monitor(exp, stats))
    params, copied, kept = merge_params(state.params, source.params, source_name=init_from)
    ema, _, _ = merge_params(state.ema_params, source.ema_params, source_name=init_from)
    # jit boundary of the next step: the copied weights must sit on this run's parameter shardings
    state = state.replace(params=jax.device_put(params, exp.param_shardings),
                          ema_params=jax.device_put(ema, exp.param_shardings))
    note = (f"initialized from {path} (step {int(source.step)}): weights of {', '.join(copied)}"
            f"{'; fresh: ' + ', '.join(kept) if kept else ''}; codec statistics "
            f"{'copied' if reuse_stats else 'refitted (codec differs)'}")
    return state, note


def restore_target(exp: Experiment):
    """Sharded abstract train state for restoring onto ``exp``'s mesh (no data rendered)."""
    stats, monitor = jax.eval_shape(lambda: _abstract_stats_and_monitor(exp))
    return ckpt_lib.abstract_target(abstract_state(exp, stats, monitor), state_shardings(exp, stats, monitor))


def _abstract_stats_and_monitor(exp: Experiment):
    m = exp.cfg.regime.monitor_size
    batch = {k: jnp.zeros((m, *shape), dtype) for k, (shape, dtype) in exp.example_spec.items()}
    stats = fit_codec_stats(exp, batch["audio"][:1] if "audio" in batch else None,
                            batch["latents"][:1] if "latents" in batch else None)
    return stats, _monitor_of(exp, stats, batch)


def _monitor_of(exp: Experiment, stats, batch: dict) -> MonitorBatch | None:
    """The monitor batch of held-out ``batch`` (a data-pipeline batch: audio, text, and where present
    precomputed SSL targets, padding masks, the SR low band and cutoff)."""
    return build_monitor(exp.cfg, exp.recipe, exp.bound_codec(), exp.objective, stats, batch.get("audio"),
                         batch[exp.text_key], batch["text_mask"], batch.get("ssl_targets"), ssl_params=exp.ssl_params,
                         low_audio=batch.get("low"), cutoff=batch.get("cutoff"), audio_mask=batch.get("audio_mask"),
                         latents=batch.get("latents"), latent_mask=batch.get("latent_mask"),
                         numbers=exp.numbers_of(batch))


def make_monitor(exp: Experiment, stats) -> MonitorBatch | None:
    """The fixed monitor batch from held-out clips.

    Synthetic data: clips rendered from ``regime.monitor_seed`` (disjoint from training's seeds).
    Prepared data: the last ``regime.monitor_size`` records of the directory, which training never
    reads (see ``jaxstage.data.pipeline``), with their precomputed text and SSL targets when used.
    SR (task=sr): the speech-like clips at the indices just past ``data.num_examples`` (never read
    by training), with their low bands and cutoffs.
    """
    cfg = exp.cfg
    if not exp.recipe.monitor_enabled:
        return None
    if cfg.task == "sr":
        return _monitor_of(exp, stats, sr_held_out_batch(cfg, cfg.regime.monitor_size))
    if cfg.data.source == "prepared":
        return _monitor_of(exp, stats, held_out_batch(cfg, cfg.regime.monitor_size)[0])
    from jaxstage.data.pipeline import CaptionTokenizer
    from jaxstage.data.synthetic import prompt_examples

    examples = prompt_examples(cfg.regime.monitor_seed, cfg.regime.monitor_size, cfg.data.sample_rate,
                               cfg.num_samples, mix_prob=cfg.data.mix_prob)
    audio = np.stack([e["audio"] for e in examples]).astype(np.float32)
    ids, mask = CaptionTokenizer(cfg)([e["caption"] for e in examples])
    numbers = {cid: np.asarray([e[cid] for e in examples], np.float32) for cid in exp.number_ids}
    return _monitor_of(exp, stats, {"audio": audio, exp.text_key: ids, "text_mask": mask, **numbers})


def _stats_clips(cfg: Config) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(audio, None) of the first ``codec.stats_examples`` training clips of the data source (fixed,
    order-independent), or (None, their latents) when training reads pre-encoded latents."""
    source = make_source(cfg)
    n = min(cfg.codec.stats_examples, num_training(cfg, source))
    if cfg.data.latents:
        return None, np.stack([source[i]["latents"] for i in range(n)])
    return np.stack([source[i]["audio"][..., :cfg.num_samples] for i in range(n)]), None  # long records: their start
