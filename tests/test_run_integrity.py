"""A run is tied to the content it read, and what it saved is what is loaded.

Each test reproduces a way a run could end with rc 0 and a plausible, wrong number (a trainer that learns
nothing, a model folder of another model, a changed backbone file or data, another precision, a flipped
bit in a checkpoint, another process count, an empty pointer file...) and checks that it is now refused in
one line, or said once in log.txt. Toy runs come from tests.test_engine, method runs use the tiny CLIP on
the fake trees (tests.test_first_contact.method_argv).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import zipfile

import pytest
import torch
import torch.nn as nn

import clip
from clip.tiny import build_tiny_clip, save_openai_checkpoint
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.engine.evaluate import load_saved_weights
from dassl.utils import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    atomic_torch_save,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from tests.fake_trees import make_fake_trees
from tests.test_engine import make_toy_images, run_main, train_argv
from tests.test_first_contact import assert_one_error, method_argv, run_cli

MAX_EPOCH = 2


def read(path) -> str:
    with open(path) as f:
        return f.read()


def copy_run(src: str, dst) -> str:
    shutil.copytree(src, str(dst))
    return str(dst)


def error_line(capsys) -> str:
    stderr = capsys.readouterr().err
    assert_one_error(stderr)
    return stderr.splitlines()[0]


def flip_exponent_bits(path: str, count: int = 16) -> None:
    """Flip one exponent bit in each of the first ``count`` float32 values stored in the archive's tensor entries."""
    with zipfile.ZipFile(path) as archive:
        entries = [info for info in archive.infolist() if "/data/" in info.filename and info.file_size >= 4]
    data = bytearray(open(path, "rb").read())
    flipped = 0
    for info in entries:
        name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
        for offset in range(start + 3, start + info.file_size, 4):  # the high byte of each little-endian float32
            data[offset] ^= 0x40
            flipped += 1
            if flipped == count:
                open(path, "wb").write(bytes(data))
                return
    raise AssertionError(f"{path} holds fewer than {count} float32 values")


# ----- toy runs -----


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> str:
    return make_toy_images(str(tmp_path_factory.mktemp("toy_data")))


@pytest.fixture(scope="module")
def finished(toy_root, tmp_path_factory) -> str:
    """A finished 2-epoch toy run with a model file per epoch (do not modify: copy it)."""
    out = str(tmp_path_factory.mktemp("finished") / "run")
    run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["TRAIN.CHECKPOINT_FREQ", "1"]))
    return out


# ----- method runs on the tiny CLIP -----


@pytest.fixture(scope="module")
def trained(fake_data_root, tiny_clip_path, tmp_path_factory):
    """``trained(trainer, *opts)``: the folder of a finished tiny run (made once per module; do not modify)."""
    runs: dict[tuple, str] = {}

    def get(trainer: str, *opts: str) -> str:
        key = (trainer, *opts)
        if key not in runs:
            out = tmp_path_factory.mktemp("trained") / trainer
            assert run_cli(method_argv(trainer, fake_data_root, out, tiny_clip_path, *opts)) == 0
            runs[key] = str(out)
        return runs[key]

    return get


def eval_argv(trainer, data_root, backbone, model_dir, out, *opts) -> list[str]:
    return method_argv(trainer, data_root, out, backbone, *opts) + ["--eval-only", "--model-dir", model_dir]


# ----- 1. a trainer that learns nothing is refused -----


class ForgetfulToyTrainer(TrainerX):
    """A port that builds its model but forgot to register it with an optimizer (register_learner)."""

    def build_model(self):
        size = self.cfg.INPUT.SIZE
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * size[0] * size[1], self.num_classes))

    def forward_train(self, batch):
        logits = self.model(batch["img"])
        return {"loss": nn.functional.cross_entropy(logits, batch["label"])}

    def inference(self, img):
        return self.model(img)


