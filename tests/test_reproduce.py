"""scripts/reproduce.sh: the loop over a protocol's datasets and seeds, and one end-to-end run.

The wiring tests run the real scripts in a scratch repository whose train.py, run_config.py and
results.py are recorders, so every call of a whole paper table is checked in milliseconds. The last
test runs the repository's own scripts with the real engine on the fake dataset trees.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
              "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"]
VARIANTS = ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]

# Records its arguments, then writes a finished log and a config record as the engine would.
RECORDING_TRAIN_PY = '''
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_RECORD"], "a") as record:
    record.write(json.dumps(["train.py"] + args) + "\\n")
out = args[args.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "log.txt"), "w") as log:
    log.write("=> result\\n* accuracy: 50.0%\\n")
index = args.index("--output-dir")
with open(os.path.join(out, "config.yaml"), "w") as config:
    json.dump(args[:index] + args[index + 2:], config)
'''

# Accepts a finished run whose recorded arguments are the requested ones.
COMPARING_RUN_CONFIG_PY = '''
import json, os, sys
args = sys.argv[1:]
args = args[1:] if args[0] == "--model" else args
with open(os.path.join(args[0], "config.yaml")) as config:
    sys.exit(0 if json.load(config) == args[1:] else 1)
'''

RECORDING_RESULTS_PY = '''
import json, os, sys
with open(os.environ["FAKE_RECORD"], "a") as record:
    record.write(json.dumps(["results.py"] + sys.argv[1:]) + "\\n")
'''


@pytest.fixture()
def scratch_repo(tmp_path: Path) -> Path:
    """The real scripts, every benchmark's dataset config, CoOp and MaPLe configs, recording tools."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", repo / "scripts")
    (repo / "configs" / "datasets").mkdir(parents=True)
    for name in BENCHMARKS + VARIANTS:
        (repo / "configs" / "datasets" / f"{name}.yaml").write_text("DATASET:\n  NAME: X\n")
    for trainer, configs in (("CoOp", ["vit_b16"]), ("MaPLe", ["vit_b16", "vit_b16_cross_datasets"])):
        (repo / "configs" / "trainers" / trainer).mkdir(parents=True)
        for config in configs:
            (repo / "configs" / "trainers" / trainer / f"{config}.yaml").write_text("OPTIM:\n  MAX_EPOCH: 1\n")
    (repo / "tools").mkdir()
    (repo / "train.py").write_text(RECORDING_TRAIN_PY)
    (repo / "tools" / "run_config.py").write_text(COMPARING_RUN_CONFIG_PY)
    (repo / "tools" / "results.py").write_text(RECORDING_RESULTS_PY)
    (repo / "tools" / "reference_results.json").write_text("{}")
    return repo


