"""Orbax checkpoints of the train state, the data position and the resolved config.

Each checkpoint step holds three items: ``state`` (the trainer's state pytree, e.g. TrainState),
``data`` (the input iterator position, JSON) and ``config`` (the resolved config, JSON). Restoring
takes sharded abstract targets, so a checkpoint lands on whatever mesh the new run uses.

Integrity: once a save has finished, every file of the step gets a CRC-32 and size in
``jaxstage_checksums.json`` inside it; a restore checks them first, so a truncated, missing or
corrupted file is named before any byte is read into the state. A checkpoint that fails the check or
the restore raises :class:`CheckpointError` naming it and the older finished checkpoints; it never
falls back to a fresh start. Orbax's temporary folders of an interrupted save are never restored. A
failed save (full disk, any OSError) is a one-line :class:`CheckpointError`; the previous
checkpoints stay intact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

CHECKSUMS = "jaxstage_checksums.json"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or restored; the message names it."""


def _first_line(err: BaseException, limit: int = 320) -> str:
    """The error's first line, its middle elided past ``limit`` characters (the cause is often at the end)."""
    line = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
    return line if len(line) <= limit else f"{line[:limit // 2]} ... {line[-limit // 2:]}"


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != CHECKSUMS)


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` with jaxstage's three items and checksums."""

    def __init__(self, directory: str | Path, *, keep: int, async_save: bool):
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._saved_steps: set[int] = set(self.manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def existing_step(self, step: int | None = None) -> int:
        """``step`` (default: the newest) when it is a finished checkpoint; else FileNotFoundError
        naming the folder and the steps it has."""
        available = self.all_steps()
        if not available:
            raise FileNotFoundError(f"{self.directory} holds no checkpoint")
        step = max(available) if step is None else step
        if step not in available:
            raise FileNotFoundError(f"{self.directory} has no step {step} (available: {available})")
        return step

    def save(self, step: int, state: Any, data_position: dict[str, Any], config: dict[str, Any], *,
             force: bool = False) -> bool:
        """Start saving (asynchronously when enabled); returns whether a save was started."""
        if step in self._saved_steps:
            return False
        self._saved_steps.add(step)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_position),
            config=ocp.args.JsonSave(config),
        )
        try:
            started = self.manager.save(step, args=args, force=force)
        except Exception as err:  # a failed earlier async save surfaces here too
            raise self._save_error(step, err) from err
        self.seal_finished()
        return started

    def _save_error(self, step: int, err: BaseException) -> CheckpointError:
        finished = self.all_steps()
        return CheckpointError(f"saving a checkpoint (step {step} or the one before) in {self.directory} failed "
                               f"({_first_line(err)}); "
                               f"finished checkpoints kept: {finished or 'none'}; free space and rerun the same "
                               f"command to resume")

    def seal_finished(self) -> None:
        """Write the checksums of every finished checkpoint that has none yet (process 0)."""
        if jax.process_index() != 0:
            return
        for step in self.all_steps():
            step_dir = self.directory / str(step)
            if step_dir.is_dir() and not (step_dir / CHECKSUMS).exists():
                try:
                    sums = {str(p.relative_to(step_dir)): [p.stat().st_size, _crc(p)] for p in _files(step_dir)}
                    tmp = step_dir / f".{CHECKSUMS}.tmp"
                    tmp.write_text(json.dumps(sums))
                    os.replace(tmp, step_dir / CHECKSUMS)
                except FileNotFoundError:  # Orbax removed it meanwhile (checkpoints beyond train.ckpt_keep)
                    continue

    def verify(self, step: int) -> None:
        """Raise a :class:`CheckpointError` naming the first damaged file of ``step`` (unchecked where the
        save was interrupted before its checksums were written)."""
        step_dir = self.directory / str(step)
        record = step_dir / CHECKSUMS
        if not record.exists():
            return
        try:
            expected = json.loads(record.read_text())
        except ValueError as err:
            raise self._damaged(step, f"{record.name} is unreadable ({err})") from None
        for name, (size, crc) in expected.items():
            path = step_dir / name
            if not path.is_file():
                raise self._damaged(step, f"{name} is missing")
            if path.stat().st_size != size:
                raise self._damaged(step, f"{name} has {path.stat().st_size} bytes, {size} were written")
            if _crc(path) != crc:
                raise self._damaged(step, f"{name} is corrupted (checksum differs)")

    def _damaged(self, step: int, what: str) -> CheckpointError:
        older = [s for s in self.all_steps() if s < step]
        hint = (f"older finished checkpoints: {older}; resume from one with --resume-step N"
                if older else "no older finished checkpoint")
        return CheckpointError(f"checkpoint {self.directory / str(step)} is damaged: {what}; {hint}")

    def set_aside_after(self, step: int) -> list[int]:
        """Move the finished checkpoints newer than ``step`` out of the way (into ``checkpoints_set_aside/``
        beside the checkpoint folder, never deleted) so a run resumed from ``step`` can save again."""
        newer = [s for s in self.all_steps() if s > step]
        if newer and jax.process_index() == 0:
            aside = self.directory.parent / "checkpoints_set_aside"
            aside.mkdir(exist_ok=True)
            for s in newer:
                shutil.move(str(self.directory / str(s)), str(aside / f"{s}.{os.getpid()}"))
        if newer:
            self.manager.reload()
            self._saved_steps -= set(newer)
        return newer

    def restore(self, step: int, target: Any, added_fields: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Restore ``(state, data_position)`` at ``step`` into ``target``'s shapes and shardings.

        ``target`` is a dataclass pytree of ``jax.ShapeDtypeStruct`` with shardings (any mesh).
        ``added_fields``: state fields newer than some checkpoints, with their initial values; a
        checkpoint written before a field existed resumes with that value.
        """
        self.verify(step)
        saved = set(self.state_metadata(step).keys()) if added_fields else set()
        missing = {name: value for name, value in (added_fields or {}).items() if name not in saved}
        try:  # name the checkpoint on any failure; never start fresh silently
            if not missing:
                args = ocp.args.Composite(state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore())
                restored = self.manager.restore(step, args=args)
                return restored.state, restored.data
            kept = {f.name: getattr(target, f.name) for f in dataclasses.fields(target) if f.name not in missing}
            placed = {name: jax.device_put(value, jax.tree.map(lambda t: t.sharding, getattr(target, name)))
                      for name, value in missing.items()}
            state = target.replace(**self._read_fields(step, kept), **placed)
            return state, self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
        except Exception as err:
            raise self._damaged(step, f"it failed to restore ({_first_line(err)})") from err

    def restore_fields(self, step: int, target: dict[str, Any]) -> dict[str, Any]:
        """Restore only the top-level state fields named by ``target``'s keys (e.g. the weights and
        codec statistics, without the optimizer moments) into ``target``'s shapes and shardings."""
        self.verify(step)
        try:
            return self._read_fields(step, target)
        except Exception as err:  # name the checkpoint; never start fresh silently
            raise self._damaged(step, f"it failed to restore ({_first_line(err)})") from err

    def _read_fields(self, step: int, target: dict[str, Any]) -> dict[str, Any]:
        restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), target)
        args = ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True)
        # a checkpointer of its own: the manager's "state" item keeps the handler that saves it
        return dict(ocp.PyTreeCheckpointer().restore(self.directory / str(step) / "state", args=args))

    def state_metadata(self, step: int) -> Any:
        """Shapes and dtypes of the saved state at ``step`` (a tree of array metadata), read without the data."""
        path = self.directory / str(step) / "state"
        try:
            return ocp.PyTreeCheckpointer().metadata(path).item_metadata
        except Exception as err:
            raise self._damaged(step, f"its metadata is unreadable ({_first_line(err)})") from err

    def wait(self) -> None:
        """Block until any asynchronous save has finished, then checksum it."""
        try:
            self.manager.wait_until_finished()
        except Exception as err:
            raise self._save_error(max(self._saved_steps, default=0), err) from err
        self.seal_finished()

    def close(self) -> None:
        self.wait()
        self.manager.close()


def abstract_target(state_like: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs with shardings, built from an abstract state and its shardings."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_like, shardings)