def test_a_trainer_that_registers_no_learnable_parameter_is_refused_before_training(toy_root, tmp_path, capsys):
    if "ForgetfulToyTrainer" not in TRAINER_REGISTRY:
        TRAINER_REGISTRY.register(ForgetfulToyTrainer)
    out = tmp_path / "run"
    assert run_cli(train_argv(toy_root, str(out), trainer="ForgetfulToyTrainer")) == 1
    line = error_line(capsys)
    assert "ForgetfulToyTrainer registers no learnable parameter" in line and "register_learner" in line
    assert not [n for _, _, names in os.walk(out) for n in names if ".pth" in n]  # nothing saved
    assert "Finish training" not in read(out / "log.txt")


# ----- 2. --eval-only --model-dir evaluates only the model it was trained as -----

# case -> (trained trainer and its options, evaluating trainer and options, what the error line names)
MISMATCHES = {
    "ivlp_without_vision_prompts": (("IVLP",), ("IVLP", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "0"),
                                    "TRAINER.IVLP.PROMPT_DEPTH_VISION: 2 -> 0"),
    "vpt_on_an_ivlp_folder": (("IVLP",), ("VPT",), "TRAINER.NAME: 'IVLP' -> 'VPT'"),
    "gopro_folder_into_coop": (("GOPro",), ("CoOp",), "TRAINER.NAME: 'GOPro' -> 'CoOp'"),
    "coop_with_another_ctx_init": (("CoOp",), ("CoOp", "TRAINER.COOP.CTX_INIT", "a_photo_of"),
                                   "TRAINER.COOP.CTX_INIT: '' -> 'a_photo_of'"),
    "vpt_with_another_template": (("VPT",), ("VPT", "TRAINER.VPT.TEMPLATE", "an image of a {}."),
                                  "TRAINER.VPT.TEMPLATE: 'a photo of a {}.' -> 'an image of a {}.'"),
    "maple_with_another_backbone": (("MaPLe",), ("MaPLe", "MODEL.BACKBONE.NAME", "OTHER"),
                                    "MODEL.BACKBONE.NAME: '"),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_eval_only_refuses_a_model_folder_of_another_model_naming_the_keys(
    case, trained, fake_data_root, tiny_clip_path, tmp_path, capsys
):
    (trainer, *train_opts), (evaluator, *opts), expected = MISMATCHES[case]
    model_dir = trained(trainer, *train_opts)
    if "OTHER" in opts:  # an identical copy elsewhere: the name differs, not the content
        opts[opts.index("OTHER")] = str(shutil.copy(tiny_clip_path, tmp_path / "other-vit.pt"))
    out = tmp_path / "eval"
    assert run_cli(eval_argv(evaluator, fake_data_root, tiny_clip_path, model_dir, out, *opts)) == 1
    line = error_line(capsys)
    assert f'Refusing to evaluate "{model_dir}"' in line and expected in line and "--allow-model-mismatch" in line
    assert "accuracy" not in read(out / "log.txt")


def test_the_switch_evaluates_a_mismatched_model_and_says_so_in_the_log(trained, fake_data_root, tiny_clip_path,
                                                                         tmp_path):
    model_dir = trained("IVLP")
    out = tmp_path / "eval"
    argv = eval_argv("IVLP", fake_data_root, tiny_clip_path, model_dir, out, "TRAINER.IVLP.PROMPT_DEPTH_VISION", "0")
    assert run_cli(argv + ["--allow-model-mismatch"]) == 0
    log = read(out / "log.txt")
    assert "WARNING: evaluating" in log and "TRAINER.IVLP.PROMPT_DEPTH_VISION: 2 -> 0" in log
    assert "(--allow-model-mismatch)" in log
    assert "WARNING: leaving out weights" in log and "'vision'" in log  # the vision prompts, named
    assert "accuracy" in log


def test_base_to_new_and_training_keys_may_differ_at_evaluation(trained, fake_data_root, tiny_clip_path, tmp_path):
    model_dir = trained("IVLP", "DATASET.SUBSAMPLE_CLASSES", "base")
    out = tmp_path / "eval_new"
    opts = ["DATASET.SUBSAMPLE_CLASSES", "new", "DATASET.NUM_SHOTS", "-1", "OPTIM.LR", "0.5", "SEED", "3"]
    assert run_cli(eval_argv("IVLP", fake_data_root, tiny_clip_path, model_dir, out, *opts)) == 0
    log = read(out / "log.txt")
    assert "accuracy" in log and "WARNING" not in log


def test_eval_with_another_backbone_file_at_the_same_path_is_refused(fake_data_root, tmp_path, capsys):
    backbone = str(tmp_path / "vit.pt")
    torch.manual_seed(0)
    save_openai_checkpoint(build_tiny_clip("vit"), backbone)
    model_dir = str(tmp_path / "model")
    assert run_cli(method_argv("CoOp", fake_data_root, model_dir, backbone)) == 0
    torch.manual_seed(1)
    save_openai_checkpoint(build_tiny_clip("vit"), backbone)  # a re-download, an update after a pull, a copy over it
    assert run_cli(eval_argv("CoOp", fake_data_root, backbone, model_dir, tmp_path / "eval")) == 1
    line = error_line(capsys)
    assert f'the file of MODEL.BACKBONE.NAME ("{backbone}") has other content: sha256' in line


def test_eval_on_the_same_dataset_with_another_split_file_is_refused(trained, tiny_clip_path, tmp_path, capsys):
    model_dir = trained("CoOp")
    root = str(tmp_path / "data")
    make_fake_trees(root, ["Caltech101"])
    split_file = os.path.join(root, "caltech-101", "split_zhou_Caltech101.json")
    split = json.loads(read(split_file))
    i = next(i for i, t in enumerate(split["test"]) if t[1] == split["train"][0][1])
    split["train"][0], split["test"][i] = split["test"][i], split["train"][0]  # same sizes, same classes
    with open(split_file, "w") as f:
        json.dump(split, f)
    assert run_cli(eval_argv("CoOp", root, tiny_clip_path, model_dir, tmp_path / "eval")) == 1
    assert "the split file's entries changed" in error_line(capsys)


def test_eval_in_another_precision_is_said_once(trained, fake_data_root, tiny_clip_path, tmp_path):
    out = tmp_path / "eval"
    argv = eval_argv("CoOp", fake_data_root, tiny_clip_path, trained("CoOp"), out, "TRAINER.COOP.PREC", "bf16")
    assert run_cli(argv) == 0
    log = read(out / "log.txt")
    assert log.count("WARNING: evaluating") == 1 and "the run computed in fp32 (PREC fp32), this one in bf16" in log


def test_the_loader_refuses_unexpected_learned_keys_unless_allowed(tmp_path, caplog):
    class Trainer:
        CLASS_SET_KEYS = ("token_prefix",)

        def __init__(self):
            self._models = {"prompt_learner": nn.Linear(2, 2)}

        def get_model_names(self):
            return list(self._models)

    state = {**nn.Linear(2, 2).state_dict(), "deep.0": torch.zeros(3), "token_prefix": torch.zeros(1)}
    save_checkpoint({"state_dict": state, "epoch": 1}, str(tmp_path / "prompt_learner"), model_name="model.pth.tar-1")
    trainer = Trainer()
    with pytest.raises(CheckpointMismatchError, match=r"holds learned weights the model does not have: \['deep.0'\]"):
        load_saved_weights(trainer, str(tmp_path), epoch=1)
    trainer.allow_model_mismatch = True
    load_saved_weights(trainer, str(tmp_path), epoch=1)
    assert "leaving out weights" in caplog.text and "token_prefix" not in caplog.text  # class-set keys stay quiet


# ----- 4. the content read: backbone file, data, precision -----


def test_resume_with_another_backbone_file_at_the_same_path_is_refused(fake_data_root, tmp_path, capsys):
    backbone = str(tmp_path / "vit.pt")
    torch.manual_seed(0)
    save_openai_checkpoint(build_tiny_clip("vit"), backbone)
    argv = method_argv("CoOp", fake_data_root, tmp_path / "run", backbone, "OPTIM.MAX_EPOCH", "2")
    assert run_cli(argv) == 0
    torch.manual_seed(1)
    save_openai_checkpoint(build_tiny_clip("vit"), backbone)
    assert run_cli(argv) == 1
    line = error_line(capsys)
    assert "Refusing to resume" in line and f'the file of MODEL.BACKBONE.NAME ("{backbone}") has other content' in line


def test_named_backbones_are_fingerprinted_by_the_file_they_load(tiny_clip_path, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_CACHE", str(tmp_path))
    assert clip.weights_file("ViT-B/16") is None  # not downloaded here
    shutil.copy(tiny_clip_path, tmp_path / "ViT-B-16.pt")
    assert clip.weights_file("ViT-B/16") == str(tmp_path / "ViT-B-16.pt")
    assert clip.weights_file(tiny_clip_path) == tiny_clip_path
    # open_clip's hub download, as huggingface_hub caches it under CLIP_CACHE
    repo = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    assert clip.weights_file("ViT-B-32:laion2b_s34b_b79k") is None
    shutil.copy(tiny_clip_path, repo / "snapshots" / "abc123" / "open_clip_model.safetensors")
    assert clip.weights_file("ViT-B-32:laion2b_s34b_b79k") == str(repo / "snapshots" / "abc123"
                                                                   / "open_clip_model.safetensors")
    assert clip.weights_file("no-such-model") is None


def test_resume_on_data_whose_content_changed_at_the_same_sizes_is_refused(finished, toy_root, tmp_path, capsys):
    out = copy_run(finished, tmp_path / "run")
    root = copy_run(toy_root, tmp_path / "data")
    folder = os.path.join(root, "engine_toy", "train", "dark")
    os.rename(os.path.join(folder, "0.png"), os.path.join(folder, "99.png"))  # same classes, same sizes
    assert run_cli(train_argv(root, out, max_epoch=MAX_EPOCH, extra=["TRAIN.CHECKPOINT_FREQ", "1"])) == 1
    line = error_line(capsys)
    assert "Refusing to resume" in line and "the training images (the few-shot draw) changed" in line


def test_resume_where_the_precision_resolves_differently_is_refused(finished, toy_root, tmp_path, capsys):
    out = copy_run(finished, tmp_path / "run")
    path = os.path.join(out, "run.json")
    record = json.loads(read(path))
    assert record["precision"]["resolved"] == "fp32"
    record["precision"] = {"requested": "auto", "resolved": "bf16"}  # as a machine with fast bf16 resolved it
    with open(path, "w") as f:
        json.dump(record, f)
    assert run_cli(train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["TRAIN.CHECKPOINT_FREQ", "1"])) == 1
    assert "precision: the run computed in bf16 (PREC auto), this one in fp32" in error_line(capsys)


def test_a_folder_without_a_run_record_resumes_with_a_note_and_gets_one(finished, toy_root, tmp_path, caplog):
    out = copy_run(finished, tmp_path / "run")
    os.remove(os.path.join(out, "run.json"))
    caplog.set_level(logging.INFO)
    run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["TRAIN.CHECKPOINT_FREQ", "1"]))
    assert "has no run.json" in caplog.text
    assert json.loads(read(os.path.join(out, "run.json")))["learned"]["toy"]["2.weight"] == [2, 192]


