"""`jaxstage prepare`: manifest -> ArrayRecord shards + `dataset.json` (format: `jaxstage.data.records`).

Shard `k` holds the usable items among manifest items `[k * shard_size, (k + 1) * shard_size)`, in
manifest order, so shard contents depend only on the arguments, never on when a run was stopped.
Each shard is written under a `.tmp` name and renamed when complete; then `progress.json` (written
atomically) records it with its skipped items. A re-run with the same arguments deletes temporary and
unrecorded shards and continues after the last recorded one; a run that finished returns at once.
`dataset.json` is written last (atomically) and `progress.json` removed. Items that cannot be used
(bad audio, manifest problems) are listed in `dataset.json["skipped"]` and never stop the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxstage.data import audio_io
from jaxstage.data.manifests import Item, read_manifest
from jaxstage.data.records import DATASET_JSON, FORMAT_VERSION, decode_record, encode_record

PROGRESS_JSON = "progress.json"
TMP_SUFFIX = ".tmp"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.array_record"


def prepare(manifest: str | Path, out_dir: str | Path, *, sample_rate: int, clip_seconds: float,
            text_encoder: Any = None, ssl_encoder: Any = None, shard_size: int = 256,
            min_seconds: float = 0.5, kind: str = "auto", audio_dir: str | Path | None = None,
            batch_size: int = 16, progress: bool = True, autoencoder: Any = None,
            max_seconds: float | None = None) -> dict[str, Any]:
    """Prepare (or resume preparing) `out_dir`; returns the dataset.json dict. ``autoencoder``
    (``data.latent_encoder.AutoencoderEncoder``): also store each clip's latents and latent mask.
    ``max_seconds`` (> clip_seconds): store up to that much of each file, so that training draws a
    random ``clip_seconds`` crop of it per epoch (stable-audio-tools' random crops; ``seconds_start``
    is then the crop's offset)."""
    from tqdm import tqdm

    if sample_rate <= 0 or clip_seconds <= 0:
        raise ValueError(f"sample_rate={sample_rate} and clip_seconds={clip_seconds} must be > 0")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size={shard_size} and batch_size={batch_size} must be >= 1")
    out = Path(out_dir)
    items = read_manifest(manifest, kind=kind, audio_dir=audio_dir)
    num_samples = int(round(sample_rate * clip_seconds))
    record_samples = num_samples
    if max_seconds is not None:
        record_samples = int(round(sample_rate * max_seconds))
        if record_samples < num_samples:
            raise ValueError(f"max_seconds={max_seconds} must be >= clip_seconds={clip_seconds}")
        if record_samples > num_samples and (ssl_encoder is not None or autoencoder is not None):
            raise ValueError("max_seconds > clip_seconds: training crops the records at random offsets, which "
                             "precomputed SSL targets and latents (--ssl-encoder, --autoencoder) do not follow; "
                             "prepare those with clip-length records")
    signature = {
        "manifest": str(Path(manifest).resolve()), "kind": kind,
        "audio_dir": str(Path(audio_dir).resolve()) if audio_dir is not None else None,
        "sample_rate": int(sample_rate), "num_samples": num_samples, "shard_size": int(shard_size),
        "min_seconds": float(min_seconds), "num_items": len(items),
        "encoders": {"text": _describe(text_encoder), "ssl": _describe(ssl_encoder)},
    }
    if autoencoder is not None:  # absent otherwise: directories prepared before it existed still resume
        signature["encoders"]["autoencoder"] = _describe(autoencoder)
    if record_samples > num_samples:  # likewise
        signature["record_samples"] = record_samples
    out.mkdir(parents=True, exist_ok=True)
    finished = _finished(out, signature)
    if finished is not None:
        return finished
    done = _resume_state(out, signature)

    num_shards = (len(items) + shard_size - 1) // shard_size
    start = len(done)
    bar = tqdm(total=len(items), initial=min(start * shard_size, len(items)), unit="item", desc="prepare",
               disable=not progress, dynamic_ncols=True)
    try:
        for k in range(start, num_shards):
            chunk = items[k * shard_size:(k + 1) * shard_size]
            count, skipped = _write_shard(out, k, chunk, sample_rate=sample_rate, num_samples=record_samples,
                                          min_seconds=min_seconds, text_encoder=text_encoder,
                                          ssl_encoder=ssl_encoder, batch_size=batch_size, bar=bar,
                                          autoencoder=autoencoder)
            done.append({"file": shard_name(k) if count else None, "count": count, "skipped": skipped})
            _write_json_atomic(out / PROGRESS_JSON, {"signature": signature, "shards": done})
    finally:
        bar.close()

    meta = _dataset_meta(out, signature, done, str(manifest))
    _write_json_atomic(out / DATASET_JSON, meta)
    (out / PROGRESS_JSON).unlink(missing_ok=True)
    return meta


def _describe(encoder: Any) -> dict[str, Any] | None:
    return None if encoder is None else dict(encoder.describe())


def _finished(out: Path, signature: dict[str, Any]) -> dict[str, Any] | None:
    """The existing dataset.json if a run with these arguments completed, else None."""
    path = out / DATASET_JSON
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    if meta.get("prepare") != signature:
        raise ValueError(f"{path}: already prepared with different arguments; use another --out")
    (out / PROGRESS_JSON).unlink(missing_ok=True)  # killed between writing dataset.json and this cleanup
    return meta


def _resume_state(out: Path, signature: dict[str, Any]) -> list[dict[str, Any]]:
    """Completed shards from progress.json; deletes temporary and unrecorded shard files."""
    done: list[dict[str, Any]] = []
    path = out / PROGRESS_JSON
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); delete {out} to start over") from None
        if state.get("signature") != signature:
            raise ValueError(f"{path}: an interrupted run with different arguments; "
                             "re-run with the same arguments or use another --out")
        done = list(state["shards"])
    recorded = {entry["file"] for entry in done if entry["file"]}
    for leftover in sorted(out.glob("shard-*")) + sorted(out.glob(f"*.json{TMP_SUFFIX}")):
        if leftover.name not in recorded:
            leftover.unlink()
    for entry in done:
        if entry["file"] and not (out / entry["file"]).is_file():
            raise ValueError(f"{out / entry['file']}: listed in {PROGRESS_JSON} but missing; "
                             f"delete {out} to start over")
    return done


