"""The built-in defaults: one file, `blocker/config/default.yaml` (package data, so an installed
wheel has it). `configs/blocker.yaml`, the documented example a checkout runs with, is a symbolic
link to it: there is one copy to edit, never two to keep equal.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# Read when present in the working directory and no `--config` is given (README, "Configuration").
DEFAULT_CONFIG_PATH = Path("configs/blocker.yaml")


def default_text() -> bytes:
    return resources.files("blocker.config").joinpath("default.yaml").read_bytes()
