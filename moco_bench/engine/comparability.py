"""Whether a run is the published protocol: derived from the config, never declared.

Every evaluation config carries a ``comparability`` block naming the shipped protocol file it is, or derives
from (``evaluate/<protocol>.yaml``; ``null`` for a demo that derives from none). The run's config is compared
with that file key by key, before interpolation (so ``${datasets:imagenet}`` is the same key wherever
``$MOCO_BENCH_DATASETS`` points). Keys the
*protocol file* lists under ``free_keys`` cannot change a number (paths of outputs, workers, chunk sizes,
labels), each with its reason; any other difference makes the result not comparable, and the record keeps
every such key with both values. ``requires`` names values a run must have although the shipped default
differs (low-shot: the published figures chose the cost on the test set; the suite's default does not).

The block of the run itself is never trusted for these lists: a run cannot declare a key free.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping

from omegaconf import DictConfig, OmegaConf

from moco_bench.core.config import ABSENT, differences, is_free, source_of
from moco_bench.core.errors import ConfigError
from moco_bench.data.check import LOCATION_KEYS

BLOCK = "comparability"
_NAME = re.compile(r"[a-z0-9_]+")
_IGNORED = ("_source_", BLOCK)


def protocol_config(cfg: DictConfig) -> DictConfig:
    """The shipped protocol file ``cfg.comparability.protocol`` names, loaded as shipped."""
    from moco_bench.core.paths import project_root
    from moco_bench.evaluators.catalog import load_evaluation

    source = source_of(cfg)
    block = cfg.get(BLOCK)
    if block is None or "protocol" not in block:
        raise ConfigError(f"{source}: evaluation configs need a '{BLOCK}.protocol' key naming their shipped "
                          "protocol file (evaluate/<protocol>.yaml)")
    name = str(block.protocol)
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{source}: {BLOCK}.protocol {name!r} must be the name of a file in evaluate/ "
                          "(lower-case letters, digits, _)")
    path = project_root() / "evaluate" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{source}: {BLOCK}.protocol {name!r}: no shipped protocol file {path}")
    protocol = load_evaluation(path)
    own = protocol.get(BLOCK)
    if own is None or str(own.get("protocol")) != name:
        raise ConfigError(f"{path}: a shipped protocol file names itself in {BLOCK}.protocol ({name!r})")
    return protocol


def assess(cfg: DictConfig) -> Dict[str, Any]:
    """``{protocol, published_protocol, comparable, differences, free_changes, unmet}`` of a run's config.

    ``differences``: ``{key: {"protocol": shipped value, "run": this run's}}`` for every key that can change
    a number; ``unmet``: ``{key: {"required": value, "run": value, "reason": text}}``.
    """
    if cfg.get(BLOCK) is not None and cfg[BLOCK].get("protocol", "") is None:
        return {"protocol": None, "published_protocol": None, "comparable": False, "differences": {},
                "free_changes": {}, "unmet": {}, "reason": "derives from no published protocol"}
    protocol = protocol_config(cfg)
    block = protocol[BLOCK]
    free = dict(block.get("free_keys") or {})
    requires = dict(block.get("requires") or {})
    changes = differences(OmegaConf.to_container(protocol, resolve=False), OmegaConf.to_container(cfg, resolve=False))
    changed, free_changes = {}, {}
    for key, change in changes.items():
        if key.split(".")[0] in _IGNORED or key in requires:
            continue
        (free_changes if is_free(key, free) else changed)[key] = change
    unmet = {}
    for key, spec in requires.items():
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value != spec["value"]:
            unmet[key] = {"required": spec["value"], "run": value, "reason": str(spec["reason"])}
    return {"protocol": str(block.protocol), "published_protocol": block.get("published"),
            "comparable": not changed and not unmet, "differences": changed,
            "free_changes": free_changes, "unmet": unmet, "reason": ""}


def settle(assessment: Dict[str, Any], check: Mapping[str, dict], cfg: DictConfig) -> Dict[str, Any]:
    """The assessment once the dataset check has run (:func:`moco_bench.data.check.check_data`).

    A changed dataset location (:data:`~moco_bench.data.check.LOCATION_KEYS`: ``data.root``, a source's folders
    and annotation files) is free when every split or source the run read holds the image count the *shipped*
    protocol publishes for it; otherwise it stays a difference and ``data_problems`` says which split is short.
    """
    located = {k: v for k, v in assessment["differences"].items() if is_free(k, dict.fromkeys(LOCATION_KEYS))}
    if not located or assessment["protocol"] is None:
        return assessment
    published = published_counts(protocol_config(cfg))
    problems = []
    for name, summary in check.items():
        if published.get(name) is None:
            problems.append(f"{name}: the protocol publishes no image count to hold it against")
        elif int(summary["images"]) != int(published[name]):
            problems.append(f"{name} has {int(summary['images']):,} images, the published split "
                            f"{int(published[name]):,}")
    out = dict(assessment, data_problems=problems)
    if not problems:
        out["differences"] = {k: v for k, v in assessment["differences"].items() if k not in located}
        out["free_changes"] = {**assessment["free_changes"], **located}
        out["comparable"] = not out["differences"] and not assessment["unmet"]
    return out


def published_counts(protocol: DictConfig) -> Dict[str, int]:
    """``{split or source name: published image count}`` of a shipped protocol (``data.expect`` or each source's
    ``expect``)."""
    tree = OmegaConf.to_container(protocol, resolve=True)
    if tree.get("datasets"):
        return {n: s.get("expect") for n, s in (tree["datasets"].get("sources") or {}).items() if s}
    return {k: v for k, v in ((tree.get("data") or {}).get("expect") or {}).items() if v is not None}


def describe(assessment: Mapping[str, Any], limit: int = 4) -> str:
    """One line: ``comparable with evaluate/x.yaml`` or ``not comparable: schedule.epochs 100 -> 10; ...``."""
    if assessment["comparable"]:
        return f"the published protocol (evaluate/{assessment['protocol']}.yaml)"
    if assessment["reason"]:
        return f"not comparable: {assessment['reason']}"
    parts: List[str] = [f"{k} {_short(v['protocol'])} -> {_short(v['run'])}"
                        for k, v in assessment["differences"].items()]
    parts += [f"{k} {_short(v['run'])} (published: {_short(v['required'])}; {v['reason']})"
              for k, v in assessment["unmet"].items()]
    if assessment.get("data_problems"):
        parts.insert(0, "dataset check: " + ", ".join(assessment["data_problems"]))
    more = f"; and {len(parts) - limit} more" if len(parts) > limit else ""
    return "not comparable: " + "; ".join(parts[:limit]) + more


def _short(value: Any, width: int = 40) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."
