"""``torchrun`` with a one-line failure report: ``python tools/torchrun.py [torchrun's arguments] train.py ...``.

torchrun ends a failed run by raising ``ChildFailedError`` from its own ``main``, so every failure, a
mistyped config key included, is followed by a traceback of torch's launcher code and a report table.
This module runs the same launcher (same arguments, same workers) and ends instead with the workers'
own output: a worker that failed with an exit code has printed why (train.py's ``error:`` line, or a
bug's traceback); a worker ended by a signal printed nothing, so one line here says which and how.
"""
from __future__ import annotations

import logging
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

__all__ = ["main", "failure_line", "exit_code"]

# torchrun's log of stopping and reaping the workers; what it says of a failure is said once, below.
WORKER_REAPING_LOGGER = "torch.distributed.elastic.multiprocessing.api"


def exit_code(code: int) -> int:
    """A shell's exit status for a process's exit code: 128 + N for signal N (reported as -N)."""
    return 128 - code if code < 0 else code


def failure_line(error: ChildFailedError) -> str | None:
    """One ``error:`` line for the first failed worker if a signal ended it; None where it printed its own."""
    rank, failure = error.get_first_failure()
    if failure.exitcode >= 0:
        return None
    return (f"error: process {rank} (pid {failure.pid}) was ended by {failure.signal_name()} before finishing; "
            "a signal leaves no message (SIGKILL is often the out-of-memory killer)")


def main(argv: list[str] | None = None) -> int:
    """Run torchrun on ``argv``; the exit status is the first failed worker's."""
    args = parse_args(argv)
    logging.getLogger(WORKER_REAPING_LOGGER).setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as error:
        line = failure_line(error)
        if line is not None:
            print(line, file=sys.stderr)
        return exit_code(error.get_first_failure()[1].exitcode)
    except SignalException as interrupted:  # the launcher itself was signalled; its workers say what they did
        print(f"error: the launcher received {interrupted.sigval.name}; its processes were stopped", file=sys.stderr)
        return 128 + int(interrupted.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
