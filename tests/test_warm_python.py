"""tools/warm_python.py: a forked child stands in for ``python SCRIPT ARGS``, or a fresh interpreter runs.

The server here imports ``colorsys`` only (nothing imports it at start-up), so a script can tell whether it
runs in a forked child (``colorsys`` already imported) or in a fresh interpreter.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools import warm_python as wp

REPO = Path(__file__).resolve().parents[1]
REPORT = """
import json, os, sys
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": os.environ.get("WARM_TEST"),
                  "forked": "colorsys" in sys.modules, "path0": sys.path[0], "group": os.getpgrp()}))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("WARM_TEST_EXIT", "0")))
"""


@pytest.fixture()
def launcher(tmp_path):
    (tmp_path / "report.py").write_text(REPORT)
    with wp.warm_python(["colorsys"], dict(os.environ)) as python:
        yield python


def _run(launcher, argv, cwd, **env):
    result = subprocess.run([launcher, *argv], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True)
    return result


def test_a_forked_child_is_the_script_in_the_callers_folder_environment_and_stdio(launcher, tmp_path):
    assert launcher != sys.executable  # the server started
    result = _run(launcher, ["report.py", "a b", "c"], tmp_path, WARM_TEST="hello", WARM_TEST_EXIT="3")
    report = json.loads(result.stdout)
    assert result.returncode == 3 and result.stderr == "to stderr\n"
    assert report == {"argv": ["report.py", "a b", "c"], "cwd": str(tmp_path), "env": "hello", "forked": True,
                      "path0": str(tmp_path), "group": os.getpgrp()}


def test_an_uncaught_exception_and_a_signal_end_the_caller_as_they_end_a_fresh_interpreter(launcher, tmp_path):
    (tmp_path / "boom.py").write_text("raise ValueError('boom')\n")
    (tmp_path / "killed.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    (tmp_path / "message.py").write_text("import sys\nsys.exit('bad input')\n")
    boom = _run(launcher, ["boom.py"], tmp_path)
    assert boom.returncode == 1 and boom.stderr.rstrip().endswith("ValueError: boom")
    assert _run(launcher, ["killed.py"], tmp_path).returncode == -signal.SIGTERM
    message = _run(launcher, ["message.py"], tmp_path)
    assert (message.returncode, message.stderr) == (1, "bad input\n")


def test_what_a_child_cannot_stand_in_for_runs_in_a_fresh_interpreter(launcher, tmp_path):
    # Another thread count: torch's pool was sized at import in the server. The server says why, once.
    said = tmp_path / "server_stderr"
    with open(said, "w") as stderr, wp.warm_python(["colorsys"], dict(os.environ), stderr=stderr) as other:
        for _ in range(2):
            report = json.loads(_run(other, ["report.py"], tmp_path, OMP_NUM_THREADS="7").stdout)
            assert report["forked"] is False
    assert said.read_text().count("OMP_NUM_THREADS differ from the server's, and imports read them") == 1
    fresh = _run(launcher, ["-c", "import sys; print('colorsys' in sys.modules)"], tmp_path)  # not SCRIPT ARGS
    assert fresh.stdout == "False\n"
    no_server = subprocess.run([sys.executable, "-S", str(REPO / "tools" / "warm_python.py"), "run",
                                str(tmp_path / "no_socket"), sys.executable, "report.py"],
                               cwd=tmp_path, capture_output=True, text=True)
    assert json.loads(no_server.stdout)["forked"] is False


def test_import_time_variables_are_the_ones_compared():
    env = {"OMP_NUM_THREADS": "1", "TORCH_LOGS": "x", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0",
           "PYTHON": "/a/launcher", "TRAINER": "CoOp", "PATH": "/bin"}
    assert wp.import_time_env(env) == {"OMP_NUM_THREADS": "1", "TORCH_LOGS": "x", "HF_HUB_OFFLINE": "1",
                                       "PYTHONHASHSEED": "0"}


def test_the_server_ends_when_its_caller_dies(tmp_path):
    caller = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, sys, time
server = subprocess.Popen([sys.executable, {str(REPO / "tools" / "warm_python.py")!r}, "serve",
                           {str(tmp_path / "socket")!r}, "colorsys"], stdout=subprocess.PIPE, text=True)
server.stdout.readline()
print(server.pid, flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    server = int(caller.stdout.readline())
    caller.kill()
    caller.wait()
    deadline = time.monotonic() + 10 * wp.PARENT_CHECK_SECONDS
    while time.monotonic() < deadline and _alive(server):
        time.sleep(0.1)
    assert not _alive(server)
    assert not (tmp_path / "socket").exists()


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status
