"""The trainer lifecycle on a tiny registered dataset and model (CPU, seconds).

This module also holds the toy dataset and trainers that test_resume, test_ddp and
test_train_cli reuse; ``python -m tests.test_engine ARGS`` runs train.py's main with them registered.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import re
import signal
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from dassl.engine import TRAINER_REGISTRY, TrainerX, build_trainer
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import (
    atomic_torch_save,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)

IMAGE_SIZE = 8
TOY_SPLITS = {"train": 6, "val": 2, "test": 3}  # images per class
TOY_CLASSES = ("dark", "bright")

# Test hooks, read by the toy trainer: "EPOCH:STEP" (both 1-based).
KILL_AT = "ENGINE_TOY_KILL_AT"  # SIGKILL itself before that step
SIGNAL_AT = "ENGINE_TOY_SIGNAL_AT"  # "EPOCH:STEP:SIGNAME": send itself the signal during that step
NAN_AT = "ENGINE_TOY_NAN_AT"  # return a NaN loss at that step


# ----- toy dataset -----


def make_toy_images(root: str) -> str:
    """Write the toy PNGs (class = brightness) under ``root/engine_toy``; return ``root``."""
    rng = np.random.default_rng(0)
    for split, per_class in TOY_SPLITS.items():
        for label, cname in enumerate(TOY_CLASSES):
            folder = osp.join(root, "engine_toy", split, cname)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                base = 110 + 30 * label
                pixels = np.clip(base + rng.normal(0, 60, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(osp.join(folder, f"{i}.png"))
    return root


class EngineToy(DatasetBase):
    """Two brightness classes; train / val / test folders of PNGs."""

    dataset_dir = "engine_toy"

    def __init__(self, cfg):
        root = osp.join(cfg.DATASET.ROOT, self.dataset_dir)
        splits = {split: self._read(osp.join(root, split)) for split in TOY_SPLITS}
        super().__init__(train_x=splits["train"], val=splits["val"], test=splits["test"])

    @staticmethod
    def _read(folder: str) -> list[Datum]:
        return [
            Datum(impath=osp.join(folder, cname, fname), label=label, classname=cname)
            for label, cname in enumerate(TOY_CLASSES)
            for fname in sorted(os.listdir(osp.join(folder, cname)))
        ]


class EngineToyNoVal(EngineToy):
    """The toy dataset without a validation split."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._val = None


# ----- toy trainers -----


def _hook_step(env_name: str, epoch: int, step: int) -> list[str] | None:
    """The hook's fields after EPOCH:STEP when the env var names this (1-based) step."""
    value = os.environ.get(env_name, "")
    if not value:
        return None
    fields = value.split(":")
    return fields[2:] if (int(fields[0]), int(fields[1])) == (epoch + 1, step + 1) else None


class _ToyModelMixin:
    dropout = 0.25

    def build_model(self):
        size = self.cfg.INPUT.SIZE
        in_features = 3 * size[0] * size[1]
        # Dropout and random flips draw from the global RNG, so an exact resume must restore it.
        self.model = nn.Sequential(nn.Flatten(), nn.Dropout(self.dropout), nn.Linear(in_features, self.num_classes))
        self.model.to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("toy", self.model, self.optim, self.sched)


class EngineToyTrainer(_ToyModelMixin, TrainerX):
    """A named-loss trainer: the engine does backward, step, LR and checks."""

    def forward_train(self, batch):
        if _hook_step(KILL_AT, self.epoch, self.batch_idx) is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        sig = _hook_step(SIGNAL_AT, self.epoch, self.batch_idx)
        if sig is not None:
            os.kill(os.getpid(), getattr(signal, sig[0]))
        img, label = batch["img"].to(self.device), batch["label"].to(self.device)
        logits = self.model(img)
        loss = F.cross_entropy(logits, label)
        if _hook_step(NAN_AT, self.epoch, self.batch_idx) is not None:
            loss = loss * float("nan")
        return {"loss_ce": loss, "acc": (logits.argmax(1) == label).float().mean()}

    def inference(self, img):
        self.inference_calls = getattr(self, "inference_calls", 0) + 1
        return self.model(img)


class EngineToyPlainTrainer(EngineToyTrainer):
    """No dropout: the same global batch gives the same step on any number of ranks."""

    dropout = 0.0


class EngineToyDasslTrainer(_ToyModelMixin, TrainerX):
    """A Dassl-style trainer: its own forward_backward, update_lr on the last batch."""

    def forward_backward(self, batch):
        img, label = batch["img"].to(self.device), batch["label"].to(self.device)
        loss = F.cross_entropy(self.model(img), label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}


def register_toys() -> None:
    """Register the toy dataset and trainers once per process."""
    for registry, objs in (
        (DATASET_REGISTRY, (EngineToy, EngineToyNoVal)),
        (TRAINER_REGISTRY, (EngineToyTrainer, EngineToyPlainTrainer, EngineToyDasslTrainer)),
    ):
        for obj in objs:
            if obj.__name__ not in registry:
                registry.register(obj)


