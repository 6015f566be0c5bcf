"""Manifest readers: AudioCaps CSV, Clotho CSV, generic CSV / JSONL, a plain folder of audio, or VCTK.

VCTK 0.92 (`vctk_train` / `vctk_test`, the manifest is the corpus root): the `*_mic1.flac` files of
`wav48_silence_trimmed/<speaker>/` with their `txt/<speaker>/*.txt` transcripts as captions (empty
where there is none). The standard super-resolution split (SPEC §4, as NVSR/AudioSR): test speakers
p360 p361 p362 p363 p364 p374 p376 s5; training uses every other speaker except p280 and p315.

Every reader yields `Item`s in a deterministic order. A problem that concerns one item (audio file
missing, empty caption, caption not valid UTF-8, duplicate id) does not raise: the item carries a
`skip` reason and `prepare` lists it in `dataset.json`. Problems with the manifest itself (unknown
kind, missing column, malformed row or JSON) raise `ManifestError` naming `file:line`.

CSV files are read as bytes and decoded line by line (`surrogateescape`), so a bad byte only spoils
the field that holds it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".m4a")
KINDS = ("auto", "audiocaps", "clotho", "csv", "jsonl", "folder", "vctk_train", "vctk_test")
VCTK_TEST_SPEAKERS = ("p360", "p361", "p362", "p363", "p364", "p374", "p376", "s5")
VCTK_EXCLUDED_SPEAKERS = ("p280", "p315")
VCTK_AUDIO_DIR = "wav48_silence_trimmed"


class ManifestError(ValueError):
    """A manifest that cannot be read at all; the message starts with `file:line:`."""


class Item(NamedTuple):
    """One (audio, caption) pair; `skip` is a reason when the item cannot be used, else None."""

    id: str
    audio_path: str
    caption: str
    source_line: int | None
    skip: str | None = None


def read_manifest(path: str | Path, kind: str = "auto", audio_dir: str | Path | None = None) -> list[Item]:
    """All items of a manifest (or audio folder), duplicates of an earlier id marked skipped."""
    path = Path(path)
    if kind not in KINDS:
        raise ManifestError(f"{path}: unknown manifest kind {kind!r} (choose from {', '.join(KINDS)})")
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest not found")
    if kind == "auto":
        kind = detect_kind(path)
    base = Path(audio_dir) if audio_dir is not None else (path if path.is_dir() else path.parent)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: audio folder not found")
    readers = {"audiocaps": _read_audiocaps, "clotho": _read_clotho, "csv": _read_generic_csv,
               "jsonl": _read_jsonl, "folder": _read_folder,
               "vctk_train": lambda root, _: _read_vctk(root, "train"),
               "vctk_test": lambda root, _: _read_vctk(root, "test")}
    dir_kinds = ("folder", "vctk_train", "vctk_test")
    if kind in dir_kinds and not path.is_dir():
        raise ManifestError(f"{path}: kind {kind!r} needs a directory")
    if kind not in dir_kinds and path.is_dir():
        raise ManifestError(f"{path}: is a directory; use --kind folder")
    return list(_mark_duplicates(readers[kind](path, base)))


def detect_kind(path: Path) -> str:
    """Kind from the path: a folder, `.jsonl`, or a CSV told apart by its header."""
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix != ".csv":
        raise ManifestError(f"{path}: cannot guess the manifest kind from {suffix or 'no extension'!r}; "
                            "pass --kind")
    rows = _csv_rows(path)
    header = next(rows, None)
    columns = set(header[1]) if header else set()
    if {"audiocap_id", "youtube_id", "caption"} <= columns:
        return "audiocaps"
    if "file_name" in columns and any(c.startswith("caption_") for c in columns):
        return "clotho"
    return "csv"


# ---------------------------------------------------------------------------------------- CSV bytes

def _decode_lines(data: bytes) -> list[str]:
    """Bytes -> text lines (newlines kept); invalid UTF-8 bytes become lone surrogates."""
    lines = data.removeprefix(b"\xef\xbb\xbf").splitlines(keepends=True)  # without a UTF-8 byte order mark
    return [line.decode("utf-8", errors="surrogateescape") for line in lines]


def _has_bad_bytes(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) per CSV record, blank lines dropped; quoted newlines allowed."""
    reader = csv.reader(_decode_lines(path.read_bytes()))
    previous_end = 0
    try:
        for row in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if row and any(field.strip() for field in row):
                yield start, [field.strip() for field in row]
    except csv.Error as err:
        raise ManifestError(f"{path.name}:{reader.line_num}: malformed CSV ({err})") from None


