"""safetensors files written and read with numpy (no torch): single files, or shards plus an index.

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length, a JSON
header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}} padded
with spaces to a multiple of 8, then the raw little-endian tensor bytes. Sharded checkpoints follow
the Hugging Face convention: `model-00001-of-00003.safetensors` ... and `model.safetensors.index.json`
({"metadata": {"total_size"}, "weight_map": {name: file}}).

Writes stream tensor by tensor into a temporary file beside the target and rename it into place,
with a tqdm bar counting bytes; a failed export leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np
from tqdm import tqdm

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
CODES = {v: k for k, v in DTYPES.items()}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def publish_file(tmp: str | Path, path: Path) -> None:
    """Give the temporary file the permissions a plain open() would (mkstemp makes it 0600), then
    rename it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ".tmp"):
    """A temporary file name beside ``path`` to write; published as ``path`` when the block succeeds,
    removed when it fails (``path`` is never half-written)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        publish_file(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class SafetensorsError(ValueError):
    """An unreadable or inconsistent safetensors file; the message names it."""


def _header(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None) -> bytes:
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, array in tensors.items():
        if array.dtype not in CODES:
            raise ValueError(f"{name}: dtype {array.dtype} cannot be stored in safetensors")
        header[name] = {"dtype": CODES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    return raw + b" " * (-len(raw) % 8)


def write_file(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None,
               progress: tqdm | None = None) -> int:
    """Write one safetensors file atomically; returns the bytes of tensor data written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    header = _header(tensors, metadata)
    written = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for array in tensors.values():
            data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            f.write(data)
            written += len(data)
            if progress is not None:
                progress.update(len(data))
    return written


def plan_shards(tensors: dict[str, np.ndarray], max_shard_bytes: int) -> list[list[str]]:
    """Split tensor names, in order, into groups of at most ``max_shard_bytes`` (a bigger tensor alone)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, array in tensors.items():
        if shards[-1] and size + array.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += array.nbytes
    return shards


def write_checkpoint(out_dir: str | Path, tensors: dict[str, np.ndarray], *, metadata: dict[str, str] | None = None,
                     max_shard_bytes: int = 5 * 2**30, show_progress: bool = True) -> list[Path]:
    """`model.safetensors`, or shards + `model.safetensors.index.json` when larger than ``max_shard_bytes``.

    Returns the files written. Stale files of the other layout are removed afterwards, so a directory
    never holds both a single file and an index.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = sum(a.nbytes for a in tensors.values())
    groups = plan_shards(tensors, max_shard_bytes)
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="export",
               disable=not show_progress)
    written: list[Path] = []
    with bar:
        if len(groups) == 1:
            written.append(out / SINGLE_NAME)
            write_file(written[0], tensors, metadata, bar)
        else:
            weight_map = {}
            for i, names in enumerate(groups, start=1):
                name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
                write_file(out / name, {k: tensors[k] for k in names}, metadata, bar)
                weight_map.update({k: name for k in names})
                written.append(out / name)
            index = {"metadata": {"total_size": total, **(metadata or {})}, "weight_map": weight_map}
            write_text_atomic(out / INDEX_NAME, json.dumps(index, indent=2))
            written.append(out / INDEX_NAME)
    keep = {p.name for p in written}
    for stale in [out / SINGLE_NAME, out / INDEX_NAME, *out.glob("model-*-of-*.safetensors")]:
        if stale.name not in keep and stale.exists():
            stale.unlink()
    return written


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def read_file(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of one safetensors file; a malformed file is a SafetensorsError naming it."""
    path = Path(path)
    data = path.read_bytes()
    try:
        (n,) = struct.unpack("<Q", data[:8])
        if n > len(data) - 8:
            raise ValueError(f"header length {n} exceeds the file size {len(data)}")
        header = json.loads(data[8:8 + n])
        header.pop("__metadata__", None)  # {str: str}, not a tensor
        body = memoryview(data)[8 + n:]
        tensors = {}
        for name, info in header.items():
            dtype = DTYPES.get(info["dtype"])
            if dtype is None:
                raise ValueError(f"{name}: unsupported dtype {info['dtype']}")
            begin, end = info["data_offsets"]
            shape = tuple(info["shape"])
            if end > len(body) or end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                raise ValueError(f"{name}: data offsets {begin}..{end} do not fit shape {list(shape)} {info['dtype']}")
            tensors[name] = np.frombuffer(body[begin:end], dtype=dtype.newbyteorder("<")).reshape(shape).copy()
    except (ValueError, KeyError, TypeError, struct.error) as err:
        raise SafetensorsError(f"{path}: not a valid safetensors file ({err})") from None
    return tensors


def read_checkpoint(src: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file, a directory with `model.safetensors`, or a directory/index
    file of shards."""
    src = Path(src)
    if src.is_dir():
        found = next((src / name for name in (INDEX_NAME, SINGLE_NAME) if (src / name).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{src}: no {SINGLE_NAME} or {INDEX_NAME}")
        src = found
    if not src.is_file():
        raise FileNotFoundError(f"{src}: file not found")
    if src.name.endswith(".index.json"):
        try:
            index = json.loads(src.read_text())
            files = sorted(set(index["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as err:
            raise SafetensorsError(f"{src}: not a valid safetensors index ({err})") from None
        tensors = {k: v for name in files for k, v in read_file(src.parent / name).items()}
        missing = [k for k in index["weight_map"] if k not in tensors]
        if missing:
            raise SafetensorsError(f"{src}: {missing[0]} is listed in the index but in none of its shards")
        return tensors
    return read_file(src)

