"""`python -m tests.window_driver TASK ARGS...`: the indostar-ops program with the test steps registered.

Tests run windows as separate processes (to SIGKILL or SIGINT them like an operator's terminal would);
a monkeypatched registry does not cross a process boundary, so this registers the test steps first.
"""

from __future__ import annotations

import sys

from indostar_ops.registry import STEPS
from tests.window_steps import TEST_STEPS

STEPS.update(TEST_STEPS)

from indostar_ops.__main__ import program  # noqa: E402 - after the registry is extended

if __name__ == "__main__":
    program.run(["indostar-ops", *sys.argv[1:]])
