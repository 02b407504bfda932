"""Every shipped config resolves to exactly the keys and values pinned in tests/config_snapshot.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from yacs.config import CfgNode as CN

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
    with open(REPO / relative_path) as f:
        return flatten(CN.load_cfg(f))


def differences(got: dict, pinned: dict) -> list[str]:
    """Keys whose value differs, by JSON text, so 1 != 1.0 != True and "1e-5" != 1e-05."""
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
    """The loader train.py uses gives the same full config as the pinned keys written out in one plain file."""
    import datasets  # noqa: F401  (registers every dataset's keys)
    import trainers  # noqa: F401  (registers every trainer's keys)
    from dassl.config import get_cfg_default, merge_from_file_checked

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
    """A new config is added to the snapshot (the line to paste is in the message); shared bases are not run alone."""
    shipped = {
        str(path.relative_to(REPO))
        for path in (REPO / "configs").rglob("*.yaml")
        if not any(part.startswith("_") for part in path.relative_to(REPO).parts)
    }
    unpinned = sorted(shipped - set(SNAPSHOT))
    lines = [f" {json.dumps(p)}: {json.dumps(resolved_keys(p), sort_keys=True)}," for p in unpinned]
    assert not unpinned, "configs missing from tests/config_snapshot.json:\n" + "\n".join(lines)