class Reproduce:
    """Runs scratch_repo's scripts/reproduce.sh from a separate working folder and reads the record."""

    def __init__(self, repo: Path, workdir: Path) -> None:
        self.repo, self.workdir = repo, workdir
        self.record = workdir / "calls.jsonl"
        workdir.mkdir()

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        full_env = {"PATH": os.environ["PATH"], "PYTHON": sys.executable, "FAKE_RECORD": str(self.record),
                    "SEEDS": "1 2", "DATA": "/data"}
        full_env.update(env)
        return subprocess.run(["bash", str(self.repo / "scripts" / "reproduce.sh"), *args], cwd=self.workdir,
                              env=full_env, capture_output=True, text=True, timeout=120)

    def calls(self) -> list[list[str]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def train_runs(self) -> list[str]:
        """The --output-dir of each train.py call, relative to the working folder."""
        return [call[call.index("--output-dir") + 1] for call in self.calls() if call[0] == "train.py"]


@pytest.fixture()
def reproduce(scratch_repo: Path, tmp_path: Path) -> Reproduce:
    return Reproduce(scratch_repo, tmp_path / "work")


def test_base2new_trains_and_tests_every_benchmark_and_seed_then_tabulates(reproduce: Reproduce) -> None:
    result = reproduce("CoOp", "base2new")
    assert result.returncode == 0, result.stderr
    expected = [f"output/base2new/CoOp/vit_b16/{dataset}/shots_16/seed{seed}/{run}"
                for dataset in BENCHMARKS for run in ("train_base", "test_new") for seed in (1, 2)]
    assert reproduce.train_runs() == expected
    assert reproduce.calls()[-1] == ["results.py", "output/base2new", "--reference",
                                     str(reproduce.repo / "tools" / "reference_results.json")]

    again = reproduce("CoOp", "base2new")  # a rerun skips every finished run and tabulates again
    assert again.returncode == 0 and again.stdout.count("skip:") == len(expected)
    assert reproduce.train_runs() == expected
    assert [call[0] for call in reproduce.calls()].count("results.py") == 2


def test_datasets_output_and_options_pass_through(reproduce: Reproduce) -> None:
    result = reproduce("CoOp", "base2new", DATASETS="dtd eurosat", SEEDS="3", SHOTS="4", OUTPUT="runs",
                       OPTS="OPTIM.LR 0.01")
    assert result.returncode == 0, result.stderr
    assert reproduce.train_runs() == [f"runs/base2new/CoOp/vit_b16/{d}/shots_4/seed3/{r}"
                                      for d in ("dtd", "eurosat") for r in ("train_base", "test_new")]
    assert all(call[-2:] == ["OPTIM.LR", "0.01"] for call in reproduce.calls() if call[0] == "train.py")
    assert reproduce.calls()[-1][1] == "runs/base2new"


def test_transfer_uses_the_methods_cross_dataset_config_and_every_target(reproduce: Reproduce) -> None:
    assert reproduce("MaPLe", "cross-dataset", SEEDS="1").returncode == 0
    folder = "output/cross-dataset/MaPLe/vit_b16_cross_datasets/imagenet/shots_16/seed1"
    assert reproduce.train_runs() == [f"{folder}/train_source"] + [
        f"{folder}/test_{target}" for target in BENCHMARKS[1:]]

    assert reproduce("MaPLe", "domain-generalization", SEEDS="1").returncode == 0
    dg = "output/domain-generalization/MaPLe/vit_b16_cross_datasets/imagenet/shots_16/seed1"
    assert reproduce.train_runs()[11:] == [f"{dg}/test_{target}" for target in VARIANTS]  # source model reused
    assert reproduce.calls()[-1][1] == "output/domain-generalization"


def test_a_trainer_without_a_task_config_uses_vit_b16_and_cfg_wins(reproduce: Reproduce) -> None:
    assert reproduce("CoOp", "domain-generalization", SEEDS="1", TARGETS="imagenet_a").returncode == 0
    assert reproduce.train_runs()[0] == "output/domain-generalization/CoOp/vit_b16/imagenet/shots_16/seed1/train_source"
    assert reproduce("MaPLe", "cross-dataset", SEEDS="1", TARGETS="dtd", CFG="vit_b16").returncode == 0
    assert reproduce.train_runs()[-1] == "output/cross-dataset/MaPLe/vit_b16/imagenet/shots_16/seed1/test_dtd"


def test_few_shot_trains_every_benchmark_at_every_shot_count(reproduce: Reproduce) -> None:
    assert reproduce("CoOp", "few-shot", SEEDS="1", SHOTS="1 4").returncode == 0
    assert reproduce.train_runs() == [f"output/few-shot/CoOp/vit_b16/{dataset}/shots_{shots}/seed1/train_all"
                                      for dataset in BENCHMARKS for shots in (1, 4)]


def test_usage_errors_run_nothing(reproduce: Reproduce) -> None:
    result = reproduce("CoOp")
    assert result.returncode == 2 and "Usage: bash scripts/reproduce.sh TRAINER TASK" in result.stderr
    result = reproduce("CoOp", "fewshot")
    assert result.returncode == 2 and "unknown TASK 'fewshot'" in result.stderr
    result = reproduce("NoSuchTrainer", "base2new")  # train.sh's own check, before any run
    assert result.returncode == 2 and "available TRAINER/CFG: CoOp/vit_b16" in result.stderr
    assert reproduce.calls() == []


def test_reproduce_base2new_end_to_end_on_fake_trees(tmp_path: Path, fake_data_root: str, tiny_clip_path: str) -> None:
    env = dict(os.environ, PYTHON=sys.executable, DATA=fake_data_root, CFG="tiny", SEEDS="1", SHOTS="2",
               DATASETS="caltech101 dtd", OUTPUT=str(tmp_path / "output"),
               OPTS=f"OPTIM.MAX_EPOCH 1 MODEL.BACKBONE.NAME {tiny_clip_path}")
    result = subprocess.run(["bash", str(REPO / "scripts" / "reproduce.sh"), "CoOp", "base2new"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    tree = tmp_path / "output" / "base2new"
    table = (tree / "results.md").read_text()
    assert "### base2new — CoOp / tiny, 2 shots" in table
    assert "Published CoOp (B / N / HM)" in table
    for dataset in ("caltech101", "dtd"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {dataset} |"))
        assert "1/1, 1/1" in row
    average = next(line for line in table.splitlines() if line.startswith("| **Average** (2 datasets)"))
    assert average.rstrip(" |").endswith("82.69 / 63.22 / 71.66")  # the published CoOp average beside ours
    assert (tree / "results.png").is_file()