def _csv_dicts(path: Path, required: Iterable[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, {column: field}) per data row; header checked for `required` columns."""
    rows = _csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise ManifestError(f"{path.name}:1: empty manifest (no header)")
    header_line, header = first
    if any(_has_bad_bytes(h) for h in header):
        raise ManifestError(f"{path.name}:{header_line}: header is not valid UTF-8")
    for column in required:
        if column not in header:
            raise ManifestError(f"{path.name}:{header_line}: missing column {column!r}")
    for line, row in rows:
        if len(row) != len(header):
            raise ManifestError(f"{path.name}:{line}: {len(row)} fields, header has {len(header)}")
        yield line, dict(zip(header, row))


def _text_problem(fields: dict[str, str], caption_key: str) -> str | None:
    """Skip reason when a field holds bytes that are not UTF-8, else None."""
    if _has_bad_bytes(fields.get(caption_key, "")):
        return "caption not valid UTF-8"
    if any(_has_bad_bytes(v) for k, v in fields.items() if isinstance(v, str)):
        return "row not valid UTF-8"
    return None


def _item(item_id: str, audio: Path | None, caption: str, line: int | None, problem: str | None,
          expected: str) -> Item:
    """An Item; a readable caption and an existing file are checked here (in that order of report)."""
    if problem is None and not caption:
        problem = "empty caption"
    if problem is None and (audio is None or not audio.exists()):
        problem = f"audio file not found ({expected})"
    return Item(item_id, str(audio) if audio is not None else expected, _clean(caption), line, problem)


def _clean(text: str) -> str:
    """Text safe to store: lone surrogates (bad bytes) replaced."""
    return "".join("\ufffd" if "\udc80" <= ch <= "\udcff" else ch for ch in text)


# ---------------------------------------------------------------------------------------- readers

def _audio_index(folder: Path) -> dict[str, Path]:
    """stem -> path for every audio file under `folder` (recursive; first in sorted order wins)."""
    return {path.stem: path for path in reversed(_audio_files(folder))}


def _audio_files(folder: Path) -> list[Path]:
    """Every audio file under `folder` (recursive, hidden files left out), sorted by relative path."""
    found = [Path(root) / name for root, _, files in os.walk(folder) for name in files
             if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _read_audiocaps(path: Path, audio_dir: Path) -> Iterator[Item]:
    index = _audio_index(audio_dir)
    for line, row in _csv_dicts(path, ("audiocap_id", "youtube_id", "start_time", "caption")):
        cap_id, yt, start = row["audiocap_id"], row["youtube_id"], row["start_time"]
        candidates = [cap_id, f"{yt}_{start}"]
        try:
            start_float = float(start)
            candidates += [f"{yt}_{int(start_float)}", f"{yt}_{start_float:.3f}", f"{yt}_{start_float}"]
        except ValueError:
            pass
        candidates.append(yt)
        audio = next((index[c] for c in candidates if c and c in index), None)
        yield _item(cap_id, audio, row["caption"], line, _text_problem(row, "caption"),
                    f"{cap_id}.* or {yt}_{start}.* in {audio_dir}")


def _read_clotho(path: Path, audio_dir: Path) -> Iterator[Item]:
    index: dict[str, Path] | None = None
    for line, row in _csv_dicts(path, ("file_name", "caption_1")):
        name = row["file_name"]
        audio: Path | None = audio_dir / name
        if not audio.exists():
            index = index if index is not None else {p.name: p for p in reversed(_audio_files(audio_dir))}
            audio = index.get(name)
        for k in range(1, 6):
            key = f"caption_{k}"
            if key not in row:
                continue
            bad = "caption not valid UTF-8" if _has_bad_bytes(row[key]) else None
            if bad is None and _has_bad_bytes(name):
                bad = "file name not valid UTF-8"
            yield _item(f"{name}#{k}", audio, row[key], line, bad, f"{name} in {audio_dir}")


def _read_generic_csv(path: Path, audio_dir: Path) -> Iterator[Item]:
    for line, row in _csv_dicts(path, ("path", "caption")):
        yield _path_item(row, line, audio_dir, _text_problem(row, "caption"))


def _read_jsonl(path: Path, audio_dir: Path) -> Iterator[Item]:
    for line, text in enumerate(_decode_lines(path.read_bytes()), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path.name}:{line}: invalid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{path.name}:{line}: expected a JSON object")
        for key in ("path", "caption"):
            if key not in row:
                raise ManifestError(f"{path.name}:{line}: missing key {key!r}")
        row = {k: (v if isinstance(v, str) else str(v)) for k, v in row.items()}
        yield _path_item(row, line, audio_dir, _text_problem(row, "caption"))


def _path_item(row: dict[str, str], line: int, audio_dir: Path, problem: str | None) -> Item:
    rel = row["path"]
    item_id = row.get("id") or rel
    audio = Path(rel) if os.path.isabs(rel) else audio_dir / rel
    return _item(_clean(item_id), audio if rel else None, row["caption"], line, problem, rel or "<empty path>")


def _read_folder(path: Path, audio_dir: Path) -> Iterator[Item]:
    for audio in _audio_files(path):
        yield Item(_clean(audio.relative_to(path).as_posix()), str(audio), "", None, None)


def _read_vctk(root: Path, split: str) -> Iterator[Item]:
    """The utterances of VCTK's standard SR `split` ('train' or 'test'; see the module docstring)."""
    audio_root = root / VCTK_AUDIO_DIR
    if not audio_root.is_dir():
        raise ManifestError(f"{root}: not a VCTK 0.92 root (no {VCTK_AUDIO_DIR}/ folder)")
    found = [d.name for d in audio_root.iterdir() if d.is_dir()]
    if split == "test":
        speakers = sorted(s for s in found if s in VCTK_TEST_SPEAKERS)
    else:
        speakers = sorted(s for s in found if s not in VCTK_TEST_SPEAKERS + VCTK_EXCLUDED_SPEAKERS)
    if not speakers:
        raise ManifestError(f"{audio_root}: no speakers of the VCTK {split} split")
    for speaker in speakers:
        for audio in sorted((audio_root / speaker).glob("*_mic1.flac")):
            utterance = audio.name[: -len("_mic1.flac")]
            transcript = root / "txt" / speaker / f"{utterance}.txt"
            caption = transcript.read_bytes().decode("utf-8", "replace").strip() if transcript.is_file() else ""
            yield Item(f"{speaker}/{utterance}", str(audio), _clean(caption), None, None)


def _mark_duplicates(items: Iterable[Item]) -> Iterator[Item]:
    seen: set[str] = set()
    for item in items:
        if item.id in seen and item.skip is None:
            item = item._replace(skip="duplicate id")
        seen.add(item.id)
        yield item
