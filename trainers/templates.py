"""The hand-written prompt template of a dataset, read off the dataset object the data manager built."""
from __future__ import annotations

from dassl.utils import ConfigError

__all__ = ["dataset_template"]


def dataset_template(dataset) -> str:
    """``dataset.template`` (e.g. ``"a photo of a {}, a type of pet."``); a one-line error when it has none."""
    name = type(dataset).__name__
    template = getattr(dataset, "template", None)
    if not template:
        raise ConfigError(
            f"Dataset {name} has no zero-shot template: add a class attribute to it, e.g. "
            f'`template = "a photo of a {{}}."` (see docs/PORTING.md), or set the trainer\'s TEMPLATE key'
        )
    if "{}" not in template:
        raise ConfigError(f"{name}.template {template!r} has no '{{}}' for the class name")
    return template
