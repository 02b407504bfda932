"""A ``python`` whose processes start with the heavy modules already imported: a fork server for make demo.

    python tools/warm_python.py serve SOCKET [--log=FILE] MODULE...  (imports MODULEs, then serves)
    python -S tools/warm_python.py run SOCKET PYTHON SCRIPT ARGS...  (what a launcher execs as $PYTHON)

make demo starts ``train.py`` and ``tools/run_config.py`` about a hundred times, and each fresh interpreter
spends about 5 s of CPU importing torch, torchvision (which imports torch._dynamo) and open_clip before a few
seconds of work. The server imports them once and forks a child per request; the child becomes
``PYTHON SCRIPT ARGS`` in the caller's folder, environment, stdin/stdout/stderr and process group, with
Python's start-up signal handlers, and its exit status is the caller's. A request whose environment differs
from the server's in a variable read at import time (thread counts, ``TORCH*``, ``HF_*``, ...) or that is not
``SCRIPT ARGS`` runs in a fresh interpreter instead, as does every request when the server is not there.
"""
from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import json
import os
import os.path as osp
import runpy
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO, NoReturn

HEADER = struct.Struct("!Q")  # the length of the JSON request that follows the file descriptors
STDIO = (0, 1, 2)
# Environment variables that modules read when they are imported (thread pools, torch and Hugging Face
# switches, the interpreter's own): a request must agree with the server on each, or it runs fresh.
IMPORT_TIME_ENV_PREFIXES = ("OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "TORCH", "PYTORCH_", "CUDA_", "NVIDIA_",
                            "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "PYTHON", "LD_", "MALLOC_", "TMPDIR")
READY = "ready"
PARENT_CHECK_SECONDS = 1.0  # how often an idle server checks that the process that started it is alive


def import_time_env(env: dict[str, str]) -> dict[str, str]:
    """The variables of ``env`` that an import may have read."""
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_ENV_PREFIXES) and k != "PYTHON"}


# ---------------------------------------------------------------------------- client


def _receive_line(reader: io.TextIOBase) -> list[str]:
    line = reader.readline()
    return line.split() if line else []


def run(socket_path: str, python: str, argv: list[str]) -> int:
    """Run ``python ARGV`` as a child of the server at ``socket_path``, or as a fresh process without one."""
    connection = None
    if argv and argv[0].endswith(".py") and osp.isfile(argv[0]):
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(socket_path)
        except OSError:
            connection.close()
            connection = None
    if connection is None:
        os.execv(python, [python, *argv])
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                          "pgid": os.getpgrp()}).encode()
    socket.send_fds(connection, [HEADER.pack(len(request))], list(STDIO))
    connection.sendall(request)
    reader = connection.makefile("r", encoding="utf-8")
    reply = _receive_line(reader)
    if reply[:1] == ["fresh"]:  # the server cannot stand in for a fresh interpreter here
        connection.close()
        os.execv(python, [python, *argv])
    if reply[:1] != ["pid"]:
        print(f"warm_python: no answer from the server at {socket_path}", file=sys.stderr)
        return 1
    child, child_group = int(reply[1]), int(reply[2])

    def forward(signum, _frame):
        os.kill(child, signum)

    # A terminal's Ctrl-C reaches the child directly when it joined our process group.
    forwarded = [signal.SIGTERM, signal.SIGHUP] + ([signal.SIGINT] if child_group != os.getpgrp() else [])
    for signum in forwarded:
        signal.signal(signum, forward)
    if signal.SIGINT not in forwarded:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # wait for the child's own exit status
    reply = _receive_line(reader)
    if reply[:1] != ["exit"]:
        print(f"warm_python: the server at {socket_path} stopped before process {child} ended", file=sys.stderr)
        return 1
    code = int(reply[1])
    if code < 0:  # killed by a signal: end the same way, so the caller sees what a fresh process shows
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


# ---------------------------------------------------------------------------- server


