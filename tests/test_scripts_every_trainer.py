"""Every registered method through the user's commands: ``bash scripts/train.sh caltech101 base2new`` then
``bash scripts/test.sh caltech101 base2new`` with the real engine, a tiny CLIP and fake data, and its row
in the ``tools/results.py`` table. A method is tested here by being registered and shipping a tiny config.

Each script call starts Python two or three times (train.py, tools/run_config.py), and importing torch,
torchvision and open_clip is most of each start. So the scripts' ``PYTHON`` is a warm interpreter: a
client that hands its arguments, folder, environment and stdin/stdout/stderr to a server which imported
those packages once and runs each script as ``__main__`` in a fresh fork of itself. The scripts, train.py
and run_config.py run unchanged and each call is still its own process with its own exit code.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tools import results

REPO = Path(__file__).resolve().parents[1]
SHOTS = "1"

# Imports what train.py and tools/run_config.py need, then serves: one request = one fork that becomes
# `python SCRIPT ARGS...` (argv, folder, environment, stdin/stdout/stderr of the client), its exit code
# sent back. An exception or sys.exit in the script ends the fork as it would end that interpreter.
# torch keeps the thread count the server started with (OMP_NUM_THREADS=1, as tests/test_trainers.py runs).
WARM_SERVER = '''
import atexit, json, os, runpy, socket, sys
sys.path.insert(0, os.environ["WARM_REPO"])
import torch, torchvision, open_clip  # noqa: F401  (the slow part of every start, paid once)
import clip, dassl.engine, datasets, trainers  # noqa: F401
server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
server.bind(sys.argv[1])
server.listen()
server.settimeout(5)
print("ready", flush=True)
parent = os.getppid()
while os.getppid() == parent:  # a server whose test run was killed stops by itself
    try:
        connection, _ = server.accept()
    except TimeoutError:
        continue
    connection.settimeout(None)
    message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:
        server.close()
        connection.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = request["argv"]
        sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
            code = 0
        except SystemExit as stop:  # as the interpreter reads it: None is 0, a number the code, else a message
            code = 0 if stop.code is None else stop.code
            if not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skips tearing the imported modules down, seconds with torch loaded
    for fd in fds:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    connection.send(str(os.waitstatus_to_exitcode(status)).encode())
    connection.close()
'''

# `$PYTHON SCRIPT.py ARGS...` from the scripts; anything else goes to the real interpreter.
WARM_CLIENT = '''#!{python} -S
import json, os, socket, sys
if len(sys.argv) < 2 or not sys.argv[1].endswith(".py"):
    os.execv({python!r}, [{python!r}, *sys.argv[1:]])
client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
client.connect({socket_path!r})
request = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}
socket.send_fds(client, [json.dumps(request).encode()], [0, 1, 2])
sys.exit(int(client.recv(16) or b"1"))
'''


@pytest.fixture(scope="module")
def warm_python(tmp_path_factory):
    """A ``PYTHON`` for the scripts that starts in milliseconds; the real interpreter where fork is missing."""
    if sys.platform != "linux" or not hasattr(socket, "send_fds"):
        yield sys.executable
        return
    folder = tmp_path_factory.mktemp("warm")
    socket_path, server_file, client_file = folder / "s", folder / "server.py", folder / "python"
    server_file.write_text(WARM_SERVER)
    client_file.write_text(WARM_CLIENT.format(python=sys.executable, socket_path=str(socket_path)))
    client_file.chmod(0o755)
    env = dict(os.environ, WARM_REPO=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    server = subprocess.Popen([sys.executable, str(server_file), str(socket_path)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n", f"the warm interpreter did not start (exit {server.poll()})"
        yield str(client_file)
    finally:
        server.terminate()
        server.wait(timeout=30)


def methods_with_a_tiny_config() -> list[str]:
    """Every trainer the ``trainers`` package registers that ships ``configs/trainers/<Name>/tiny.yaml``."""
    import trainers  # noqa: F401  (registers every method)
    from dassl.engine import TRAINER_REGISTRY

    names = [n for n in TRAINER_REGISTRY.registered_names() if TRAINER_REGISTRY.get(n).__module__.startswith("trainers.")]
    return sorted(n for n in names if (REPO / "configs" / "trainers" / n / "tiny.yaml").is_file())


def test_the_parameters_include_the_deep_prompt_methods():
    """The parametrisation below comes from the registry; it must hold the deep-prompt methods too."""
    assert {"CoOp", "ZeroshotCLIP", "IVLP", "VPT", "MaPLe", "PromptSRC", "KgCoOp"} <= set(methods_with_a_tiny_config())


def accuracy_after_result(log: str) -> float | None:
    found = re.search(r"=> result\n(?:.*\n)*?\* accuracy: (\d+(?:\.\d+)?)%", log)
    return None if found is None else float(found.group(1))


@pytest.mark.parametrize("trainer", methods_with_a_tiny_config())
def test_base2new_through_the_scripts(trainer, warm_python, fake_data_root, tiny_clip_path, tmp_path):
    from dassl.engine import TRAINER_REGISTRY

    env = dict(os.environ, PYTHON=warm_python, DATA=fake_data_root, TRAINER=trainer, CFG="tiny", SEEDS="1",
               SHOTS=SHOTS, OUTPUT=str(tmp_path / "output"),
               OPTS=f"OPTIM.MAX_EPOCH 1 MODEL.BACKBONE.NAME {tiny_clip_path}")
    for script in ("train.sh", "test.sh"):
        done = subprocess.run(["bash", str(REPO / "scripts" / script), "caltech101", "base2new"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    tree = tmp_path / "output" / "base2new"
    seed = tree / trainer / "tiny" / "caltech101" / f"shots_{SHOTS}" / "seed1"
    base_log, new_log = (seed / "train_base" / "log.txt").read_text(), (seed / "test_new" / "log.txt").read_text()
    for log in (base_log, new_log):
        assert accuracy_after_result(log) is not None, log[-3000:]
        assert "Precision: fp32 (PREC fp32)" in log  # the tiny config, not a default, reached the engine
    assert "SUBSAMPLE_CLASSES: base" in base_log and "SUBSAMPLE_CLASSES: new" in new_log
    if not TRAINER_REGISTRY.get(trainer).EVAL_ONLY:
        assert "Finish training" in base_log and "Finish training" not in new_log
        checkpoint = seed / "train_base" / "prompt_learner" / "model.pth.tar-1"
        assert checkpoint.is_file() and checkpoint.stat().st_size < 0.1 * os.path.getsize(tiny_clip_path)
        assert str(seed / "train_base") in new_log  # the new classes are scored with the base-trained model

    tables = results.build_tables(tree, results.collect_runs(tree))
    printed = results.render_markdown(tree, tables, results.load_reference(None))
    assert f"### base2new — {trainer} / tiny, {SHOTS} shots" in printed
    row = next(line for line in printed.splitlines() if line.startswith("| caltech101 |"))
    assert "—" not in row and row.endswith("| 1/1, 1/1 |"), printed
