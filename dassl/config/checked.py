"""yacs merges whose errors name the key, the source and what would be valid, in one line."""
from __future__ import annotations

import os.path as osp
import re
from ast import literal_eval

from yacs.config import CfgNode as CN

from dassl.utils.errors import ConfigError
from dassl.utils.tools import get_most_similar_str_to_a_from_b

__all__ = [
    "BASE_KEY",
    "ConfigError",
    "all_keys",
    "load_config_file",
    "merge_from_file_checked",
    "merge_from_list_checked",
]

BASE_KEY = "_BASE_"  # a YAML file's parent config, merged first (detectron2's convention)

_UNKNOWN_KEY = re.compile(r"Non-existent (?:config )?key: (\S+)")
_TYPE_MISMATCH = re.compile(
    r"Type mismatch \((.*?) vs\. (.*?)\) with values \((.*)\) for config key: (\S+)", re.S
)
_CLASS_NAME = re.compile(r"<class '(?:[\w.]*\.)?(\w+)'>")


def all_keys(cfg: CN, prefix: str = "") -> list[str]:
    """Every leaf key of ``cfg`` in dotted form."""
    keys = []
    for name, value in cfg.items():
        full = f"{prefix}{name}"
        keys.extend(all_keys(value, full + ".") if isinstance(value, CN) else [full])
    return keys


def _type_name(text: str) -> str:
    match = _CLASS_NAME.search(text)
    return match.group(1) if match else text