# ----- 5. every checkpoint is verified on load -----


def test_a_flipped_bit_in_last_checkpoint_refuses_the_resume_naming_the_intact_files(finished, toy_root, tmp_path,
                                                                                   capsys):
    out = copy_run(finished, tmp_path / "run")
    last = os.path.join(out, "last.pth.tar")
    flip_exponent_bits(last)
    argv = train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["TRAIN.CHECKPOINT_FREQ", "1"])
    assert run_cli(argv) == 1
    line = error_line(capsys)
    assert f'Checkpoint "{last}" is corrupted' in line
    assert f'Intact: "{os.path.join(out, "toy", f"model.pth.tar-{MAX_EPOCH}")}"; delete "{last}"' in line
    os.remove(last)  # as the line says: the run resumes from the intact model file
    assert run_cli(argv) == 0


def test_a_flipped_bit_in_a_model_file_refuses_the_evaluation_naming_the_intact_files(finished, toy_root, tmp_path,
                                                                                    capsys):
    model_dir = copy_run(finished, tmp_path / "model")
    damaged = os.path.join(model_dir, "toy", f"model.pth.tar-{MAX_EPOCH}")
    flip_exponent_bits(damaged)
    argv = train_argv(toy_root, str(tmp_path / "eval"), max_epoch=MAX_EPOCH) + ["--eval-only", "--model-dir", model_dir]
    assert run_cli(argv) == 1
    line = error_line(capsys)
    assert f'Checkpoint "{damaged}" is corrupted' in line and "model.pth.tar-1 (--load-epoch 1)" in line
    assert run_cli(argv + ["--load-epoch", "1"]) == 0


