"""blocker: apply court-ordered DNS blocks as RPZ zones, prove they hold, lift them on time."""

# The one place the version is written (pyproject.toml reads it). Not importlib.metadata: that
# import (email parsing included) was a fifth of every `blocker` command's start.
__version__ = "0.1.0"
