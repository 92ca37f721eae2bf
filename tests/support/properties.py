"""Hypothesis profiles: `ci` (the default, what `make test` runs) and `unit` (what `make unit` runs).

A property test names its full example count with `examples(n)`: `n` under `ci`, where the long
runs find the rare cases; under `unit` at most the profile's own count, so the pure tests run in
seconds while editing. Pick a profile with `--hypothesis-profile=NAME` or HYPOTHESIS_PROFILE=NAME.
"""

from __future__ import annotations

import os

from hypothesis import settings

CI_EXAMPLES = 100  # hypothesis' own default: a test without `examples()` runs this many under ci
UNIT_EXAMPLES = 10


def register_profiles() -> None:
    """`ci` keeps today's settings (hypothesis' defaults), `unit` only runs fewer examples; the
    profile named by HYPOTHESIS_PROFILE (else `ci`) is loaded, `--hypothesis-profile` overrides it."""
    ci = settings(settings.get_profile("default"), max_examples=CI_EXAMPLES)  # not hypothesis' own "ci"
    settings.register_profile("ci", ci)
    settings.register_profile("unit", settings(ci, max_examples=UNIT_EXAMPLES))
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(full: int) -> int:
    """The example count of a property test whose full run is `full` examples: `full` under `ci`,
    capped to the loaded profile's count when that profile runs fewer than `ci`. Evaluated when
    the test module is imported, after the profile is loaded (conftest, then the pytest option)."""
    current = settings.default.max_examples if settings.default is not None else CI_EXAMPLES
    return full if current >= CI_EXAMPLES else min(full, current)