def test_no_single_flipped_bit_of_a_checkpoint_loads_as_other_weights(tmp_path):
    path = str(tmp_path / "model.pth.tar-1")
    state = {"state_dict": {"ctx": torch.randn(4, 8)}, "epoch": 1, "optimizer": None}
    atomic_torch_save(state, path)
    intact = open(path, "rb").read()
    damaged = str(tmp_path / "damaged")
    for offset in range(0, len(intact), 7):
        data = bytearray(intact)
        data[offset] ^= 1 << (offset % 8)
        open(damaged, "wb").write(bytes(data))
        try:
            loaded = load_checkpoint(damaged)
        except Exception:  # noqa: BLE001 - refused (damaged archive) or unreadable: never a silent load
            continue
        assert torch.equal(loaded["state_dict"]["ctx"], state["state_dict"]["ctx"]) and loaded["epoch"] == 1, offset


def test_checkpoints_without_checksums_load_with_one_note(tmp_path, caplog):
    path = str(tmp_path / "upstream.pth.tar")
    torch.save({"state_dict": {"ctx": torch.ones(2)}, "epoch": 5}, path, _use_new_zipfile_serialization=False)
    caplog.set_level(logging.INFO)
    assert load_checkpoint(path)["epoch"] == 5
    assert load_checkpoint(path)["epoch"] == 5
    assert caplog.text.count("loaded unverified") == 1


