"""Shared fixtures; the real-resolver fixtures live in tests/conftest_resolvers.py."""

from tests.conftest_resolvers import *  # noqa: F403
