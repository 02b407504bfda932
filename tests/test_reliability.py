"""No silent wrong number: each test is a way a run could end with a wrong result or a buried message.

Toy runs (8x8 images, 3 steps per epoch) through train.py's main, as tests/test_resume.py does.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil

import pytest
import torch

import train
from dassl.config import ConfigError, get_cfg_default, merge_from_file_checked, merge_from_list_checked
from dassl.data.data_manager import BadImageError, DatasetWrapper
from dassl.engine import ConfigMismatchError, TrainerBase
from dassl.engine.run_state import DataMismatchError, check_same_data, data_fingerprint
from dassl.evaluation import build_evaluator
from dassl.utils import (
    DiskFullError,
    FolderBusyError,
    FolderLock,
    NonFiniteError,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
    torchtools,
)
from datasets.caltech101 import Caltech101
from tests.test_engine import NAN_FROM, make_toy_images, run_main, train_argv

MAX_EPOCH = 2


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> str:
    return make_toy_images(str(tmp_path_factory.mktemp("toy_data")))


@pytest.fixture(scope="module")
def finished(toy_root, tmp_path_factory) -> str:
    """A finished 2-epoch toy run (do not modify: copy it)."""
    out = str(tmp_path_factory.mktemp("finished") / "run")
    run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH))
    return out


def copy_run(src: str, dst) -> str:
    shutil.copytree(src, str(dst))
    return str(dst)


def read(path) -> str:
    with open(path) as f:
        return f.read()


# ----- 1. non-finite numbers never become an accuracy -----


def test_evaluator_refuses_nonfinite_logits_naming_how_many_images():
    evaluator = build_evaluator(get_cfg_default())
    logits = torch.randn(5, 3)
    logits[1, 0] = float("nan")
    logits[3] = float("inf")
    evaluator.process(logits, torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(NonFiniteError, match=r"2 of 5 images got non-finite logits"):
        evaluator.evaluate()


def test_eval_only_of_nan_weights_exits_with_one_line_and_no_accuracy(toy_root, finished, tmp_path, capsys):
    model_dir = copy_run(finished, tmp_path / "nan_model")
    path = os.path.join(model_dir, "toy", f"model.pth.tar-{MAX_EPOCH}")
    checkpoint = load_checkpoint(path)
    checkpoint["state_dict"]["2.weight"].fill_(float("nan"))
    torch.save(checkpoint, path)
    out = str(tmp_path / "eval")
    rc = train.cli(train_argv(toy_root, out, max_epoch=MAX_EPOCH) + ["--eval-only", "--model-dir", model_dir])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    assert "6 of 6 images got non-finite logits" in err and "test split" in err
    assert "* accuracy:" not in read(os.path.join(out, "log.txt"))


def test_skip_nonfinite_gives_up_after_max_consecutive_skips(toy_root, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv(NAN_FROM, "2:1")  # every step from epoch 2 on
    out = str(tmp_path / "run")
    extra = ["TRAIN.SKIP_NONFINITE", "True", "TRAIN.MAX_CONSECUTIVE_SKIPS", "1"]
    with pytest.raises(NonFiniteError, match=r"2 steps in a row .*MAX_CONSECUTIVE_SKIPS \(1\).*epoch 2/2, step 2/3"):
        run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=extra))
    assert "* accuracy:" not in caplog.text
    assert load_checkpoint(os.path.join(out, "last.pth.tar"))["epoch"] == 1  # epoch 1 kept, nothing after


def test_skip_nonfinite_stops_when_a_whole_epoch_was_skipped(toy_root, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv(NAN_FROM, "2:1")  # 3 steps, fewer than the default limit of 5
    out = str(tmp_path / "run")
    with pytest.raises(NonFiniteError, match=r"Every step of epoch 2/2 \(3\) had a non-finite loss"):
        run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["TRAIN.SKIP_NONFINITE", "True"]))
    assert "* accuracy:" not in caplog.text
    assert load_checkpoint(os.path.join(out, "last.pth.tar"))["epoch"] == 1
    assert not os.path.exists(os.path.join(out, "toy", f"model.pth.tar-{MAX_EPOCH}"))


# ----- 2. a resume is checked against config.yaml whatever it resumes from -----


def test_resume_without_last_checkpoint_still_checks_the_config(toy_root, finished, tmp_path):
    out = copy_run(finished, tmp_path / "run")
    os.remove(os.path.join(out, "last.pth.tar"))
    record = read(os.path.join(out, "config.yaml"))
    with pytest.raises(ConfigMismatchError, match=r"config\.yaml.*OPTIM\.LR: 0\.01 -> 0\.1"):
        run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["OPTIM.LR", "0.1"]))
    assert read(os.path.join(out, "config.yaml")) == record  # the record of the checkpoints is kept


def test_a_refused_resume_leaves_log_txt_to_the_run_the_folder_holds(toy_root, finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path / "run")
    log = read(os.path.join(out, "log.txt"))
    assert train.cli(train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["OPTIM.LR", "0.1"])) == 1
    assert read(os.path.join(out, "log.txt")) == log  # results.py still finds the finished run's result
    (refused,) = [f for f in os.listdir(out) if f.endswith("-refused.txt")]
    assert "error: Refusing to resume" in read(os.path.join(out, refused))
    assert f"this attempt's log: \"{os.path.join(out, refused)}\"" in capsys.readouterr().err


def test_checkpoints_without_a_config_record_resume_only_when_asked(toy_root, finished, tmp_path, caplog):
    out = copy_run(finished, tmp_path / "upstream_like")  # upstream Dassl writes checkpoints, no config.yaml
    os.remove(os.path.join(out, "last.pth.tar"))
    os.remove(os.path.join(out, "config.yaml"))
    argv = train_argv(toy_root, out, max_epoch=MAX_EPOCH)
    with pytest.raises(ConfigMismatchError, match=r"no config\.yaml.*TRAIN\.RESUME_UNCHECKED True"):
        run_main(argv)
    caplog.set_level(logging.INFO)
    run_main(argv + ["TRAIN.RESUME_UNCHECKED", "True"])
    assert "without a config check" in caplog.text and f"Previous epoch: {MAX_EPOCH}" in caplog.text


# ----- 13. a resume is refused when the data changed -----


def test_resume_on_other_data_is_refused(toy_root, finished, tmp_path):
    out = copy_run(finished, tmp_path / "run")
    other_root = copy_run(toy_root, tmp_path / "other_data")
    os.remove(os.path.join(other_root, "engine_toy", "test", "dark", "0.png"))
    with pytest.raises(DataMismatchError, match=r"other data \(test: 6 -> 5 images\)"):
        run_main(train_argv(other_root, out, max_epoch=MAX_EPOCH))


def test_data_fingerprint_names_the_first_renamed_class():
    saved = data_fingerprint(["cat", "dog", "owl"], {"train_x": 9})
    with pytest.raises(DataMismatchError, match=r"class 1 'dog' -> 'fox' \(1 class name\(s\) differ\)"):
        check_same_data(saved, data_fingerprint(["cat", "fox", "owl"], {"train_x": 9}), "last.pth.tar")
    check_same_data(saved, data_fingerprint(["cat", "dog", "owl"], {"train_x": 9}), "last.pth.tar")


# ----- 4. one run per output folder -----


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_first(toy_root, tmp_path):
    out = str(tmp_path / "run")
    with FolderLock(out):  # the first run
        with pytest.raises(FolderBusyError, match=rf"in use by another run \(pid {os.getpid()} on "):
            run_main(train_argv(toy_root, out, max_epoch=1))
        assert os.listdir(out) == [".lock"]  # the refused run wrote nothing
    # A lock file left by a dead process (SIGKILL) holds no flock: the next run goes ahead.
    with open(os.path.join(out, ".lock"), "w") as f:
        f.write("pid 999999 on elsewhere\n")
    run_main(train_argv(toy_root, out, max_epoch=1))
    assert not os.path.exists(os.path.join(out, ".lock"))  # released and removed at the end
    FolderLock(out).acquire()


# ----- 5. evaluating what was not trained says so -----


def test_eval_only_of_an_unfinished_run_warns(toy_root, finished, tmp_path, caplog):
    model_dir = copy_run(finished, tmp_path / "unfinished")
    # As if stopped after epoch 1 of 2 with TRAIN.CHECKPOINT_FREQ 1: model.pth.tar-1 is the latest.
    os.remove(os.path.join(model_dir, "toy", f"model.pth.tar-{MAX_EPOCH}"))
    torch.save(load_checkpoint(os.path.join(finished, "toy", f"model.pth.tar-{MAX_EPOCH}")),
               os.path.join(model_dir, "toy", "model.pth.tar-1"))
    with open(os.path.join(model_dir, "toy", "checkpoint"), "w") as f:
        f.write("model.pth.tar-1\n")
    caplog.set_level(logging.INFO)
    run_main(train_argv(toy_root, str(tmp_path / "eval"), max_epoch=MAX_EPOCH)
             + ["--eval-only", "--model-dir", model_dir])
    assert f"holds an unfinished run (no model.pth.tar-{MAX_EPOCH}" in caplog.text
    assert "evaluating model.pth.tar-1" in caplog.text


def test_eval_only_without_model_dir_warns_that_the_prompt_is_untrained(toy_root, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_main(train_argv(toy_root, str(tmp_path / "eval"), max_epoch=MAX_EPOCH) + ["--eval-only"])
    assert "evaluates the untrained one" in caplog.text
    assert not TrainerBase().has_learned_modules()  # e.g. ZeroshotCLIP: nothing to warn about


# ----- 7, 8, 9. files: full disk, stale temp files, permissions -----


def test_disk_full_while_saving_names_the_file_and_the_intact_checkpoint(toy_root, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    real_save, calls = torch.save, []

    def save_until_full(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epoch 2's model.pth.tar-2, after epoch 1's last.pth.tar
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torchtools.torch, "save", save_until_full)
    argv = train_argv(toy_root, out, max_epoch=MAX_EPOCH)
    with pytest.raises(DiskFullError) as info:
        run_main(argv)
    message = str(info.value)
    assert f"No space left on device while writing \"{os.path.join(out, 'toy', 'model.pth.tar-2')}\"" in message
    assert f"the previous checkpoint \"{os.path.join(out, 'last.pth.tar')}\" (1 epoch(s) done) is intact" in message
    monkeypatch.setattr(torchtools.torch, "save", real_save)
    assert load_checkpoint(os.path.join(out, "last.pth.tar"))["epoch"] == 1
    assert not [f for f in os.listdir(os.path.join(out, "toy")) if f.endswith(".tmp")]
    run_main(argv)  # space freed: the same command resumes and finishes
    assert os.path.isfile(os.path.join(out, "toy", "model.pth.tar-2"))


def test_stale_temp_files_of_killed_writes_are_removed_on_start(toy_root, finished, tmp_path):
    out = copy_run(finished, tmp_path / "run")
    stale = [os.path.join(out, ".last.pth.tar.k2j4_x9q.tmp"), os.path.join(out, "toy", ".model.pth.tar-2.a1b2c3d4.tmp")]
    kept = os.path.join(out, "toy", ".notes.tmp")  # not of the atomic writer's form
    for path in [*stale, kept]:
        with open(path, "wb") as f:
            f.write(b"torn")
    run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH))
    assert not any(os.path.exists(p) for p in stale) and os.path.exists(kept)
    assert "Removed 2 temporary file(s) of interrupted writes" in read(os.path.join(out, "log.txt"))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o007, 0o660)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write_text(str(tmp_path / "config.yaml"), "A: 1\n")
        save_checkpoint({"state_dict": {}, "epoch": 1}, str(tmp_path / "toy"))
    finally:
        os.umask(previous)
    for path in (tmp_path / "config.yaml", tmp_path / "toy" / "model.pth.tar-1", tmp_path / "toy" / "checkpoint"):
        assert path.stat().st_mode & 0o777 == mode, path


# ----- 11, 12, 14. paths and data messages -----


def test_repo_asset_paths_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.NAME = "assets/world_clip_vit.pt"
    cfg.MODEL.INIT_WEIGHTS = "ViT-B/16"  # a name, not a file: untouched
    train.resolve_repo_paths(cfg)
    assert cfg.MODEL.BACKBONE.NAME == os.path.join(train.REPO, "assets", "world_clip_vit.pt")
    assert os.path.isfile(cfg.MODEL.BACKBONE.NAME) and cfg.MODEL.INIT_WEIGHTS == "ViT-B/16"
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "world_clip_vit.pt").write_bytes(b"the user's own file")
    cfg.MODEL.BACKBONE.NAME = "assets/world_clip_vit.pt"
    train.resolve_repo_paths(cfg)
    assert cfg.MODEL.BACKBONE.NAME == "assets/world_clip_vit.pt"  # a file here wins, as any path would


def test_train_label_out_of_range_names_the_entry(tmp_path):
    split = {"train": [["a/0.jpg", 0, "a"], ["b/0.jpg", 1, "b"], ["x/7.jpg", 5, "x"]],
             "val": [], "test": [["a/1.jpg", 0, "a"]]}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    with pytest.raises(ValueError, match=r'entry train\[2\] "x/7.jpg" has label 5, but class 2 has no training image'):
        Caltech101.parse_split_file(str(path))


def test_bad_image_error_points_to_the_skip_switch_and_the_checker(tmp_path):
    from dassl.data.datasets import Datum

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    items = [Datum(impath=str(bad), label=0, classname="a")]
    cfg = get_cfg_default()
    with pytest.raises(BadImageError, match=r"bad\.png.*DATALOADER\.SKIP_BAD_IMAGES True.*tools/check_data\.py --decode"):
        DatasetWrapper(cfg, items, is_train=True)[0]
    with pytest.raises(BadImageError, match=r"bad\.png.*evaluation never skips.*tools/check_data\.py --decode"):
        DatasetWrapper(cfg, items, is_train=False)[0]


# ----- first contact -----


def test_user_error_is_one_line_without_traceback_unless_debug(toy_root, tmp_path, capsys, monkeypatch):
    argv = train_argv(toy_root, str(tmp_path / "run"), max_epoch=1, extra=["OPTIM.LRR", "0.1"])
    assert train.cli(argv) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith('error: Unknown config key "OPTIM.LRR"'), err
    assert "--debug" in lines[1]
    with pytest.raises(ConfigError):
        train.cli(argv + ["--debug"])
    monkeypatch.setenv(train.DEBUG_ENV, "1")
    with pytest.raises(ConfigError):
        train.cli(argv)


def test_missing_data_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    argv = train_argv(str(tmp_path / "no_data"), str(tmp_path / "run"), max_epoch=1)
    assert train.cli(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_data" in err and "Traceback" not in err

    def broken(cfg):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("dassl.engine.build_trainer", broken)
    with pytest.raises(ZeroDivisionError):
        train.cli(argv)


def test_no_arguments_print_usage_and_write_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        train.cli([])
    assert info.value.code == 2 and "usage:" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_int_is_accepted_where_a_float_is_expected(tmp_path):
    cfg = get_cfg_default()
    merge_from_list_checked(cfg, ["OPTIM.LR", "1", "OPTIM.MAX_EPOCH", "3"])
    assert cfg.OPTIM.LR == 1.0 and isinstance(cfg.OPTIM.LR, float) and cfg.OPTIM.MAX_EPOCH == 3
    path = tmp_path / "lr.yaml"
    path.write_text("OPTIM:\n  LR: 2\n  WEIGHT_DECAY: 0\n")
    merge_from_file_checked(cfg, str(path))
    assert (cfg.OPTIM.LR, cfg.OPTIM.WEIGHT_DECAY) == (2.0, 0.0)
    with pytest.raises(ConfigError, match=r'"OPTIM.MAX_EPOCH" on the command line: expected int, got float'):
        merge_from_list_checked(cfg, ["OPTIM.MAX_EPOCH", "2.5"])


def test_flags_may_follow_the_key_value_overrides():
    args = train.parse_args(["--trainer", "CoOp", "OPTIM.LR", "0.01", "--eval-only", "SEED", "-1", "--seed", "2"])
    assert args.eval_only and args.seed == 2 and args.opts == ["OPTIM.LR", "0.01", "SEED", "-1"]


def test_a_key_of_another_trainer_is_warned_about(toy_root, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_main(train_argv(toy_root, str(tmp_path / "run"), max_epoch=1, extra=["TRAINER.GOPRO.N_CTX", "8"])
             + ["--no-train"])
    assert "TRAINER.GOPRO.N_CTX belongs to another trainer" in caplog.text


def test_redirected_output_gets_log_lines_and_no_progress_bars(toy_root, tmp_path, capsys):
    run_main(train_argv(toy_root, str(tmp_path / "run"), max_epoch=1))
    captured = capsys.readouterr()  # neither stream is a terminal here
    assert "epoch [1/1] batch [3/3]" in captured.out
    assert "epoch 1/1" not in captured.err and "eval test" not in captured.err


def test_a_refused_resume_never_regenerates_the_world_tree(tmp_path):
    """A changed DATASET.WORLD.* is refused before the data is built: the shared tree and its few-shot splits stay."""
    from datasets.world.gen import MANIFEST, WORLD_DIR

    world = ["DATASET.NAME", "WorldCounts", "DATASET.NUM_SHOTS", "1",
             "DATASET.WORLD.N_TRAIN", "2", "DATASET.WORLD.N_VAL", "1", "DATASET.WORLD.N_TEST", "1"]  # fmt: skip
    root, out = str(tmp_path / "data"), str(tmp_path / "run")
    run_main(train_argv(root, out, max_epoch=1, extra=world))
    tree = tmp_path / "data" / WORLD_DIR / "counts"
    stamp = os.stat(tree / MANIFEST).st_mtime_ns
    fewshot = sorted(p.name for p in (tree / "split_fewshot").iterdir())
    assert fewshot
    with pytest.raises(ConfigMismatchError, match=r"DATASET\.WORLD\.SEED"):
        run_main(train_argv(root, out, max_epoch=1, extra=[*world, "DATASET.WORLD.SEED", "7"]))
    assert os.stat(tree / MANIFEST).st_mtime_ns == stamp
    assert sorted(p.name for p in (tree / "split_fewshot").iterdir()) == fewshot
