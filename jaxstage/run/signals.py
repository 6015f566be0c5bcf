"""SIGTERM/SIGINT become a request to checkpoint and stop at a step boundary (every trainer)."""

from __future__ import annotations

import os
import signal


class StopFlag:
    """Turns SIGTERM/SIGINT into a request to checkpoint and exit at a step boundary.

    Single process: the next step boundary. Multi-process: every process must stop at the same step
    (the checkpoint save is collective), so the signal goes through JAX's preemption service, which
    tells every process of a SIGTERM received by any one and agrees on the step
    (``multihost_utils.reached_preemption_sync_point``). Its handler owns SIGTERM; a SIGINT is
    re-raised as SIGTERM to reach it.
    """

    def __init__(self, multi_process: bool = False):
        self.multi_process = multi_process
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self) -> "StopFlag":
        signals = (signal.SIGINT,) if self.multi_process else (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts immediately
        self.signal_name = signal.Signals(signum).name
        if self.multi_process:
            os.kill(os.getpid(), signal.SIGTERM)  # to the preemption service, which tells the others

    def stop_at(self, step: int) -> bool:
        """Whether to checkpoint and stop after ``step`` (called by every process at every step)."""
        if not self.multi_process:
            return self.signal_name is not None
        from jax.experimental import multihost_utils

        if multihost_utils.reached_preemption_sync_point(step):
            self.signal_name = self.signal_name or "SIGTERM"
            return True
        return False

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
