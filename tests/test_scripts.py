"""scripts/train.sh and scripts/test.sh: usage errors, the train.py calls of each protocol, and
an end-to-end run of every protocol with the real engine on fake data and a tiny CLIP.

Most tests run copies of the scripts in a scratch repository whose train.py is a recorder: it
notes its arguments and writes a log with a result, as the engine does. That checks the
protocol wiring in milliseconds and without the engine; the last tests use the real one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools import results

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("common.sh", "train.sh", "test.sh")
FAKE_DATASETS = ("caltech101", "dtd", "imagenet", "imagenetv2", "imagenet_sketch")

# Stands in for the engine: records argv as one JSON line, then writes a finished log, or
# an unfinished one (exit 1) when the output folder is named in FAKE_INTERRUPT. Its
# "config.yaml" is its arguments without --output-dir; a run named in FAKE_UNFINISHED gets a
# result but a marker saying its checkpoints stopped early.
RECORDING_TRAIN_PY = '''
import json, os, sys
args = sys.argv[1:]
out = args[args.index("--output-dir") + 1]
with open(os.environ["FAKE_RECORD"], "a") as record:
    record.write(json.dumps(args) + "\\n")
os.makedirs(out, exist_ok=True)
log = os.path.join(out, "log.txt")
if os.path.exists(log):
    log += "-rerun"
interrupted = os.environ.get("FAKE_INTERRUPT") and out.endswith(os.environ["FAKE_INTERRUPT"])
with open(log, "w") as handle:
    handle.write("Finish training\\n" if interrupted else "Finish training\\n=> result\\n* accuracy: 50.0%\\n")
index = args.index("--output-dir")
with open(os.path.join(out, "config.yaml"), "w") as handle:
    json.dump(args[:index] + args[index + 2:], handle)
if os.environ.get("FAKE_UNFINISHED") and out.endswith(os.environ["FAKE_UNFINISHED"]):
    open(os.path.join(out, "unfinished"), "w").close()
sys.exit(1 if interrupted else 0)
'''

# Stands in for tools/run_config.py. describe: the real folder name (tools/config_name.py is copied), a
# registry of two trainers; check: compares the recorded arguments with the requested ones (flags, then the
# KEY VALUE pairs as a merge sees them: decoded, the last value of a key winning); record: notes the request.
COMPARING_RUN_CONFIG_PY = '''
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.config_name import check_tag, decode, folder_name
def merged(call):
    index = 0
    while index < len(call) and call[index].startswith("--"):
        index += 1 if call[index] in ("--eval-only", "--no-train") else 2
    return call[:index], {k: decode(v) for k, v in zip(call[index::2], call[index + 1::2])}
EVAL_ONLY = {"CoOp": False, "ZeroshotCLIP": True}
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
    print(f"CONFIG_NAME={name}\\nEVAL_ONLY={int(EVAL_ONLY[options['--trainer']])}\\nSOURCE_KEY=fake")
    sys.exit(0)
as_model = args[0] == "--model"
args = args[as_model:]
assert args[0] == "--source", args
run_dir, requested = args[2], args[3:]
if command == "record":
    with open(os.path.join(run_dir, "config_request.json"), "w") as handle:
        json.dump({"source": args[1], "args": requested}, handle)
    sys.exit(0)
with open(os.path.join(run_dir, "config.yaml")) as handle:
    saved = json.load(handle)
problems = [] if merged(saved) == merged(requested) else [f"config differs: {saved} -> {requested}"]
if as_model and os.path.exists(os.path.join(run_dir, "unfinished")):
    problems.append(f"unfinished: {run_dir} stopped at epoch 1 of 2")
print("\\n".join(problems), file=sys.stderr)
sys.exit(1 if problems else 0)
'''


@pytest.fixture()
def scratch_repo(tmp_path: Path) -> Path:
    """The real scripts, a few dataset configs, two trainer configs and the recording train.py."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in SCRIPTS:
        shutil.copy(REPO / "scripts" / name, repo / "scripts" / name)
    (repo / "configs" / "datasets").mkdir(parents=True)
    for name in FAKE_DATASETS:
        (repo / "configs" / "datasets" / f"{name}.yaml").write_text("DATASET:\n  NAME: X\n")
    for trainer in ("CoOp", "ZeroshotCLIP"):
        (repo / "configs" / "trainers" / trainer).mkdir(parents=True)
        (repo / "configs" / "trainers" / trainer / "tiny.yaml").write_text("OPTIM:\n  MAX_EPOCH: 1\n")
    (repo / "train.py").write_text(RECORDING_TRAIN_PY)
    (repo / "tools").mkdir()
    (repo / "tools" / "run_config.py").write_text(COMPARING_RUN_CONFIG_PY)
    shutil.copy(REPO / "tools" / "config_name.py", repo / "tools" / "config_name.py")
    return repo


