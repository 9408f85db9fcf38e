"""Inventory loading: find the file, follow `extends:`, interpolate, merge host vars, validate.

Everything is checked before anything connects. Errors name the file, the line,
the dotted key and what was expected (see diagnostics.py).
"""

from __future__ import annotations

import difflib
import os
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from ..errors import InventoryError, UnknownEnvironment
from ..secrets import Secret
from ..yamlfile import LineMap, read_yaml_mapping
from .model import REPO_ROOT, AwsSettings, Environment

__all__ = ["inventory_dir", "list_environments", "load_environment", "sandbox_root"]




def inventory_dir() -> Path:
    """`INDOSTAR_INVENTORY_DIR`, else ./inventory, else the one shipped next to the package."""
    configured = os.environ.get("INDOSTAR_INVENTORY_DIR")
    if configured:
        return Path(configured)
    local = Path.cwd() / "inventory"
    return local if local.is_dir() else REPO_ROOT / "inventory"


def sandbox_root() -> Path:
    configured = os.environ.get("INDOSTAR_SANDBOX_ROOT")
    return Path(configured).resolve() if configured else REPO_ROOT / ".sandbox"


def list_environments(directory: Path | None = None) -> list[str]:
    """Environment names; files starting with '_' are shared bases, not environments."""
    directory = directory or inventory_dir()
    return sorted(p.stem for p in directory.glob("*.yaml") if not p.name.startswith("_"))


def load_environment(name: str, *, directory: Path | None = None) -> Environment:
    """Load, merge (`extends:`) and validate one environment. Raises InventoryError (exit 2)."""
    directory = directory or inventory_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = list_environments(directory)
        close = difflib.get_close_matches(name, known, n=1)
        raise UnknownEnvironment(
            f"unknown environment {name!r} (no {path})",
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + f"known environments: {', '.join(known) or '(none)'}",
        )
    raw, lines = _load_chain(path, directory, seen=())
    raw.pop("extends", None)
    raw["name"] = name
    raw = _interpolate(raw, {"sandbox_root": str(sandbox_root()), "inventory_dir": str(directory.resolve())})
    raw = merge_host_vars(raw)
    try:
        env = msgspec.convert(raw, Environment, dec_hook=decode_secret)
    except msgspec.ValidationError as exc:
        from .diagnostics import format_error, locate

        loc, message = locate(str(exc), raw)
        raise InventoryError(format_error(name, loc, message, lines),
                             hint="fix the line named above and run again") from None
    problems = env.problems()
    if problems:
        from .diagnostics import format_error

        loc, message = problems[0]
        raise InventoryError(format_error(name, loc, message, lines),
                             hint="fix the line named above and run again")
    resolver = _aws_secret_resolver(env.aws) if env.aws is not None else None
    for secret in env.secrets():
        secret.bind(env.redactor, resolver)
    return env


def _aws_secret_resolver(settings: AwsSettings) -> Callable[[str, str], str]:
    """`ssm:`/`secretsmanager:` references resolve through the environment's own AWS settings, on first use."""
    connector: list[Any] = []

    def resolve(scheme: str, key: str) -> str:
        from ..connectors.aws import AwsConnector

        if not connector:
            connector.append(AwsConnector(settings))
        try:
            return str(connector[0].resolve_secret(scheme, key))
        except Exception as exc:  # noqa: BLE001 - botocore raises many types; all mean "could not read"
            raise InventoryError(f"secret {scheme}:{key} could not be read from AWS ({settings.region}): {exc}",
                                 hint="check the reference and the AWS credentials/profile") from None

    return resolve


def _load_chain(path: Path, directory: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], LineMap]:
    if path in seen:
        raise InventoryError(f"{path}: 'extends' loops back to itself ({' -> '.join(map(str, seen))})")
    data, lines = read_yaml_mapping(path, InventoryError)
    parent = data.get("extends")
    if parent is None:
        return data, lines
    if not isinstance(parent, str):
        raise InventoryError(f"{path}: 'extends' must name a file, e.g. extends: _common.yaml")
    parent_path = (path.parent / parent).resolve()
    if not parent_path.is_file():
        raise InventoryError(f"{path}: 'extends: {parent}' names a file that does not exist ({parent_path})")
    base, base_lines = _load_chain(parent_path, directory, (*seen, path))
    base.pop("extends", None)
    return _deep_merge(base, data), {**base_lines, **lines}


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _interpolate(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str) and "${" in value:
        return string.Template(value).safe_substitute(mapping)
    if isinstance(value, dict):
        return {k: _interpolate(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, mapping) for v in value]
    return value


def decode_secret(kind: type, value: Any) -> Any:
    if kind is Secret and isinstance(value, str):
        return Secret(value)
    raise NotImplementedError


def merge_host_vars(raw: dict[str, Any]) -> dict[str, Any]:
    """Host `vars` override their group's `vars` key by key; `hosts:` may be a list of names."""
    groups = raw.get("groups")
    if not isinstance(groups, dict):
        return raw
    merged_groups: dict[str, Any] = {}
    for group_name, group in groups.items():
        if not isinstance(group, dict):
            merged_groups[group_name] = group
            continue
        hosts = group.get("hosts") or {}
        if isinstance(hosts, list):
            hosts = {str(name): {} for name in hosts}
        group_vars = group.get("vars") or {}
        if isinstance(hosts, dict) and isinstance(group_vars, dict):
            hosts = {name: _with_vars(host, group_vars) for name, host in hosts.items()}
        merged_groups[group_name] = {**group, "hosts": hosts}
    return {**raw, "groups": merged_groups}


def _with_vars(host: Any, group_vars: dict[str, Any]) -> Any:
    host = {} if host is None else host
    if not isinstance(host, dict) or not isinstance(host.get("vars", {}), dict):
        return host
    return {**host, "vars": {**group_vars, **(host.get("vars") or {})}}
