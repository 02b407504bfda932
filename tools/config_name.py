"""The output folder name of one configuration: the trainer config's name plus the settings given on top of it.

``vit_b16`` with ``OPTS="OPTIM.LR 0.01 TRAINER.COOP.N_CTX 8"`` is ``vit_b16+lr0.01+nctx8``: each KEY VALUE pair
(and ``BACKBONE``) that the trainer config file (with its ``_BASE_`` files) does not already set to that value
adds ``+<short key><value>``, sorted by short key, so a sweep over one OUTPUT puts each point in its own folder
and the same settings always find the same folder. Reads YAML only: no torch, no registry.
"""
from __future__ import annotations

import hashlib
import os.path as osp
import re
from ast import literal_eval
from typing import Any

import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASE_KEY = "_BASE_"  # a config file may name a file merged before it, relative to its own folder
BACKBONE_KEY = "MODEL.BACKBONE.NAME"
SEPARATOR = "+"
MAX_LENGTH = 120  # longer names keep their first part and a hash of the whole
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FILE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,12}$")


def decode(value: Any) -> Any:
    """A value as yacs reads it: strings that are Python literals become those literals; tuples become lists."""
    if isinstance(value, str):
        try:
            value = literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if isinstance(value, tuple):
        return [decode(item) for item in value]
    return value


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def load_config_file(path: str, seen: tuple[str, ...] = ()) -> dict:
    """The nested dict of a YAML config file, its ``_BASE_`` chain merged first."""
    real = osp.realpath(path)
    if real in seen:
        raise ValueError(f"{path}: {BASE_KEY} chain loops back to itself")
    with open(path, encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle) or {}
    base = loaded.pop(BASE_KEY, None)
    merged: dict = {}
    if base:
        _merge(merged, load_config_file(osp.join(osp.dirname(path), base), (*seen, real)))
    _merge(merged, loaded)
    return merged


def lookup(config: dict, dotted: str) -> tuple[bool, Any]:
    """(whether ``config`` sets ``dotted``, its value)."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def resolved_path(value: Any) -> Any:
    """A string naming an existing file, as train.py resolves it (this repository first, then the current folder),
    made absolute; any other value unchanged."""
    if not isinstance(value, str) or not value:
        return value
    for candidate in (value, osp.join(REPO, value)) if osp.isabs(value) else (osp.join(REPO, value), value):
        if osp.isfile(candidate):
            return osp.realpath(candidate)
    return value


def same_value(given: Any, in_file: Any) -> bool:
    return resolved_path(decode(given)) == resolved_path(decode(in_file))


def short_key(key: str) -> str:
    """``OPTIM.LR`` -> ``lr``, ``TRAINER.COOP.N_CTX`` -> ``nctx``; a trailing ``NAME`` names its parent
    (``MODEL.BACKBONE.NAME`` -> ``backbone``)."""
    parts = key.split(".")
    word = parts[-2] if parts[-1] == "NAME" and len(parts) > 1 else parts[-1]
    return word.lower().replace("_", "")


def value_text(value: Any) -> str:
    """A value as a folder-name fragment: a file path by its file name without suffix, the rest with unsafe
    characters replaced."""
    value = decode(value)
    if isinstance(value, list):
        return "-".join(value_text(item) for item in value) or "empty"
    text = str(value)
    if "/" in text and _FILE_SUFFIX.search(osp.basename(text)):
        text = _FILE_SUFFIX.sub("", osp.basename(text))
    text = _UNSAFE.sub("_", text.replace("/", "-").replace(":", "-")).strip("_")
    return text or "empty"


def differing_settings(config_file: str, settings: list[tuple[str, str]]) -> dict[str, str]:
    """KEY -> VALUE of ``settings`` (the last value of a key wins, as in a merge) that ``config_file`` does not
    set to the same value."""
    config = load_config_file(config_file)
    last = dict(settings)
    differing = {}
    for key, value in last.items():
        in_file, file_value = lookup(config, key)
        if not (in_file and same_value(value, file_value)):
            differing[key] = value
    return differing


def folder_name(cfg_name: str, config_file: str, settings: list[tuple[str, str]], tag: str = "") -> str:
    """``tag`` when given, else ``cfg_name`` plus ``+<short key><value>`` for each differing setting."""
    if tag:
        return tag
    differing = differing_settings(config_file, settings)
    shorts = [short_key(key) for key in differing]
    parts = []
    for key, value in differing.items():
        # Two keys with one short name (TRAINER.COOP.N_CTX, TRAINER.MAPLE.N_CTX) keep their whole path.
        name = short_key(key) if shorts.count(short_key(key)) == 1 else key.lower().replace("_", "")
        text = value_text(value)
        parts.append(name + (text if text[0].isdigit() else f"-{text}"))
    name = SEPARATOR.join([cfg_name, *sorted(parts)])
    if len(name) > MAX_LENGTH:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
        name = f"{name[:MAX_LENGTH - 11]}{SEPARATOR}{digest}"
    return name


def check_tag(tag: str) -> str | None:
    """Why ``tag`` cannot name a folder, or None when it can."""
    if TAG_PATTERN.match(tag):
        return None
    return (f"TAG '{tag}' cannot name a folder; use letters, digits and . _ + = - (not first: . _ + = -), "
            "e.g. TAG=lr_sweep")