def _write_shard(out: Path, index: int, items: Sequence[Item], *, sample_rate: int, num_samples: int,
                 min_seconds: float, text_encoder: Any, ssl_encoder: Any, batch_size: int,
                 bar: Any, autoencoder: Any = None) -> tuple[int, list[dict[str, Any]]]:
    """Write shard `index` from `items`; returns (records written, skipped entries)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    final = out / shard_name(index)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    skipped: list[dict[str, Any]] = []
    count = 0
    writer = None
    try:
        for first in range(0, len(items), batch_size):
            examples = []
            for item in items[first:first + batch_size]:
                example, reason = _load_item(item, sample_rate, num_samples, min_seconds)
                if reason is not None:
                    skipped.append({"id": item.id, "file": item.audio_path, "line": item.source_line,
                                    "reason": reason})
                else:
                    examples.append(example)
                bar.update(1)
            if not examples:
                continue
            _encode(examples, text_encoder, ssl_encoder, autoencoder)
            if writer is None:
                writer = ArrayRecordWriter(str(tmp), "group_size:1")
            for example in examples:
                writer.write(encode_record(example))
            count += len(examples)
    finally:
        if writer is not None:
            writer.close()
    if count:
        os.replace(tmp, final)
    return count, skipped


def _load_item(item: Item, sample_rate: int, num_samples: int,
               min_seconds: float) -> tuple[dict[str, Any] | None, str | None]:
    """(example with audio, None) or (None, skip reason)."""
    if item.skip is not None:
        return None, item.skip
    try:
        audio, mask, seconds = audio_io.load_audio_timed(item.audio_path, sample_rate, num_samples,
                                                         min_seconds=min_seconds)
    except audio_io.BadAudio as err:
        return None, err.reason
    # the stored audio starts at the file's beginning: seconds_start 0, seconds_total the file's length
    return {"audio": audio, "audio_mask": mask, "caption": item.caption, "id": item.id,
            "seconds_start": np.float32(0.0), "seconds_total": np.float32(seconds)}, None


def _encode(examples: list[dict[str, Any]], text_encoder: Any, ssl_encoder: Any, autoencoder: Any = None) -> None:
    """Add text_emb / text_mask / ssl / latents / latent_mask to a batch of examples in place."""
    if text_encoder is not None:
        emb, mask = text_encoder([ex["caption"] for ex in examples])
        for ex, e, m in zip(examples, emb, mask):
            ex["text_emb"], ex["text_mask"] = np.asarray(e, np.float32), np.asarray(m, bool)
    if ssl_encoder is not None:
        audio = np.stack([ex["audio"] for ex in examples])
        mask = np.stack([ex["audio_mask"] for ex in examples])
        for ex, s in zip(examples, ssl_encoder(audio, mask)):
            ex["ssl"] = np.asarray(s, np.float32)
    if autoencoder is not None:
        audio = np.stack([ex["audio"] for ex in examples])
        mask = np.stack([ex["audio_mask"] for ex in examples])
        for ex, z, m in zip(examples, *autoencoder(audio, mask)):
            ex["latents"], ex["latent_mask"] = np.asarray(z, np.float32), np.asarray(m, bool)


def _dataset_meta(out: Path, signature: dict[str, Any], done: list[dict[str, Any]],
                  manifest: str) -> dict[str, Any]:
    shards = [{"file": entry["file"], "count": entry["count"]} for entry in done if entry["file"]]
    cropped = {"record_samples": signature["record_samples"]} if "record_samples" in signature else {}
    return {
        "version": FORMAT_VERSION,
        "count": sum(s["count"] for s in shards),
        "sample_rate": signature["sample_rate"],
        "num_samples": signature["num_samples"],
        **cropped,
        "shards": shards,
        "features": _features(out, shards, signature.get("record_samples", signature["num_samples"])),
        "encoders": signature["encoders"],
        "skipped": [s for entry in done for s in entry["skipped"]],
        "manifest": manifest,
        "prepare": signature,
    }


def _features(out: Path, shards: list[dict[str, Any]], num_samples: int) -> dict[str, dict[str, Any]]:
    """{key: {shape, dtype}} read from the first record (audio-only defaults when nothing was written)."""
    if not shards:
        return {"audio": {"shape": [num_samples], "dtype": "float32"},
                "audio_mask": {"shape": [num_samples], "dtype": "bool"},
                "caption": {"shape": [], "dtype": "str"}, "id": {"shape": [], "dtype": "str"}}
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(out / shards[0]["file"]))
    try:
        example = decode_record(reader.read([0])[0])
    finally:
        reader.close()
    return {key: ({"shape": [], "dtype": "str"} if isinstance(value, str)
                  else {"shape": list(value.shape), "dtype": str(value.dtype)})
            for key, value in example.items()}


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

