"""The command-line tools the manifest tests run, from Debian's packages (scripts/promtool,
scripts/amtool print their paths; scripts/test passes them in the environment)."""

import os
import shutil

import pytest


def tool(variable: str, name: str) -> str:
    path = os.environ.get(variable) or shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: set {variable} (scripts/{name} prints it)")
    return path


@pytest.fixture(scope="session")
def promtool():
    return tool("RECLAIM_PROMTOOL", "promtool")


@pytest.fixture(scope="session")
def amtool():
    return tool("RECLAIM_AMTOOL", "amtool")