def _receive_request(connection: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _flags, _address = socket.recv_fds(connection, HEADER.size, len(STDIO))
    if len(header) != HEADER.size or len(fds) != len(STDIO):
        for fd in fds:
            os.close(fd)
        raise ConnectionError("incomplete request")
    (size,) = HEADER.unpack(header)
    payload = bytearray()
    while len(payload) < size:
        chunk = connection.recv(size - len(payload))
        if not chunk:
            raise ConnectionError("incomplete request")
        payload += chunk
    return json.loads(payload), fds


def _text_stream(fd: int, writable: bool, errors: str, encoding: str) -> io.TextIOWrapper:
    """A standard stream on ``fd`` buffered as a fresh interpreter buffers it."""
    raw = io.FileIO(fd, "w" if writable else "r", closefd=False)
    buffered = io.BufferedWriter(raw) if writable else io.BufferedReader(raw)
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    line_buffered = writable and (fd == 2 or raw.isatty())
    return io.TextIOWrapper(buffered, encoding=encoding, errors=errors, line_buffering=line_buffered, write_through=unbuffered and writable)


def _become_requested_process(request: dict, fds: list[int], path: list[str], set_by_imports: dict[str, str]
                              ) -> list[str]:
    """In the forked child: take over the caller's process group, stdio, folder and environment.

    ``set_by_imports`` holds the variables the server's imports set (torch and open_clip set a few); a fresh
    interpreter's imports would set them too.
    """
    with contextlib.suppress(OSError):  # another session: keep the server's group
        os.setpgid(0, request["pgid"])
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as at interpreter start-up
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for target, fd in zip(STDIO, fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(set_by_imports)
    encoding = sys.__stdout__.encoding if sys.__stdout__ else "utf-8"
    sys.stdin = sys.__stdin__ = _text_stream(0, False, "strict", encoding)
    sys.stdout = sys.__stdout__ = _text_stream(1, True, "strict", encoding)
    sys.stderr = sys.__stderr__ = _text_stream(2, True, "backslashreplace", encoding)
    argv = list(request["argv"])
    sys.argv = argv
    sys.path[:] = [osp.dirname(osp.abspath(argv[0])), *path]
    # A fresh interpreter seeds these from the OS; without this every child would draw the same numbers
    # (runs that set a seed reseed them anyway).
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    return argv


def _refusal(request: dict, server_env: dict[str, str], set_by_imports: dict[str, str]) -> str | None:
    """Why a forked child cannot stand in for ``python ARGV`` with the request's environment (None: it can)."""
    argv = request.get("argv") or []
    env = request.get("env", {})
    if not argv or not argv[0].endswith(".py"):
        return "not SCRIPT ARGS"
    requested = import_time_env(env)
    differing = sorted(k for k in set(requested) | set(server_env) if requested.get(k) != server_env.get(k))
    if differing:
        return f"{', '.join(differing)} differ from the server's, and imports read them"
    if any(k in env for k in set_by_imports):
        return f"sets {', '.join(k for k in set_by_imports if k in env)}, which the imports set"
    return None


def serve(socket_path: str, modules: list[str], path: list[str], log: str = "") -> list[str] | None:
    """Import ``modules``, then fork a child per request; returns the child's argv in the child.

    ``path`` is ``sys.path`` after its first entry, which a child sets to its script's folder. With ``log``,
    a line per child is appended to that file: wall, user and system CPU seconds, exit status, argv.
    """
    before = dict(os.environ)
    for name in modules:
        importlib.import_module(name)
    # Only variables absent before are kept: a request with its own value of one runs fresh (see _refusal).
    set_by_imports = {k: v for k, v in os.environ.items() if k not in before}
    changed = sorted(k for k, v in before.items() if os.environ.get(k) != v)
    if changed:
        raise SystemExit(f"warm_python: importing the modules changed {', '.join(changed)}")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise SystemExit("warm_python: importing the modules initialised CUDA, which a forked child cannot use")
    import threading

    if threading.active_count() != 1:  # a fork copies only the forking thread: others' locks would stay held
        raise SystemExit(f"warm_python: importing the modules started threads: {threading.enumerate()}")
    gc.freeze()  # children's collections then leave the imported objects alone (fewer copied pages)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C ends the children; the caller ends the server
    server_env = import_time_env(before)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    parent = os.getppid()
    print(READY, flush=True)
    arguments: dict[int, list[str]] = {}  # pid -> argv, for the log
    refusals: set[str] = set()
    children: dict[int, tuple[int, socket.socket, float]] = {}  # pidfd -> (pid, caller's connection, start)
    while True:
        readable, _, _ = select.select([listener, *children], [], [], PARENT_CHECK_SECONDS)
        if os.getppid() != parent and not children:  # the caller died without stopping us: nothing to serve
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(socket_path)
            return None
        for ready in readable:
            if ready is listener:
                connection, _ = listener.accept()
                try:
                    request, fds = _receive_request(connection)
                except (OSError, ValueError):
                    connection.close()
                    continue
                refusal = _refusal(request, server_env, set_by_imports)
                if refusal:
                    if refusal not in refusals:  # once per reason: a silent fallback would only look slow
                        refusals.add(refusal)
                        print(f"warm_python: a fresh interpreter runs {shlex.join(request.get('argv') or [])[:200]}"
                              f" (and others like it): {refusal}", file=sys.stderr, flush=True)
                    for fd in fds:
                        os.close(fd)
                    with contextlib.suppress(OSError):
                        connection.sendall(b"fresh\n")
                    connection.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    connection.close()
                    for pidfd, (_pid, other, _start) in children.items():
                        os.close(pidfd)
                        other.close()
                    return _become_requested_process(request, fds, path, set_by_imports)
                for fd in fds:
                    os.close(fd)
                try:  # here as well as in the child, so that the group is settled before we report it
                    os.setpgid(pid, request["pgid"])
                except OSError:
                    pass
                group = os.getpgid(pid)
                children[os.pidfd_open(pid)] = (pid, connection, time.monotonic())
                arguments[pid] = request["argv"]
                with contextlib.suppress(OSError):
                    connection.sendall(f"pid {pid} {group}\n".encode())
            else:
                pid, connection, start = children.pop(ready)
                os.close(ready)
                _, status, usage = os.wait4(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):
                    connection.sendall(f"exit {code}\n".encode())
                connection.close()
                if log:
                    with open(log, "a") as f:
                        f.write(f"{time.monotonic() - start:.2f}\t{usage.ru_utime:.2f}\t{usage.ru_stime:.2f}\t{code}\t"
                                f"{shlex.join(arguments.pop(pid))}\n")


def _exit_code(exit_request: SystemExit) -> int:
    """The status a fresh interpreter exits with on ``SystemExit`` (printing a non-integer code)."""
    code = exit_request.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def run_script(script: str) -> NoReturn:
    """Run ``script`` as ``__main__`` and end the process as a fresh interpreter would, but without tearing
    down the imported modules: that touches every object and so copies most of the server's memory (seconds).
    """
    interrupted = False
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exit_request:
        code = _exit_code(exit_request)
    except BaseException as error:  # an uncaught exception: the interpreter's traceback and status
        sys.excepthook(type(error), error, error.__traceback__)
        interrupted, code = isinstance(error, KeyboardInterrupt), 1
    # What interpreter shutdown does before tearing modules down: wait for non-daemon threads, run atexit.
    if "threading" in sys.modules:
        sys.modules["threading"]._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:  # as CPython does: die of SIGINT, so that the caller sees the interrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


# ---------------------------------------------------------------------------- for callers


@contextlib.contextmanager
def warm_python(modules: list[str], env: dict[str, str], python: str = sys.executable, log: str = "",
                stderr: IO[str] | None = None) -> Iterator[str]:
    """A launcher to use as ``$PYTHON`` while the block runs: ``python`` with ``modules`` already imported.

    ``env`` is the server's environment; requests whose import-time variables differ from it run fresh.
    If the server cannot start, the launcher is ``python`` itself. ``log``: see ``serve``; ``stderr``: where
    the server writes why a request runs fresh (default: ours).
    """
    with tempfile.TemporaryDirectory(prefix="warm_python_") as folder:
        socket_path = osp.join(folder, "socket")
        server = subprocess.Popen([python, osp.abspath(__file__), "serve", socket_path, f"--log={log}", *modules],
                                  env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            if server.stdout.readline().strip() != READY:
                server.wait()
                yield python
                return
            launcher = osp.join(folder, "python")
            with open(launcher, "w") as f:
                f.write("#!/bin/sh\nexec " + shlex.join([python, "-S", osp.abspath(__file__), "run", socket_path,
                                                         python]) + ' "$@"\n')
            os.chmod(launcher, 0o755)
            yield launcher
        finally:
            server.terminate()
            server.wait()


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        path = sys.path[1:]
        sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # the repository's modules
        modules, log = argv[2:], ""
        if modules and modules[0].startswith("--log="):
            log = modules.pop(0)[len("--log="):]
        child_argv = serve(argv[1], modules, path, log)
        if child_argv is not None:  # the forked child
            run_script(child_argv[0])
        return 0
    if len(argv) >= 3 and argv[0] == "run":
        return run(argv[1], argv[2], argv[3:])
    print(__doc__.strip().split("\n\n")[0], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
