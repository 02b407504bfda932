"""The embedded world: deterministic generator, captions that describe the pixels, the shipped CLIP, and
short demo-like runs that must beat zero-shot on the base classes."""
from __future__ import annotations

import colorsys
import filecmp
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets.world_gen import (
    STREAM_ZEROSHOT_CHECK,
    WorldSpec,
    class_attributes,
    class_names,
    generate_world,
    image_rng,
    render_pool,
    split_path,
)
from datasets.world_render import COLOURS, DOMAINS, caption_for, render_scene

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "assets" / "world_clip_vit.pt"
SMALL = WorldSpec(n_train=1, n_val=1, n_test=1)
# Floor for the shipped CLIP's zero-shot accuracy on the fixed sample (chance is 1/36 = 2.8%).
ZEROSHOT_FLOOR = 15.0


def _tree_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_generator_is_deterministic_and_reused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate_world(str(a), SMALL)
    generate_world(str(b), SMALL)
    files = _tree_files(a / "world")
    assert files == _tree_files(b / "world")
    assert len([f for f in files if f.endswith(".png")]) == len(DOMAINS) * 36 * 3
    _, mismatch, errors = filecmp.cmpfiles(a / "world", b / "world", files, shallow=False)
    assert mismatch == [] and errors == []

    # A matching tree is reused untouched; another spec regenerates it.
    split = split_path(str(a), "photo")
    stamp = os.stat(split).st_mtime_ns
    generate_world(str(a), SMALL)
    assert os.stat(split).st_mtime_ns == stamp
    generate_world(str(a), WorldSpec(seed=1, n_train=1, n_val=1, n_test=1))
    image = "world/photo/images/red_circle/0000.png"
    assert (a / image).read_bytes() != (b / image).read_bytes()


def test_splits_are_coop_format_with_compositional_base_and_new() -> None:
    attributes = class_attributes()
    base, new = attributes[:18], attributes[18:]
    # Every colour and every shape occurs among both the base and the new classes ...
    for index in (0, 1):
        assert {a[index] for a in base} == {a[index] for a in new}
    # ... but no combination is in both.
    assert not set(base) & set(new)
    assert class_names()[0] == "red circle"


def _dominant_colour(image: np.ndarray) -> str:
    """The named colour most pixels are closest to, among clearly saturated pixels."""
    hsv = np.array([colorsys.rgb_to_hsv(*(px / 255)) for px in image.reshape(-1, 3)])
    saturated = hsv[(hsv[:, 1] > 0.5) & (hsv[:, 2] > 0.45)]
    names = list(COLOURS)
    centres = np.array([COLOURS[n] for n in names])
    distance = np.abs(saturated[:, :1] - centres[None])
    distance = np.minimum(distance, 1 - distance)  # hue is circular
    votes = np.bincount(distance.argmin(1), minlength=len(names))
    return names[int(votes.argmax())]


@pytest.mark.parametrize("domain", ["photo", "cartoon"])
def test_captions_match_rendered_colour(domain: str) -> None:
    agree, total = 0, 0
    for label, (colour, shape) in enumerate(class_attributes()):
        for index in range(2):
            image, attrs = render_scene(image_rng(7, 0, domain, label, index), colour, shape, domain)
            caption = caption_for(attrs, with_size=False)
            assert caption == f"a {domain} of a {colour} {shape}"
            agree += _dominant_colour(np.asarray(image)) == colour
            total += 1
    # Distractors are smaller than the object, but a thin crescent can lose the vote now and then.
    assert agree / total >= 0.9, f"{agree}/{total} images are mostly the caption's colour"


def test_render_rejects_unknown_names() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="Unknown domain 'oil'"):
        render_scene(rng, "red", "star", "oil")
    with pytest.raises(ValueError, match="Unknown shape 'blob'"):
        render_scene(rng, "red", "blob", "photo")


def _zeroshot_module():
    sys.path.insert(0, str(REPO / "tools"))
    import pretrain_world_clip

    return pretrain_world_clip


def test_shipped_checkpoint_loads_and_classifies_zero_shot() -> None:
    import clip

    assert CHECKPOINT.is_file(), f"{CHECKPOINT} is missing; see assets/README.md"
    assert CHECKPOINT.stat().st_size < 20 * 2**20
    model = clip.load(str(CHECKPOINT))
    assert model.image_size == 32 and model.visual_kind == "vit"
    images, labels, _ = render_pool(0, STREAM_ZEROSHOT_CHECK, per_class=1, domains=("photo",))
    accuracy = _zeroshot_module().zeroshot_accuracy(model, images, labels)
    assert accuracy >= ZEROSHOT_FLOOR, f"zero-shot accuracy {accuracy:.1f}% < floor {ZEROSHOT_FLOOR}%"


# ----- short demo-like runs: each trainer must beat zero-shot on the base classes -----

