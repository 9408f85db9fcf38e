"""Invoke namespaces, one module per runbook area. Task modules import only `invoke` at load time."""

from __future__ import annotations

from invoke import Collection

from . import disk, logs, runs

__all__ = ["namespace"]

namespace = Collection()
for module in (logs, disk, runs):
    namespace.add_collection(Collection.from_module(module))
