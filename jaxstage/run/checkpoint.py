"""Orbax checkpoints of the train state, the data position and the resolved config.

Each checkpoint step holds three items: ``state`` (the trainer's state pytree, e.g. TrainState),
``data`` (the input iterator position, JSON) and ``config`` (the resolved config, JSON). Restoring
takes sharded abstract targets, so a checkpoint lands on whatever mesh the new run uses. A
checkpoint that fails to restore raises :class:`CheckpointError` naming it; it never falls back to
a fresh start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or restored; the message names it."""


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` with jaxstage's three items."""

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
        return self.manager.save(step, args=args, force=force)

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
        """Restore ``(state, data_position)`` at ``step`` into ``target``'s shapes and shardings.

        ``target`` is a pytree of ``jax.ShapeDtypeStruct`` with shardings (any mesh).
        """
        path = self.directory / str(step)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore())
        try:
            restored = self.manager.restore(step, args=args)
        except Exception as err:  # name the checkpoint; never start fresh silently
            raise CheckpointError(f"checkpoint {path} failed to restore: {type(err).__name__}: {err}") from err
        return restored.state, restored.data

    def restore_fields(self, step: int, target: dict[str, Any]) -> dict[str, Any]:
        """Restore only the top-level state fields named by ``target``'s keys (e.g. the weights and
        codec statistics, without the optimizer moments) into ``target``'s shapes and shardings."""
        path = self.directory / str(step)
        restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), target)
        args = ocp.args.Composite(state=ocp.args.PyTreeRestore(target, restore_args=restore_args,
                                                               partial_restore=True))
        try:
            return dict(self.manager.restore(step, args=args).state)
        except Exception as err:  # name the checkpoint; never start fresh silently
            raise CheckpointError(f"checkpoint {path} failed to restore: {type(err).__name__}: {err}") from err

    def state_metadata(self, step: int) -> Any:
        """Shapes and dtypes of the saved state at ``step`` (a tree of array metadata), read without the data."""
        path = self.directory / str(step) / "state"
        try:
            return ocp.PyTreeCheckpointer().metadata(path).item_metadata
        except Exception as err:
            raise CheckpointError(f"checkpoint {path} has no readable metadata: {type(err).__name__}: {err}") from err

    def wait(self) -> None:
        """Block until any asynchronous save has finished."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_target(state_like: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs with shardings, built from an abstract state and its shardings."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_like, shardings)
