"""Super-resolution evaluation on files: pair reference/estimate folders and write `sr_eval.json`.

References and estimates are paired by relative path without extension (`sub/a.wav` <-> `sub/a.flac`).
Each pair must share one sample rate (nothing is resampled) and all pairs must share the same rate;
stereo files are downmixed to mono (noted per file). Metrics come from `sr_metrics.evaluate_pair`.
Every bad input is an `EvalError` (a ValueError) with a one-line message naming the file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
DEFAULT_OUT_NAME = "sr_eval.json"


class EvalError(ValueError):
    """A bad evaluation input (missing/unreadable file, rate or length mismatch, silent reference)."""


def default_out(est_dir: str | Path) -> Path:
    """Where `evaluate_dirs` writes by default: `<est_dir>/sr_eval.json`."""
    return Path(est_dir) / DEFAULT_OUT_NAME


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def index_audio(root: str | Path, role: str) -> dict[str, Path]:
    """{relative path without extension: file} for every audio file under `root` (hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"{role} directory not found: {root}")
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        hidden = any(part.startswith(".") for part in rel.parts)
        if hidden or path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
            continue
        key = rel.with_suffix("").as_posix()
        if key in found:
            raise EvalError(f"ambiguous {role} files for {key!r}: {found[key]} and {path}")
        found[key] = path
    return found


def read_mono(path: Path) -> tuple[np.ndarray, int, int]:
    """File -> (float64 mono [N], sample rate, channels in the file)."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as err:  # noqa: BLE001 - any decoder failure is a property of the file
        raise EvalError(f"{path}: unreadable audio ({_first_line(err)})") from None
    if data.shape[0] == 0:
        raise EvalError(f"{path}: no audio samples")
    channels = data.shape[1]
    return (data.mean(axis=1) if channels > 1 else data[:, 0]), int(rate), channels


def _info(path: Path) -> tuple[int, int]:
    """(sample rate, frames) from the file's header."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as err:  # noqa: BLE001
        raise EvalError(f"{path}: unreadable audio ({_first_line(err)})") from None
    return int(info.samplerate), int(info.frames)


def check_pair(ref_path: Path, est_path: Path, input_sr: int, tolerance: int | None = None) -> int:
    """Header-only checks before any decoding (readable, same rate, input_sr below it, lengths); the rate."""
    (ref_rate, ref_n), (est_rate, est_n) = _info(ref_path), _info(est_path)
    if ref_rate != est_rate:
        raise EvalError(f"sample rate mismatch: {ref_path} is {ref_rate} Hz but {est_path} is {est_rate} Hz")
    if input_sr >= ref_rate:
        raise EvalError(f"{ref_path}: --input-sr {input_sr} must be below the file's sample rate {ref_rate} Hz")
    tol = ref_rate // 100 if tolerance is None else int(tolerance)
    if ref_n > 0 and est_n > 0 and abs(ref_n - est_n) > tol:
        raise EvalError(f"{ref_path} (estimate {est_path}): length mismatch: reference {ref_n} vs estimate "
                        f"{est_n} samples (tolerance {tol})")
    return ref_rate


def evaluate_file(ref_path: Path, est_path: Path, input_sr: int,
                  tolerance: int | None = None) -> tuple[dict[str, Any], int]:
    """Metrics for one pair checked by :func:`check_pair` (plus a 'note' if downmixed), and its rate."""
    from jaxstage.eval.sr_metrics import evaluate_pair

    ref, ref_rate, ref_ch = read_mono(ref_path)
    est, _, est_ch = read_mono(est_path)
    try:
        result: dict[str, Any] = evaluate_pair(ref, est, ref_rate, input_sr, tolerance=tolerance)
    except ValueError as err:  # length mismatch, silent reference, too short, no HF bins
        raise EvalError(f"{ref_path} (estimate {est_path}): {_first_line(err)}") from None
    notes = [f"{role} downmixed from {ch} channels" for role, ch in (("reference", ref_ch), ("estimate", est_ch))
             if ch > 1]
    if notes:
        result["note"] = "; ".join(notes)
    return result, ref_rate


def evaluate_dirs(ref_dir: str | Path, est_dir: str | Path, input_sr: int, out: str | Path | None = None, *,
                  allow_missing: bool = False, tolerance: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate every reference in `ref_dir` against its estimate in `est_dir`; write and return the JSON.

    `tolerance`: allowed length difference in samples (default sr // 100). With `allow_missing`,
    references without an estimate are listed under "missing" instead of raising.
    """
    if input_sr is None or int(input_sr) <= 0:
        raise EvalError(f"input_sr must be a positive sample rate in Hz, got {input_sr}")
    input_sr = int(input_sr)
    refs, ests = index_audio(ref_dir, "reference"), index_audio(est_dir, "estimate")
    if not refs:
        raise EvalError(f"no audio files ({'/'.join(AUDIO_EXTENSIONS)}) in reference directory {ref_dir}")
    missing = [key for key in refs if key not in ests]
    if missing and not allow_missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise EvalError(f"{refs[missing[0]]}: no matching estimate in {est_dir}{more}")
    pairs = [(refs[key], ests[key]) for key in refs if key in ests]
    if not pairs:
        raise EvalError(f"no reference in {ref_dir} has a matching estimate in {est_dir}")

    sample_rate = check_pair(*pairs[0], input_sr, tolerance)  # fail fast on header problems, before the long loop
    for ref_path, est_path in pairs[1:]:
        rate = check_pair(ref_path, est_path, input_sr, tolerance)
        if rate != sample_rate:
            raise EvalError(f"sample rate mismatch across files: {ref_path} is {rate} Hz but {pairs[0][0]} is "
                            f"{sample_rate} Hz")

    from tqdm import tqdm

    from jaxstage.eval.sr_metrics import METRICS
    from jaxstage.tools.export.safetensors_io import write_text_atomic

    files: dict[str, dict[str, Any]] = {}
    # progress=True shows the bar on a terminal only (tqdm's disable=None), keeping piped stderr clean.
    for ref_path, est_path in tqdm(pairs, desc="eval sr", unit="file", file=sys.stderr, dynamic_ncols=True,
                                      disable=None if progress else True):
        result, rate = evaluate_file(ref_path, est_path, input_sr, tolerance)
        if rate != sample_rate:  # header and decoded rate disagree (should not happen)
            raise EvalError(f"{ref_path}: decoded at {rate} Hz but its header says {sample_rate} Hz")
        name = ref_path.relative_to(ref_dir).as_posix()
        if "note" in result and progress:
            tqdm.write(f"note: {name}: {result['note']}", file=sys.stderr)
        files[name] = result

    summary: dict[str, Any] = {
        "task": "sr",
        "input_sr": input_sr,
        "sample_rate": sample_rate,
        "count": len(files),
        "mean": {m: float(np.mean([r[m] for r in files.values()])) for m in METRICS},
        "files": files,
    }
    if missing:
        summary["missing"] = [refs[key].relative_to(ref_dir).as_posix() for key in missing]
    out = Path(out) if out is not None else default_out(est_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(summary, indent=1) + "\n")  # never half-written
    return summary
