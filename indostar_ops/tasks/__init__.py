"""Invoke namespaces, one module per runbook area (`db`, `certs`, `logs`...), found automatically.

Task modules import only `invoke` at load time, so `invoke --list` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil

from invoke import Collection

__all__ = ["namespace"]

namespace = Collection()
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        namespace.add_collection(Collection.from_module(importlib.import_module(f"{__name__}.{_info.name}")))