register_toys()


def toy_opts(seed: int = 1, max_epoch: int = 2) -> list[str]:
    """KEY VALUE overrides that make a run tiny: 8x8 images, 3 steps of 4 per epoch, no workers."""
    return [
        "DATASET.NAME", "EngineToy",
        "INPUT.SIZE", f"({IMAGE_SIZE}, {IMAGE_SIZE})",
        "INPUT.TRANSFORMS", "('random_flip', 'normalize')",
        "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "DATALOADER.TEST.BATCH_SIZE", "4",
        "OPTIM.NAME", "sgd",
        "OPTIM.LR", "0.01",
        "OPTIM.LR_SCHEDULER", "cosine",
        "OPTIM.MAX_EPOCH", str(max_epoch),
        "TRAIN.PRINT_FREQ", "1",
        "USE_CUDA", "False",
        "SEED", str(seed),
    ]  # fmt: skip


def toy_cfg(root: str, output_dir: str, trainer: str = "EngineToyTrainer", opts: list | None = None):
    cfg = get_cfg_default()
    cfg.merge_from_list(toy_opts() + ["DATASET.ROOT", root, "OUTPUT_DIR", output_dir, "TRAINER.NAME", trainer])
    cfg.merge_from_list(opts or [])
    cfg.freeze()
    torch.manual_seed(cfg.SEED)
    return cfg


def learned_weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer._models["toy"].state_dict().items()}


def train_argv(
    root: str, output_dir: str, max_epoch: int = 2, extra: list | None = None, trainer: str = "EngineToyTrainer"
) -> list[str]:
    """A train.py command line for the toy run (flags, then KEY VALUE overrides)."""
    flags = ["--root", root, "--seed", "1", "--trainer", trainer, "--output-dir", output_dir]
    return flags + toy_opts(max_epoch=max_epoch) + list(extra or [])


def run_main(argv: list[str]) -> None:
    """Run train.py's main in this process, then undo its logging set-up (stdout tee, handlers)."""
    import train

    root = logging.getLogger()
    saved_handlers, saved_level, saved_stdout = list(root.handlers), root.level, sys.stdout
    try:
        train.main(argv)
    finally:
        for handler in [h for h in root.handlers if h not in saved_handlers]:
            root.removeHandler(handler)
        root.setLevel(saved_level)
        sys.stdout = saved_stdout


def cli_entry() -> None:
    """train.py's main with the toys registered (``python -m tests.test_engine ARGS``)."""
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    import train

    train.main(sys.argv[1:])


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> str:
    return make_toy_images(str(tmp_path_factory.mktemp("toy_data")))


# ----- tests -----


def test_trains_two_epochs_then_reports(toy_root, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    trainer = build_trainer(toy_cfg(toy_root, str(tmp_path)))
    trainer.train()

    assert sorted(os.listdir(tmp_path / "toy")) == ["checkpoint", "model.pth.tar-2"]
    assert (tmp_path / "toy" / "checkpoint").read_text() == "model.pth.tar-2\n"
    ckpt = load_checkpoint(str(tmp_path / "toy" / "model.pth.tar-2"))
    assert set(ckpt) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result"}
    assert ckpt["epoch"] == 2 and ckpt["val_result"] is None
    assert (tmp_path / "last.pth.tar").is_file()
    text = caplog.text
    for marker in ("Finish training", "Deploy the last-epoch model", "=> result", "* accuracy:", "Elapsed:"):
        assert marker in text, marker
    # Per-step line: 1-based counters, 3-decimal times, every loss term, lr and eta.
    step_line = re.compile(
        r"epoch \[1/2\] batch \[1/3\] time \d+\.\d{3} \(\d+\.\d{3}\) data \d+\.\d{3} \(\d+\.\d{3}\) "
        r"loss_ce \S+ \(\S+\) acc \S+ \(\S+\) lr \d\.\d{4}e[+-]\d{2} eta \d+:\d{2}:\d{2}"
    )
    assert step_line.search(text), text
    # The engine stepped the cosine schedule once per epoch and evaluated through `inference`.
    assert trainer._scheds["toy"].last_epoch == 2
    assert trainer.inference_calls > 0
    accuracy = trainer.test()  # returns the accuracy it prints
    assert f"* accuracy: {accuracy:.1f}%" in caplog.messages


def test_dassl_style_trainer_steps_its_own_schedule(toy_root, tmp_path):
    trainer = build_trainer(toy_cfg(toy_root, str(tmp_path), trainer="EngineToyDasslTrainer"))
    trainer.train()
    assert trainer._scheds["toy"].last_epoch == 2  # stepped by the trainer only, not twice
    assert (tmp_path / "toy" / "model.pth.tar-2").is_file()


def test_checkpoint_file_after_two_saves(tmp_path):
    model = nn.Linear(3, 2)
    for epoch in (1, 2):
        save_checkpoint({"state_dict": model.state_dict(), "epoch": epoch}, str(tmp_path))
    assert (tmp_path / "checkpoint").read_text() == "model.pth.tar-2\n"
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 2}, str(tmp_path), model_name="model-best.pth.tar")
    assert (tmp_path / "checkpoint").read_text() == "model-best.pth.tar\n"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-1", "model.pth.tar-2"]


