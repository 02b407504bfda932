"""Every registered method through the user's commands: ``bash scripts/train.sh caltech101 base2new`` then
``bash scripts/test.sh caltech101 base2new`` with the real engine, a tiny CLIP and fake data, and its row
in the ``tools/results.py`` table. A method is tested here by being registered and shipping a tiny config.

Each script call starts Python two or three times (train.py, tools/run_config.py), and importing torch,
torchvision and open_clip is most of each start. So the scripts' ``PYTHON`` is the warm interpreter of
``tools/warm_python.py`` that ``make demo`` uses: each call is a fresh fork of a server that imported those
packages once. The scripts, train.py and run_config.py run unchanged and each call is still its own
process with its own exit code.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tools import config_name, results
from tools.warm_python import warm_python as warm_python_launcher

REPO = Path(__file__).resolve().parents[1]
SHOTS = "1"


@pytest.fixture(scope="module")
def warm_python(tmp_path_factory):
    """A ``PYTHON`` for the scripts that forks each train.py / run_config.py from one warm interpreter
    (``tools/warm_python.py``, as ``make demo`` does); the real interpreter where that cannot start."""
    # The server's environment is the scripts' (the variables the scripts add are not read at import).
    with warm_python_launcher(["torch", "torchvision", "open_clip", "datasets", "trainers", "train"], dict(os.environ)) as python:
        yield python


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
               SHOTS=SHOTS, OUTPUT=str(tmp_path / "output"), BACKBONE=tiny_clip_path, OPTS="OPTIM.MAX_EPOCH 1")
    for script in ("train.sh", "test.sh"):
        done = subprocess.run(["bash", str(REPO / "scripts" / script), "caltech101", "base2new"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    tree = tmp_path / "output" / "base2new"
    # The folder is named after the config and the one setting it does not hold (the backbone); a trainer that
    # learns nothing runs under shots_0.
    config_file = str(REPO / "configs" / "trainers" / trainer / "tiny.yaml")
    config = config_name.folder_name("tiny", config_file, [(config_name.BACKBONE_KEY, tiny_clip_path)])
    assert config.startswith("tiny+backbone-")
    eval_only = TRAINER_REGISTRY.get(trainer).EVAL_ONLY
    shots = "0" if eval_only else SHOTS
    seed = tree / trainer / config / "caltech101" / f"shots_{shots}" / "seed1"
    base_log, new_log = (seed / "train_base" / "log.txt").read_text(), (seed / "test_new" / "log.txt").read_text()
    for log in (base_log, new_log):
        assert accuracy_after_result(log) is not None, log[-3000:]
        assert "Precision: fp32 (PREC fp32)" in log  # the tiny config, not a default, reached the engine
    assert "SUBSAMPLE_CLASSES: base" in base_log and "SUBSAMPLE_CLASSES: new" in new_log
    if not eval_only:
        assert "Finish training" in base_log and "Finish training" not in new_log
        checkpoint = seed / "train_base" / "prompt_learner" / "model.pth.tar-1"
        assert checkpoint.is_file() and checkpoint.stat().st_size < 0.1 * os.path.getsize(tiny_clip_path)
        assert str(seed / "train_base") in new_log  # the new classes are scored with the base-trained model

    tables = results.build_tables(tree, results.collect_runs(tree))
    printed = results.render_markdown(tree, tables, results.load_reference(None), detail=True)
    assert f"### base2new — {trainer} / {config}, {results.shots_label(shots)}" in printed
    row = next(line for line in printed.splitlines() if line.startswith("| caltech101 |"))
    assert "—" not in row and row.endswith("| 1/1, 1/1 |"), printed
