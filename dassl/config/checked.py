"""yacs merges whose errors name the key, the source and what would be valid, in one line."""
from __future__ import annotations

import re
from ast import literal_eval

from yacs.config import CfgNode as CN

from dassl.utils.errors import ConfigError
from dassl.utils.tools import get_most_similar_str_to_a_from_b

__all__ = ["ConfigError", "merge_from_file_checked", "merge_from_list_checked", "all_keys"]

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


def merge_from_file_checked(cfg: CN, path: str) -> None:
    """``cfg.merge_from_file(path)`` with a one-line error naming the key and the file."""
    try:
        with open(path) as f:
            loaded = cfg.load_cfg(f)
        _floats_from_ints(loaded, cfg)
        cfg.merge_from_other_cfg(loaded)
    except FileNotFoundError as err:
        raise ConfigError(f'Config file not found: "{path}"') from err
    except OSError as err:  # a folder, no permission
        raise ConfigError(f'Cannot read config file "{path}": {err}') from err
    except (KeyError, AssertionError, ValueError) as err:
        raise _explain(err, cfg, f'in file "{path}"') from err
    except (AttributeError, TypeError) as err:  # valid YAML that is not a mapping of keys
        raise ConfigError(f'Config file "{path}" must be a mapping of KEY: value entries ({err})') from err
    except Exception as err:  # YAML syntax errors and the like
        if type(err).__module__.startswith("yaml"):
            raise ConfigError(f'Cannot parse config file "{path}": {err}'.replace("\n", " ")) from err
        raise


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
