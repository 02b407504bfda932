"""scripts/reproduce.sh: the loop over a protocol's datasets and seeds, and one end-to-end run.

The wiring tests run the real scripts in a scratch repository whose train.py and results.py are recorders and
whose run_config.py names folders as the real one does, so every call of a whole paper table is checked in
milliseconds. The last test runs the repository's own scripts with the real engine on the fake dataset trees.
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

# Stands in for tools/run_config.py. describe: the real folder name (tools/config_name.py is copied) and a
# registry of three trainers; check: a finished run whose recorded arguments are the requested ones is the
# same run; record: notes the request.
COMPARING_RUN_CONFIG_PY = '''
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.config_name import check_tag, folder_name
EVAL_ONLY = {"CoOp": 0, "MaPLe": 0, "ZeroshotCLIP": 1}
command, args = sys.argv[1], sys.argv[2:]
if command == "describe":
    options = dict(zip(args[0:10:2], args[1:10:2]))
    settings = list(zip(args[10::2], args[11::2]))
    if options["--backbone"]:
        settings.insert(0, ("MODEL.BACKBONE.NAME", options["--backbone"]))
    if options["--trainer"] not in EVAL_ONLY:
        sys.exit(print(f"error: TRAINER '{options['--trainer']}' is not a registered trainer", file=sys.stderr) or 2)
    if options["--tag"] and check_tag(options["--tag"]):
        sys.exit(print(f"error: {check_tag(options['--tag'])}", file=sys.stderr) or 2)
    name = folder_name(options["--cfg"], options["--config-file"], settings, options["--tag"])
    sys.exit(print(f"CONFIG_NAME={name}\\nEVAL_ONLY={EVAL_ONLY[options['--trainer']]}\\nSOURCE_KEY=fake"))
args = args[1:] if args[0] == "--model" else args
assert args[0] == "--source", args
run_dir, requested = args[2], args[3:]
if command == "record":
    with open(os.path.join(run_dir, "config_request.json"), "w") as handle:
        json.dump({"source": args[1], "args": requested}, handle)
    sys.exit(0)
with open(os.path.join(run_dir, "config.yaml")) as config:
    sys.exit(0 if json.load(config) == requested else 1)
'''

RECORDING_RESULTS_PY = '''
import json, os, sys
with open(os.environ["FAKE_RECORD"], "a") as record:
    record.write(json.dumps(["results.py"] + sys.argv[1:]) + "\\n")
'''


@pytest.fixture()
def scratch_repo(tmp_path: Path) -> Path:
    """The real scripts, every benchmark's dataset config, CoOp and MaPLe configs, recording tools (and the
    real folder naming)."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", repo / "scripts")
    (repo / "configs" / "datasets").mkdir(parents=True)
    for name in BENCHMARKS + VARIANTS:
        (repo / "configs" / "datasets" / f"{name}.yaml").write_text("DATASET:\n  NAME: X\n")
    for trainer, configs in (("CoOp", ["vit_b16", "vit_b16_ctxv1", "vit_b16_ep50_ctxv1"]),
                             ("MaPLe", ["vit_b16", "vit_b16_cross_datasets"])):
        (repo / "configs" / "trainers" / trainer).mkdir(parents=True)
        for config in configs:
            (repo / "configs" / "trainers" / trainer / f"{config}.yaml").write_text("OPTIM:\n  MAX_EPOCH: 1\n")
    (repo / "tools").mkdir()
    (repo / "train.py").write_text(RECORDING_TRAIN_PY)
    (repo / "tools" / "run_config.py").write_text(COMPARING_RUN_CONFIG_PY)
    shutil.copy(REPO / "tools" / "config_name.py", repo / "tools" / "config_name.py")
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
    # The setting given on top of the config names the configuration's folder.
    assert reproduce.train_runs() == [f"runs/base2new/CoOp/vit_b16+lr0.01/{d}/shots_4/seed3/{r}"
                                      for d in ("dtd", "eurosat") for r in ("train_base", "test_new")]
    assert all(call[-2:] == ["OPTIM.LR", "0.01"] for call in reproduce.calls() if call[0] == "train.py")
    assert reproduce.calls()[-1][1] == "runs/base2new"


def test_a_recipe_with_its_own_imagenet_config_is_two_calls_into_one_configuration(reproduce: Reproduce) -> None:
    """CoOp's base-to-new recipe of the papers' tables, as docs/REPRODUCING.md gives it: one TAG, two configs."""
    others = " ".join(BENCHMARKS[1:])
    assert reproduce("CoOp", "base2new", SEEDS="1", TAG="papers_ctxv1", CFG="vit_b16_ctxv1",
                     DATASETS=others).returncode == 0
    assert reproduce("CoOp", "base2new", SEEDS="1", TAG="papers_ctxv1", CFG="vit_b16_ep50_ctxv1",
                     DATASETS="imagenet").returncode == 0
    runs = reproduce.train_runs()
    assert runs == [f"output/base2new/CoOp/papers_ctxv1/{d}/shots_16/seed1/{r}"
                    for d in BENCHMARKS[1:] + ["imagenet"] for r in ("train_base", "test_new")]
    configs = [call[call.index("--config-file") + 1] for call in reproduce.calls() if call[0] == "train.py"]
    assert {Path(c).name for c in configs[:-2]} == {"vit_b16_ctxv1.yaml"}
    assert {Path(c).name for c in configs[-2:]} == {"vit_b16_ep50_ctxv1.yaml"}


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
               DATASETS="caltech101 dtd", OUTPUT=str(tmp_path / "output"), BACKBONE=tiny_clip_path,
               OPTS="OPTIM.MAX_EPOCH 1")
    result = subprocess.run(["bash", str(REPO / "scripts" / "reproduce.sh"), "CoOp", "base2new"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    tree = tmp_path / "output" / "base2new"
    assert (tree / "CoOp" / "tiny+backbone-tiny-vit" / "dtd" / "shots_2" / "seed1" / "test_new" / "log.txt").is_file()
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in (tree / "results.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[0] == ["Trainer", "Config", "Shots", "Metric", "caltech101", "dtd", "Average (2 datasets)"]
    assert rows[1][:4] == ["CoOp", "tiny+backbone-tiny-vit", "2", "Base"]
    assert all(cell.endswith("(n=1)") for row in rows[1:4] for cell in row[4:])  # both datasets measured
    published = next(i for i, row in enumerate(rows) if row[0] == "CoOp (published)")
    # CoOp's published caltech101 (98.00 / 89.81) and dtd (79.44 / 41.18), averaged over these two only.
    assert [row[4:] for row in rows[published:published + 2]] == [["98.00", "79.44", "88.72"],
                                                                 ["89.81", "41.18", "65.50"]]
    assert (tree / "results.png").is_file()

    again = subprocess.run(["bash", str(REPO / "scripts" / "reproduce.sh"), "CoOp", "base2new"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skip:") == 4  # train_base and test_new of each dataset
