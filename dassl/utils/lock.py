"""An exclusive lock on an output folder, so two runs never write into one folder at the same time.

The lock is ``flock`` on ``<folder>/.lock``: the kernel drops it when the holder exits in any way
(SIGKILL included), so a lock left by a dead process never blocks. The file holds the holder's pid
and host, for the message that refuses a second run.
"""
from __future__ import annotations

import fcntl
import os
import os.path as osp
import socket

from .errors import UserError
from .tools import mkdir_if_missing

__all__ = ["LOCK_FILE", "FolderBusyError", "FolderLock"]

LOCK_FILE = ".lock"


class FolderBusyError(UserError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """``with FolderLock(folder):`` holds the folder for this process; a second holder is refused."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = osp.join(folder, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> None:
        mkdir_if_missing(self.folder)
        # Retry when the file was replaced between open and flock (a holder releasing just then).
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise FolderBusyError(
                    f'Output folder "{self.folder}" is in use by another run ({holder}); wait for it to end, '
                    "or use another --output-dir"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)
        else:
            raise FolderBusyError(f'Cannot lock "{self.path}": it keeps being replaced by another process')
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink before unlocking: a process that opened the old file sees it replaced and retries.
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