class Runner:
    """Runs a script of the scratch repo from a separate working folder and reads the record."""

    def __init__(self, repo: Path, workdir: Path) -> None:
        self.repo, self.workdir = repo, workdir
        self.record = workdir / "calls.jsonl"
        workdir.mkdir(exist_ok=True)

    def __call__(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
        full_env = {
            "PATH": os.environ["PATH"], "PYTHON": sys.executable, "FAKE_RECORD": str(self.record),
            "TRAINER": "CoOp", "CFG": "tiny", "SEEDS": "1", "SHOTS": "2", "DATA": "/data",
        }
        full_env.update(env)
        return subprocess.run(["bash", str(self.repo / "scripts" / script), *args], cwd=self.workdir,
                              env=full_env, capture_output=True, text=True, timeout=60)

    def calls(self) -> list[list[str]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@pytest.fixture()
def run(scratch_repo: Path, tmp_path: Path) -> Runner:
    return Runner(scratch_repo, tmp_path / "work")


def option(call: list[str], flag: str) -> str:
    return call[call.index(flag) + 1]


BOOLEAN_FLAGS = {"--eval-only", "--no-train"}


def overrides(call: list[str]) -> dict[str, str]:
    """The trailing KEY VALUE pairs, i.e. what follows train.py's flags."""
    index = 0
    while index < len(call) and call[index].startswith("--"):
        index += 1 if call[index] in BOOLEAN_FLAGS else 2
    pairs = call[index:]
    assert len(pairs) % 2 == 0, f"odd KEY VALUE list: {pairs}"
    return dict(zip(pairs[::2], pairs[1::2]))


# ---------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("script", ["train.sh", "test.sh"])
def test_usage_errors_exit_2_and_list_the_valid_names(run: Runner, script: str) -> None:
    result = run(script)
    assert result.returncode == 2 and "Usage: bash scripts/" in result.stderr

    result = run(script, "caltech101", "fewshot")
    assert result.returncode == 2
    assert "unknown TASK 'fewshot'; valid tasks: base2new cross-dataset domain-generalization" in result.stderr

    result = run(script, "cifar10", "base2new")
    assert result.returncode == 2
    assert "unknown DATASET 'cifar10'" in result.stderr
    assert "valid datasets: caltech101 dtd imagenet imagenet_sketch imagenetv2" in result.stderr

    result = run(script, "caltech101", "base2new", OPTS="TRAINER.COOP.CTX_INIT 'a photo")
    assert result.returncode == 2 and "OPTS has an unmatched quote" in result.stderr

    result = run(script, "caltech101", "base2new", SHOTS="0")
    assert result.returncode == 2 and "SHOTS is '0'; give a positive integer" in result.stderr

    result = run(script, "caltech101", "base2new", TRAINER="GoPro")
    assert result.returncode == 2 and "available TRAINER/CFG: CoOp/tiny ZeroshotCLIP/tiny" in result.stderr

    assert run.calls() == []


def test_unknown_target_is_a_usage_error(run: Runner) -> None:
    result = run("test.sh", "imagenet", "cross-dataset", TARGETS="dtd nope")
    assert result.returncode == 2 and "unknown dataset 'nope' in TARGETS" in result.stderr
    assert run.calls() == []


def test_transfer_training_only_on_the_source(run: Runner) -> None:
    result = run("train.sh", "dtd", "cross-dataset")
    assert result.returncode == 2
    assert "DATASET is 'dtd' but SOURCE is 'imagenet'" in result.stderr
    assert run.calls() == []


# ---------------------------------------------------------------------------- protocol wiring


def test_base2new_train_then_test(run: Runner) -> None:
    opts = "OPTIM.MAX_EPOCH 3 TRAINER.COOP.CTX_INIT 'a photo of a'"
    assert run("train.sh", "caltech101", "base2new", SEEDS="1 2", OPTS=opts).returncode == 0
    # The folder carries the two settings the config file does not set to these values.
    config = "output/base2new/CoOp/tiny+ctxinit-a_photo_of_a+maxepoch3/caltech101/shots_2"
    seed1 = f"{config}/seed1"
    train_calls = run.calls()
    assert [option(c, "--output-dir") for c in train_calls] == [f"{seed1}/train_base", f"{config}/seed2/train_base"]
    first = train_calls[0]
    assert option(first, "--root") == "/data" and option(first, "--seed") == "1"
    assert option(first, "--dataset-config-file") == str(run.repo / "configs/datasets/caltech101.yaml")
    assert option(first, "--config-file") == str(run.repo / "configs/trainers/CoOp/tiny.yaml")
    assert "--eval-only" not in first
    assert overrides(first) == {"DATASET.NUM_SHOTS": "2", "DATASET.SUBSAMPLE_CLASSES": "base",
                                "OPTIM.MAX_EPOCH": "3", "TRAINER.COOP.CTX_INIT": "a photo of a"}
    assert first[-2:] == ["TRAINER.COOP.CTX_INIT", "a photo of a"]  # OPTS last: it wins
    recorded = json.loads((run.workdir / seed1 / "train_base" / "config_request.json").read_text())
    assert recorded == {"source": "fake", "args": first[:first.index("--output-dir")] + first[first.index("--output-dir") + 2:]}

    assert run("test.sh", "caltech101", "base2new", SEEDS="1 2", OPTS=opts).returncode == 0
    test_call = run.calls()[2]
    assert option(test_call, "--output-dir") == f"{seed1}/test_new"
    assert "--eval-only" in test_call and option(test_call, "--model-dir") == f"{seed1}/train_base"
    assert "--load-epoch" not in test_call  # the engine loads the latest checkpoint
    assert overrides(test_call)["DATASET.SUBSAMPLE_CLASSES"] == "new"

    again = run("train.sh", "caltech101", "base2new", SEEDS="1 2", OPTS=opts)
    assert again.returncode == 0 and again.stdout.count("skip:") == 2
    assert len(run.calls()) == 4


def test_finished_run_of_another_config_in_the_same_folder_is_refused_not_skipped(run: Runner) -> None:
    """A TAG names the folder whatever the settings: a rerun there with other OPTS must not print 'skip:' and
    keep the old config's result."""
    assert run("train.sh", "caltech101", "base2new", OPTS="OPTIM.LR 0.01", TAG="mine").returncode == 0
    assert run("test.sh", "caltech101", "base2new", OPTS="OPTIM.LR 0.01", TAG="mine").returncode == 0
    assert option(run.calls()[0], "--output-dir").startswith("output/base2new/CoOp/mine/caltech101/")
    for script, refusal in (("train.sh", "holds a result of another config"), ("test.sh", "not the one asked for")):
        result = run(script, "caltech101", "base2new", OPTS="OPTIM.LR 0.05", TAG="mine")
        assert result.returncode == 1 and "skip:" not in result.stdout
        assert "config differs" in result.stderr and "0.05" in result.stderr and refusal in result.stderr
    assert len(run.calls()) == 2  # neither the changed training nor its test ran


def test_a_sweep_puts_each_point_in_its_own_folder_of_one_output(run: Runner) -> None:
    for lr in ("0.002", "0.01", "1e-3"):
        assert run("train.sh", "caltech101", "base2new", OPTS=f"OPTIM.LR {lr} TRAINER.COOP.N_CTX 8").returncode == 0
        assert run("test.sh", "caltech101", "base2new", OPTS=f"OPTIM.LR {lr} TRAINER.COOP.N_CTX 8").returncode == 0
    folders = sorted({option(c, "--output-dir").split("/")[3] for c in run.calls()})
    assert folders == ["tiny+lr0.001+nctx8", "tiny+lr0.002+nctx8", "tiny+lr0.01+nctx8"]
    assert len(run.calls()) == 6
    # The same settings in another order and spelling find the same folder: everything is skipped.
    again = run("train.sh", "caltech101", "base2new", OPTS="TRAINER.COOP.N_CTX 8 OPTIM.LR 0.010")
    assert again.returncode == 0 and "skip:" in again.stdout and len(run.calls()) == 6
    # A setting equal to the config file's value (tiny.yaml: MAX_EPOCH 1) names nothing.
    assert run("train.sh", "caltech101", "base2new", OPTS="OPTIM.MAX_EPOCH 1").returncode == 0
    assert option(run.calls()[-1], "--output-dir").startswith("output/base2new/CoOp/tiny/caltech101/")


def test_backbone_is_a_setting_and_part_of_the_folder_name(run: Runner) -> None:
    assert run("train.sh", "caltech101", "base2new", BACKBONE="/models/clip-b16.pt").returncode == 0
    assert run("test.sh", "caltech101", "base2new", BACKBONE="/models/clip-b16.pt").returncode == 0
    train_call, test_call = run.calls()
    for call in (train_call, test_call):
        assert option(call, "--backbone") == "/models/clip-b16.pt"
        assert option(call, "--output-dir").startswith("output/base2new/CoOp/tiny+backbone-clip-b16/caltech101/")
    assert run("train.sh", "caltech101", "base2new", BACKBONE="ViT-B/16").returncode == 0
    assert "/tiny+backbone-ViT-B-16/" in option(run.calls()[-1], "--output-dir")
    # OPTS come after --backbone in train.py's merge, so MODEL.BACKBONE.NAME there wins, in the name too.
    assert run("train.sh", "caltech101", "base2new", BACKBONE="RN50", OPTS="MODEL.BACKBONE.NAME RN101").returncode == 0
    assert "/tiny+backbone-RN101/" in option(run.calls()[-1], "--output-dir")


def test_nproc_launches_torchrun(run: Runner, tmp_path: Path) -> None:
    """NPROC=2 starts train.py through tools/torchrun.py; the launcher here records and runs it once."""
    launcher = tmp_path / "python"
    launcher.write_text(f"""#!/bin/bash
echo "$*" >>{tmp_path / "launches.txt"}
if [[ "$1" == */tools/torchrun.py ]]; then shift 4; fi
exec {sys.executable} "$@"
""")
    launcher.chmod(0o755)
    assert run("train.sh", "caltech101", "base2new", NPROC="2", PYTHON=str(launcher)).returncode == 0
    train_py_launches = [line for line in (tmp_path / "launches.txt").read_text().splitlines() if "train.py" in line]
    assert len(train_py_launches) == 1
    assert train_py_launches[0].startswith(
        f"{run.repo / 'tools' / 'torchrun.py'} --standalone --nproc_per_node 2 {run.repo / 'train.py'} --output-dir ")
    assert len(run.calls()) == 1

    result = run("train.sh", "caltech101", "base2new", NPROC="two")
    assert result.returncode == 2 and "NPROC is 'two'; give a positive integer" in result.stderr


def test_usage_lists_every_setting_and_bad_tags_are_usage_errors(run: Runner) -> None:
    usage = run("train.sh").stderr
    settings = ("DATA", "TRAINER", "CFG", "BACKBONE", "SEEDS", "SHOTS", "OPTS", "OUTPUT", "TAG", "NPROC", "PYTHON",
                "SOURCE", "TARGETS")
    assert all(f"\n  {name} " in usage for name in settings)
    assert "vit_b16+lr0.01+nctx8" in usage  # the folder naming rule, with an example
    for tag in ("a/b", ".hidden", "two words"):
        result = run("train.sh", "caltech101", "base2new", TAG=tag)
        assert result.returncode == 2 and f"TAG '{tag}' cannot name a folder" in result.stderr
        assert "Usage: bash scripts/train.sh" in result.stderr
    (run.repo / "configs" / "trainers" / "NotRegistered").mkdir()
    (run.repo / "configs" / "trainers" / "NotRegistered" / "tiny.yaml").write_text("{}\n")
    result = run("train.sh", "caltech101", "base2new", TRAINER="NotRegistered")
    assert result.returncode == 2 and "TRAINER 'NotRegistered' is not a registered trainer" in result.stderr
    assert run.calls() == []


def test_testing_an_unfinished_training_run_is_refused(run: Runner) -> None:
    """A training run whose checkpoints stopped before MAX_EPOCH is never evaluated."""
    assert run("train.sh", "caltech101", "base2new", FAKE_UNFINISHED="train_base").returncode == 0
    result = run("test.sh", "caltech101", "base2new")
    assert result.returncode == 1
    assert "unfinished:" in result.stderr and "train_base is not the one asked for" in result.stderr
    assert len(run.calls()) == 1


def test_interrupted_run_is_run_again_with_its_old_log_set_aside(run: Runner) -> None:
    result = run("train.sh", "caltech101", "base2new", FAKE_INTERRUPT="train_base")
    assert result.returncode == 1  # train.py's failure is the script's failure
    run_dir = run.workdir / "output/base2new/CoOp/tiny/caltech101/shots_2/seed1/train_base"
    assert (run_dir / "log.txt").read_text() == "Finish training\n"

    assert run("train.sh", "caltech101", "base2new").returncode == 0
    assert len(run.calls()) == 2
    assert "* accuracy: 50.0%" in (run_dir / "log.txt").read_text()
    assert len(list(run_dir.glob("log.txt.interrupted-*"))) == 1


def test_testing_before_training_names_the_missing_step(run: Runner) -> None:
    result = run("test.sh", "caltech101", "base2new")
    assert result.returncode == 1
    assert "run 'bash scripts/train.sh caltech101 base2new' first" in result.stderr
    assert run.calls() == []


def test_cross_dataset_and_dg_share_the_source_model(run: Runner) -> None:
    assert run("train.sh", "imagenet", "cross-dataset").returncode == 0
    (source_call,) = run.calls()
    assert option(source_call, "--output-dir") == "output/cross-dataset/CoOp/tiny/imagenet/shots_2/seed1/train_source"
    assert overrides(source_call) == {"DATASET.NUM_SHOTS": "2"}  # all classes
    assert "--eval-only" not in source_call

    reuse = run("train.sh", "imagenet", "domain-generalization")
    assert reuse.returncode == 0 and "reuse:" in reuse.stdout
    assert len(run.calls()) == 1
    dg_seed = run.workdir / "output/domain-generalization/CoOp/tiny/imagenet/shots_2/seed1"
    assert (dg_seed / "train_source").is_symlink()
    assert (dg_seed / "train_source" / "log.txt").is_file()

    targets = "imagenetv2 imagenet_sketch"
    assert run("test.sh", "imagenet", "domain-generalization", TARGETS=targets).returncode == 0
    target_calls = run.calls()[1:]
    assert [option(c, "--output-dir") for c in target_calls] == [
        "output/domain-generalization/CoOp/tiny/imagenet/shots_2/seed1/test_imagenetv2",
        "output/domain-generalization/CoOp/tiny/imagenet/shots_2/seed1/test_imagenet_sketch"]
    for call, target in zip(target_calls, targets.split()):
        assert option(call, "--dataset-config-file").endswith(f"configs/datasets/{target}.yaml")
        assert "--eval-only" in call
        assert option(call, "--model-dir") == "output/domain-generalization/CoOp/tiny/imagenet/shots_2/seed1/train_source"
        assert "DATASET.SUBSAMPLE_CLASSES" not in call

    # One target only: DATASET names it, the model is still SOURCE's.
    assert run("test.sh", "dtd", "cross-dataset").returncode == 0
    dtd_call = run.calls()[-1]
    assert option(dtd_call, "--output-dir").endswith("cross-dataset/CoOp/tiny/imagenet/shots_2/seed1/test_dtd")


def test_dg_trains_its_own_source_model_when_arguments_differ(run: Runner) -> None:
    assert run("train.sh", "imagenet", "cross-dataset", TAG="t").returncode == 0
    assert run("train.sh", "imagenet", "domain-generalization", OPTS="OPTIM.MAX_EPOCH 5", TAG="t").returncode == 0
    assert len(run.calls()) == 2
    dg_run = run.workdir / "output/domain-generalization/CoOp/t/imagenet/shots_2/seed1/train_source"
    assert dg_run.is_dir() and not dg_run.is_symlink()


def test_few_shot_trains_on_all_classes_at_each_shots(run: Runner) -> None:
    assert run("train.sh", "dtd", "few-shot", SHOTS="1 4", SEEDS="1 2").returncode == 0
    calls = run.calls()
    folder = "output/few-shot/CoOp/tiny/dtd"
    assert [option(c, "--output-dir") for c in calls] == [
        f"{folder}/shots_1/seed1/train_all", f"{folder}/shots_1/seed2/train_all",
        f"{folder}/shots_4/seed1/train_all", f"{folder}/shots_4/seed2/train_all"]
    assert [overrides(c) for c in calls[1:3]] == [{"DATASET.NUM_SHOTS": "1"}, {"DATASET.NUM_SHOTS": "4"}]
    assert all("--eval-only" not in c for c in calls)

    tested = run("test.sh", "dtd", "few-shot", SHOTS="1 4")
    assert tested.returncode == 0 and "nothing to test" in tested.stdout
    assert len(run.calls()) == 4

    zero_shot = run("train.sh", "dtd", "few-shot", TRAINER="ZeroshotCLIP", SEEDS="1")
    assert zero_shot.returncode == 0
    (call,) = run.calls()[4:]
    assert option(call, "--output-dir") == "output/few-shot/ZeroshotCLIP/tiny/dtd/shots_0/seed1/train_all"
    assert "--eval-only" in call and overrides(call) == {}


def test_few_shot_default_shots_and_shots_errors(run: Runner) -> None:
    assert run("train.sh", "dtd", "few-shot", SHOTS="").returncode == 0
    shots = [option(c, "--output-dir").split("/")[5] for c in run.calls()]
    assert shots == ["shots_1", "shots_2", "shots_4", "shots_8", "shots_16"]

    result = run("train.sh", "dtd", "few-shot", SHOTS="1 two")
    assert result.returncode == 2 and "SHOTS holds 'two'" in result.stderr
    result = run("train.sh", "dtd", "base2new", SHOTS="1 2")
    assert result.returncode == 2 and "a list is for the few-shot task" in result.stderr
    assert len(run.calls()) == 5


def test_zero_shot_clip_evaluates_without_a_model(run: Runner) -> None:
    env = {"TRAINER": "ZeroshotCLIP"}
    assert run("train.sh", "caltech101", "base2new", **env).returncode == 0
    assert run("test.sh", "caltech101", "base2new", **env).returncode == 0
    base_call, new_call = run.calls()
    for call in (base_call, new_call):
        assert "--eval-only" in call and "--model-dir" not in call
    # It sees no training image: shots_0, whatever SHOTS is, so another SHOTS finds the same runs.
    assert option(base_call, "--output-dir").endswith("ZeroshotCLIP/tiny/caltech101/shots_0/seed1/train_base")
    assert overrides(base_call) == {"DATASET.SUBSAMPLE_CLASSES": "base"}
    assert overrides(new_call) == {"DATASET.SUBSAMPLE_CLASSES": "new"}
    again = run("train.sh", "caltech101", "base2new", SHOTS="16", **env)
    assert again.returncode == 0 and "skip:" in again.stdout and len(run.calls()) == 2
    cross = run("train.sh", "imagenet", "cross-dataset", **env)
    assert cross.returncode == 0 and run("train.sh", "imagenet", "domain-generalization", **env).returncode == 0
    dg_source = run.workdir / "output/domain-generalization/ZeroshotCLIP/tiny/imagenet/shots_0/seed1/train_source"
    assert dg_source.is_symlink() and (dg_source / "log.txt").is_file()  # the link points at the shots_0 run


# ---------------------------------------------------------------------------- end to end


@pytest.fixture()
def real_run(tmp_path: Path, fake_data_root: str, tiny_clip_path: str):
    """Runs the repository's own scripts with the real engine, CoOp tiny, one seed, two shots, into the folder
    TAG=tiny (the automatic names are tested in tests/test_sweeps.py)."""

    def call(script: str, *args: str, expect_rc: int = 0, **env: str) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, PYTHON=sys.executable, DATA=fake_data_root, TRAINER="CoOp", CFG="tiny", SEEDS="1",
                        SHOTS="2", OUTPUT=str(tmp_path / "output"), BACKBONE=tiny_clip_path, TAG="tiny",
                        OPTS="OPTIM.MAX_EPOCH 1")
        full_env.update(env)
        result = subprocess.run(["bash", str(REPO / "scripts" / script), *args], cwd=tmp_path,
                                env=full_env, capture_output=True, text=True, timeout=300)
        assert result.returncode == expect_rc, f"{script} {args} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    return call


def results_command(tree: Path, capsys) -> str:
    """tools/results.py in-process (its command line is covered by tests/test_results.py)."""
    assert results.main([str(tree), "--detail"]) == 0
    return capsys.readouterr().out


def test_end_to_end_base2new(real_run, tmp_path: Path, tiny_clip_path: str, capsys) -> None:
    real_run("train.sh", "caltech101", "base2new")
    real_run("test.sh", "caltech101", "base2new")
    tree = tmp_path / "output" / "base2new"
    printed = results_command(tree, capsys)
    assert "### base2new — CoOp / tiny, 2 shots" in printed
    row = next(line for line in printed.splitlines() if line.startswith("| caltech101 |"))
    assert "—" not in row and row.endswith("| 1/1, 1/1 |")
    assert (tree / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The finished run in the same folder is not reused for another learning rate. The real train.py config
    # and the saved config.yaml agree on every other key, so OPTIM.LR is the only one named.
    changed = "OPTIM.MAX_EPOCH 1 OPTIM.LR 0.05"
    refused = real_run("train.sh", "caltech101", "base2new", OPTS=changed, expect_rc=1)
    assert "skip:" not in refused.stdout and "holds a result of another config" in refused.stderr
    differences = [line for line in refused.stderr.splitlines() if line.startswith("config differs: ")]
    assert len(differences) == 1 and differences[0].startswith("config differs: OPTIM.LR: ")


def test_end_to_end_few_shot(real_run, tmp_path: Path, capsys) -> None:
    real_run("train.sh", "caltech101", "few-shot", SHOTS="1 2")
    tree = tmp_path / "output" / "few-shot"
    assert (tree / "CoOp/tiny/caltech101/shots_2/seed1/train_all/config.yaml").is_file()
    printed = results_command(tree, capsys)
    assert "### few-shot — CoOp / tiny" in printed and "| Dataset | 1 shot | 2 shots |" in printed
    row = next(line for line in printed.splitlines() if line.startswith("| caltech101 |"))
    assert "—" not in row and row.count("(1/1)") == 2
    assert (tree / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_end_to_end_cross_dataset_and_domain_generalization(real_run, tmp_path: Path, capsys) -> None:
    real_run("train.sh", "imagenet", "cross-dataset")
    real_run("test.sh", "imagenet", "cross-dataset", TARGETS="caltech101")
    real_run("train.sh", "imagenet", "domain-generalization")  # reuses the source model
    real_run("test.sh", "imagenet", "domain-generalization", TARGETS="imagenetv2")
    for task, target in (("cross-dataset", "caltech101"), ("domain-generalization", "imagenetv2")):
        tree = tmp_path / "output" / task
        printed = results_command(tree, capsys)
        assert f"### {task} — CoOp / tiny, 2 shots, source imagenet" in printed
        for name in ("imagenet", target):
            row = next(line for line in printed.splitlines() if line.startswith(f"| {name} |"))
            assert "—" not in row
        assert (tree / "results.png").is_file()
    assert (tmp_path / "output/domain-generalization/CoOp/tiny/imagenet/shots_2/seed1/train_source").is_symlink()
