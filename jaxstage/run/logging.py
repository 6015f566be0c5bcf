"""Run outputs on the host: metrics.jsonl, TensorBoard scalars and audio, sample WAVs, progress bar.

Only process 0 writes (``enabled``); other processes get a logger that does nothing.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from jaxstage.data.audio_io import fit_full_scale


class RunLogger:
    """Writes one JSON object per log step, TensorBoard events, WAV samples and a tqdm bar."""

    def __init__(self, workdir: Path, *, enabled: bool = True, progress_bar: bool = True, headline: str = "loss",
                 peak_level: float | None = 0.98):
        self.workdir = Path(workdir)
        self.peak_level = peak_level  # samples peaking above full scale are scaled to it (None: raw levels)
        self.headline = headline  # the metric shown on the progress bar
        self.enabled = enabled
        self._bar = None
        self._show_bar = progress_bar and enabled
        self._jsonl = open(self.workdir / "metrics.jsonl", "a") if enabled else None
        self._tb_writer = None
        self._purge_step: int | None = None

    @property
    def _tb(self):
        """The TensorBoard writer, opened on first use (after ``resume_at``)."""
        if self._tb_writer is None and self.enabled:
            from tensorboardX import SummaryWriter

            self._tb_writer = SummaryWriter(str(self.workdir / "tb"), purge_step=self._purge_step)
        return self._tb_writer

    def resume_at(self, step: int) -> None:
        """One trajectory per run: rows that an interrupted attempt logged after the restored ``step``
        (and a line torn by a kill) move to ``metrics.discarded.jsonl``; TensorBoard hides its events
        after ``step`` (``purge_step``)."""
        if not self.enabled:
            return
        self._purge_step = step + 1
        path = self.workdir / "metrics.jsonl"
        keep, drop = [], []
        for line in path.read_text().splitlines(keepends=True):
            try:
                (keep if json.loads(line)["step"] <= step and line.endswith("\n") else drop).append(line)
            except (ValueError, KeyError, TypeError):
                drop.append(line)
        if drop:
            self._jsonl.close()
            with open(self.workdir / "metrics.discarded.jsonl", "a") as aside:
                aside.writelines(line if line.endswith("\n") else line + "\n" for line in drop)
            (self.workdir / "metrics.jsonl.tmp").write_text("".join(keep))
            os.replace(self.workdir / "metrics.jsonl.tmp", path)
            self._jsonl = open(path, "a")

    # ---- progress
    def start_progress(self, start: int, total: int) -> None:
        if self._show_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr,
                             mininterval=1.0)

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ---- text
    def info(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    # ---- metrics
    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Append one log step to metrics.jsonl and TensorBoard; update the bar's postfix."""
        if not self.enabled:
            return
        record = {"step": step, **values}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self._tb.add_scalar(f"train/{key}", value, step)
            elif isinstance(value, list) and key == "loss_buckets":
                for i, v in enumerate(value):
                    if v is not None:
                        self._tb.add_scalar(f"loss_bucket/{i}", v, step)
        if self._bar is not None:
            headline = values[self.headline]  # None: not finite (a skipped step)
            self._bar.set_postfix(**{self.headline: "nan" if headline is None else f"{headline:.4f}"},
                                  p=f"{values.get('progress') or 0:.2f}", sps=f"{values.get('steps_per_s', 0):.1f}",
                                  refresh=False)

    def eval_metrics(self, step: int, values: dict[str, float]) -> None:
        """Append a periodic evaluation (``eval_*`` keys) to metrics.jsonl and TensorBoard (``eval/``)."""
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)) and value == value:  # NaN is skipped
                self._tb.add_scalar(f"eval/{key.removeprefix('eval_')}", value, step)

    # ---- audio
    def audio(self, step: int, prompts: list[str], audio: np.ndarray, sample_rate: int) -> list[Path]:
        """Write WAVs to samples/ (``step{N}_{i}_{prompt}.wav``) and TensorBoard."""
        if not self.enabled:
            return []
        import soundfile as sf

        paths, peaks = [], []
        for i, (prompt, clip) in enumerate(zip(prompts, audio)):
            path = self.workdir / "samples" / f"step{step:07d}_{i}_{slug(prompt)}.wav"
            clip, peak = fit_full_scale(np.asarray(clip), self.peak_level)
            peaks.append(peak)
            sf.write(str(path), clip, sample_rate, subtype="PCM_16")
            self._tb.add_audio(f"samples/{i}", clip, step, sample_rate=sample_rate)
            self._tb.add_text(f"samples/{i}/prompt", prompt, step)
            paths.append(path)
        if (loud := [p for p in peaks if p > 1.0]):
            self.info(f"samples at step {step}: {len(loud)} of {len(peaks)} peak above full scale (max {max(loud):.2f}); "
                      + ("written raw, clipped" if self.peak_level is None else f"scaled to {self.peak_level:g}"))
        return paths

    def close(self) -> None:
        self.close_progress()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb_writer is not None:
            self._tb_writer.close()


def slug(text: str, max_length: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_length] or "prompt"
