"""``dassl.config``: the default yacs schema, extensions and checked merges."""
from .checked import (
    BASE_KEY,
    ConfigError,
    all_keys,
    load_config_file,
    merge_from_file_checked,
    merge_from_list_checked,
)
from .defaults import clean_cfg, get_cfg_default, register_cfg_extension, run_local_keys

__all__ = [
    "get_cfg_default",
    "register_cfg_extension",
    "run_local_keys",
    "clean_cfg",
    "ConfigError",
    "all_keys",
    "BASE_KEY",
    "load_config_file",
    "merge_from_file_checked",
    "merge_from_list_checked",
]