def test_checkpoints_carry_checksums_even_when_torch_is_told_to_skip_them(tmp_path):
    from torch.utils.serialization import config

    path = str(tmp_path / "last.pth.tar")
    config.save.compute_crc32 = False
    try:
        atomic_torch_save({"w": torch.randn(16)}, path)
    finally:
        config.save.compute_crc32 = True
    assert verify_checkpoint(path) is True
    flip_exponent_bits(path, count=1)
    with pytest.raises(CorruptCheckpointError, match="does not match the checksum written with it"):
        load_checkpoint(path)


# ----- 9. quieter substitutions -----


def _set_processes(out: str, processes: int) -> None:
    path = os.path.join(out, "last.pth.tar")
    state = load_checkpoint(path)
    state["processes"] = processes
    atomic_torch_save(state, path)


def test_a_resume_with_another_process_count_is_said_when_the_batches_stay_the_same(finished, toy_root, tmp_path):
    out = copy_run(finished, tmp_path / "run")
    _set_processes(out, 2)  # 12 images in global batches of 4: the same batches for 1 or 2 processes
    assert run_cli(train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["TRAIN.CHECKPOINT_FREQ", "1"])) == 0
    log = read(os.path.join(out, "log.txt"))
    assert log.count("WARNING: resuming") == 1 and "trained so far by 2 process(es), with 1" in log


def test_a_resume_with_another_process_count_is_refused_when_the_batches_change(toy_root, tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["DATALOADER.TRAIN_X.BATCH_SIZE", "16"])
    run_main(argv)
    _set_processes(out, 8)  # 12 images, fewer than the global batch: one batch of 12, cut to 8 for 8 processes
    assert run_cli(argv) == 1
    line = error_line(capsys)
    assert "trained by 8 process(es) and this run has 1" in line and "train 12 images instead of 8" in line


