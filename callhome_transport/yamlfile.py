"""Reading our YAML configuration files (the inventory, the gateway's file).

PyYAML's loaders keep the last of two equal keys in one mapping, silently:
an inventory that lists ``SN-0001`` twice loses the first entry.  Here a
repeated key is an :class:`~callhome_transport.errors.InventoryError` naming
the file, the key path and both lines.  A file that is not UTF-8 is one too
(not a ``UnicodeDecodeError`` traceback).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import InventoryError

__all__ = ["read_yaml_file"]

_MERGE_TAG = "tag:yaml.org,2002:merge"


def read_yaml_file(path: Path) -> Any:
    """The one YAML document in ``path``, parsed safely (``None`` for an empty
    file).  Raises :class:`InventoryError` for an unreadable file, a file
    that is not UTF-8, invalid YAML (with the line) or a repeated key."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InventoryError(path, "", f"a readable file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise InventoryError(path, "", f"a UTF-8 text file (invalid byte at offset {exc.start})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, "", str(path))
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise InventoryError(path, "", f"valid YAML{where}") from exc
    finally:
        loader.dispose()


def _check_unique_keys(node: yaml.Node, key_path: str, source: str) -> None:
    """Walk the composed document: every mapping's keys once (merge keys,
    ``<<: *defaults``, may be overridden as YAML intends)."""
    stack: list[tuple[yaml.Node, str]] = [(node, key_path)]
    seen_nodes: set[int] = set()  # aliases point to nodes already walked
    while stack:
        current, path = stack.pop()
        if id(current) in seen_nodes:
            continue
        seen_nodes.add(id(current))
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(current, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in current.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                if isinstance(key_node, yaml.ScalarNode):
                    key = str(key_node.value)
                    line = key_node.start_mark.line + 1
                    child = f"{path}.{key}" if path else key
                    if key in first_line:
                        raise InventoryError(
                            source,
                            child,
                            f"each key once in a mapping ({key!r} is given at line {first_line[key]} "
                            f"and again at line {line})",
                        )
                    first_line[key] = line
                else:
                    child = f"{path}.?" if path else "?"
                children.append((value_node, child))
        elif isinstance(current, yaml.SequenceNode):
            children = [(item, f"{path}[{index}]") for index, item in enumerate(current.value)]
        stack.extend(reversed(children))  # walked in document order: the first repeat is reported
