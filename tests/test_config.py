"""dassl.config: defaults, extensions, clean_cfg and the checked merges."""
import pytest
from yacs.config import CfgNode as CN

from dassl.config import (
    ConfigError,
    clean_cfg,
    get_cfg_default,
    merge_from_file_checked,
    merge_from_list_checked,
    register_cfg_extension,
)
from dassl.config import defaults as config_defaults


@pytest.fixture
def isolated_extensions(monkeypatch):
    """Register test extensions without leaking them into other tests."""
    monkeypatch.setattr(config_defaults, "_EXTENSIONS", list(config_defaults._EXTENSIONS))


def test_defaults_hold_the_dassl_schema_and_reliability_keys():
    cfg = get_cfg_default()
    assert isinstance(cfg, CN)
    assert cfg.INPUT.SIZE == (224, 224)
    assert cfg.OPTIM.STEPSIZE == (-1,)
    assert cfg.OPTIM.SGD_DAMPNING == 0
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 32
    assert cfg.TEST.FINAL_MODEL == "last_step"
    assert cfg.TRAIN.SKIP_NONFINITE is False
    assert cfg.DATALOADER.SKIP_BAD_IMAGES is False


def test_get_cfg_default_returns_a_fresh_copy():
    first = get_cfg_default()
    first.OPTIM.LR = 123.0
    assert get_cfg_default().OPTIM.LR == 0.0003


def test_registered_extension_applies_to_every_default(isolated_extensions):
    @register_cfg_extension
    def add_toy_config(cfg):
        cfg.TRAINER.TOY = CN()
        cfg.TRAINER.TOY.N_CTX = 4

    # Registering the same function again (a re-imported module) must not apply it twice.
    register_cfg_extension(add_toy_config)
    assert len([f for f in config_defaults._EXTENSIONS if f.__name__ == "add_toy_config"]) == 1
    assert get_cfg_default().TRAINER.TOY.N_CTX == 4
    cfg = get_cfg_default()
    merge_from_list_checked(cfg, ["TRAINER.TOY.N_CTX", "8"])
    assert cfg.TRAINER.TOY.N_CTX == 8


def test_clean_cfg_keeps_only_name_and_the_trainer():
    cfg = get_cfg_default()
    cfg.TRAINER.COOP = CN({"N_CTX": 16})
    cfg.TRAINER.GOPRO = CN({"N_CTX": 4})
    clean_cfg(cfg, "GOPro")
    assert set(cfg.TRAINER.keys()) == {"NAME", "GOPRO"}


def test_yaml_values_are_decoded_like_yacs(tmp_path):
    path = tmp_path / "trainer.yaml"
    path.write_text("INPUT:\n  SIZE: (32, 32)\n  TRANSFORMS: [random_flip, normalize]\nOPTIM:\n  WARMUP_CONS_LR: 1e-5\n")
    cfg = get_cfg_default()
    merge_from_file_checked(cfg, str(path))
    assert cfg.INPUT.SIZE == (32, 32)
    assert cfg.INPUT.TRANSFORMS == ("random_flip", "normalize")
    assert cfg.OPTIM.WARMUP_CONS_LR == 1e-5


def test_unknown_key_in_file_names_key_file_and_closest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("OPTIM:\n  LRR: 0.1\n")
    with pytest.raises(ConfigError) as info:
        merge_from_file_checked(get_cfg_default(), str(path))
    message = str(info.value)
    assert "OPTIM.LRR" in message and str(path) in message and '"OPTIM.LR"' in message
    assert "\n" not in message


def test_type_mismatch_names_expected_type(tmp_path):
    path = tmp_path / "bad_type.yaml"
    path.write_text("OPTIM:\n  MAX_EPOCH: abc\n")
    with pytest.raises(ConfigError, match=r'"OPTIM.MAX_EPOCH" in file .*expected int, got str'):
        merge_from_file_checked(get_cfg_default(), str(path))
    with pytest.raises(ConfigError, match=r'"OPTIM.LR" on the command line: expected float'):
        merge_from_list_checked(get_cfg_default(), ["OPTIM.LR", "fast"])


def test_unknown_key_and_odd_list_on_command_line():
    with pytest.raises(ConfigError, match=r'"TRAINER.NOSUCHMETHOD.N_CTX" on the command line'):
        merge_from_list_checked(get_cfg_default(), ["TRAINER.NOSUCHMETHOD.N_CTX", "4"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        merge_from_list_checked(get_cfg_default(), ["OPTIM.LR"])


def test_missing_config_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        merge_from_file_checked(get_cfg_default(), str(missing))


def test_no_shipped_trainer_config_pins_a_worker_count():
    """The machine's default (half the CPUs, tests/test_views.py) applies; a config may only turn workers off."""
    import glob
    import os.path as osp

    import yaml

    root = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "configs", "trainers")
    pinned = {}
    for path in glob.glob(osp.join(root, "*", "*.yaml")):
        with open(path) as f:
            workers = ((yaml.safe_load(f) or {}).get("DATALOADER") or {}).get("NUM_WORKERS")
        if workers not in (None, 0):
            pinned[osp.relpath(path, root)] = workers
    assert not pinned, f"configs that pin DATALOADER.NUM_WORKERS (oversubscribes small machines): {pinned}"
