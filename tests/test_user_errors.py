"""Config values outside their valid range, walked through train.py's command line: each is one ``error:`` line
naming the key, exit code 1, no traceback, and nothing trained or saved (a zero-step run is refused, not reported)."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

import train
from dassl.config import ConfigError, get_cfg_default, register_cfg_extension
from dassl.config.defaults import _C
from dassl.config.validate import ENGINE_RANGES, check_engine_config
from dassl.data.samplers import GlobalBatchSampler, RandomDomainSampler
from tests.test_first_contact import REPO, assert_one_error, method_argv, run_cli

# case id -> (trainer, KEY VALUE overrides, what the error line must say)
CASES = {
    # the engine's keys (dassl/config/validate.py), refused before any data is read
    "train_batch_0": ("CoOp", ["DATALOADER.TRAIN_X.BATCH_SIZE", "0"], "DATALOADER.TRAIN_X.BATCH_SIZE is 0; valid: >= 1"),
    "train_batch_negative": ("CoOp", ["DATALOADER.TRAIN_X.BATCH_SIZE", "-1"],
                             "DATALOADER.TRAIN_X.BATCH_SIZE is -1; valid: >= 1"),
    "test_batch_0": ("CoOp", ["DATALOADER.TEST.BATCH_SIZE", "0"], "DATALOADER.TEST.BATCH_SIZE is 0; valid: >= 1"),
    "num_workers_negative": ("CoOp", ["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS is -1; valid: >= 0"),
    "print_freq_0": ("CoOp", ["TRAIN.PRINT_FREQ", "0"], "TRAIN.PRINT_FREQ is 0; valid: >= 1"),
    "max_epoch_0": ("CoOp", ["OPTIM.MAX_EPOCH", "0"], "OPTIM.MAX_EPOCH is 0; valid: >= 1"),
    "max_epoch_negative": ("IVLP", ["OPTIM.MAX_EPOCH", "-1"], "OPTIM.MAX_EPOCH is -1; valid: >= 1"),
    "lr_negative": ("CoOp", ["OPTIM.LR", "-0.1"], "OPTIM.LR is -0.1; valid: > 0"),
    "lr_zero": ("KgCoOp", ["OPTIM.LR", "0"], "OPTIM.LR is 0.0; valid: > 0"),
    # a key the trainers register for every trainer (trainers/chunking.py)
    "memory_budget_0": ("CoOp", ["TRAIN.MEMORY_BUDGET_GB", "0"], "TRAIN.MEMORY_BUDGET_GB is 0; valid: a number"),
    "memory_budget_negative": ("CoCoOp", ["TRAIN.MEMORY_BUDGET_GB", "-2.5"], "TRAIN.MEMORY_BUDGET_GB is -2.5; valid"),
    "memory_budget_word": ("GOPro", ["TRAIN.MEMORY_BUDGET_GB", "big"], "TRAIN.MEMORY_BUDGET_GB is 'big'; valid"),
    # method keys, checked by their trainer
    "gopro_negative_weight": ("GOPro", ["TRAINER.GOPRO.W_CONTRASTIVE", "-1"],
                              "TRAINER.GOPRO.W_CONTRASTIVE is -1.0; valid: >= 0"),
    "gopro_batch_1": ("GOPro", ["DATALOADER.TRAIN_X.BATCH_SIZE", "1"],
                      "DATALOADER.TRAIN_X.BATCH_SIZE 1 gives 1 image(s) per process"),
    "gopro_temperature_0": ("GOPro", ["TRAINER.GOPRO.SIMCLR_TEMPERATURE", "0"],
                            "TRAINER.GOPRO.SIMCLR_TEMPERATURE is 0.0; valid: > 0"),
    "gopro_eval_chunk_0": ("GOPro", ["TRAINER.GOPRO.EVAL_PROMPT_CHUNK", "0"],
                           "TRAINER.GOPRO.EVAL_PROMPT_CHUNK is 0; valid: >= 1"),
    "cocoop_eval_chunk_negative": ("CoCoOp", ["TRAINER.COCOOP.EVAL_PROMPT_CHUNK", "-1"],
                                   "TRAINER.COCOOP.EVAL_PROMPT_CHUNK is -1; valid: >= 1"),
    # a dataset key, checked when the classes are split (after the split file is read)
    "subsample_unknown": ("CoOp", ["DATASET.SUBSAMPLE_CLASSES", "foo"],
                          "DATASET.SUBSAMPLE_CLASSES is \"foo\"; valid choices: ['all', 'base', 'new']"),
}


def saved_files(folder) -> list[str]:
    """Every checkpoint under ``folder`` (model files and the rolling ``last``)."""
    return [name for _, _, names in os.walk(folder) for name in names if ".pth" in name]


@pytest.mark.parametrize("case", list(CASES))
def test_a_value_outside_its_range_is_one_error_line_and_trains_nothing(case, fake_data_root, tiny_clip_path,
                                                                        tmp_path, capsys):
    trainer, opts, message = CASES[case]
    out = tmp_path / "run"
    assert run_cli(method_argv(trainer, fake_data_root, out, tiny_clip_path, *opts)) == 1
    stderr = capsys.readouterr().err
    assert_one_error(stderr, message, opts[0])
    assert saved_files(out) == []  # neither a model nor a run state: nothing is reported as trained
    log = out / "log.txt"
    assert not log.exists() or "Finish training" not in log.read_text()


def test_train_py_refuses_zero_epochs_with_the_error_line_alone(fake_data_root, tiny_clip_path, tmp_path):
    # The shell's view: exit code 1, and stderr holds the error line and the --debug hint, nothing else.
    argv = method_argv("CoOp", fake_data_root, tmp_path / "run", tiny_clip_path, "OPTIM.MAX_EPOCH", "0")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop(train.DEBUG_ENV, None)
    run = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 1, run.stderr[-3000:]
    assert_one_error(run.stderr, "error: OPTIM.MAX_EPOCH is 0; valid: >= 1")


def test_every_ranged_engine_key_exists_and_its_default_is_valid():
    # A renamed key would be skipped silently by the lookup; a default outside its range would refuse every run.
    cfg = get_cfg_default()
    for key, bound in ENGINE_RANGES.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert bound.holds(node), key
    check_engine_config(cfg)
    for key, bound in ENGINE_RANGES.items():  # the edge itself: valid for ">=", refused for ">"
        bad = cfg.clone()
        *parents, leaf = key.split(".")
        node = bad
        for part in parents:
            node = node[part]
        node[leaf] = type(node[leaf])(bound.minimum)
        if bound.inclusive:
            check_engine_config(bad)
            node[leaf] = type(node[leaf])(bound.minimum - 1)
        with pytest.raises(ConfigError, match=f"^{key} is "):
            check_engine_config(bad)


def test_an_extension_check_runs_with_the_engine_checks_and_a_re_registration_replaces_it():
    def refuse_seven(cfg):
        if cfg.TRAIN.get("PROBE_KEY", 0) == 7:
            raise ConfigError("TRAIN.PROBE_KEY is 7; valid: anything else")

    def add_probe_key(cfg):
        cfg.TRAIN.PROBE_KEY = 0

    try:
        register_cfg_extension(add_probe_key, check=refuse_seven)
        cfg = get_cfg_default()
        check_engine_config(cfg)
        cfg.TRAIN.PROBE_KEY = 7
        with pytest.raises(ConfigError, match="TRAIN.PROBE_KEY is 7"):
            check_engine_config(cfg)
        register_cfg_extension(add_probe_key)  # the same extension again, now without a check
        check_engine_config(cfg)
    finally:
        from dassl.config import defaults

        key = (add_probe_key.__module__, add_probe_key.__qualname__)
        defaults._EXTENSIONS[:] = [f for f in defaults._EXTENSIONS if f is not add_probe_key]
        defaults._RUN_LOCAL.pop(key, None)
        defaults._CHECKS.pop(key, None)


def test_the_memory_budget_key_belongs_to_the_trainers_and_keeps_its_name_and_default():
    from dassl.config import run_local_keys

    assert "MEMORY_BUDGET_GB" not in _C.TRAIN  # not an engine key any more
    assert get_cfg_default().TRAIN.MEMORY_BUDGET_GB is None  # registered by trainers/chunking.py
    assert "TRAIN.MEMORY_BUDGET_GB" in run_local_keys()  # a memory knob: changing it never blocks a resume


def test_a_dataset_template_without_a_class_name_slot_is_a_config_error():
    from trainers.templates import dataset_template

    class ForkDataset:
        template = "a photo of a thing."

    with pytest.raises(ConfigError, match=r"ForkDataset.template 'a photo of a thing.' has no '\{\}'"):
        dataset_template(ForkDataset())


# ----- checkpoints that cannot be loaded, folders that cannot be written -----


def deny_writes_under(folder: str, monkeypatch) -> None:
    """Make every write under ``folder`` fail with EACCES, as a read-only folder does for a user that is not root.

    The tests may run as root, whom file modes do not stop, so the refusal is made where python asks the kernel.
    """
    import builtins
    import errno

    folder = os.path.abspath(folder)
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def inside(path) -> bool:
        path = os.path.abspath(os.fsdecode(path))
        return path == folder or path.startswith(folder + os.sep)

    def denied(path) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and inside(file):
            raise denied(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            raise denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if inside(path) and not os.path.exists(path):
            raise denied(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)


@pytest.fixture(scope="module")
def coop_model(fake_data_root, tiny_clip_path, tmp_path_factory) -> str:
    """A finished tiny CoOp run (do not modify: copy it)."""
    out = tmp_path_factory.mktemp("coop") / "model"
    assert run_cli(method_argv("CoOp", fake_data_root, out, tiny_clip_path)) == 0
    return str(out)


def _edit_model_file(model_dir: str, edit) -> None:
    path = os.path.join(model_dir, "prompt_learner", "model.pth.tar-1")
    from dassl.utils import atomic_torch_save, load_checkpoint

    checkpoint = load_checkpoint(path)
    edit(checkpoint["state_dict"])
    atomic_torch_save(checkpoint, path)


def _other_shape(state) -> None:
    state["ctx"] = state["ctx"][:2]


def _unreadable(model_dir: str) -> None:
    with open(os.path.join(model_dir, "prompt_learner", "model.pth.tar-1"), "w") as f:
        f.write("not a checkpoint")


# case id -> (how the model folder is spoiled, what the error line must say)
CHECKPOINT_CASES = {
    "checkpoint_does_not_fit": (lambda d: _edit_model_file(d, _other_shape),
                                "does not fit the model: ctx: checkpoint (2, 32) vs model (4, 32)"),
    "checkpoint_lacks_keys": (lambda d: _edit_model_file(d, lambda s: s.pop("ctx")), "lacks learned weights ['ctx']"),
    "checkpoint_unreadable": (_unreadable, "Cannot load checkpoint"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_a_checkpoint_that_cannot_be_loaded_is_one_error_line(case, coop_model, fake_data_root, tiny_clip_path,
                                                               tmp_path, capsys):
    import shutil

    spoil, message = CHECKPOINT_CASES[case]
    model_dir = str(shutil.copytree(coop_model, tmp_path / "model"))
    spoil(model_dir)
    argv = method_argv("CoOp", fake_data_root, tmp_path / "eval", tiny_clip_path)
    assert run_cli(argv + ["--eval-only", "--model-dir", model_dir]) == 1
    assert_one_error(capsys.readouterr().err, message, os.path.join(model_dir, "prompt_learner", "model.pth.tar-1"))


def test_a_read_only_output_folder_is_one_error_line(fake_data_root, tiny_clip_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    deny_writes_under(str(out), monkeypatch)
    assert run_cli(method_argv("CoOp", fake_data_root, out, tiny_clip_path)) == 1
    assert_one_error(capsys.readouterr().err, f'Cannot write "{out}', "(permission denied)", "OUTPUT_DIR",
                     "--output-dir")


def test_a_read_only_data_folder_is_one_error_line(tiny_clip_path, tmp_path, capsys, monkeypatch):
    from tests.fake_trees import make_fake_trees

    root = str(tmp_path / "data")
    make_fake_trees(root, ["Caltech101"])
    deny_writes_under(root, monkeypatch)  # the few-shot draw cannot be cached under split_fewshot/
    assert run_cli(method_argv("CoOp", root, tmp_path / "run", tiny_clip_path)) == 1
    assert_one_error(capsys.readouterr().err, f'Cannot write "{root}', "(permission denied)", "DATASET.ROOT",
                     "--root")


@pytest.mark.parametrize("build", [
    lambda: GlobalBatchSampler(num_samples=8, batch_size=3, seed=1, rank=0, world_size=2),
    lambda: RandomDomainSampler([SimpleNamespace(domain=d) for d in (0, 1)], batch_size=3, n_domain=2),
], ids=["global-batch-per-process", "images-per-domain"])
def test_a_batch_that_does_not_split_is_a_config_error(build) -> None:
    """Under torchrun every rank raises it; train.py's cli prints it as one line (rank 0 alone)."""
    with pytest.raises(ConfigError, match="BATCH_SIZE 3 .*divisible"):
        build()
