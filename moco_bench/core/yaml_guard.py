"""YAML files are read only when their size, expanded, is that of a config: an anchor referenced twice at each of
a few levels (a "billion laughs") turns a 1 kB file into billions of nodes, which a loader would build in memory.

The file is composed into YAML's node graph first, where an alias is a shared node (no copy is made), and the
nodes it would expand to are counted with a memo: the check costs the file's size, not the expansion's.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from moco_bench.core.errors import ConfigError

MAX_BYTES = 1 << 20  # a protocol config is a few kB; the largest detectron2 model-zoo file is about 3 kB
MAX_NODES = 100_000  # nodes once every alias is expanded (the shipped configs have a few hundred)


def expanded_nodes(node: yaml.Node, memo: dict) -> int:
    """The number of nodes ``node`` stands for with every alias expanded (shared nodes counted each time)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_NODES + 1  # a node that contains itself (a recursive alias) expands without end
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(expanded_nodes(k, memo) + expanded_nodes(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(expanded_nodes(v, memo) for v in node.value)
    else:
        total = 1
    memo[key] = total
    return total


def check_yaml_file(path: Path) -> None:
    """Raise :class:`ConfigError` naming ``path`` when it is larger than a config, malformed, or expands (through
    aliases) to more than :data:`MAX_NODES` nodes."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(f"{path}: {size:,} bytes; a config is at most {MAX_BYTES:,}")
    try:
        node = yaml.compose(path.read_text(encoding="utf-8", errors="replace"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not a valid YAML config: {str(e).splitlines()[0]}") from None
    if node is not None and expanded_nodes(node, {}) > MAX_NODES:
        raise ConfigError(f"{path}: its anchors and aliases expand to more than {MAX_NODES:,} values (a YAML alias "
                          "bomb?); nothing was loaded")
