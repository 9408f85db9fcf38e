"""Invoke entry point: `invoke --list`. The tasks live in indostar_ops.tasks."""

from indostar_ops.tasks import namespace

ns = namespace
