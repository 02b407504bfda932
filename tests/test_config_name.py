"""tools/config_name.py: the folder name of a configuration, read from YAML alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from tools import config_name

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    """A trainer config that inherits from a shared block and overrides one of its keys."""
    (tmp_path / "_base_").mkdir()
    (tmp_path / "_base_" / "shared.yaml").write_text("OPTIM:\n  LR: 0.002\n  MAX_EPOCH: 5\nTRAINER:\n  COOP:\n    N_CTX: 4\n")
    path = tmp_path / "vit_b16.yaml"
    path.write_text("_BASE_: _base_/shared.yaml\nOPTIM:\n  MAX_EPOCH: 50\n  WARMUP_CONS_LR: 1e-5\n"
                    "TRAINER:\n  COOP:\n    CTX_INIT: ''\n    CSC: False\n")
    return path


def name(config: Path, *pairs: tuple[str, str], tag: str = "") -> str:
    return config_name.folder_name("vit_b16", str(config), list(pairs), tag)


def test_the_name_carries_the_settings_that_differ_sorted_and_shortened(config_file: Path) -> None:
    assert name(config_file) == "vit_b16"
    assert name(config_file, ("TRAINER.COOP.N_CTX", "8"), ("OPTIM.LR", "0.01")) == "vit_b16+lr0.01+nctx8"
    assert name(config_file, ("OPTIM.LR", "0.01"), ("TRAINER.COOP.N_CTX", "8")) == "vit_b16+lr0.01+nctx8"
    # Values the file (or its _BASE_) already holds name nothing, however they are written.
    assert name(config_file, ("OPTIM.LR", "0.0020"), ("OPTIM.MAX_EPOCH", "50"), ("OPTIM.WARMUP_CONS_LR", "0.00001"),
                ("TRAINER.COOP.CSC", "False"), ("TRAINER.COOP.CTX_INIT", "")) == "vit_b16"
    assert name(config_file, ("OPTIM.MAX_EPOCH", "5")) == "vit_b16+maxepoch5"  # the base's value is overridden
    # The last value of a key wins, as in the merge.
    assert name(config_file, ("OPTIM.LR", "0.01"), ("OPTIM.LR", "0.002")) == "vit_b16"
    assert name(config_file, ("TRAINER.COOP.CSC", "True"), ("TRAINER.COOP.CTX_INIT", "a photo of a")) == (
        "vit_b16+csc-True+ctxinit-a_photo_of_a")


def test_backbones_are_named_readably(config_file: Path) -> None:
    backbone = config_name.BACKBONE_KEY
    assert name(config_file, (backbone, "ViT-B/16")) == "vit_b16+backbone-ViT-B-16"
    assert name(config_file, (backbone, "ViT-B-16:laion2b_s34b_b88k")) == "vit_b16+backbone-ViT-B-16-laion2b_s34b_b88k"
    assert name(config_file, (backbone, "/models/openai/ViT-L-14.pt")) == "vit_b16+backbone-ViT-L-14"
    assert name(config_file, (backbone, "RN50"), ("OPTIM.LR", "0.01")) == "vit_b16+backbone-RN50+lr0.01"


def test_a_repository_path_equals_its_absolute_form() -> None:
    """configs/trainers/*/world.yaml name assets/world_clip_vit.pt relative to the repository; the demo passes
    the absolute path: the same file, so the same folder."""
    world = REPO / "configs" / "trainers" / "CoOp" / "world.yaml"
    shipped = str(REPO / "assets" / "world_clip_vit.pt")
    assert config_name.folder_name("world", str(world), [(config_name.BACKBONE_KEY, shipped)]) == "world"
    assert config_name.folder_name("world", str(world), [("TRAINER.COOP.PREC", "fp32")]) == "world"
    assert config_name.folder_name("world", str(world), [("TRAINER.COOP.PREC", "bf16")]) == "world+prec-bf16"


def test_clashing_short_keys_keep_their_path_and_long_names_are_hashed(config_file: Path) -> None:
    assert name(config_file, ("TRAINER.COOP.N_CTX", "8"), ("TRAINER.MAPLE.N_CTX", "2")) == (
        "vit_b16+trainer.coop.nctx8+trainer.maple.nctx2")
    assert name(config_file, ("INPUT.TRANSFORMS", "['normalize', 'random_flip']")) == (
        "vit_b16+transforms-normalize-random_flip")
    long = name(config_file, ("TRAINER.COOP.CTX_INIT", "a " * 100))
    assert len(long) == config_name.MAX_LENGTH and long.startswith("vit_b16+ctxinit-a_a_a")
    assert long != name(config_file, ("TRAINER.COOP.CTX_INIT", "a " * 101))  # the hash tells them apart


def test_a_tag_replaces_the_name_and_must_be_a_plain_folder_name(config_file: Path) -> None:
    assert name(config_file, ("OPTIM.LR", "0.01"), tag="lr_sweep") == "lr_sweep"
    assert config_name.check_tag("lr_sweep+v2") is None
    for bad in ("a/b", ".hidden", "", "two words", "-x"):
        assert "cannot name a folder" in config_name.check_tag(bad)


def test_a_base_chain_that_loops_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(ValueError, match="chain loops back"):
        config_name.load_config_file(str(tmp_path / "a.yaml"))
