"""Graceful stop on SIGINT/SIGTERM: finish the current step, save, exit with a resume hint."""
from __future__ import annotations

import logging
import signal
import threading

__all__ = ["StopRequest", "TrainingInterrupted"]

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(SystemExit):
    """Raised after the state was saved on a stop request; exit code 128 + signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(128 + signum)
        self.signum = signum
        self.message = message

    def __str__(self) -> str:
        return self.message


class StopRequest:
    """Records SIGINT/SIGTERM instead of dying mid-step; a second signal stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def interrupted(self, where: str, saved_to: str) -> TrainingInterrupted:
        """The error to raise once the state is saved at ``saved_to`` (logged here as a warning)."""
        name = self.signal_name or "a signal on another rank"
        message = (
            f"Training stopped by {name} {where}; the state is saved in \"{saved_to}\". "
            "Run the same command again to resume."
        )
        logger.warning(message)
        return TrainingInterrupted(self.signum or 2, message)

    def install(self) -> None:
        """Catch the signals (only possible from the main thread; elsewhere, do nothing)."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            # Second signal: the user does not want to wait. Saves are atomic, so nothing tears.
            self.uninstall()
            raise KeyboardInterrupt
        self.signum = signum
        logger.warning(
            f"Received {signal.Signals(signum).name}: finishing the current step, then saving "
            "(send it again to stop at once)"
        )
