"""Inventory diagnostics: turn a msgspec validation error into file:line, dotted key and a hint.

Only imported when an inventory is invalid, so a good inventory never pays for it.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Annotated, Any

import msgspec
from msgspec import Struct

from ..yamlfile import LineMap, nearest_line
from .loader import decode_secret, merge_host_vars
from .model import PATTERN_HELP, Environment, Group

__all__ = ["format_error", "locate"]


_AT = re.compile(r"^(?P<message>.*?)(?: - at `(?P<key>key)` in `\$(?P<keypath>[^`]*)`| - at `\$(?P<path>[^`]*)`)?$",
                 re.S)
_REGEX = re.compile(r"^Expected `str` matching regex '(?P<regex>.*)'$", re.S)
_ENUM = re.compile(r"^Invalid enum value (?P<value>.*)$", re.S)
_CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\0": "a NUL byte"}
_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def locate(error: str, raw: dict[str, Any]) -> tuple[tuple[str, ...], str]:
    """msgspec's "message - at `$.a.b[0]`" as a key path; `[...]` (a dict key) is found in the data."""
    match = _AT.match(error)
    assert match is not None
    message, path = match.group("message"), match.group("path") or match.group("keypath") or ""
    key_error = match.group("key") is not None
    loc: list[str] = []
    node: Any = raw
    annotation: Any = Environment
    for name, index in _PART.findall(path):
        if index == "...":
            value_type = typing.get_args(_unwrap(annotation))[-1]
            bad = _first_invalid(node, value_type) if isinstance(node, dict) else None
            name = bad if bad is not None else "..."
        key = name or index
        loc.append(key)
        annotation = _child_type(annotation, key, node)
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            node = None
    extra = re.match(r"Object contains unknown field `(.+)`", message)
    if extra:
        loc.append(extra.group(1))
    missing = re.match(r"Object missing required field `(.+)`", message)
    if missing:
        loc.append(missing.group(1))
    if key_error and isinstance(node, dict):  # a dict key (a host or group name) is invalid: find which
        key_type = typing.get_args(_unwrap(annotation))[0] if typing.get_args(_unwrap(annotation)) else str
        bad_key = next((k for k in node if not _valid(k, key_type)), None)
        if bad_key is not None:
            loc.append(str(bad_key))
            return tuple(loc), "invalid name: " + _explain(message, bad_key, annotation=None)
    return tuple(loc), _explain(message, node, annotation)


def _valid(value: Any, value_type: Any) -> bool:
    try:
        msgspec.convert(value, value_type)
    except msgspec.ValidationError:
        return False
    return True


def _explain(message: str, value: Any, annotation: Any) -> str:
    """msgspec's terse message, in words: what is wrong with the value, what is allowed, what is nearest."""
    regex = _REGEX.match(message)
    if regex and isinstance(value, str):
        control = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
        if control is not None:
            what = _CONTROL_NAMES.get(control, f"character {ord(control):#04x}")
            return f"{value!r} contains a control character ({what})"
        expected = PATTERN_HELP.get(regex.group("regex").encode().decode("unicode_escape"))
        if (expected or "").startswith("an absolute path") and not value.startswith("/"):
            return f"{value!r} is not an absolute path (write it from /)"
        return f"{value!r} is not {expected or 'in the expected form: ' + regex.group('regex')}"
    enum = _ENUM.match(message)
    if enum:
        options = _literal_options(annotation)
        if options:
            got = str(value)
            return f"{got!r} is not one of {', '.join(options)}" + (
                f" (nearest: {_nearest(got, options)!r})" if _nearest(got, options) else "")
    return message


def _literal_options(annotation: Any) -> list[str]:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return []


def _nearest(value: str, options: list[str]) -> str | None:
    lowered = value.lower()
    prefixed = [o for o in options if o.lower().startswith(lowered) or lowered.startswith(o.lower())]
    if lowered and prefixed:
        return prefixed[0]
    close = difflib.get_close_matches(lowered, options, n=1, cutoff=0.4)
    return close[0] if close else None


def _first_invalid(mapping: dict[str, Any], value_type: Any) -> str | None:
    for key, value in mapping.items():
        try:
            msgspec.convert(merge_host_vars({"groups": {"x": value}})["groups"]["x"]
                            if _unwrap(value_type) is Group else value, value_type, dec_hook=decode_secret)
        except msgspec.ValidationError:
            return str(key)
    return None


def format_error(env_name: str, loc: tuple[str, ...], message: str, lines: LineMap) -> str:
    key = ".".join(repr(part)[1:-1] for part in loc) or "(top level)"
    where = nearest_line(loc, lines)
    extra = re.match(r"Object contains unknown field `(.+)`", message)
    if extra:
        options = _fields_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], options, n=1, cutoff=0.5)
        message = f"unknown key {loc[-1]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        if options and not close:
            message += f"; known keys: {', '.join(sorted(options))}"
    elif message.startswith("Object missing required field"):
        message = "required key is missing"
    elif message.startswith("Invalid value") and loc[-1:] == ("kind",):
        message += " (expected one of: kubernetes, compose, ecs)"
    if loc[-2:-1] == ("window",) and "Expected `str`, got `int`" in message:
        message += ' (write times in quotes: "02:00")'
    return f"inventory for environment {env_name!r} is invalid:\n  {where}: {key}: {message}"


def _child_type(annotation: Any, key: str, node: Any) -> Any:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Struct):
        for info in msgspec.structs.fields(annotation):
            if info.name == key:
                return info.type
        return None
    origin = typing.get_origin(annotation)
    if origin in (dict, list):
        return typing.get_args(annotation)[-1]
    if origin in (typing.Union, types.UnionType) and isinstance(node, dict):
        for option in typing.get_args(annotation):
            if isinstance(option, type) and issubclass(option, Struct):
                config = option.__struct_config__
                if config.tag is not None and node.get(config.tag_field) == config.tag:
                    return _child_type(option, key, node)
    return None


def _fields_at(loc: tuple[str, ...]) -> list[str]:
    """Names of the fields of the section found by following `loc` from the environment."""
    annotation: Any = Environment
    for part in loc:
        annotation = _child_type(annotation, part, None)
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Struct):
        return list(annotation.__struct_fields__)
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the one real type, when there is one."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation
