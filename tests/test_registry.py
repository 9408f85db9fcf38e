"""Every step a playbook can name resolves to a step class carrying that same name."""

from __future__ import annotations

import pytest

from indostar_ops.registry import known_steps, step_class
from indostar_ops.step import Step


@pytest.mark.parametrize("name", known_steps())
def test_registered_step_resolves_to_its_class(name: str) -> None:
    """The registry entry imports, is a Step, and the class's own name matches the key."""
    cls = step_class(name)
    assert issubclass(cls, Step) and cls.name == name
