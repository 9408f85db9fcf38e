"""Secret references (`env:NAME`, `ssm:/path`, `secretsmanager:id`) and redaction.

Inventory files never hold secret values, only references. A value is fetched
the first time a step asks for it, and from that moment the environment's
`Redactor` masks it in every report line and journal record.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InventoryError, UsageError

__all__ = ["MASK", "Redactor", "Secret", "SecretResolver"]

MASK = "********"
_REF = re.compile(r"^(env|ssm|secretsmanager):(.+)$")

SecretResolver = Callable[[str, str], str]
"""(scheme, key) -> value, for schemes that need a backend (AWS)."""


class Redactor:
    """Replaces every resolved secret value with a mask, wherever it appears."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def register(self, value: str) -> None:
        if value and len(value) >= 4:
            with self._lock:
                self._values.add(value)

    def text(self, value: str) -> str:
        for secret in sorted(self._values, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def data(self, value: Any) -> Any:
        """Redact strings anywhere inside JSON-like data."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.data(v) for v in value]
        if isinstance(value, Secret):
            return str(value)
        return value


def secrets_in(value: Any) -> list[Secret]:
    """Every Secret reference inside an inventory section (Structs, dicts, lists)."""
    if isinstance(value, Secret):
        return [value]
    if hasattr(value, "__struct_fields__"):
        return [s for name in value.__struct_fields__ for s in secrets_in(getattr(value, name))]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in secrets_in(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in secrets_in(item)]
    return []


class Secret:
    """A reference to a secret; `str()` shows the reference, never the value."""

    __slots__ = ("_redactor", "_resolver", "_value", "key", "ref", "scheme")

    def __init__(self, ref: str) -> None:
        match = _REF.match(ref.strip())
        if not match:
            raise ValueError(
                "secrets must be references such as 'env:NAME', 'ssm:/path' or 'secretsmanager:id', "
                "never literal values",
            )
        self.ref = ref.strip()
        self.scheme, self.key = match.group(1), match.group(2)
        self._value: str | None = None
        self._redactor: Redactor | None = None
        self._resolver: SecretResolver | None = None

    def bind(self, redactor: Redactor, resolver: SecretResolver | None) -> None:
        self._redactor = redactor
        self._resolver = resolver

    def preflight(self) -> None:
        """No I/O: an `env:` reference must be set now (a usage error before anything connects)."""
        if self.scheme == "env" and self.key not in os.environ:
            raise UsageError(f"secret {self.ref}: environment variable {self.key} is not set",
                             hint=f"export {self.key}=... (or change the reference in the inventory)")

    def get(self) -> str:
        """Resolve (once) and return the value; registers it for redaction first."""
        if self._value is None:
            if self.scheme == "env":
                value = os.environ.get(self.key)
                if value is None:
                    raise UsageError(
                        f"secret {self.ref}: environment variable {self.key} is not set",
                        hint=f"export {self.key}=... (or change the reference in the inventory)",
                    )
            elif self._resolver is None:
                raise InventoryError(f"secret {self.ref}: no AWS configured to resolve it")
            else:
                value = self._resolver(self.scheme, self.key)
            if self._redactor is not None:
                self._redactor.register(value)
            self._value = value
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.ref!r})"

    def __str__(self) -> str:
        return self.ref

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)
