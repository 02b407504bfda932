"""train.py end to end on the toy dataset: config files, markers, rerun-resume, eval-only."""
from __future__ import annotations

import os
import re

import pytest

from dassl.config import ConfigError
from tests.test_engine import make_toy_images, run_main, toy_opts

# parse_test_res.py's rule: the last accuracy after the marker line.
RESULT = re.compile(r"\* accuracy: ([\.\deE+-]+)%")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Toy data, a dataset YAML and a trainer YAML, and a finished 2-epoch run."""
    base = tmp_path_factory.mktemp("cli")
    root = make_toy_images(str(base / "data"))
    dataset_yaml = base / "engine_toy.yaml"
    dataset_yaml.write_text("DATASET:\n  NAME: EngineToy\n")
    trainer_yaml = base / "toy_trainer.yaml"
    trainer_yaml.write_text("OPTIM:\n  NAME: sgd\n  LR: 0.01\n  MAX_EPOCH: 2\n  LR_SCHEDULER: cosine\n")
    opts = toy_opts()
    opts = [v for i in range(0, len(opts), 2) if not opts[i].startswith(("OPTIM", "DATASET")) for v in opts[i : i + 2]]
    flags = ["--root", root, "--seed", "1", "--trainer", "EngineToyTrainer",
             "--dataset-config-file", str(dataset_yaml), "--config-file", str(trainer_yaml)]  # fmt: skip
    train_dir = str(base / "train")
    run_main([*flags, "--output-dir", train_dir, *opts])
    return {"base": base, "flags": flags, "opts": opts, "train_dir": train_dir}


def read(path) -> str:
    with open(path) as f:
        return f.read()


def test_help_documents_the_latest_checkpoint_rule(capsys):
    with pytest.raises(SystemExit) as info:
        run_main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--root", "--seed", "--trainer", "--dataset-config-file", "--config-file", "--output-dir",
                 "--resume", "--model-dir", "--load-epoch", "--eval-only", "--no-train", "--source-domains",
                 "--target-domains", "--transforms", "--backbone", "--head"):  # fmt: skip
        assert flag in text, flag
    assert "checkpoint (the latest one saved)" in text


def test_training_writes_config_checkpoint_and_markers(setup):
    train_dir = setup["train_dir"]
    log = read(os.path.join(train_dir, "log.txt"))
    assert "Loading trainer: EngineToyTrainer" in log
    after_marker = log.split("Finish training", 1)[1]
    assert "=> result" in after_marker and RESULT.findall(after_marker)
    config = read(os.path.join(train_dir, "config.yaml"))
    assert "NAME: EngineToy\n" in config and "MAX_EPOCH: 2" in config
    assert os.path.isfile(os.path.join(train_dir, "toy", "model.pth.tar-2"))
    assert os.listdir(os.path.join(train_dir, "tensorboard"))


def test_rerunning_the_same_command_resumes(setup):
    train_dir = setup["train_dir"]
    run_main([*setup["flags"], "--output-dir", train_dir, *setup["opts"]])
    earlier = [f for f in os.listdir(train_dir) if re.fullmatch(r"log-[\d-]+\.txt", f)]
    assert len(earlier) == 1  # the first attempt's log is kept beside; log.txt is the latest attempt's
    assert "epoch [1/2]" in read(os.path.join(train_dir, earlier[0]))
    log = read(os.path.join(train_dir, "log.txt"))
    assert "2 epoch(s) done" in log and "epoch [" not in log  # nothing trained again
    assert RESULT.findall(log.split("Finish training", 1)[1])


def test_eval_only_loads_the_latest_checkpoint(setup):
    out = str(setup["base"] / "eval")
    run_main([*setup["flags"], "--output-dir", out, "--model-dir", setup["train_dir"], "--eval-only", *setup["opts"]])
    log = read(os.path.join(out, "log.txt"))
    assert "model.pth.tar-2" in log and RESULT.findall(log.split("=> result", 1)[1])
    assert sorted(os.listdir(out)) == ["config.yaml", "log.txt"]  # no training, no checkpoint


def test_eval_only_without_a_checkpoint_never_trains(setup):
    empty = setup["base"] / "empty_model_dir"
    empty.mkdir()
    out = str(setup["base"] / "eval_missing")
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty))):
        run_main([*setup["flags"], "--output-dir", out, "--model-dir", str(empty), "--eval-only", *setup["opts"]])
    with pytest.raises(FileNotFoundError, match=r"model\.pth\.tar-5"):
        run_main([*setup["flags"], "--output-dir", out, "--model-dir", setup["train_dir"], "--load-epoch", "5",
                  "--eval-only", *setup["opts"]])  # fmt: skip
    assert not {"toy", "tensorboard", "last.pth.tar"} & set(os.listdir(out))  # nothing was trained


def test_unknown_key_in_a_config_file_names_key_and_file(setup):
    bad = setup["base"] / "bad.yaml"
    bad.write_text("OPTIM:\n  LRR: 0.1\n")
    with pytest.raises(ConfigError, match=r"OPTIM\.LRR.*bad\.yaml"):
        run_main([*setup["flags"][:-2], "--config-file", str(bad), "--output-dir", str(setup["base"] / "bad")])


def test_eval_only_deploys_the_model_a_best_val_run_deployed(setup):
    """Base (end of training) and new (eval-only) accuracies must come from the same model-best file."""
    train_dir = str(setup["base"] / "train_best")
    run_main([*setup["flags"], "--output-dir", train_dir, *setup["opts"], "TEST.FINAL_MODEL", "best_val"])
    out = str(setup["base"] / "eval_best")
    run_main([*setup["flags"], "--output-dir", out, "--model-dir", train_dir, "--eval-only", *setup["opts"]])
    log = read(os.path.join(out, "log.txt"))
    assert "model-best.pth.tar" in log and "model.pth.tar-2" not in log


def test_load_epoch_without_model_dir_is_refused(setup):
    with pytest.raises(ValueError, match="--load-epoch needs --model-dir"):
        run_main([*setup["flags"], "--output-dir", str(setup["base"] / "no_dir"), "--load-epoch", "2", "--eval-only",
                  *setup["opts"]])  # fmt: skip


def test_a_refused_resume_leaves_the_runs_config_yaml(setup):
    train_dir = setup["train_dir"]
    before = read(os.path.join(train_dir, "config.yaml"))
    with pytest.raises(Exception, match="OPTIM.LR"):
        run_main([*setup["flags"], "--output-dir", train_dir, *setup["opts"], "OPTIM.LR", "0.5"])
    assert read(os.path.join(train_dir, "config.yaml")) == before