RUN_SPEC = WorldSpec(n_train=8, n_val=1, n_test=6)


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("world_runs"))
    generate_world(root, RUN_SPEC)
    return root


def _base_accuracy(trainer_name: str, root: str, output: str, opts: list[str]) -> float:
    import datasets.world  # noqa: F401  (registers the loaders until datasets/__init__ imports it)
    import train
    import trainers  # noqa: F401
    from dassl.engine import build_trainer

    argv = ["--root", root, "--seed", "1", "--trainer", trainer_name, "--output-dir", output,
            "--dataset-config-file", str(REPO / "configs/datasets/world.yaml"),
            "--config-file", str(REPO / f"configs/trainers/{trainer_name}/world.yaml"),
            "MODEL.BACKBONE.NAME", str(CHECKPOINT), "DATASET.SUBSAMPLE_CLASSES", "base",
            "DATASET.WORLD.N_TRAIN", str(RUN_SPEC.n_train), "DATASET.WORLD.N_VAL", str(RUN_SPEC.n_val),
            "DATASET.WORLD.N_TEST", str(RUN_SPEC.n_test), "TEST.NO_TEST", "True", *opts]
    cfg = train.setup_cfg(train.build_parser().parse_args(argv))
    import torch

    root_logger = logging.getLogger()
    saved_handlers, saved_stdout, saved_threads = list(root_logger.handlers), sys.stdout, torch.get_num_threads()
    # One thread: next to another busy process a 2-thread run on 2 cores stalls (measured 1.0-3.5 s/step
    # for GOPro and CoCoOp against about 0.2 s/step on one thread), which would blow this file's time budget.
    torch.set_num_threads(1)
    try:
        from dassl.utils import set_random_seed

        set_random_seed(1)
        trainer = build_trainer(cfg)
        if trainer_name != "ZeroshotCLIP":
            trainer.train()
        return float(trainer.test())
    finally:
        for handler in [h for h in root_logger.handlers if h not in saved_handlers]:
            root_logger.removeHandler(handler)
        sys.stdout = saved_stdout
        torch.set_num_threads(saved_threads)


@pytest.fixture(scope="module")
def zeroshot_base(run_root, tmp_path_factory) -> float:
    return _base_accuracy("ZeroshotCLIP", run_root, str(tmp_path_factory.mktemp("zs")), [])


# Measured on this world with the shipped CLIP (8 shots, lr 0.002, base test 108 images, so one image is
# 0.9 points); zero-shot 46.3 %, whatever the seed.
#   Public init, seed 1, 3 epochs: CoOp 50.0, CoCoOp 39.8, GOPro 40.7; 5 epochs: CoOp 48.1, CoCoOp 38.0, GOPro 42.6.
# At that init the image-conditioned shift (CoCoOp's meta-net; GOPro's projectors through rho) has norm 2.4 / 3.1
# next to 0.17-0.21 for the "a photo of a" token embeddings, so the prompt starts far from the hand-written one.
# The world configs zero-initialise it (TRAINER.COCOOP.ZERO_INIT_META, TRAINER.GOPRO.ZERO_INIT_SHIFT); with the
# demo's schedule (5 epochs), seeds 1 / 2 / 3:
#   CoOp 48.1 / 49.1 / 47.2, CoCoOp 49.1 / 48.1 / 50.0; GOPro (AugMix severity 1, as the public code)
#   46.3 / 49.1 / 43.5 (mean 46.3 = zero-shot).
# CoOp and CoCoOp beat zero-shot on every seed. GOPro does not on seeds 1 and 3, so that is not claimed; its
# test below checks what holds on every seed measured: the short run stays within 5 points of zero-shot
# (43.5 at worst), which the public init (40.7 / 42.6) does not.


@pytest.mark.parametrize("trainer_name", ["CoOp", "CoCoOp"])
def test_short_run_beats_zero_shot_on_base(trainer_name, run_root, zeroshot_base, tmp_path) -> None:
    accuracy = _base_accuracy(trainer_name, run_root, str(tmp_path), ["DATASET.NUM_SHOTS", "8"])
    assert accuracy > 5 * 100 / 18, f"{trainer_name}: {accuracy:.1f}% is near chance on 18 base classes"
    assert accuracy > zeroshot_base, f"{trainer_name}: {accuracy:.1f}% after training vs {zeroshot_base:.1f}% zero-shot"


def test_gopro_short_run_stays_near_zero_shot_on_base(run_root, zeroshot_base, tmp_path) -> None:
    accuracy = _base_accuracy("GOPro", run_root, str(tmp_path), ["DATASET.NUM_SHOTS", "8"])
    assert accuracy > 5 * 100 / 18, f"GOPro: {accuracy:.1f}% is near chance on 18 base classes"
    assert accuracy >= zeroshot_base - 5.0, f"GOPro: {accuracy:.1f}% after training vs {zeroshot_base:.1f}% zero-shot"
