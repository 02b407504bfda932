"""One-call logging set-up: console + ``log.txt``, with ``print`` output teed into the same file."""
from __future__ import annotations

import logging
import os
import os.path as osp
import sys
import time
from typing import IO

from .tools import mkdir_if_missing

__all__ = ["Logger", "setup_logger", "resolve_log_path", "write_to_log_file", "give_log_back_to_earlier_attempt"]

# Marks handlers installed by setup_logger, so a second call removes exactly those.
_HANDLER_TAG = "_dassl_setup_logger"
_state: dict = {"file": None, "path": None, "earlier": None}


class Logger:
    """A stdout tee: ``write`` goes to the console and to a file (Dassl's ``Logger``).

    ``fpath`` opens a file of its own; ``stream`` shares an already open one.
    """

    def __init__(self, fpath: str | None = None, console: IO | None = None, stream: IO | None = None):
        self.console = console if console is not None else sys.stdout
        self.file = stream
        self._owns_file = False
        if fpath is not None and stream is None:
            mkdir_if_missing(osp.dirname(fpath) or ".")
            self.file = open(fpath, "w")
            self._owns_file = True

    def write(self, msg: str) -> None:
        self.console.write(msg)
        if self.file is not None and not self.file.closed:
            self.file.write(msg)

    def flush(self) -> None:
        self.console.flush()
        if self.file is not None and not self.file.closed:
            self.file.flush()

    def isatty(self) -> bool:
        return getattr(self.console, "isatty", lambda: False)()

    def __getattr__(self, name: str):
        # Anything else (encoding, fileno, ...) behaves like the console stream.
        return getattr(self.console, name)

    def close(self) -> None:
        if self._owns_file and self.file is not None:
            self.file.close()


def resolve_log_path(output: str) -> str:
    """``output`` ending in .txt/.log is the file; otherwise ``output/log.txt``.

    The file always receives the latest attempt: an earlier one found there is first renamed to
    ``log-<time it was last written>.txt`` beside it (``-2``, ``-3``... on a clash), never overwritten.
    """
    fpath = output if output.endswith((".txt", ".log")) else osp.join(output, "log.txt")
    _state["earlier"] = None
    if osp.exists(fpath):
        _state["earlier"] = _previous_attempt_path(fpath)
        os.replace(fpath, _state["earlier"])
    return fpath


def _previous_attempt_path(fpath: str, when: float | None = None, tag: str = "") -> str:
    stem, ext = osp.splitext(fpath)
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(osp.getmtime(fpath) if when is None else when))
    candidate = f"{stem}-{stamp}{tag}{ext}"
    n = 2
    while osp.exists(candidate):
        candidate = f"{stem}-{stamp}{tag}-{n}{ext}"
        n += 1
    return candidate


def _undo_previous_setup() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_TAG, False):
            root.removeHandler(handler)
    if isinstance(sys.stdout, Logger):
        sys.stdout = sys.stdout.console
    if _state["file"] is not None:
        _state["file"].close()
        _state["file"] = None


def _tagged(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(logging.Formatter("%(message)s"))
    setattr(handler, _HANDLER_TAG, True)
    return handler


def setup_logger(output: str | None = None) -> str | None:
    """Send log records (plain ``%(message)s``) to stdout and ``log.txt``; return the file path.

    Also replaces ``sys.stdout`` with a tee so ``print`` from Dassl-style code lands in the same
    file. On distributed ranks other than 0 only warnings reach the console and no file is written.
    Safe to call again: the previous handlers, tee and file are removed first.
    """
    _undo_previous_setup()
    root = logging.getLogger()
    console = sys.stdout
    rank = int(os.environ.get("RANK", "0") or 0)

    console_handler = _tagged(logging.StreamHandler(console))
    if rank != 0:
        console_handler.setLevel(logging.WARNING)
        root.addHandler(console_handler)
        root.setLevel(logging.INFO)
        return None
    root.addHandler(console_handler)
    root.setLevel(logging.INFO)
    if output is None:
        return None

    fpath = resolve_log_path(output)
    _state["path"] = fpath
    mkdir_if_missing(osp.dirname(fpath) or ".")
    log_file = open(fpath, "w", buffering=1)  # line-buffered: a killed run keeps its last lines
    _state["file"] = log_file
    root.addHandler(_tagged(logging.StreamHandler(log_file)))
    sys.stdout = Logger(console=console, stream=log_file)
    return fpath


def write_to_log_file(text: str) -> None:
    """Append ``text`` (a line) to the file ``setup_logger`` opened, without echoing it to the console."""
    log_file = _state["file"]
    if log_file is not None and not log_file.closed:
        log_file.write(text.rstrip("\n") + "\n")
        log_file.flush()


def give_log_back_to_earlier_attempt(tag: str = "-refused") -> str | None:
    """Undo the log rotation of the current ``setup_logger``: for an attempt refused before it changed anything.

    The earlier attempt's log becomes ``log.txt`` again (what result parsers read); this attempt's
    log, still being written, moves beside it as ``log-<now><tag>.txt``. Returns that path.
    """
    path, earlier = _state["path"], _state["earlier"]
    if path is None or earlier is None or not osp.exists(earlier) or not osp.exists(path):
        return None
    refused = _previous_attempt_path(path, when=time.time(), tag=tag)
    os.replace(path, refused)  # the open file follows its inode: later lines land in `refused`
    os.replace(earlier, path)
    _state["earlier"] = None
    return refused
