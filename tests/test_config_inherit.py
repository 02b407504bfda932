"""``_BASE_`` in config files (chains, paths relative to the file, cycles refused, child keys win), and every
shipped config resolving to exactly the keys and values pinned in tests/config_snapshot.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from yacs.config import CfgNode as CN

from dassl.config import ConfigError, get_cfg_default, load_config_file, merge_from_file_checked

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT = json.loads((REPO / "tests" / "config_snapshot.json").read_text())


def flatten(node: CN, prefix: str = "") -> dict:
    """``{"A.B.C": value}`` for every leaf of ``node``."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, CN):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resolved_keys(relative_path: str) -> dict:
    return flatten(load_config_file(str(REPO / relative_path)))


def differences(got: dict, pinned: dict) -> list[str]:
    """Keys whose value differs, compared as JSON text: 1, 1.0 and true differ, and so do "1e-5" and 1e-05."""
    return [
        f"{key}: pinned {json.dumps(pinned.get(key, '<absent>'))}, now {json.dumps(got.get(key, '<absent>'))}"
        for key in sorted(set(got) | set(pinned))
        if json.dumps(got.get(key, "<absent>")) != json.dumps(pinned.get(key, "<absent>"))
    ]


@pytest.mark.parametrize("relative_path", sorted(SNAPSHOT))
def test_shipped_config_resolves_to_its_pinned_keys(relative_path: str) -> None:
    assert (REPO / relative_path).is_file(), f"{relative_path} is pinned but no longer shipped"
    assert not differences(resolved_keys(relative_path), SNAPSHOT[relative_path])


@pytest.mark.parametrize("relative_path", sorted(SNAPSHOT))
def test_shipped_config_merges_over_the_defaults_as_its_pinned_keys_do(relative_path: str, tmp_path) -> None:
    """train.py's loader gives the same full config as the pinned keys written out in one plain file."""
    import datasets  # noqa: F401  (registers every dataset's keys)
    import trainers  # noqa: F401  (registers every trainer's keys)

    nested: dict = {}
    for dotted, value in SNAPSHOT[relative_path].items():
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    plain = tmp_path / "pinned.yaml"
    plain.write_text(yaml.safe_dump(nested))
    expected, got = get_cfg_default(), get_cfg_default()
    merge_from_file_checked(expected, str(plain))
    merge_from_file_checked(got, str(REPO / relative_path))
    assert got.dump() == expected.dump()


def test_every_shipped_config_is_pinned() -> None:
    """A new config is pinned too (the line to paste is in the message); shared bases are never run alone."""
    shipped = {
        str(path.relative_to(REPO))
        for path in (REPO / "configs").rglob("*.yaml")
        if not any(part.startswith("_") for part in path.relative_to(REPO).parts)
    }
    unpinned = sorted(shipped - set(SNAPSHOT))
    lines = [f" {json.dumps(p)}: {json.dumps(resolved_keys(p), sort_keys=True)}," for p in unpinned]
    assert not unpinned, "configs missing from tests/config_snapshot.json:\n" + "\n".join(lines)


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_a_chain_of_bases_merges_root_first_and_the_child_wins(tmp_path) -> None:
    root = "OPTIM:\n  NAME: sgd\n  LR: 0.1\n  MAX_EPOCH: 7\nINPUT:\n  SIZE: (32, 32)\n"
    write(tmp_path / "root.yaml", root)
    write(tmp_path / "mid.yaml", "_BASE_: root.yaml\nOPTIM:\n  LR: 0.2\n")
    child = write(tmp_path / "child.yaml", "_BASE_: mid.yaml\nOPTIM:\n  MAX_EPOCH: 3\n")
    assert flatten(load_config_file(child)) == {
        "OPTIM.NAME": "sgd", "OPTIM.LR": 0.2, "OPTIM.MAX_EPOCH": 3, "INPUT.SIZE": "(32, 32)"
    }  # fmt: skip
    cfg = get_cfg_default()
    merge_from_file_checked(cfg, child)
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.INPUT.SIZE) == ("sgd", 0.2, 3, (32, 32))


def test_a_base_path_is_relative_to_the_file_that_names_it(tmp_path, monkeypatch) -> None:
    """Not to the folder one runs from, and each link of a chain against its own folder."""
    write(tmp_path / "shared" / "sub" / "root.yaml", "OPTIM:\n  LR: 0.5\n")
    write(tmp_path / "shared" / "mid.yaml", "_BASE_: sub/root.yaml\nOPTIM:\n  MAX_EPOCH: 9\n")
    write(tmp_path / "method" / "sub" / "root.yaml", "OPTIM:\n  LR: 0.9\n")  # a decoy next to the child
    write(tmp_path / "method" / "run.yaml", "_BASE_: ../shared/mid.yaml\nOPTIM:\n  NAME: adam\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = get_cfg_default()
    merge_from_file_checked(cfg, "../method/run.yaml")
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH) == ("adam", 0.5, 9)