def _explain(err: Exception, cfg: CN, source: str) -> ConfigError:
    text = str(err.args[0]) if err.args else str(err)
    unknown = _UNKNOWN_KEY.search(text)
    if unknown:
        key = unknown.group(1)
        closest = get_most_similar_str_to_a_from_b(key, all_keys(cfg))
        return ConfigError(
            f'Unknown config key "{key}" {source}; did you mean "{closest}"? '
            "(a method's keys exist only once its module is imported)"
        )
    mismatch = _TYPE_MISMATCH.search(text)
    if mismatch:
        expected, got, values, key = mismatch.groups()
        value = values.rsplit(" vs. ", 1)[-1]
        return ConfigError(
            f'Wrong type for config key "{key}" {source}: expected {_type_name(expected)}, '
            f"got {_type_name(got)} ({value})"
        )
    return ConfigError(f"Invalid config {source}: {text}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _floats_from_ints(loaded: CN, schema: CN) -> None:
    """Turn ints into floats where the schema holds a float (``LR: 1`` means 1.0), in place."""
    for key, value in loaded.items():
        if key not in schema:
            continue
        if isinstance(value, CN) and isinstance(schema[key], CN):
            _floats_from_ints(value, schema[key])
        elif _is_int(value) and isinstance(schema[key], float):
            loaded[key] = float(value)


def _float_override(cfg: CN, key: str, value):
    """``value`` as a float literal when ``key`` holds a float and ``value`` reads as an int, else unchanged."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, CN) or part not in node:
            return value
        node = node[part]
    if not isinstance(node, float):
        return value
    try:
        decoded = literal_eval(value) if isinstance(value, str) else value
    except (ValueError, SyntaxError):
        return value
    return repr(float(decoded)) if _is_int(decoded) else value


def _read_one_file(path: str, named_by: str | None) -> CN:
    """The keys written in the YAML file at ``path`` itself (``_BASE_`` still in them)."""
    where = f' (the {BASE_KEY} of "{named_by}")' if named_by else ""
    try:
        with open(path) as f:
            loaded = CN.load_cfg(f)
    except FileNotFoundError as err:
        raise ConfigError(f'Config file not found: "{path}"{where}') from err
    except OSError as err:  # a folder, no permission
        raise ConfigError(f'Cannot read config file "{path}"{where}: {err}') from err
    except (KeyError, AssertionError, ValueError) as err:
        raise ConfigError(f'Invalid config file "{path}"{where}: {err}') from err
    except (AttributeError, TypeError) as err:  # valid YAML that is not a mapping of keys
        raise ConfigError(f'Config file "{path}" must be a mapping of KEY: value entries ({err})') from err
    except Exception as err:  # YAML syntax errors and the like
        if type(err).__module__.startswith("yaml"):
            raise ConfigError(f'Cannot parse config file "{path}": {err}'.replace("\n", " ")) from err
        raise
    return loaded


def _overlay(base: CN, child: CN) -> None:
    """Write ``child``'s keys over ``base``, in place: nodes merge key by key, any other value replaces."""
    for key, value in child.items():
        if isinstance(value, CN) and isinstance(base.get(key), CN):
            _overlay(base[key], value)
        else:
            base[key] = value


def _resolve(path: str, chain: tuple[str, ...]) -> tuple[CN, dict[str, str]]:
    """(``path``'s keys over its ``_BASE_`` chain, the file each leaf key comes from); ``chain`` names the
    files that inherit from ``path``, nearest last."""
    seen = [osp.realpath(p) for p in chain]
    if osp.realpath(path) in seen:
        loop = [*chain[seen.index(osp.realpath(path)) :], path]
        files = " -> ".join(f'"{p}"' for p in loop)
        raise ConfigError(f"Config files inherit in a cycle ({BASE_KEY}): {files}")
    loaded = _read_one_file(path, chain[-1] if chain else None)
    base_name = loaded.pop(BASE_KEY, None)
    origins = {key: path for key in all_keys(loaded)}
    if base_name is None:
        return loaded, origins
    if not isinstance(base_name, str) or not base_name.strip():
        raise ConfigError(
            f'{BASE_KEY} in "{path}" must name one YAML file, by a path relative to that file; '
            f"got {base_name!r}"
        )
    base_path = osp.normpath(osp.join(osp.dirname(path), osp.expanduser(base_name)))
    base, base_origins = _resolve(base_path, (*chain, path))
    _overlay(base, loaded)
    return base, {**base_origins, **origins}


def load_config_file(path: str) -> CN:
    """The keys the YAML file at ``path`` sets, its ``_BASE_`` files merged under them first (no defaults)."""
    return _resolve(path, ())[0]


def _failed_key(err: Exception) -> str:
    """The config key a yacs merge error names ("" if none)."""
    text = str(err.args[0]) if err.args else str(err)
    for pattern, group in ((_UNKNOWN_KEY, 1), (_TYPE_MISMATCH, 4)):
        found = pattern.search(text)
        if found:
            return found.group(group)
    return ""


def _origin(key: str, origins: dict[str, str], fallback: str) -> str:
    """The file that set ``key`` (for a node, the file of its first leaf); ``fallback`` if none did."""
    if key in origins:
        return origins[key]
    return next((file for leaf, file in origins.items() if leaf.startswith(key + ".")), fallback)


def merge_from_file_checked(cfg: CN, path: str) -> None:
    """Merge the YAML file at ``path`` into ``cfg``, its ``_BASE_`` files first (a path relative to the file
    naming it; chains allowed), with a one-line error naming the key and the file that set it."""
    loaded, origins = _resolve(path, ())
    _floats_from_ints(loaded, cfg)
    try:
        cfg.merge_from_other_cfg(loaded)
    except (KeyError, AssertionError, ValueError) as err:
        raise _explain(err, cfg, f'in file "{_origin(_failed_key(err), origins, path)}"') from err
    except (AttributeError, TypeError) as err:  # a node where the schema holds a value, or the reverse
        raise ConfigError(f'Config file "{path}" must be a mapping of KEY: value entries ({err})') from err


def merge_from_list_checked(cfg: CN, opts: list) -> None:
    """``cfg.merge_from_list(opts)`` with a one-line error naming the key and "command line"."""
    if len(opts) % 2 != 0:
        raise ConfigError(f"Overrides on the command line must be KEY VALUE pairs; got an odd list: {opts}")
    keys, values = opts[0::2], opts[1::2]
    pairs = [item for key, value in zip(keys, values) for item in (key, _float_override(cfg, key, value))]
    try:
        cfg.merge_from_list(pairs)
    except (KeyError, AssertionError, ValueError) as err:
        raise _explain(err, cfg, "on the command line") from err


class ConfigNode(CN):
    """The root of the default config: yacs's ``merge_from_file`` goes through the checked loader, so
    Dassl-style code that calls ``cfg.merge_from_file(path)`` follows ``_BASE_`` and gets one-line errors."""

    def merge_from_file(self, cfg_filename: str) -> None:
        merge_from_file_checked(self, cfg_filename)

    @classmethod
    def _decode_cfg_value(cls, value):
        # yacs builds merged sub-nodes with the root's class; the schema's sub-nodes are plain CfgNodes.
        return CN._decode_cfg_value(value)
