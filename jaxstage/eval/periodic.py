"""Periodic evaluation during training (``eval.every``): a few held-out metrics as ``eval_*`` keys.

t2a: attribute accuracy (synthetic data) and FD-spectral on the first ``eval.num`` prompts of the
end-of-run set; sr: LSD / LSD-HF / LSD-LF of the EMA output with low-band replacement on the first
``eval.num`` held-out clips (both from :mod:`jaxstage.eval.held_out`). EMA weights, ``sample.*``
sampler settings, a fixed seed, so successive evaluations differ only by the weights.
"""

from __future__ import annotations

from typing import Any

from jaxstage.config import Config
from jaxstage.eval.held_out import held_out_prompts
from jaxstage.eval.sr_report import sr_eval
from jaxstage.eval.tta import generate, score


class PeriodicEval:
    """Holds the fixed prompt set between evaluations (rendered once)."""

    def __init__(self, cfg: Config, generator: Any):
        self.cfg = cfg
        self.generator = generator
        self._prompts = None

    def __call__(self, state) -> dict[str, float]:
        cfg = self.cfg
        if cfg.task == "sr":
            mean = sr_eval(self.generator, state, cfg, cfg.eval.num, baselines=False)["mean"]["output_replaced"]
            return {f"eval_{k}": v for k, v in mean.items()}
        if self._prompts is None:
            self._prompts = held_out_prompts(cfg, cfg.eval.num)
        audio = generate(self.generator, state.ema_params, state.codec_stats, self._prompts, seed=cfg.sample.seed)
        metrics = score(cfg, self._prompts, audio)
        values = {f"eval_acc_{k}": v for k, v in metrics.get("attribute_accuracy", {}).items()}
        if "fd_spectral" in metrics:
            values["eval_fd_spectral"] = metrics["fd_spectral"]
        return values