def test_a_bad_key_in_a_base_names_the_base_and_a_missing_base_names_both_files(tmp_path) -> None:
    write(tmp_path / "base.yaml", "OPTIM:\n  LRR: 0.1\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nOPTIM:\n  LR: 0.2\n")
    with pytest.raises(ConfigError, match=r'"OPTIM.LRR" in file "[^"]*base.yaml"'):
        merge_from_file_checked(get_cfg_default(), child)
    orphan = write(tmp_path / "orphan.yaml", "_BASE_: gone.yaml\n")
    with pytest.raises(ConfigError, match=r'found: "[^"]*gone.yaml" \(the _BASE_ of "[^"]*orphan.yaml"\)'):
        load_config_file(orphan)
    listed = write(tmp_path / "listed.yaml", "_BASE_: [base.yaml]\n")
    with pytest.raises(ConfigError, match="must name one YAML file"):
        load_config_file(listed)


def test_a_cycle_is_one_error_line_from_train_py_naming_the_files(tmp_path, capsys) -> None:
    import train

    first = write(tmp_path / "first.yaml", "_BASE_: second.yaml\nOPTIM:\n  LR: 0.1\n")
    write(tmp_path / "second.yaml", "_BASE_: first.yaml\n")
    rc = train.cli(["--config-file", first, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cycle" in errors[0], err
    assert errors[0].count("first.yaml") == 2 and "second.yaml" in errors[0]
    assert not (tmp_path / "out").exists()  # refused before anything was written
    write(tmp_path / "self.yaml", "_BASE_: ./self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config_file(str(tmp_path / "self.yaml"))


def test_a_runs_config_yaml_is_the_fully_merged_config(tmp_path) -> None:
    """What the output folder records holds the bases' keys, the child's overrides and no _BASE_."""
    from tests.test_engine import make_toy_images, run_main, toy_opts

    root = make_toy_images(str(tmp_path / "data"))
    write(tmp_path / "base.yaml", "OPTIM:\n  NAME: sgd\n  LR: 0.02\n  MAX_EPOCH: 3\n  LR_SCHEDULER: cosine")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nOPTIM:\n  MAX_EPOCH: 1\n")
    opts = toy_opts(max_epoch=1)
    opts = [v for i in range(0, len(opts), 2) if not opts[i].startswith("OPTIM") for v in opts[i : i + 2]]
    out = tmp_path / "run"
    run_main(["--root", root, "--trainer", "EngineToyTrainer", "--config-file", child,
              "--output-dir", str(out), *opts])  # fmt: skip
    text = (out / "config.yaml").read_text()
    assert "_BASE_" not in text
    saved = CN.load_cfg(text)
    assert (saved.OPTIM.NAME, saved.OPTIM.LR, saved.OPTIM.MAX_EPOCH, saved.OPTIM.LR_SCHEDULER) == (
        "sgd", 0.02, 1, "cosine"
    )  # fmt: skip
    assert set(flatten(get_cfg_default())) <= set(flatten(saved))  # the whole config, defaults included


@pytest.mark.parametrize("setting", ["world", "tiny"])
def test_each_methods_world_and_tiny_config_holds_only_its_trainer_keys(setting: str) -> None:
    """The shared data/schedule block lives once, in configs/trainers/_base_/<setting>.yaml."""
    paths = sorted((REPO / "configs" / "trainers").glob(f"[!_]*/{setting}.yaml"))
    assert len(paths) >= 9, paths  # every shipped method has both
    copied = {}
    for path in paths:
        own = yaml.safe_load(path.read_text())
        if own.get("_BASE_") != f"../_base_/{setting}.yaml" or set(own) != {"_BASE_", "TRAINER"}:
            copied[path.parent.name] = sorted(own)
    assert not copied, f"{setting}.yaml files that do not just add TRAINER keys to the shared block: {copied}"


def test_dassl_style_merge_from_file_follows_bases_and_fails_in_one_line(tmp_path) -> None:
    """Code written for Dassl calls yacs's ``cfg.merge_from_file``: on the defaults it is the checked loader."""
    write(tmp_path / "root.yaml", "OPTIM:\n  LR: 0.1\n  MAX_EPOCH: 7\n")
    child = write(tmp_path / "child.yaml", "_BASE_: root.yaml\nOPTIM:\n  MAX_EPOCH: 3\n")
    cfg = get_cfg_default()
    cfg.merge_from_file(child)
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH) == (0.1, 3)
    cfg.merge_from_list(["INPUT.SIZE", "(64, 64)"])  # yacs's own merges keep working on the same node
    assert cfg.INPUT.SIZE == (64, 64)
    bad = write(tmp_path / "bad.yaml", "_BASE_: root.yaml\nOPTIM:\n  LRR: 0.1\n")
    with pytest.raises(ConfigError, match='"OPTIM.LRR" in file'):
        cfg.merge_from_file(bad)
