"""What an autoencoder run writes beside its checkpoints: reconstructions of held-out synthetic clips
(``samples/`` and TensorBoard), the periodic ``eval_*`` reconstruction metrics, and at the end the
reconstruction report (``reconstruction_eval.json``) and the autoencoder directory (``autoencoder/``).

Held-out clips are never training ones: samples are ``prompt_examples(sample.seed, sample.num)`` and
the report and evaluations ``held_out_prompts`` (``sample.seed + 1``), both from the evaluation
stream of ``jaxstage.data.synthetic`` that training never reads. Reconstructions decode the
bottleneck mean (no sampling) with the EMA weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage import parallel
from jaxstage.autoencoder.losses import multi_resolution_stft_loss
from jaxstage.autoencoder.state import AEExperiment, AEState
from jaxstage.config import Config
from jaxstage.data.synthetic import prompt_examples
from jaxstage.eval.attributes import analyze, attribute_accuracy, chance_levels
from jaxstage.eval.held_out import held_out_prompts
from jaxstage.eval.sr_metrics import si_sdr_np
from jaxstage.run.logging import RunLogger
from jaxstage.run.trainer import RunResult

REPORT = "reconstruction_eval.json"
AUTOENCODER_DIR = "autoencoder"


class Reconstructor:
    """``(params, audio [n, N]) -> reconstructions [n, N]`` through the bottleneck mean, in chunks of
    ``chunk`` clips.

    jit boundary: params and the chunk replicated on the experiment's mesh; compiled once per chunk
    size (the last chunk is padded)."""

    def __init__(self, ax: AEExperiment, chunk: int):
        self.chunk = chunk
        rep = parallel.replicated(ax.mesh)

        def run(params, audio):
            vae = ax.vae(params)
            return vae.decode(vae.encode(audio[..., None]))[..., 0]

        self._run = jax.jit(run, in_shardings=(rep, rep), out_shardings=rep)

    def __call__(self, params: Any, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        out = []
        for start in range(0, len(audio), self.chunk):
            part = audio[start:start + self.chunk]
            padded = np.concatenate([part, np.zeros((self.chunk - len(part), *part.shape[1:]), np.float32)])
            out.append(np.asarray(jax.device_get(self._run(params, padded)))[:len(part)])
        return np.concatenate(out)


def comparison_codecs(cfg: Config) -> dict[str, Any]:
    """The ``stft`` and ``mel`` codecs from ``codec.*`` (both kinds; ``codec.kind`` is not read)."""
    from jaxstage.inference.model import codec_from_config

    return {kind: codec_from_config(cfg, kind) for kind in ("stft", "mel")}


def codec_round_trip(codec: Any, audio: np.ndarray) -> np.ndarray:
    """``decode(encode(audio))`` of a jaxstage codec (jitted; the host arrays in, out)."""
    n = audio.shape[-1]
    return np.asarray(jax.jit(lambda x: codec.decode(codec.encode(x), n))(jnp.asarray(audio, jnp.float32)))


def reconstruction_scores(cfg: Config, reference: np.ndarray, estimate: np.ndarray,
                          truth: list[dict] | None) -> dict[str, Any]:
    """Mean multi-resolution STFT distance (``autoencoder.stft_resolutions``), mean SI-SDR (dB) and,
    with ``truth``, the attribute analyzer's per-attribute accuracy on ``estimate``."""
    resolutions = tuple(cfg.autoencoder.stft_resolutions)
    mrstft = jax.jit(lambda e, r: jax.vmap(lambda a, b: multi_resolution_stft_loss(a[None, :, None], b[None, :, None],
                                                                                   resolutions))(e, r))
    distances = np.asarray(mrstft(jnp.asarray(estimate, jnp.float32), jnp.asarray(reference, jnp.float32)))
    sdr = []
    for ref, est in zip(reference, estimate):
        try:
            sdr.append(si_sdr_np(ref, est))
        except ValueError:  # a silent reference has no SI-SDR
            sdr.append(float("nan"))
    scores: dict[str, Any] = {"mrstft": float(np.mean(distances)), "si_sdr_db": float(np.nanmean(sdr))}
    if truth is not None:
        accuracy = attribute_accuracy([analyze(x, cfg.data.sample_rate) for x in estimate], truth)
        scores["attribute_accuracy"] = accuracy
        scores["attribute_accuracy_mean"] = float(np.mean(list(accuracy.values())))
    return scores


