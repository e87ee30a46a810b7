"""detectron2 YAML configs, read safely: no Python tags constructed, no alias bomb expanded, ``d2_overrides`` (a
config tree) turned into detectron2's ``merge_from_list`` form. Imports no detectron2 itself."""

from __future__ import annotations

from pathlib import Path
from typing import List

import yaml
from omegaconf import OmegaConf

from moco_bench.core.errors import ConfigError
from moco_bench.core.schema import flatten
from moco_bench.core.yaml_guard import check_yaml_file


def merge_d2_file(d2, path: Path, source: str) -> None:
    """Merge a detectron2 YAML (and every ``_BASE_`` it names) with the safe YAML loader.

    detectron2's ``merge_from_file`` defaults to ``allow_unsafe=True``, which retries a file the safe loader
    refuses with ``yaml.unsafe_load``: a ``!!python/object/apply`` tag would then run code. Here such a file
    is an error naming it, and so is one (or a base) whose aliases expand beyond a config's size.
    """
    try:
        _check_d2_chain(Path(path))
        d2.merge_from_file(str(path), allow_unsafe=False)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: detectron2 config {path} is not plain YAML (tags that construct Python "
                          f"objects are refused; nothing was run): {str(e).splitlines()[0]}") from None


def _check_d2_chain(path: Path, depth: int = 0) -> None:
    """:func:`check_yaml_file` on a detectron2 YAML and every ``_BASE_`` it names, before detectron2 loads them."""
    if depth > 16:
        raise ConfigError(f"{path}: more than 16 levels of _BASE_ (a loop?)")
    check_yaml_file(path)
    doc = yaml.safe_load(path.read_text())
    base = doc.get("_BASE_") if isinstance(doc, dict) else None
    if isinstance(base, str) and "://" not in base:  # detectron2:// names a model-zoo file
        _check_d2_chain(path.parent / base, depth + 1)


def d2_opts(overrides) -> List:
    """``d2_overrides`` (a detectron2 config tree) as ``merge_from_list`` takes it: ``[KEY, value, KEY, value]``
    with dotted keys; lists become tuples, as detectron2's YAML loader gives them."""
    tree = OmegaConf.to_container(overrides, resolve=True) if OmegaConf.is_config(overrides) else overrides or {}
    flat: List = []
    for key, value in flatten(tree).items():
        flat += [key, _tuples(value)]
    return flat


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
