"""blocker: apply court-ordered DNS blocks as RPZ zones, prove they hold, lift them on time."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("blocker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