def reconstruction_report(cfg: Config, reconstruct: Reconstructor, params: Any, n: int, step: int) -> dict[str, Any]:
    """The trained VAE, the stft and mel codecs' round trips and the original clips (the ceiling) on
    ``n`` held-out synthetic clips."""
    prompts = held_out_prompts(cfg, n)
    audio = np.asarray(prompts.references, np.float32)
    estimates = {"oobleck": reconstruct(params, audio)}
    estimates.update({name: codec_round_trip(codec, audio) for name, codec in comparison_codecs(cfg).items()})
    estimates["original"] = audio
    c = cfg.codec
    return {"step": step, "num_clips": len(audio), "clips": prompts.source, "weights": "ema (bottleneck mean)",
            "codecs": {"stft": {"n_fft": c.n_fft, "hop_length": c.hop_length, "compress": c.compress},
                       "mel": {"n_fft": c.n_fft, "hop_length": c.hop_length, "n_mels": c.n_mels,
                               "griffin_lim_iters": c.griffin_lim_iters}},
            "stft_resolutions": [list(r) for r in cfg.autoencoder.stft_resolutions],
            "results": {name: reconstruction_scores(cfg, audio, est, prompts.attributes)
                        for name, est in estimates.items()},
            "chance": chance_levels()}


def summary_line(report: dict[str, Any]) -> str:
    """One line: per system, MRSTFT distance, SI-SDR and mean attribute accuracy."""
    parts = [f"{name} mrstft {r['mrstft']:.3f} si-sdr {r['si_sdr_db']:.1f} dB attributes "
             f"{r['attribute_accuracy_mean']:.2f}" for name, r in report["results"].items()]
    return f"reconstruction of {report['num_clips']} held-out clips: " + "; ".join(parts)


class AEOutputs:
    """The autoencoder's ``RunOutputs``: reconstructions, periodic evaluation, the end-of-run report and
    the autoencoder directory (``Trainer.outputs``)."""

    def __init__(self, cfg: Config, ax: AEExperiment):
        self.cfg, self.ax = cfg, ax
        self.reconstruct = Reconstructor(ax, chunk=max(cfg.sample.num, 1))
        self._eval_clips: np.ndarray | None = None

    def sample(self, logger: RunLogger, state: AEState, step: int) -> None:
        """Reconstructions of ``sample.num`` held-out clips (EMA weights) into samples/ and TensorBoard."""
        examples = prompt_examples(self.cfg.sample.seed, self.cfg.sample.num, self.cfg.data.sample_rate,
                                   self.cfg.num_samples, mix_prob=0.0)
        audio = np.stack([e["audio"] for e in examples]).astype(np.float32)
        logger.audio(step, [f"recon {e['caption']}" for e in examples], self.reconstruct(state.ema_params, audio),
                     self.cfg.data.sample_rate)

    def evaluate(self, state: AEState) -> dict[str, float]:
        """``eval_mrstft`` and ``eval_si_sdr_db`` of the EMA VAE on the first ``eval.num`` held-out clips."""
        if self._eval_clips is None:
            self._eval_clips = np.asarray(held_out_prompts(self.cfg, self.cfg.eval.num).references, np.float32)
        scores = reconstruction_scores(self.cfg, self._eval_clips,
                                       self.reconstruct(state.ema_params, self._eval_clips), None)
        return {f"eval_{k}": v for k, v in scores.items()}

    def final_checks(self, logger: RunLogger, state: AEState, workdir: Path, result: RunResult) -> None:
        """The autoencoder directory, then (``sample.final_eval_prompts`` > 0) the reconstruction report."""
        from jaxstage.autoencoder.export import write_autoencoder

        if jax.process_index() == 0:
            out = write_autoencoder(self.cfg, self.ax, state.ema_params, workdir / AUTOENCODER_DIR,
                                    source=f"{workdir.resolve()} step {int(state.step)} (EMA)")
            logger.info(f"wrote {out} (EMA weights, stable-audio-tools layout)")
        n = self.cfg.sample.final_eval_prompts
        if not n:
            return
        report = reconstruction_report(self.cfg, self.reconstruct, state.ema_params, n, int(state.step))
        if jax.process_index() == 0:
            (workdir / REPORT).write_text(json.dumps(report, indent=2))
        result.reconstruction = report["results"]
        logger.info(summary_line(report))
