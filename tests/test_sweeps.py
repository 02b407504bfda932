"""A sweep as a researcher runs it, with the real engine on the fake trees and a tiny CLIP given as BACKBONE:

    for lr in 0.002 0.01; do OPTS="OPTIM.LR $lr" bash scripts/train.sh eurosat base2new; done   (then test.sh)

into one OUTPUT, zero-shot CLIP beside it, then ``tools/results.py OUTPUT/base2new``: one table with both points
and every trainer, published figures of the one dataset that ran; a rerun of everything is recognised without
importing torch.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_scripts_every_trainer import warm_python  # noqa: F401  (the fixture)
from tools import results

REPO = Path(__file__).resolve().parents[1]
REFERENCE = str(REPO / "tools" / "reference_results.json")


@pytest.fixture()
def scripts(tmp_path, fake_data_root, tiny_clip_path, warm_python):  # noqa: F811
    """``scripts(name, dataset, task, **env)``: a protocol script with the sweep's settings, from tmp_path."""

    def call(script: str, dataset: str, task: str, expect_rc: int = 0, **env: str) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, PYTHON=warm_python, DATA=fake_data_root, TRAINER="CoOp", CFG="tiny", SEEDS="1",
                        SHOTS="2", OUTPUT=str(tmp_path / "output"), BACKBONE=tiny_clip_path)
        full_env.update(env)
        done = subprocess.run(["bash", str(REPO / "scripts" / script), dataset, task], cwd=tmp_path, env=full_env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == expect_rc, f"{script} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    return call


def printed_results(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert results.main(list(argv)) == 0
    return out.getvalue()


def test_a_learning_rate_sweep_into_one_output(scripts, tmp_path: Path, tiny_clip_path: str) -> None:
    for lr in ("0.002", "0.01"):
        scripts("train.sh", "eurosat", "base2new", OPTS=f"OPTIM.LR {lr}")
    for lr in ("0.002", "0.01"):
        scripts("test.sh", "eurosat", "base2new", OPTS=f"OPTIM.LR {lr}")
    for script in ("train.sh", "test.sh"):
        scripts(script, "eurosat", "base2new", TRAINER="ZeroshotCLIP")

    # tiny.yaml already has LR 0.002, so that point is named after the backbone alone.
    backbone = f"tiny+backbone-{Path(tiny_clip_path).stem}"
    tree = tmp_path / "output" / "base2new"
    assert sorted(p.name for p in (tree / "CoOp").iterdir()) == [backbone, f"{backbone}+lr0.01"]
    assert [p.name for p in (tree / "ZeroshotCLIP" / backbone / "eurosat").iterdir()] == ["shots_0"]

    printed = printed_results(str(tree), "--reference", REFERENCE)
    assert printed.count("### ") == 1
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in printed.splitlines() if line.startswith("| ")]
    assert rows[0] == ["Trainer", "Config", "Shots", "Metric", "eurosat"]
    labelled = [row[:4] for row in rows if row[0]]
    assert labelled[1:] == [["CoOp", backbone, "2", "Base"], ["CoOp", f"{backbone}+lr0.01", "2", "Base"],
                            ["ZeroshotCLIP", backbone, "0", "Base"], ["CoOp (published)", "", "", "Base"],
                            ["CLIP (published)", "", "", "Base"], ["GOPro (published)", "", "", "Base"]]
    measured = [row[4] for row in rows[1:10]]
    assert all(cell.endswith("(n=1)") and "±" not in cell for cell in measured), measured
    published = rows.index(["CoOp (published)", "", "", "Base", "92.19"])
    assert rows[published + 1][4] == "54.74" and rows[published + 2][4] == "68.69"  # CoOp's published eurosat


def test_a_rerun_is_recognised_without_torch(scripts, tmp_path: Path) -> None:
    """Every finished run of a train + test protocol is skipped by interpreters that cannot import torch."""
    for script in ("train.sh", "test.sh"):
        scripts(script, "eurosat", "base2new", SEEDS="1 2", OPTS="OPTIM.LR 0.01")
    blocked = tmp_path / "no_torch"
    blocked.mkdir()
    (blocked / "torch.py").write_text("raise ImportError('torch is blocked in this test')\n")
    for script in ("train.sh", "test.sh"):
        again = scripts(script, "eurosat", "base2new", SEEDS="1 2", OPTS="OPTIM.LR 0.01", PYTHON=sys.executable,
                        PYTHONPATH=str(blocked))
        assert again.stdout.count("skip:") == 2 and "run:" not in again.stdout, again.stdout
    # A changed config in that folder (TAG names it whatever the settings) is still refused, naming the key.
    folder = next((tmp_path / "output" / "base2new" / "CoOp").iterdir()).name
    refused = scripts("train.sh", "eurosat", "base2new", SEEDS="1", OPTS="OPTIM.LR 0.05", TAG=folder, expect_rc=1)
    assert "config differs: OPTIM.LR: 0.01 -> 0.05" in refused.stderr and "skip:" not in refused.stdout