def test_resume_picks_up_the_epoch(toy_root, tmp_path):
    cfg = toy_cfg(toy_root, str(tmp_path), opts=["TRAIN.CHECKPOINT_FREQ", "1"])
    first = build_trainer(cfg)
    first.train()
    # From the rolling `last` checkpoint: the finished run resumes at its end.
    assert build_trainer(cfg).resume_run_if_exist(str(tmp_path)) == 2
    # Without it, Dassl's path: the file named in <name>/checkpoint.
    os.remove(tmp_path / "last.pth.tar")
    (tmp_path / "toy" / "checkpoint").write_text("model.pth.tar-1\n")
    resumed = build_trainer(cfg)
    assert resumed.resume_run_if_exist(str(tmp_path)) == 1
    epoch1 = load_checkpoint(str(tmp_path / "toy" / "model.pth.tar-1"))["state_dict"]
    for key, value in learned_weights(resumed).items():
        assert torch.equal(value, epoch1[key])


def test_best_val_selects_on_val_never_test(toy_root, tmp_path):
    trainer = build_trainer(toy_cfg(toy_root, str(tmp_path), opts=["TEST.FINAL_MODEL", "best_val"]))
    splits, real_test = [], trainer.test

    def spy(split=None):
        splits.append(split)
        return real_test(split)

    trainer.test = spy
    test_batches = []
    trainer.test_loader = _Recording(trainer.test_loader, test_batches)
    trainer.train()
    assert splits == ["val", "val", None]  # one val pass per epoch, then the final test
    best = load_checkpoint(str(tmp_path / "toy" / "model-best.pth.tar"))
    assert best["val_result"] == trainer.best_result
    assert len(test_batches) == len(trainer.test_loader)  # the test split is read once, at the end


def test_best_val_without_val_split_is_refused(toy_root, tmp_path):
    cfg = toy_cfg(toy_root, str(tmp_path), opts=["TEST.FINAL_MODEL", "best_val", "DATASET.NAME", "EngineToyNoVal"])
    with pytest.raises(ValueError, match="TEST.FINAL_MODEL"):
        build_trainer(cfg)


class _Recording:
    """A loader wrapper that records every batch it yields."""

    def __init__(self, loader, record: list):
        self.loader, self.record = loader, record

    def __iter__(self):
        for batch in self.loader:
            self.record.append(batch)
            yield batch

    def __len__(self):
        return len(self.loader)


def test_load_model_handles_missing_val_result_and_missing_file(toy_root, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    trainer = build_trainer(toy_cfg(toy_root, str(tmp_path)))
    trainer.train()
    trainer.load_model(str(tmp_path), epoch=2)  # val_result is None in model.pth.tar-N
    assert "epoch=2" in caplog.text
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "toy" / "model.pth.tar-7"))):
        trainer.load_model(str(tmp_path), epoch=7)
    assert trainer.latest_saved_epoch(str(tmp_path)) == 2
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        trainer.latest_saved_epoch(str(tmp_path / "nowhere"))


def test_training_without_tensorboard_still_works(toy_root, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    trainer = build_trainer(toy_cfg(toy_root, str(tmp_path), opts=["OPTIM.MAX_EPOCH", "1"]))
    trainer.train()
    assert "TensorBoard is unavailable" in caplog.text
    assert (tmp_path / "toy" / "model.pth.tar-1").is_file()


def test_unknown_trainer_lists_the_registered_ones(toy_root, tmp_path):
    cfg = toy_cfg(toy_root, str(tmp_path), trainer="EngineToyTrainr")
    with pytest.raises(ValueError, match='did you mean "EngineToyTrainer"'):
        build_trainer(cfg)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "model.pth.tar-1"
    atomic_torch_save({"epoch": 1}, str(path))

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"epoch": 2}, str(path))
    monkeypatch.undo()
    assert load_checkpoint(str(path)) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["model.pth.tar-1"]  # no temp file left behind


def test_load_state_dict_checked_names_missing_and_misshaped_keys():
    model = nn.Linear(4, 3)
    with pytest.raises(RuntimeError, match=r"\"run.pth\" lacks learned weights \['bias'\]"):
        load_state_dict_checked(model, {"weight": torch.zeros(3, 4)}, source="run.pth")
    with pytest.raises(RuntimeError, match=r"weight: checkpoint \(2, 4\) vs model \(3, 4\)"):
        load_state_dict_checked(model, {"weight": torch.zeros(2, 4), "bias": torch.zeros(3)}, source="run.pth")
    # Ignored keys (class-name buffers) may be missing; the rest loads.
    load_state_dict_checked(model, {"weight": torch.ones(3, 4)}, source="run.pth", ignore_suffixes=("bias",))
    assert torch.equal(model.weight, torch.ones(3, 4))


if __name__ == "__main__":
    cli_entry()
