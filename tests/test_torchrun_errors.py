"""Under torchrun a user error is one line from rank 0 and a non-zero exit; a start without its peers is bounded.

Through tools/torchrun.py (the scripts' NPROC launcher) that line is the whole output, and a signal is named.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from dassl.engine import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=REPO)
# A frame of this repository's code in a traceback (torchrun's own report names torch's files only).
OUR_FRAME = re.compile(r'File ".*(train\.py|/dassl/|/trainers/|/clip/|/datasets/)')


TYPO_LINE = ('error: Unknown config key "OPTIM.MAX_EPOCHS" on the command line; did you mean "OPTIM.MAX_EPOCH"? '
             "(a method's keys exist only once its module is imported)")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
OUR_TORCHRUN = [sys.executable, os.path.join(REPO, "tools", "torchrun.py"), "--standalone", "--nproc_per_node", "2"]


def run_typo(launcher: list[str], tmp_path) -> subprocess.CompletedProcess:
    argv = ["train.py", "--root", str(tmp_path), "--trainer", "CoOp", "--output-dir", str(tmp_path / "out"),
            "OPTIM.MAX_EPOCHS", "1"]
    # The bound catches a hang (a rank waiting on its dead peer); the run itself takes seconds.
    return subprocess.run([*launcher, *argv], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)


def test_a_typo_under_torchrun_is_one_error_line_from_rank_0(tmp_path):
    result = run_typo(TORCHRUN, tmp_path)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert result.returncode != 0
    assert errors == [TYPO_LINE], output
    assert not OUR_FRAME.search(output), output  # what follows is torchrun's own report of torch's frames


def test_a_typo_under_the_scripts_launcher_is_the_error_line_and_nothing_else(tmp_path):
    result = run_typo(OUR_TORCHRUN, tmp_path)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1
    assert lines == [TYPO_LINE, "(run with --debug or GOPRO_DEBUG=1 for the traceback)"]


def test_the_scripts_launcher_names_a_process_ended_by_a_signal(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text("import os, signal, time\n"
                      "if os.environ['RANK'] == '1':\n"
                      "    os.kill(os.getpid(), signal.SIGKILL)\n"
                      "time.sleep(60)\n")
    result = subprocess.run([*OUR_TORCHRUN, str(worker)], cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=120)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 128 + 9
    assert len(lines) == 1 and re.fullmatch(r"error: process 1 \(pid \d+\) was ended by SIGKILL before finishing; "
                                            r"a signal leaves no message \(.*\)", lines[0]), lines


def test_a_process_whose_peer_never_joins_stops_with_one_line_after_the_start_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(ENV, WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    code = "from dassl.engine.distributed import init_distributed_from_env as f; f(False, start_timeout_s=2)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dassl.engine.distributed.DistributedStartError: process 0 of 2: not every process "
                           "joined within 2 s (gloo: "), result.stderr
    assert issubclass(distributed.DistributedStartError, distributed.UserError)  # train.py prints it as one line


@pytest.mark.parametrize("rank, prefix, waited", [("0", "", []), ("1", "rank 1: ", [distributed.PEER_ERROR_GRACE_S])])
def test_only_rank_0_prints_at_once_another_rank_after_the_grace(monkeypatch, rank, prefix, waited):
    slept = []
    monkeypatch.setattr(distributed.time, "sleep", slept.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    assert distributed.user_error_prefix() == prefix and slept == waited
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: it prints, at once
    assert distributed.user_error_prefix() == "" and slept == waited