def test_a_failed_attempt_into_a_finished_folder_leaves_log_txt_to_the_finished_run(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path / "run")
    log = read(os.path.join(out, "log.txt"))
    argv = train_argv(str(tmp_path / "mistyped_root"), out, max_epoch=MAX_EPOCH, extra=["TRAIN.CHECKPOINT_FREQ", "1"])
    assert run_cli(argv) == 1
    assert read(os.path.join(out, "log.txt")) == log  # results.py still finds the finished run's result
    (kept,) = [f for f in os.listdir(out) if f.endswith("-refused.txt")]
    assert "mistyped_root" in read(os.path.join(out, kept))
    assert f"this attempt's log: \"{os.path.join(out, kept)}\"" in error_line(capsys)


@pytest.mark.parametrize("content", ["", "\n", "../model.pth.tar-2\n", "notes.txt\n"])
def test_a_pointer_file_that_names_no_model_file_is_refused_naming_it(finished, toy_root, tmp_path, capsys, content):
    model_dir = copy_run(finished, tmp_path / "model")
    pointer = os.path.join(model_dir, "toy", "checkpoint")
    with open(pointer, "w") as f:
        f.write(content)
    argv = train_argv(toy_root, str(tmp_path / "eval"), max_epoch=MAX_EPOCH) + ["--eval-only", "--model-dir", model_dir]
    assert run_cli(argv) == 1  # not read as "model-best" (best_val)
    assert f'Checkpoint pointer "{pointer}"' in error_line(capsys)
    if not content.strip():  # a resume without last.pth.tar reads it too
        os.remove(os.path.join(model_dir, "last.pth.tar"))
        resume = train_argv(toy_root, model_dir, max_epoch=MAX_EPOCH, extra=["TRAIN.CHECKPOINT_FREQ", "1"])
        assert run_cli(resume) == 1
        assert f'Checkpoint pointer "{pointer}" holds \'\'' in error_line(capsys)


@pytest.mark.parametrize("trainer, warned", [("CoOp", True), ("CoCoOp", False)])
def test_a_memory_budget_for_a_trainer_that_does_not_chunk_is_warned_once(trainer, warned, fake_data_root,
                                                                          tiny_clip_path, tmp_path):
    out = tmp_path / "run"
    assert run_cli(method_argv(trainer, fake_data_root, out, tiny_clip_path, "TRAIN.MEMORY_BUDGET_GB", "4")) == 0
    assert read(out / "log.txt").count("WARNING: TRAIN.MEMORY_BUDGET_GB is 4") == int(warned)


def test_n_ctx_other_than_the_ctx_init_tokens_is_warned_once_and_the_learned_count_recorded(
    fake_data_root, tiny_clip_path, tmp_path
):
    out = tmp_path / "run"
    opts = ["TRAINER.COOP.N_CTX", "8", "TRAINER.COOP.CTX_INIT", "a photo of a"]
    assert run_cli(method_argv("CoOp", fake_data_root, out, tiny_clip_path, *opts)) == 0
    log = read(out / "log.txt")
    assert log.count("WARNING: N_CTX is 8 but CTX_INIT 'a photo of a' has 4 tokens: 4 context vectors") == 1
    assert json.loads(read(out / "run.json"))["learned"]["prompt_learner"]["ctx"][0] == 4


def test_a_ctx_init_longer_than_the_context_is_a_ctx_init_error(fake_data_root, tiny_clip_path, tmp_path, capsys):
    words = "_".join(["photo"] * 80)
    argv = method_argv("CoOp", fake_data_root, tmp_path / "run", tiny_clip_path, "TRAINER.COOP.CTX_INIT", words)
    assert run_cli(argv) == 1
    line = error_line(capsys)
    assert "CTX_INIT 'photo photo" in line and "has 80 tokens" in line and "at most 73 tokens" in line
    assert "N_CTX 80" not in line
