"""Reading YAML with a map from every key path to its file:line, for errors that point at the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError

__all__ = ["LineMap", "nearest_line", "read_yaml_mapping"]

LineMap = dict[tuple[str, ...], str]


def read_yaml_mapping(path: Path, error: type[UsageError] = UsageError) -> tuple[dict[str, Any], LineMap]:
    """Parse a YAML file whose top level is a mapping; syntax errors name the file, line and column."""
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~6x faster than pure Python
    try:
        loader = loader_class(path.read_text())
        try:
            node = loader.get_single_node()  # parse once: the node tree gives the lines...
            data = loader.construct_document(node) if node is not None else {}  # ...and the data
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{where}: YAML syntax error: {problem}", hint="fix the YAML and run again") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level")
    lines: LineMap = {}
    if node is not None:
        _map_lines(node, (), str(path), lines)
    return data, lines


def nearest_line(loc: tuple[str, ...], lines: LineMap) -> str:
    """file:line of the deepest known part of `loc`."""
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return "?"


def _map_lines(node: yaml.Node, prefix: tuple[str, ...], file: str, out: LineMap) -> None:
    out[prefix] = f"{file}:{node.start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            key_path = (*prefix, str(key.value))
            _map_lines(value, key_path, file, out)
            out[key_path] = f"{file}:{key.start_mark.line + 1}"
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _map_lines(item, (*prefix, str(index)), file, out)
